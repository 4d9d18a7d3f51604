"""How far the real weights of a binary-weight run have drifted from their signs' scale.

Usage: python benchmarks/binary_drift.py [RUN ...] [--key NAME]   (default: fashion-bcsnn mnist-bcsnn)

The forward pass of a binary layer sees only ``α · sign(w)``; the rule updates the real
weights ``w``. A weight far beyond ``α`` needs many steps the other way before its sign
can flip, which is what ``[train] binary_clip`` bounds. For each binary layer of the
last checkpoint of each run in ``results/runs/RUN/`` (the real weights, not the moving
average), this prints and writes quantiles of ``|w| / α`` and the share of weights
beyond 3 α, to ``results/binary-drift.json``: one entry per run, replaced on rerun, named
after the run or ``--key`` (to keep the figures of a run that a later one replaces), with
the commit that trained it, from ``results/accuracy.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUANTILES = (0.5, 0.9, 0.99)


def layer_drift(w, alpha) -> dict:
    """Quantiles and maximum of ``|w| / α`` for one layer, and the share beyond 3 α (``α`` one number,
    or with ``binary_scale = "channel"`` a column of one per output neuron, reported as their mean)."""
    import torch

    alpha = torch.as_tensor(alpha, dtype=torch.float64)
    ratio = (w.detach().double().abs() / alpha).flatten()
    q = torch.quantile(ratio, torch.tensor(QUANTILES, dtype=torch.float64)).tolist()
    return {**{f"q{round(p * 100)}": round(v, 2) for p, v in zip(QUANTILES, q)},
            "max": round(float(ratio.max()), 2), "beyond_3_alpha": round(float((ratio > 3 * (1 + 1e-6)).double().mean()), 4),  # float32 w at exactly 3α rounds either way
            "alpha": float(alpha.mean())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=["fashion-bcsnn", "mnist-bcsnn"], help="run names under results/runs/")
    parser.add_argument("--key", help="name the entry NAME instead of the run's name (one run only)")
    args = parser.parse_args()
    if args.key and len(args.runs) != 1:
        parser.error("--key names one entry: give exactly one run")
    sys.path.insert(0, str(ROOT / "src"))
    from stidi.errors import StidiError
    from stidi.io import atomic_write_json, load_model
    from stidi.provenance import git_commit

    out = ROOT / "results" / "binary-drift.json"
    report = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    trained_at = {r["name"]: r.get("commit") for r in json.loads((ROOT / "results" / "accuracy.json").read_text())["runs"]}
    commit = git_commit(ROOT)
    for name in args.runs:
        path = ROOT / "results" / "runs" / name / "checkpoint.safetensors"
        try:
            net, config, _ = load_model(path)
        except StidiError as exc:
            print(f"binary_drift: {exc}", file=sys.stderr)
            return 1
        if not any(net.binary):
            print(f"binary_drift: {path}: run '{name}' has no binary layer", file=sys.stderr)
            return 1
        layers = {f"weighted layer {k} ({net.layers[i].token})": layer_drift(net.weights[k], net.scale(k))
                  for k, i in enumerate(net.weighted) if net.binary[k]}
        report["runs"][args.key or name] = {"checkpoint": str(path.relative_to(ROOT)), "trained_at": trained_at.get(name),
                                "network": config.model.network,
                                "binary_scale": config.model.binary_scale, "binary_clip": config.train.binary_clip,
                                "layers": layers,
                                "command": " ".join(["python benchmarks/binary_drift.py", *sys.argv[1:]]), "commit": commit}
        for label, d in layers.items():
            print(f"{name} {label}: |w|/α median {d['q50']}, 90 % {d['q90']}, 99 % {d['q99']}, max {d['max']}; "
                  f"{d['beyond_3_alpha']:.1%} beyond 3α")
    atomic_write_json(out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
