"""The best epoch is chosen on a validation split carved from the training set, never on the test set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stidi.config import load_config
from stidi.errors import StidiError
from stidi.io import load_model
from stidi.train import Dataset, best_record, split_validation, train


def test_split_takes_the_last_images_and_keeps_the_rest():
    data = Dataset(np.arange(10 * 4, dtype=np.float32).reshape(10, 4) / 40, np.arange(10))
    train_part, val = split_validation(data, 3)
    assert train_part.labels.tolist() == list(range(7)) and val.labels.tolist() == [7, 8, 9]
    assert split_validation(data, 0) == (data, None)
    with pytest.raises(StidiError, match="validation"):
        split_validation(data, 10)


def test_best_record_uses_validation_not_test():
    history = [{"epoch": 1, "val_accuracy": 0.9, "test_accuracy": 0.5},
               {"epoch": 2, "val_accuracy": 0.8, "test_accuracy": 0.99},
               {"epoch": 3, "val_accuracy": 0.9, "test_accuracy": 0.7}]
    assert best_record(history)["epoch"] == 1
    assert best_record([{"epoch": 1, "test_accuracy": 0.9}, {"epoch": 2, "test_accuracy": 0.1}])["epoch"] == 2


def test_training_writes_the_best_model_by_validation(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 240)
    images = rng.random((240, 1, 8, 8)).astype(np.float32) * 0.3
    for c in range(3):  # a bright column per class
        images[labels == c, 0, :, 2 * c + 1] = 1.0
    config = load_config(None, {"model": {"network": "4C3-P2-3", "input_shape": [1, 8, 8], "T": 32},
                                "train": {"epochs": 3, "batch_size": 8, "validation": 60, "threads": 1}})
    _, history = train(config, tmp_path, data=(Dataset(images, labels), Dataset(images[:50], labels[:50])), progress=False,
                       log=lambda m: None)
    assert all("val_accuracy" in r for r in history)
    best = best_record(history)
    _, _, info = load_model(tmp_path / "best.safetensors")
    assert info["best_epoch"] == best["epoch"]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_accuracy"] for r in lines] == [r["val_accuracy"] for r in history]
