"""How often does a pooling window's winner have company: another neuron firing at or just after it?

Usage::

    python benchmarks/pool_ties.py               # writes results/pool-ties.json
    python benchmarks/pool_ties.py --images 100  # quicker

An earliest-spike pooling neuron fires at the minimum of its window, and the specification hands
its displacement to the window's winner only. Spike times are whole steps, so a neuron of the window
may fire in the winner's step (a tie) or a step or two after it; then a delay asked of the winner
alone leaves the pooled time where it was, or moves it by less than asked. This is what
``[rule] pool_route = "ties"`` addresses (:func:`stidi.kernels.vectorised.route_to_ties`).

For each trained model given (default: the kept Fashion-MNIST models) and the first ``--images``
official test images, per pooling layer, over the windows whose winner fired:

* ``within``: for each ``k`` in ``--steps``, the fraction of windows with another neuron firing at
  most ``k`` steps after the winner (``"0"``: a tie);
* ``runner_up_silent``: the fraction whose other neurons all stayed silent;
* ``fired``: the fraction of all windows whose winner fired.

This is a diagnostic: nothing in training reads it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stidi.data import load_dataset  # noqa: E402
from stidi.io import atomic_write_json, load_model  # noqa: E402
from stidi.layers import Pool  # noqa: E402
from stidi.provenance import run_provenance  # noqa: E402

DEFAULT_MODELS = ["results/runs/fashion-rcsnn/best.safetensors", "results/runs/fashion-bcsnn/best.safetensors"]


def window_gaps(t_in: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each ``k × k`` window's earliest time and the gap from it to the window's second earliest
    (``inf`` if only one neuron fired), over the windows that fit (as pooling takes them)."""
    B, C, H, W = t_in.shape
    H, W = H - H % k, W - W % k
    windows = t_in[..., :H, :W].reshape(B, C, H // k, k, W // k, k).permute(0, 1, 2, 4, 3, 5).reshape(B, C, H // k, W // k, k * k)
    ordered = windows.sort(dim=-1).values
    return ordered[..., 0], ordered[..., 1] - ordered[..., 0]


def pool_report(t_in: torch.Tensor, k: int, steps: list[int]) -> dict:
    first, gap = window_gaps(t_in, k)
    fired = torch.isfinite(first)
    gap = gap[fired]
    return {
        "windows": int(first.numel()),
        "fired": round(float(fired.double().mean()), 4),
        "within": {str(s): round(float((gap <= s).double().mean()), 4) for s in steps},
        "runner_up_silent": round(float(torch.isinf(gap).double().mean()), 4),
    }


def measure(model_path: Path, images: int, steps: list[int]) -> dict:
    net, config, _ = load_model(model_path)
    x_test, _ = load_dataset(config.train.dataset, "test")
    trace = net.trace(net.encode(x_test[:images]))
    pools = []
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Pool):
            report = pool_report(trace.times[i], layer.kernel, steps)
            pools.append({"layer_index": i, "kernel": layer.kernel, **report})
            print(f"{model_path.parent.name} pooling layer {i}: {report}", flush=True)
    return {"model": str(model_path.relative_to(ROOT)) if model_path.is_relative_to(ROOT) else str(model_path),
            "network": config.model.network, "binary": config.model.binary, "dataset": config.train.dataset,
            "T": net.T, "images": images, "pools": pools}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=DEFAULT_MODELS, help="saved models (default: the kept fashion-rcsnn and fashion-bcsnn)")
    parser.add_argument("--images", type=int, default=1000, help="official test images per model (default 1000)")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 1, 2, 3], help="gaps after the winner to count (default 0 1 2 3)")
    parser.add_argument("--out", default="results/pool-ties.json", help="result JSON")
    args = parser.parse_args()
    if args.images < 1 or any(s < 0 for s in args.steps):
        parser.error("--images must be ≥ 1 and every --steps value ≥ 0")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    provenance = run_provenance(ROOT, "benchmarks/pool_ties.py")
    started = time.perf_counter()
    rows = [measure(ROOT / m if not Path(m).is_absolute() else Path(m), args.images, args.steps) for m in args.models]
    atomic_write_json(ROOT / args.out, {**provenance, "wall_seconds": round(time.perf_counter() - started, 1), "models": rows})
    print(f"wrote {ROOT / args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
