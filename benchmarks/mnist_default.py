"""Train the default network on full MNIST and record the result in results/.

Usage: python benchmarks/mnist_default.py [--epochs N] [--out DIR]

Start it in the background with its log in results/:

    nohup python benchmarks/mnist_default.py > results/mnist-default.log 2>&1 &

Runs ``stidi train`` with the default configuration (resumable: run it again to
continue), then writes ``results/mnist-default.json`` with the exact command, git
commit, thread count, per-epoch metrics and wall-clock time. Note: the commit is read when the run starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "runs" / "mnist-default"))
    args = parser.parse_args()
    command = [sys.executable, "-m", "stidi.cli", "train", "--epochs", str(args.epochs), "--out", args.out, "--no-progress"]
    if (Path(args.out) / "checkpoint.safetensors").exists():
        command.append("--resume")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True).stdout.strip())
    start = time.time()
    proc = subprocess.run(command, cwd=ROOT)
    if proc.returncode != 0:
        return proc.returncode
    history = [json.loads(line) for line in (Path(args.out) / "metrics.jsonl").read_text().splitlines()]
    timing = [json.loads(line) for line in (Path(args.out) / "timing.jsonl").read_text().splitlines()]
    import torch

    result = {
        "name": "mnist-default",
        "command": "python benchmarks/mnist_default.py --epochs %d" % args.epochs,
        "stidi_command": " ".join(["stidi"] + command[3:]),
        "commit": commit,
        "source_tree_dirty": dirty,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "wall_seconds_this_invocation": round(time.time() - start, 1),
        "train_seconds_total": round(sum(r["train_seconds"] for r in timing), 1),
        "train_images_per_s": [r["images_per_s"] for r in timing],
        "test_accuracy": history[-1]["test_accuracy"],
        "epochs": history,
        "timing": timing,
    }
    out = ROOT / "results" / "mnist-default.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}: test accuracy {result['test_accuracy']:.4f} after {len(history)} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
