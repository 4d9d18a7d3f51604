"""Ablation of the STiDi-BP options on a fixed budget: each option against the specification's defaults.

Usage::

    python benchmarks/ablation.py                          # the issue's budget: 10,000 MNIST images, 3 epochs, 3 seeds
    python benchmarks/ablation.py --images 5000 --epochs 2 --network 784-400-10
    python benchmarks/ablation.py --jobs 16 --threads 1      # 16 runs at once, one thread each
    python benchmarks/render_results.py                    # then: the table in docs/results.md

Every variant changes one option of ``docs/algorithm.md`` and keeps the rest. Each
(variant, seed) trains from scratch on the first ``--images`` training images and is
scored on the full 10,000-image test set after the last epoch (no epoch selection, so
nothing is chosen on the test set). Results go to ``results/ablation.json`` after every
run (atomically); a rerun skips the (variant, seed) pairs already there for the same
budget, so an interrupted ablation continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "results" / "ablation.json"

#: variant name -> (config overrides, what it tests)
VARIANTS: dict[str, tuple[dict, str]] = {
    "specification defaults": ({}, "∂t/∂u ≈ −t/θ, fired-before mask, ramp PSP (τ = ∞), forced firing, L2 error norm, margin γ = 5"),
    "margin γ = 60": ({"rule": {"gamma": 60.0}}, "a wide target margin (the first recipe's)"),
    "latency derivative −1": ({"rule": {"latency_derivative": "unit"}}, "∂t/∂u ≈ −1 instead of −t/θ"),
    "gate ε′, τ = 32": ({"rule": {"displacement_gate": "slope"}, "model": {"tau": 32.0}}, "displacement gate ε′ (τ = 32; for the ramp ε′ is the mask up to a constant)"),
    "mask, τ = 32": ({"model": {"tau": 32.0}}, "PSP rise time τ = 32 with the mask gate"),
    "τ = 1 (step PSP)": ({"model": {"tau": 1.0}}, "the step PSP of S4NN"),
    "no forced firing": ({"model": {"forced_firing": False}}, "silent outputs stay silent in the readout"),
    "no error normalisation": ({"rule": {"error_norm": "none"}}, "raw errors (target − t)/T"),
    "revival ρ = 0.1": ({"rule": {"revival": 0.1}}, "silent hidden neurons are asked to fire again"),
}


def merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) for k, v in base.items()}
    for section, values in extra.items():
        out.setdefault(section, {}).update(values)
    return out


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"runs": []}


def save(data: dict, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def summary(data: dict) -> list[dict]:
    """Mean ± std of the test accuracy per (budget, variant)."""
    groups: dict[tuple, list[dict]] = {}
    for r in data["runs"]:
        groups.setdefault((json.dumps(r["budget"], sort_keys=True), r["variant"]), []).append(r)
    rows = []
    for (budget, variant), runs in groups.items():
        acc = [r["test_accuracy"] for r in runs]
        rows.append({"budget": json.loads(budget), "variant": variant, "seeds": len(acc),
                     "mean": statistics.mean(acc), "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                     "hidden_firing": statistics.mean(r["firing_fraction"][0] for r in runs),
                     "seconds": statistics.mean(r["train_seconds"] for r in runs)})
    return rows


def run_one(name: str, seed: int, base: dict, budget: dict, images: int, threads: int, commit: str, command: str) -> dict:
    """Train one (variant, seed) from scratch and return its record (runs in a worker process with --jobs)."""
    os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from stidi.config import load_config
    from stidi.data import load_dataset
    from stidi.train import Dataset, train

    torch.set_num_threads(threads)
    x_train, y_train = load_dataset("mnist", "train", log=lambda m: None)
    x_test, y_test = load_dataset("mnist", "test", log=lambda m: None)
    train_set, test_set = Dataset(x_train[:images], y_train[:images]), Dataset(x_test, y_test)
    overrides, _ = VARIANTS[name]
    config = load_config(None, merge(merge(base, overrides), {"train": {"seed": seed}}))
    start = time.time()
    with tempfile.TemporaryDirectory() as out:
        _, history = train(config, out, data=(train_set, test_set), progress=False, log=lambda m: None)
    last = history[-1]
    return {"variant": name, "seed": seed, "budget": budget, "test_accuracy": last["test_accuracy"],
            "firing_fraction": last["test_firing_fraction"], "train_seconds": round(time.time() - start, 1),
            "config": config.to_dict(), "commit": commit, "command": command}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="32C5-P2-64C5-P2-10")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch and numba threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), help="only these variants (default: all)")
    parser.add_argument("--base", metavar="TOML", help="config whose [model]/[rule]/[train] the variants start from")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results file (default: results/ablation.json)")
    args = parser.parse_args()
    out = Path(args.out)

    import tomllib
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    base = tomllib.loads(Path(args.base).read_text()) if args.base else {}
    input_shape = [784] if args.network.split("-")[0] == "784" else [1, 28, 28]
    base = merge(base, {"model": {"network": args.network, "input_shape": input_shape},
                        "train": {"epochs": args.epochs, "threads": args.threads, "validation": 0, "train_limit": 0}})
    budget = {"network": args.network, "images": args.images, "epochs": args.epochs, "base": args.base}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    commit = commit or os.environ.get("STIDI_COMMIT", "unknown")
    command = "python benchmarks/ablation.py " + " ".join(sys.argv[1:])
    data = load(out)
    # seeds outermost: an interrupted ablation has every variant at one seed before any at two
    todo = [(name, seed) for seed in range(args.seeds) for name in args.variants or list(VARIANTS)
            if not any(r["variant"] == name and r["seed"] == seed and r["budget"] == budget for r in data["runs"])]

    def done(record: dict) -> None:
        data["runs"].append(record)
        data["summary"] = summary(data)
        save(data, out)
        print(f"{record['variant']} seed {record['seed']}: test accuracy {record['test_accuracy']:.4f} "
              f"({record['train_seconds']:.0f} s)", flush=True)

    job_args = [(name, seed, base, budget, args.images, args.threads, commit, command) for name, seed in todo]
    if args.jobs <= 1:
        for a in job_args:
            done(run_one(*a))
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_one, *a) for a in job_args]
            for future in as_completed(futures):
                done(future.result())
    data["summary"] = summary(data)
    save(data, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
