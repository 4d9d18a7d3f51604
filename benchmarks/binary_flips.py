"""How much a few sign flips cost a trained binary-weight network.

Usage: python benchmarks/binary_flips.py [RUN] [--draws N] [--seed S] [--key NAME]   (default: fashion-bcsnn, 5 draws)

The validation accuracy of a binary run can swing by a point or more between consecutive
epochs even when the learning rate has almost reached 0. This measures why: between the
best-by-validation model of ``results/runs/RUN/`` (``best.safetensors``) and the last
epoch's (``model.safetensors``) it counts the weights whose sign differs, per layer; then
it flips the same number of signs per layer at random in the best model (``--draws``
times) and measures the validation accuracy of each, on the run's own validation images
(the last ``train.validation`` training images). If random flips cost about as much as
the last epoch's, the swings are the network's sensitivity to any few flips, not a
direction learned in that epoch. Writes ``results/binary-flips.json``: one entry per run,
replaced on rerun, named after the run or ``--key`` (to keep the figures of a run that a
later one replaces), with the command, this commit and the commit that trained the run.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="fashion-bcsnn", help="run name under results/runs/ (default: fashion-bcsnn)")
    parser.add_argument("--draws", type=int, default=5, help="random flip patterns to measure (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random flips (default: 0)")
    parser.add_argument("--key", help="name the entry NAME instead of the run's name")
    args = parser.parse_args()
    if args.draws < 1:
        parser.error("--draws must be at least 1")
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from stidi.api import predict
    from stidi.data import load_dataset
    from stidi.errors import StidiError
    from stidi.io import atomic_write_json, load_model
    from stidi.provenance import git_commit

    run_dir = ROOT / "results" / "runs" / args.run
    try:
        best, config, best_info = load_model(run_dir / "best.safetensors")
        last, _, last_info = load_model(run_dir / "model.safetensors")
    except StidiError as exc:
        print(f"binary_flips: {exc}", file=sys.stderr)
        return 1
    if best_info.get("best_epoch") == len(last_info.get("history", [])):
        print(f"binary_flips: {run_dir}: the best model is the last epoch's, so no sign differs between them", file=sys.stderr)
        return 1
    if not any(best.binary):
        print(f"binary_flips: {run_dir}: run '{args.run}' has no binary layer", file=sys.stderr)
        return 1
    if config.train.validation <= 0:
        print(f"binary_flips: {run_dir}: run '{args.run}' held out no validation images (train.validation = 0)", file=sys.stderr)
        return 1
    images, labels = load_dataset(config.train.dataset, "train", log=lambda message: None)
    images, labels = images[-config.train.validation:], labels[-config.train.validation:]

    def accuracy(net) -> float:
        return float((predict(net, images).classes.numpy() == labels).mean())

    binary = [k for k in range(len(best.weights)) if best.binary[k]]
    flips = {k: int((torch.sign(best.weights[k]) != torch.sign(last.weights[k])).sum()) for k in binary}
    best_acc, last_acc = accuracy(best), accuracy(last)
    print(f"{args.run}: best (epoch {best_info.get('best_epoch')}) {best_acc:.4f}, last {last_acc:.4f}; "
          f"signs that differ per binary layer: {flips}", flush=True)
    generator = torch.Generator().manual_seed(args.seed)
    random_acc = []
    for draw in range(args.draws):
        net = copy.deepcopy(best)
        with torch.no_grad():
            for k, count in flips.items():
                chosen = torch.randperm(net.weights[k].numel(), generator=generator)[:count]
                net.weights[k].view(-1)[chosen] *= -1
        random_acc.append(accuracy(net))
        print(f"  random flips, draw {draw + 1}/{args.draws}: {random_acc[-1]:.4f}", flush=True)

    out = ROOT / "results" / "binary-flips.json"
    report = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    trained_at = {r["name"]: r.get("commit") for r in json.loads((ROOT / "results" / "accuracy.json").read_text())["runs"]}
    report["runs"][args.key or args.run] = {
        "run": args.run, "trained_at": trained_at.get(args.run),
        "best_epoch": best_info.get("best_epoch"), "epochs": len(last_info.get("history", [])),
        "validation_images": config.train.validation,
        "signs_per_layer": {str(k): best.weights[k].numel() for k in binary},
        "flipped_between_best_and_last": {str(k): v for k, v in flips.items()},
        "val_accuracy_best": best_acc, "val_accuracy_last": last_acc,
        "val_accuracy_best_with_random_flips": random_acc,
        "random_flip_loss_mean": round(best_acc - statistics.mean(random_acc), 4),
        "random_flip_loss_std": round(statistics.stdev(random_acc), 4) if len(random_acc) > 1 else None,
        "command": " ".join(["python benchmarks/binary_flips.py", *sys.argv[1:]]),
        "commit": git_commit(ROOT),
    }
    atomic_write_json(out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
