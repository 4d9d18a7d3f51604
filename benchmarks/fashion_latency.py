"""How much of Fashion-MNIST's evidence has reached the output layer by its decision time?

Usage::

    python benchmarks/fashion_latency.py        # writes results/fashion-latency.json

The earliest-spike readout decides at the first output spike, so it can only use the
hidden spikes that came before. For a network initialised as fashion-rcsnn (seed 0),
with the plain encoding (``input_power = 1``) and with the contrast curve ``p = 0.1``,
this script records the quantiles of the pooled second convolution's spike times on
15,000 training images and fits a linear classifier (softmax, Adam, full batch) on the
potentials ``(t* − t_i)⁺ / T`` those spikes would have produced by a cut-off step ``t*``:
on the first 10,000 images, scored on the other 5,000. The accuracy at ``t* = T`` is
what a readout that waited for every hidden spike could reach; the accuracy at the
decision times a trained network actually uses (about step 200 on Fashion-MNIST) is
what the earliest-spike readout can reach. If ``results/runs/fashion-rcsnn/best.safetensors``
exists, the trained network's decision times on the same images are recorded too.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stidi.api import load, predict  # noqa: E402
from stidi.config import load_config  # noqa: E402
from stidi.data import load_dataset  # noqa: E402
from stidi.io import atomic_write_json, build_network  # noqa: E402
from stidi.provenance import git_commit  # noqa: E402
from stidi.train import Dataset, initialise  # noqa: E402

CUTOFFS = [120, 160, 200, 230, 256]
FIT, HELD_OUT = 10_000, 5_000


def pooled_times(net, data: Dataset) -> torch.Tensor:
    """Spike times of the last hidden layer (the output layer's inputs), flattened per image."""
    out = []
    for lo in range(0, len(data), 500):
        trace = net.trace(data.spike_times(slice(lo, lo + 500), net))
        out.append(trace.times[-2].flatten(1))
    return torch.cat(out)


def probe(times: torch.Tensor, labels: torch.Tensor, cutoff: float, T: int) -> dict:
    """Train/held-out accuracy of a linear classifier on the potentials built by ``cutoff``."""
    x = (cutoff - times).clamp(min=0) / T  # a neuron that never fired (inf) contributes 0
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], 10)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    xs, ys = x[:FIT], labels[:FIT]
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()
    with torch.no_grad():
        acc = lambda a, b: float((model(x[a:b]).argmax(1) == labels[a:b]).float().mean())  # noqa: E731
        return {"cutoff": cutoff, "fit_accuracy": round(acc(0, FIT), 4), "held_out_accuracy": round(acc(FIT, FIT + HELD_OUT), 4)}


def main() -> int:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    images, labels = load_dataset("fashion-mnist", "train")
    data = Dataset(images[: FIT + HELD_OUT], labels[: FIT + HELD_OUT])
    y = data.labels
    base = ROOT / "benchmarks" / "configs" / "fashion-rcsnn.toml"
    rows = []
    start = time.time()
    for power in (1.0, 0.1):
        config = load_config(base, {"model": {"input_power": power}})
        net = build_network(config)
        initialise(net, config, data)
        times = pooled_times(net, data)
        fired = times[torch.isfinite(times) & (times < net.T)]
        rows.append({
            "network": f"fresh {config.model.network}, input_power {power:g}",
            "hidden_fired_fraction": round(float(torch.isfinite(times).float().mean()), 4),
            "hidden_time_quantiles": {q: float(fired.quantile(float(q))) for q in ("0.1", "0.5", "0.9")},
            "probes": [probe(times, y, c, net.T) for c in CUTOFFS],
        })
        print(json.dumps(rows[-1]), flush=True)
    trained = ROOT / "results" / "runs" / "fashion-rcsnn" / "best.safetensors"
    decisions = None
    if trained.exists():
        net = load(trained)
        d = predict(net, images[: FIT + HELD_OUT]).decision_time.float()
        decisions = {"model": str(trained.relative_to(ROOT)), "input_power": net.input_power,
                     "decision_time_quantiles": {q: float(d.quantile(float(q))) for q in ("0.1", "0.5", "0.9")}}
        print(json.dumps(decisions), flush=True)
    commit = git_commit(ROOT)
    atomic_write_json(ROOT / "results" / "fashion-latency.json", {
        "command": "python benchmarks/fashion_latency.py", "commit": commit,
        "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()})",
        "images": {"fit": FIT, "held_out": HELD_OUT, "source": "first 15,000 Fashion-MNIST training images"},
        "rows": rows, "trained_decisions": decisions, "seconds": round(time.time() - start, 1)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
