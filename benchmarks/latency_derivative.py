"""How well does STiDi-BP's linear latency derivative track the true one, layer by layer?

Usage::

    python benchmarks/latency_derivative.py            # writes results/latency-derivative.json
    python benchmarks/latency_derivative.py --images 8 # quicker

The rule replaces ``∂t_j/∂u_j`` by ``−t_j/θ``: the potential is taken to rise on a straight
line from 0 at ``t = 0`` to ``θ`` at the spike (``latency_derivative = "linear"``). The
true magnitude, for the ramp PSP ``ε(s) = s/T``, is the inverse of the potential's slope
at the spike, ``1 / u_j'(t_j)`` with ``u_j'(t_j) = Σ_{i: t_i < t_j} w_ij / T`` (the
discrete slope ``u_j(t_j) − u_j(t_j − 1)``; always positive, since ``u`` crossed ``θ``
there; :func:`stidi.stidi_bp.potential_slope` with one bin per step). The two agree when a neuron's inputs arrive at ``t = 0``; deeper layers receive
late spikes, and their potentials rise later and steeper.

For each trained reproduction model given (default: the kept fashion-rcsnn and
mnist-rcsnn models) and the first ``--images`` official test images, per weighted layer,
over the neurons that fired before ``T``:

* ``ratio_quantiles``: quantiles (10/50/90 %) of ``(t_j/θ) / (1/u_j')``, how far the linear
  gain over- (> 1) or under- (< 1) states the true one;
* ``spearman``: rank correlation of the two gains over all neurons, and
  ``within_sample_pearson``: their Pearson correlation within one image's layer, averaged
  over images. The rule normalises each layer's error per image, so this is what decides
  how the error is shared among a layer's neurons;
* ``binned_spearman``: the rank correlation with the true gain of the gain that
  ``latency_derivative = "slope"`` uses in training, from ``--bins`` time bins
  (:func:`stidi.stidi_bp.potential_slope`).

This is a diagnostic: nothing in training reads it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stidi.data import load_dataset  # noqa: E402
from stidi.io import atomic_write_json, load_model  # noqa: E402
from stidi.layers import Conv  # noqa: E402
from stidi.provenance import run_provenance  # noqa: E402
from stidi.stidi_bp import latency_gain, potential_slope  # noqa: E402

DEFAULT_MODELS = ["results/runs/fashion-rcsnn/best.safetensors", "results/runs/mnist-rcsnn/best.safetensors"]


def rank(v: torch.Tensor) -> torch.Tensor:
    return torch.argsort(torch.argsort(v)).double()


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    return float((a @ b) / denom) if denom > 0 else float("nan")


def layer_report(t_out: torch.Tensor, slope: torch.Tensor, theta: float, T: int, binned: torch.Tensor) -> dict:
    fired = torch.isfinite(t_out) & (t_out < T)
    lin = (t_out / theta).double()
    true = (1.0 / slope).double()
    flat_fired = fired.flatten(1)
    within = []
    for b in range(t_out.shape[0]):
        keep = flat_fired[b]
        if int(keep.sum()) >= 3:
            within.append(pearson(lin.flatten(1)[b][keep], true.flatten(1)[b][keep]))
    within = [v for v in within if not math.isnan(v)]
    l, t = lin[fired], true[fired]
    ratio = l / t
    q = torch.quantile(ratio, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist() if ratio.numel() else [None] * 3
    return {
        "neurons_fired": int(fired.sum()),
        "fraction_fired": round(float(fired.double().mean()), 4),
        "mean_spike_step": round(float(t_out[fired].mean()), 1) if fired.any() else None,
        "ratio_quantiles": {"0.1": q[0], "0.5": q[1], "0.9": q[2]},
        "spearman": pearson(rank(l), rank(t)) if l.numel() >= 3 else None,
        "within_sample_pearson": sum(within) / len(within) if within else None,
        "binned_spearman": pearson(rank(binned[fired].double()), rank(t)) if l.numel() >= 3 else None,
    }


def measure(model_path: Path, images: int, bins: int) -> dict:
    net, config, _ = load_model(model_path)
    if not math.isinf(net.tau):
        raise SystemExit(f"{model_path}: τ = {net.tau}; this diagnostic handles the ramp PSP (τ = inf) only")
    x_test, _ = load_dataset(config.train.dataset, "test")
    trace = net.trace(net.encode(x_test[:images]))
    layers = []
    for k, i in enumerate(net.weighted):
        x, padding = net.layer_operands(i, trace.times[i])
        w = net.weight_of(i)
        t_out = trace.times[i + 1]
        started = time.perf_counter()
        t_rule = t_out.clamp(max=net.T)
        slope = potential_slope(x, w, t_rule, padding, net.T, bins=net.T)  # one bin per step: exact
        binned = latency_gain(t_rule, net.thresholds[k], "slope", potential_slope(x, w, t_rule, padding, net.T, bins), net.T)
        report = layer_report(t_out, slope, net.thresholds[k], net.T, binned)
        kind = "conv" if isinstance(net.layers[i], Conv) else "dense"
        layers.append({"layer": k, "kind": kind, "seconds": round(time.perf_counter() - started, 1), **report})
        print(f"{model_path.parent.name} layer {k} ({kind}): {json.dumps(report)}", flush=True)
    return {"model": str(model_path.relative_to(ROOT)) if model_path.is_relative_to(ROOT) else str(model_path),
            "network": config.model.network, "dataset": config.train.dataset, "input_power": config.model.input_power,
            "T": net.T, "images": images, "slope_bins": bins, "layers": layers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=DEFAULT_MODELS, help="saved models (default: the kept fashion-rcsnn and mnist-rcsnn)")
    parser.add_argument("--images", type=int, default=16, help="official test images per model (default 16)")
    parser.add_argument("--bins", type=int, default=8, help="time bins of the training-time slope (rule.slope_bins) compared with the exact one (default 8)")
    parser.add_argument("--out", default="results/latency-derivative.json", help="result JSON")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    provenance = run_provenance(ROOT, "benchmarks/latency_derivative.py")
    started = time.perf_counter()
    rows = [measure(ROOT / m if not Path(m).is_absolute() else Path(m), args.images, args.bins) for m in args.models]
    result = {
        **provenance,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "models": rows,
    }
    out = ROOT / args.out
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
