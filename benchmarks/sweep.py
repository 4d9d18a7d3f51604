"""Recipe sweep: train many variants of a configuration side by side, one core each, and tabulate them.

Usage::

    python benchmarks/sweep.py mnist-recipe --jobs 16          # run (or continue) every variant
    python benchmarks/sweep.py mnist-recipe --jobs 16 --deadline 480   # stop them all after 480 s
    python benchmarks/sweep.py mnist-recipe --collect-only     # only rewrite the table

A sweep is a TOML file ``benchmarks/sweeps/NAME.toml``::

    base = "mnist-rcsnn"                 # a config in benchmarks/configs/
    [common]                             # overrides for every variant
    "train.epochs" = 3
    [variants.base]                      # the control: no further change
    [variants."lr-0.02"]
    "train.lr" = 0.02

A sweep whose control was trained by an earlier sweep (same base config and budget) names
it instead of training it again: ``control = "OTHER-SWEEP/VARIANT"``; the results table of
docs/results.md then shows that variant's row as the control.

Each variant trains with ``python -m stidi train --config`` (its merged config is written
beside its run) into ``runs/sweeps/NAME/VARIANT`` with one PyTorch and one numba thread,
so ``--jobs`` variants share the machine without oversubscribing it; running the command
again resumes unfinished variants from their checkpoints. ``--deadline`` sends SIGTERM to
every variant still training after that many seconds (each saves a checkpoint and stops).
Then ``results/sweep-NAME.json`` lists per variant its overrides, the epochs done, the
training, validation and test accuracy of every epoch, the firing fractions and the training
images/s. ``--collect-only`` rewrites it from the run directories and keeps the training's
command, jobs and wall time from the file it replaces. Variants are compared on validation
accuracy (carved from the training set); the test column is there to show the two agree,
not to choose.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "benchmarks" / "sweeps"
CONFIGS = ROOT / "benchmarks" / "configs"


def _git(*args: str) -> str | None:
    """Output of a git command (possibly empty), or None where git is missing or fails."""
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _commit(*options: str) -> str:
    """``git rev-parse [options] HEAD``, or $STIDI_COMMIT where the copy has no git (a machine the tree was copied to)."""
    return _git("rev-parse", *options, "HEAD") or os.environ.get("STIDI_COMMIT", "unknown")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float) and value == float("inf"):
        return "inf"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


SWEEP_KEYS = {"base", "common", "variants", "control"}


def read_sweep(path: Path) -> dict:
    """The sweep file at ``path``, checked: a ``base`` config that exists, no unknown top-level key,
    at least one variant, and ``control`` (if any) of the form ``"SWEEP/VARIANT"``.

    Raises SystemExit with a message naming the file and the field, so a typo stops the sweep
    before hours of training rather than after."""
    try:
        sweep = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SystemExit(f"{path}: not valid TOML: {exc}") from None
    unknown = set(sweep) - SWEEP_KEYS
    if unknown:
        raise SystemExit(f"{path}: unknown key {', '.join(sorted(unknown))}; a sweep has {', '.join(sorted(SWEEP_KEYS))}")
    if not isinstance(sweep.get("base"), str):
        raise SystemExit(f'{path}: base must name a config in {CONFIGS}, e.g. base = "mnist-rcsnn"')
    if not (CONFIGS / f"{sweep['base']}.toml").exists():
        raise SystemExit(f"{path}: base = {sweep['base']!r}, but there is no {CONFIGS / (sweep['base'] + '.toml')}")
    if not sweep.get("variants"):
        raise SystemExit(f'{path}: no variants; add at least one table [variants."NAME"]')
    control = sweep.get("control")
    if control is not None and (not isinstance(control, str) or control.count("/") != 1 or "" in control.split("/")):
        raise SystemExit(f'{path}: control = {control!r}; write it as "SWEEP/VARIANT", e.g. "fashion-revival/revival-0.01"')
    return sweep


def read_control(path: Path) -> tuple[str, dict, dict] | None:
    """The control that the sweep file at ``path`` borrows (``control = "SWEEP/VARIANT"``), as
    (SWEEP, that variant's row of results/sweep-SWEEP.json, that whole file: commit, software…), or None.

    Raises SystemExit naming the file when the named sweep has no results or no such variant."""
    control = read_sweep(path).get("control")
    if control is None:
        return None
    other, variant = control.split("/")
    source = ROOT / "results" / f"sweep-{other}.json"
    if not source.exists():
        raise SystemExit(f"{path}: control = {control!r}, but there is no {source.relative_to(ROOT)}")
    result = json.loads(source.read_text())
    rows = [r for r in result["rows"] if r["variant"] == variant]
    if not rows:
        raise SystemExit(f"{path}: control = {control!r}, but {source.relative_to(ROOT)} has no variant {variant!r}")
    return other, rows[0], result


def merged_config(base: dict, *overrides: dict) -> dict:
    """``base`` ({table: {key: value}}) with dotted ``"table.key"`` overrides applied in order."""
    merged = {table: dict(values) for table, values in base.items()}
    for override in overrides:
        for dotted, value in override.items():
            table, _, key = dotted.partition(".")
            if not key:
                raise SystemExit(f"sweep override {dotted!r} must be written 'table.key', e.g. 'train.lr'")
            merged.setdefault(table, {})[key] = value
    return merged


def to_toml(config: dict) -> str:
    lines = []
    for table, values in config.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def launch(config: dict, out: Path) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(to_toml(config))
    command = [sys.executable, "-m", "stidi", "train", "--config", str(out / "config.toml"), "--out", str(out),
               "--threads", "1", "--no-progress"]
    if (out / "checkpoint.safetensors").exists():
        command.append("--resume")
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = open(out / "train.log", "a")
    log.write(f"$ {' '.join(command)}  (commit {_commit('--short')})\n")
    log.flush()
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def summarise(variant: str, overrides: dict, out: Path) -> dict:
    history = read_jsonl(out / "metrics.jsonl")
    timing = read_jsonl(out / "timing.jsonl")
    seconds = sum(t.get("train_seconds", 0) for t in timing)
    images = sum(t.get("images_per_s", 0) * t.get("train_seconds", 0) for t in timing)
    best = max(history, key=lambda r: r.get("val_accuracy") or 0) if history else None
    auxiliary = {}  # rule.auxiliary_after: each training-only readout's accuracy on the training images
    if any("auxiliary_train_accuracy" in r for r in history):
        auxiliary = {"auxiliary_train_accuracy_by_epoch": [r.get("auxiliary_train_accuracy") for r in history]}
    return {
        "variant": variant,
        "overrides": overrides,
        "epochs_done": len(history),
        "train_accuracy_by_epoch": [r.get("train_accuracy") for r in history],
        "val_accuracy_by_epoch": [r.get("val_accuracy") for r in history],
        "test_accuracy_by_epoch": [r.get("test_accuracy") for r in history],
        "best_val_accuracy": best.get("val_accuracy") if best else None,
        "test_accuracy_at_best_val": best.get("test_accuracy") if best else None,
        "best_epoch": best.get("epoch") if best else None,
        "firing_fraction_last": history[-1].get("test_firing_fraction") if history else None,
        "train_seconds": round(seconds, 1),
        "train_images_per_s": round(images / seconds, 1) if seconds and images else None,
        **auxiliary,
    }


def _source_tree_dirty() -> bool | None:
    """Whether the code or the configs a variant trains with have uncommitted edits (None: no git to ask)."""
    status = _git("status", "--porcelain", "src", "benchmarks/configs")
    return None if status is None else bool(status)


def _any_dirty(launches: list[dict]) -> bool | None:
    """True if any launch ran on an edited tree, None if one could not tell, else False."""
    flags = [launch.get("source_tree_dirty") for launch in launches]
    return True if True in flags else (None if None in flags else False)


def read_launches(root: Path) -> list[dict]:
    """The launches recorded in ``root/launches.json`` (see :func:`record_launch`), oldest first."""
    path = root / "launches.json"
    return json.loads(path.read_text()) if path.exists() else []


def record_launch(root: Path) -> None:
    """Append the commit the variants are about to train on to ``root/launches.json``.

    The table is written when the last variant ends, possibly after later commits, so
    it takes its commit from the first launch, not from the tree at collection time.
    """
    launches = read_launches(root)
    # $STIDI_COMMIT first: a copy of the tree on another machine may carry a stale .git
    launches.append({"commit": os.environ.get("STIDI_COMMIT") or _commit(),
                     "source_tree_dirty": _source_tree_dirty(),
                     "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    root.mkdir(parents=True, exist_ok=True)
    (root / "launches.json").write_text(json.dumps(launches, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="sweep file benchmarks/sweeps/NAME.toml")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="variants trained at once (default: cores)")
    parser.add_argument("--deadline", type=float, default=0, help="SIGTERM every variant still running after this many seconds")
    parser.add_argument("--only", nargs="+", help="train only these variants")
    parser.add_argument("--collect-only", action="store_true", help="only rewrite results/sweep-NAME.json")
    parser.add_argument("--out", default=str(ROOT / "runs" / "sweeps"), help="parent of the run directories")
    args = parser.parse_args(argv)
    from stidi.provenance import software_versions

    path = SWEEPS / f"{args.name}.toml"
    if not path.exists():
        raise SystemExit(f"no sweep {path}; have: {', '.join(p.stem for p in sorted(SWEEPS.glob('*.toml')))}")
    sweep = read_sweep(path)
    base = tomllib.loads((CONFIGS / f"{sweep['base']}.toml").read_text())
    common = sweep.get("common", {})
    variants: dict[str, dict] = sweep.get("variants", {})
    unknown = set(args.only or []) - set(variants)
    if unknown:
        raise SystemExit(f"--only: no variant {', '.join(sorted(unknown))} in {path}")
    root = Path(args.out) / args.name
    started = time.time()

    if not args.collect_only:
        record_launch(root)
        queue = [v for v in variants if not args.only or v in args.only]
        running: dict[str, subprocess.Popen] = {}
        stopped = False
        while queue or running:
            while queue and len(running) < args.jobs and not stopped:
                variant = queue.pop(0)
                running[variant] = launch(merged_config(base, common, variants[variant]), root / variant)
                print(f"[{time.time() - started:6.0f}s] started {variant}", flush=True)
            if args.deadline and time.time() - started > args.deadline and not stopped:
                stopped = True
                queue.clear()
                print(f"[{time.time() - started:6.0f}s] deadline: stopping {', '.join(running)}", flush=True)
                for proc in running.values():
                    proc.send_signal(signal.SIGTERM)
            for variant, proc in list(running.items()):
                if proc.poll() is not None:
                    print(f"[{time.time() - started:6.0f}s] {variant} exited with {proc.returncode}", flush=True)
                    del running[variant]
            time.sleep(1)

    rows = [summarise(v, {**common, **variants[v]}, root / v) for v in variants]
    launches = read_launches(root)
    commit = launches[0]["commit"] if launches else _commit()
    target = ROOT / "results" / f"sweep-{args.name}.json"
    training = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "jobs": args.jobs,
                "wall_seconds": round(time.time() - started, 1)}
    if args.collect_only and target.exists():
        # the training's command, jobs and wall time, not those of this re-collection
        previous = json.loads(target.read_text())
        training = {key: previous.get(key, value) for key, value in training.items()}
    result = {
        "sweep": args.name,
        "base": sweep["base"],
        "base_at": f"benchmarks/configs/{sweep['base']}.toml as of {commit[:7]}",
        "command": training["command"],
        "commit": commit,
        "commits": list(dict.fromkeys(launch["commit"] for launch in launches)) or [commit],
        "source_tree_dirty": _any_dirty(launches) if launches else _source_tree_dirty(),
        "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "software": software_versions(),
        "jobs": training["jobs"],
        "wall_seconds": training["wall_seconds"],
        "rows": sorted(rows, key=lambda r: -(r["best_val_accuracy"] or 0)),
    }
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(target)
    print(f"{'variant':24s} {'epochs':>6s} {'val':>7s} {'test':>7s} {'img/s':>6s}")
    for r in result["rows"]:
        val, test = r["best_val_accuracy"], r["test_accuracy_at_best_val"]
        print(f"{r['variant']:24s} {r['epochs_done']:6d} {val or 0:7.4f} {test or 0:7.4f} {r['train_images_per_s'] or 0:6.0f}")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
