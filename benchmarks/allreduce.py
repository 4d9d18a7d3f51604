"""Time one training step's all-reduce: the default network's update buffer, summed over the ranks.

Usage (two processes on this machine; rank 0 writes results/allreduce.json):

    torchrun --nproc_per_node=2 --master_addr 127.0.0.1 --master_port 29500 benchmarks/allreduce.py

The buffer is what :meth:`stidi.distributed.Context.reduce_step` sends every step: one
float64 per weight of the network (``--network``, default the default network) plus
two counts. Reports the median and mean time of ``--repeats`` all-reduces after a
warm-up, and the bytes each rank sends in a ring all-reduce, ``2 (N − 1) / N × size``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="32C5-P2-64C5-P2-10")
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    from stidi.config import load_config
    from stidi.io import build_network

    net = build_network(load_config(None, {"model": {"network": args.network}}))
    count = sum(w.numel() for w in net.weights) + 2
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    buffer = torch.ones(count, dtype=torch.float64)
    for _ in range(20):
        dist.all_reduce(buffer)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        dist.all_reduce(buffer)
        times.append(time.perf_counter() - start)
    if rank == 0:
        size = count * buffer.element_size()
        result = {
            "network": args.network, "processes": world, "backend": "gloo",
            "host": os.environ.get("MASTER_ADDR", "127.0.0.1"), "buffer_elements": count, "buffer_bytes": size,
            "ring_bytes_sent_per_rank": round(2 * (world - 1) / world * size),
            "median_ms": round(1000 * statistics.median(times), 3), "mean_ms": round(1000 * statistics.fmean(times), 3),
            "repeats": args.repeats, "load_average": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
        }
        (ROOT / "results" / "allreduce.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
