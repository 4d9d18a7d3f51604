"""Size of a saved binary-weight model against the same real-valued model, and that both predict alike.

Usage: python benchmarks/binary_size.py [--network SPEC]

Builds the network twice (real and binary weights), initialises it on 256 MNIST
training images, saves both with ``stidi.io.save_model``, reloads the binary model and
checks its predictions on 1,000 test images equal those of the network that saved it.
Writes ``results/binary-size.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="32C5-P2-64C5-P2-10")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from stidi.config import load_config
    from stidi.data import load_dataset
    from stidi.encoding import ttfs_encode
    from stidi.io import build_network, load_model, save_model
    from stidi.provenance import git_commit

    x, _ = load_dataset("mnist", "train")
    x_test, _ = load_dataset("mnist", "test")
    t_cal = ttfs_encode(x[:256], 256).unsqueeze(1)
    t_test = ttfs_encode(x_test[:1000], 256).unsqueeze(1)
    sizes, same = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for binary in (False, True):
            config = load_config(None, {"model": {"network": args.network, "binary": binary}})
            net = build_network(config)
            net.initialise(t_cal, 0.3, torch.Generator().manual_seed(0))
            path = Path(tmp) / f"{'binary' if binary else 'real'}.safetensors"
            save_model(path, net, config)
            sizes["binary" if binary else "real"] = path.stat().st_size
            if binary:
                loaded, _, _ = load_model(path)
                a, b = net.predict(t_test), loaded.predict(t_test)
                same = bool(torch.equal(a.classes, b.classes) and torch.equal(a.output_times, b.output_times))
    synapses = sum(w.numel() for w in net.weights)
    result = {"network": args.network, "synapses": synapses, "real_bytes": sizes["real"], "binary_bytes": sizes["binary"],
              "ratio": round(sizes["real"] / sizes["binary"], 2), "identical_predictions_after_reload": same,
              "command": " ".join(["python benchmarks/binary_size.py", *sys.argv[1:]]),
              "commit": git_commit(ROOT)}
    out = ROOT / "results" / "binary-size.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
