"""Reproduction runs of the paper's networks: train one named configuration, record it in results/accuracy.json.

Usage::

    python benchmarks/reproduce.py mnist-rcsnn            # start (or continue) the run
    nohup python benchmarks/reproduce.py mnist-fc > /dev/null 2>&1 &   # in the background
    python benchmarks/reproduce.py --list                 # the named runs and their configs

Each name is a TOML file in ``benchmarks/configs/`` (every choice of the recipe is a
configuration field there). The run trains with ``stidi train --config …`` into
``results/runs/NAME`` with its log in ``results/NAME.log``; run the same command
again after an interruption and it resumes from the last checkpoint, appending to the log. A
run that starts from scratch (no checkpoint in ``results/runs/NAME``) starts a new log, so the
log, and the commit recorded from its first line, belong to the run in that directory. The run directory
lives under ``results/`` so that its checkpoint (1–4 MB for most runs) can be committed and a
long run continued on another machine or in a later session; fashion-rcsnn's finished
checkpoint (55 MB) is kept out of git by ``.gitignore``, and tests/test_repository.py
refuses any tracked file over 16 MiB. When it ends, the entry
``NAME`` of ``results/accuracy.json`` is replaced (written atomically) with: the test
accuracy on the full official test set at the epoch with the best validation accuracy
(the validation split is carved from the training set; the test set never picks the
epoch), that epoch, training seconds, threads, the exact command and the git commit read
when the run started (``source_tree_dirty`` says whether ``src/`` had uncommitted edits).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "benchmarks" / "configs"
RESULTS = ROOT / "results"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def commits_in_log(log: Path) -> list[str]:
    """Commits of every invocation of a run (one header line each in its log), in order, without repeats."""
    found: list[str] = []
    for line in log.read_text().splitlines() if log.exists() else []:
        if line.startswith("# ") and "(commit " in line:
            commit = line.split("(commit ", 1)[1].split(",")[0].rstrip(")")
            if commit not in found:
                found.append(commit)
    return found


def record(name: str, config_path: Path, out: Path, command: str, log: Path) -> dict:
    """The accuracy.json entry of a finished (or partly finished) run."""
    sys.path.insert(0, str(ROOT / "src"))
    from stidi.provenance import software_versions
    from stidi.train import best_record

    config = tomllib.loads(config_path.read_text())
    history, timing = read_jsonl(out / "metrics.jsonl"), read_jsonl(out / "timing.jsonl")
    best = best_record(history)
    model = config.get("model", {})
    return {
        "name": name,
        "dataset": config.get("train", {}).get("dataset", "mnist"),
        "network": model.get("network", "32C5-P2-64C5-P2-10"),
        "binary": bool(model.get("binary", False)),
        "epochs": len(history),
        "epochs_planned": config.get("train", {}).get("epochs"),
        "test_accuracy": best["test_accuracy"],
        "val_accuracy": best.get("val_accuracy"),
        "best_epoch": best["epoch"],
        "test_accuracy_by_epoch": [r["test_accuracy"] for r in history],
        "val_accuracy_by_epoch": [r.get("val_accuracy") for r in history],
        "firing_fraction_at_best": best.get("test_firing_fraction"),
        "train_seconds": round(sum(t["train_seconds"] for t in timing), 1),
        "threads": config.get("train", {}).get("threads") or os.cpu_count(),
        "software": software_versions(),
        "command": command,
        "config": str(config_path.relative_to(ROOT)),
        "commit": (commits_in_log(log) or ["unknown"])[0],
        "commits": commits_in_log(log),
        "source_tree_dirty": any(", src dirty" in line for line in log.read_text().splitlines() if line.startswith("# ")),
        "log": str(log.relative_to(ROOT)),
    }


def write_entry(entry: dict) -> Path:
    """Replace (or add) ``entry`` in results/accuracy.json, atomically."""
    path = RESULTS / "accuracy.json"
    data = json.loads(path.read_text()) if path.exists() else {"runs": []}
    data["runs"] = [r for r in data["runs"] if r["name"] != entry["name"]] + [entry]
    data["runs"].sort(key=lambda r: r["name"])
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def main() -> int:
    names = sorted(p.stem for p in CONFIGS.glob("*.toml"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", choices=names, help="which run")
    parser.add_argument("--list", action="store_true", help="list the named runs")
    parser.add_argument("--record-only", action="store_true", help="only (re)write the accuracy.json entry from results/runs/NAME")
    args = parser.parse_args()
    if args.list or not args.name:
        for n in names:
            print(f"{n}: {CONFIGS / (n + '.toml')}")
        return 0
    config_path = CONFIGS / f"{args.name}.toml"
    out = RESULTS / "runs" / args.name
    log = RESULTS / f"{args.name}.log"
    command = f"python benchmarks/reproduce.py {args.name}"
    commit, dirty = git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "src"))
    if not args.record_only:
        train = [sys.executable, "-m", "stidi.cli", "train", "--config", str(config_path), "--out", str(out), "--no-progress"]
        resuming = (out / "checkpoint.safetensors").exists() or (out / "checkpoint.prev.safetensors").exists()
        if resuming:
            train.append("--resume")
        with open(log, "a" if resuming else "w") as f:
            f.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {command} -> {' '.join(train[2:])} (commit {commit}{', src dirty' if dirty else ''})\n")
            f.flush()
            code = subprocess.run(train, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
        if code != 0:
            print(f"{args.name}: stidi train exited with {code}; see {log}", file=sys.stderr)
            return code
    if not (out / "metrics.jsonl").exists():
        print(f"{args.name}: no finished epoch in {out}", file=sys.stderr)
        return 1
    path = write_entry(record(args.name, config_path, out, command, log))
    print(f"{args.name}: recorded in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
