"""End to end on real MNIST: the whole chain learns.

Trains a small CSNN through the public API on 2,000 real MNIST training images for three
epochs and checks its accuracy on 1,000 real test images. The budget is tiny, so the
learning rate is three times the default (0.01, tuned for full-data runs).
"""

from __future__ import annotations

from stidi.config import load_config
from stidi.train import train


def test_small_csnn_learns_real_mnist(tmp_path):
    config = load_config(None, {
        "model": {"network": "16C5-P2-10"},
        "train": {"dataset": "mnist", "epochs": 3, "batch_size": 16, "train_limit": 2000, "test_limit": 1000, "seed": 1,
                  "lr": 0.03},
    })
    _, history = train(config, tmp_path / "run", progress=False)
    assert len(history) == 3
    assert history[-1]["test_accuracy"] >= 0.80, history
    assert history[-1]["test_accuracy"] > history[0]["test_accuracy"] - 0.05
