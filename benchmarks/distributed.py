"""One process against N torchrun processes: same seed and global batch, same accuracy?

Usage: python benchmarks/distributed.py [--train-limit N] [--epochs N] [--runs 1x2 1x1 2x1 1x1:s1] [--full]

Start it in the background with its log in results/:

    nohup python benchmarks/distributed.py > results/distributed.log 2>&1 &

Trains the default network (``stidi train`` defaults: 32C5-P2-64C5-P2-10, T = 256,
global batch 32, seed 0) once per run ``PxT`` (P processes of T threads each; PyTorch
and numba both get T threads; ``PxT:sN`` with seed N instead), each in a fresh run directory under
``runs/distributed/``: one process as ``python -m stidi train``, P > 1 as
``torchrun --nproc_per_node=P -m stidi train`` (gloo on 127.0.0.1). Then writes
``results/distributed.json``: the commands, git commit, load averages, per-run
training images/s and test accuracy, and against the first run the accuracy
difference in points and the largest weight difference between the final models.
Another seed is the control: how far apart two equally valid runs end. By default the
runs are reduced (the first 6000 training images, 1 epoch, the full test set);
``--full`` runs the default job (all of MNIST, the default epochs), which takes hours
per run on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def _command(procs: int, threads_each: int, seed: int, train_args: list[str], out: Path) -> list[str]:
    threads = ["--threads", str(threads_each), "--seed", str(seed)]
    if procs == 1:
        return [sys.executable, "-m", "stidi", "train", *train_args, *threads, "--out", str(out)]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port()), "-m", "stidi", "train", *train_args, *threads, "--out", str(out)]


def _max_weight_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa if k.startswith("weight."))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-limit", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--runs", nargs="+", default=["1x2", "1x1", "2x1", "1x1:s1"],
                        help="PxT[:sN]: P processes of T threads each (seed N, default 0); the first is the reference")
    parser.add_argument("--full", action="store_true", help="the default job: all of MNIST, the default epochs")
    parser.add_argument("--out", default=str(ROOT / "runs" / "distributed"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    train_args = ["--no-progress", "--batch-size", "32"]
    if not args.full:
        train_args += ["--train-limit", str(args.train_limit), "--epochs", str(args.epochs)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = {"commit": _git("rev-parse", "HEAD"), "source_tree_dirty": bool(_git("status", "--porcelain", "src"))}
    runs = []
    for spec in args.runs:
        shape, _, seed = spec.partition(":s")
        procs, threads_each = (int(x) for x in shape.split("x"))
        seed = int(seed or 0)
        out = Path(args.out) / spec.replace(":", "-")
        shutil.rmtree(out, ignore_errors=True)
        command = _command(procs, threads_each, seed, train_args, out)
        run_env = {**env, "OMP_NUM_THREADS": str(threads_each), "NUMBA_NUM_THREADS": str(threads_each)}
        print(f"$ NUMBA_NUM_THREADS={threads_each} OMP_NUM_THREADS={threads_each} {' '.join(command)}", flush=True)
        load_before, t0 = os.getloadavg(), time.time()
        proc = subprocess.run(command, cwd=ROOT, env=run_env)
        if proc.returncode != 0:
            print(f"run with {procs} processes failed (exit status {proc.returncode})", file=sys.stderr)
            return proc.returncode
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        timing = [json.loads(line) for line in (out / "timing.jsonl").read_text().splitlines()]
        runs.append({
            "processes": procs,
            "threads_per_process": threads_each,
            "seed": seed,
            "command": f"NUMBA_NUM_THREADS={threads_each} OMP_NUM_THREADS={threads_each} " + " ".join(["python"] + command[1:]),
            "out": str(out),
            "wall_seconds": round(time.time() - t0, 1),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "train_images_per_s": [r["images_per_s"] for r in timing],
            "train_seconds": [r["train_seconds"] for r in timing],
            "train_accuracy": [r["train_accuracy"] for r in history],
            "test_accuracy": history[-1]["test_accuracy"],
            "epochs": history,
        })
        print(f"{spec} ({procs} process(es) x {threads_each} thread(s)): test accuracy {history[-1]['test_accuracy']:.4f}, "
              f"{timing[-1]['images_per_s']:.1f} training images/s", flush=True)
    base = runs[0]
    for run in runs[1:]:
        run["test_accuracy_minus_first_points"] = round(100 * (run["test_accuracy"] - base["test_accuracy"]), 3)
        run["max_weight_difference_to_first"] = _max_weight_difference(Path(base["out"]), Path(run["out"]))
    import torch

    result = {
        "name": "distributed",
        "command": "python benchmarks/distributed.py " + " ".join(sys.argv[1:]),
        **start,
        "commit_at_end": _git("rev-parse", "HEAD"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "job": "default job (full MNIST)" if args.full else f"reduced: first {args.train_limit} training images, "
               f"{args.epochs} epoch(s), full test set",
        "cpu": platform.processor() or platform.machine(),
        "cores": cores,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "runs": runs,
    }
    path = ROOT / "results" / ("distributed-full.json" if args.full else "distributed.json")
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
