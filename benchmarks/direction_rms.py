"""How large are STiDi-BP's update directions, layer by layer, at the start of training?

Usage::

    python benchmarks/direction_rms.py      # writes results/direction-rms.json

Adam turns every real weight's direction into a step of about ``lr × std_l`` (``std_l`` the
layer's initial weight std, which ``[train] lr`` is relative to), whatever the direction's
size; plain SGD (``[train] optimizer = "sgd"``) steps by ``lr × std_l × G``. To compare the two
at equal step sizes this script initialises the network of a reproduction config as
training does, computes the rule's direction ``G_l`` on its first ``--batches`` training
batches (in order, no shuffling) and reports per layer the RMS of ``G_l``, its RMS relative
to ``std_l``, the share of nonzero entries, and ``sgd_lr_matching_adam``: the config's Adam
rate divided by the RMS of ``G_l`` (averaged over the batches), the SGD rate whose steps have
the RMS size of Adam's. ``benchmarks/sweeps/bcsnn-sgd.toml`` takes its rates from it.

This is a diagnostic: nothing in training reads it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stidi.config import load_config  # noqa: E402
from stidi.io import atomic_write_json, build_network  # noqa: E402
from stidi.network import per_layer  # noqa: E402
from stidi.provenance import run_provenance  # noqa: E402
from stidi.stidi_bp import RuleOptions, update_directions  # noqa: E402
from stidi.train import builtin_data, initialise  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", default="fashion-bcsnn", help="a config in benchmarks/configs/ (default: fashion-bcsnn)")
    parser.add_argument("--batches", type=int, default=3, help="training batches to measure (default: 3)")
    parser.add_argument("--train-limit", type=int, default=2000,
                        help="training images loaded; initialisation calibrates on a random draw from them (default: 2000)")
    parser.add_argument("--out", default=str(ROOT / "results" / "direction-rms.json"))
    args = parser.parse_args(argv)
    provenance = run_provenance(ROOT, "benchmarks/direction_rms.py")
    config = load_config(ROOT / "benchmarks" / "configs" / f"{args.config}.toml", {"train": {"train_limit": args.train_limit}})
    torch.manual_seed(0)
    net = build_network(config)
    train_set, _ = builtin_data(config)
    initialise(net, config, train_set)
    rule = RuleOptions(**vars(config.rule))
    stds = [float(w.std()) for w in net.weights]
    lrs = per_layer(config.train.lr, len(net.weights), "train.lr")
    B = config.train.batch_size
    rms: list[list[float]] = [[] for _ in net.weights]
    nonzero: list[list[float]] = [[] for _ in net.weights]
    for b in range(args.batches):
        idx = torch.arange(b * B, (b + 1) * B)
        trace = net.trace(train_set.spike_times(idx, net))
        for k, g in enumerate(update_directions(net, trace, train_set.labels[idx], rule)):
            rms[k].append(float(g.pow(2).mean().sqrt()))
            nonzero[k].append(float((g != 0).double().mean()))
    layers = []
    for k, i in enumerate(net.weighted):
        mean_rms = sum(rms[k]) / len(rms[k])
        layers.append({"layer": k, "spec_index": i, "initial_weight_std": stds[k], "rms_by_batch": rms[k],
                       "rms_over_std_by_batch": [r / stds[k] for r in rms[k]], "nonzero_by_batch": nonzero[k],
                       "adam_lr": lrs[k], "sgd_lr_matching_adam": lrs[k] / mean_rms})
    result = {**provenance, "config": args.config, "network": config.model.network, "batches": args.batches,
              "batch_size": B, "train_limit": args.train_limit, "layers": layers}
    atomic_write_json(args.out, result)
    for layer in layers:
        print(f"layer {layer['layer']}: RMS {[round(r, 3) for r in layer['rms_by_batch']]}, "
              f"SGD lr matching Adam's {layer['adam_lr']}: {layer['sgd_lr_matching_adam']:.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
