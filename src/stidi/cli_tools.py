"""The tool subcommands of ``stidi``: predict, inspect, plot and export.

Kept apart from :mod:`stidi.cli` (which owns train/eval/data) so that each command's
options, help and output format sit in one place; :func:`add_commands` registers them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from .inputs import evaluation_data
from .plots import PLOTS

DEFAULT_LIMIT = 1000


def _json_time(t: float) -> float | None:
    """Spike times for JSON: ``None`` for a neuron that never fired (JSON has no infinity)."""
    return None if math.isinf(t) else float(t)


def _load(model: str):
    from .io import load_model

    return load_model(model)


# --------------------------------------------------------------------------- predict


def cmd_predict(args: argparse.Namespace) -> int:
    from .api import predict
    from .inputs import read_inputs

    net, _, _ = _load(args.model)
    images, names = read_inputs(args.inputs, net.input_shape, limit=args.limit, invert=args.invert, resize=args.resize)
    pred = predict(net, images)
    rows = []
    for name, cls, times, t_d in zip(names, pred.classes.tolist(), pred.output_times.tolist(), pred.decision_time.tolist()):
        rows.append({"input": name, "class": int(cls), "decision_time": _json_time(t_d),
                     "output_times": [_json_time(t) for t in times]})
    if args.json:
        print(json.dumps({"model": str(args.model), "T": net.T, "predictions": rows}))
        return 0
    width = max(len(r["input"]) for r in rows)
    for r in rows:
        cls = "undecided" if r["class"] < 0 else f"class {r['class']}"
        times = " ".join("—" if t is None else f"{t:g}" for t in r["output_times"])
        t_d = "—" if r["decision_time"] is None else f"{r['decision_time']:g}"
        print(f"{r['input']:<{width}}  {cls:<9}  decision t={t_d:<4} of T={net.T}  output times: {times}")
    return 0


# --------------------------------------------------------------------------- inspect


def cmd_inspect(args: argparse.Namespace) -> int:
    from .analysis import format_report, inspect_network

    net, config, _ = _load(args.model)
    t_in, labels, what = evaluation_data(net, config, args.data, args.labels, args.limit)
    report = inspect_network(net, t_in, labels)
    report["model"], report["data"] = str(args.model), what
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "histograms" or args.histograms}))
    else:
        print(f"{args.model}: {net.spec} on {what}")
        print(format_report(report))
    return 0


# --------------------------------------------------------------------------- plot




def cmd_plot(args: argparse.Namespace) -> int:
    from .plots import make_plots

    written = make_plots(args.model, out_dir=args.out, which=args.which or PLOTS, data=args.data,
                         labels=args.labels, limit=args.limit, image=args.image)
    for path in written:
        print(path)
    return 0


# --------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from .export_nir import export_nir

    net, config, _ = _load(args.model)
    model = Path(args.model)
    out = Path(args.out) if args.out else (model / "model.nir" if model.is_dir() else model.with_suffix(".nir"))
    warnings = export_nir(net, out)
    for w in warnings:
        print(f"stidi: warning: {w}", file=sys.stderr)
    print(f"{out}: NIR graph of {net.spec} ({len(net.layers)} layers); differences from stidi's semantics: docs/nir.md")
    return 0


# --------------------------------------------------------------------------- parser


def add_commands(sub: Any) -> None:
    """Register predict, inspect, plot and export on the ``stidi`` subparsers."""
    model_help = "a model .safetensors file (its .json beside it) or a run directory written by 'stidi train'"

    p = sub.add_parser("predict", help="classify image, .npy or IDX files with a saved model",
                       description="Predict the class of each input with a saved model and print, per input, the "
                       "predicted class (earliest output spike), the decision time and every output neuron's spike time "
                       "('—': never fired). Inputs: PNG/JPEG images (greyscale for 1-channel models, RGB for 3), .npy "
                       "arrays of one image or a batch, IDX image files (raw or .gz) as MNIST ships them.")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="PNG/JPEG image, .npy array (uint8 or floats in [0, 1]) or IDX file")
    p.add_argument("--json", action="store_true", help="print one JSON object (never-fired times are null)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images of each .npy/IDX file (default: all)")
    p.add_argument("--invert", action="store_true", help="use 1 − x: dark strokes on a light background become MNIST-like bright ones")
    p.add_argument("--resize", action="store_true", help="resize image files to the model's input size instead of refusing them")
    p.set_defaults(func=cmd_predict)

    data_help = ("mnist or fashion-mnist (its test split), or a .npy/IDX file of images "
                 "(default: the test split of the model's dataset)")
    i = sub.add_parser("inspect", help="per-layer activity, synaptic operations and early-exit statistics",
                       description="Run a saved model on test images and print, per layer: the fraction of neurons that "
                       "fire before T, their mean firing time and its 10/50/90 % quantiles, spikes per inference and the synaptic operations the spikes "
                       "trigger against the multiply-accumulates of a CNN of the same shapes; then the mean decision time "
                       "(first output spike), how many steps later the runner-up class fires, and the accuracy of stopping every "
                       "layer at the decision (early exit).")
    i.add_argument("model", metavar="MODEL", help=model_help)
    i.add_argument("--data", metavar="NAME|FILE", help=data_help)
    i.add_argument("--labels", metavar="FILE", help="IDX or .npy labels for --data FILE (for the accuracies)")
    i.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"use the first N images; 0 = all (default: {DEFAULT_LIMIT})")
    i.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    i.add_argument("--histograms", action="store_true", help="with --json: include per-layer spike counts at every time step")
    i.set_defaults(func=cmd_inspect)

    pl = sub.add_parser("plot", help="PNG plots: learning curves, confusion matrix, firing and decision times, spike raster, spike maps",
                        description="Write PNG plots of a model trained by 'stidi train': learning curves (from the run's "
                        "metrics.jsonl), the confusion matrix, per-layer firing-time histograms and decision times on test images, and the "
                        "spike raster and per-layer spike-time maps of one image. Needs matplotlib (pip install 'stidi[plots]').")
    pl.add_argument("model", metavar="MODEL", help=model_help)
    pl.add_argument("--out", metavar="DIR", help="directory for the PNG files (default: plots/ in the model's run directory)")
    pl.add_argument("--which", nargs="+", choices=PLOTS, help="plots to make (default: all)")
    pl.add_argument("--data", metavar="NAME|FILE", help=data_help)
    pl.add_argument("--labels", metavar="FILE", help="IDX or .npy labels for --data FILE (for the confusion matrix and decision times)")
    pl.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"test images for confusion, histograms and decision times; 0 = all (default: {DEFAULT_LIMIT})")
    pl.add_argument("--image", type=int, default=0, help="index in the data of the image for the raster and spike maps (default: 0)")
    pl.set_defaults(func=cmd_plot)

    e = sub.add_parser("export", help="export a model to another format (NIR)",
                       description="Write the network as a NIR graph (Neuromorphic Intermediate Representation, read by "
                       "snnTorch, Norse, Lava, SpiNNaker and others). NIR has no single-spike neuron nor earliest-spike "
                       "pooling: the nearest graph is written, the exact semantics go to node metadata, and a warning "
                       "lists what differs (docs/nir.md). Needs the nir package (pip install 'stidi[nir]').")
    e.add_argument("model", metavar="MODEL", help=model_help)
    e.add_argument("--format", choices=["nir"], default="nir", help="output format (default: nir)")
    e.add_argument("--out", metavar="FILE", help="output file (default: the model's name with .nir)")
    e.set_defaults(func=cmd_export)
