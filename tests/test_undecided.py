"""Images the readout cannot classify (class -1: no output fired, or the earliest outputs tied in time
and potential) are counted, reported per epoch, and warned about when they are many."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stidi.train as train_module
from stidi.config import load_config
from stidi.io import build_network
from stidi.train import UNDECIDED_WARNING, Dataset, evaluate, train, undecided_warning


def tiny_dense(weights: torch.Tensor):
    config = load_config(None, {"model": {"network": "3", "input_shape": [1, 2, 2], "T": 16}})
    net = build_network(config)
    with torch.no_grad():
        net.weights[0].copy_(weights)
    return net


def data(n: int = 12) -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset((rng.random((n, 1, 2, 2)) * 0.5 + 0.5).astype(np.float32), rng.integers(0, 3, n))


def test_outputs_with_equal_weights_tie_and_every_image_is_undecided():
    net = tiny_dense(torch.full((3, 4), 0.5, dtype=torch.float64))
    d = data()
    pred = net.predict(d.spike_times(slice(0, len(d)), net))
    assert (pred.classes == -1).all() and torch.isfinite(pred.decision_time).all()  # they fired, together
    result = evaluate(net, d)
    assert result["undecided"] == 1.0 and result["accuracy"] == 0.0


def test_an_output_with_larger_weights_fires_first_and_decides():
    w = torch.full((3, 4), 0.5, dtype=torch.float64)
    w[1] = 1.0
    net, d = tiny_dense(w), data()
    result = evaluate(net, d)
    assert result["undecided"] == 0.0
    assert result["accuracy"] == pytest.approx(float((d.labels == 1).double().mean()))


def test_undecided_counts_silent_samples_too():
    net, d = tiny_dense(torch.zeros((3, 4), dtype=torch.float64)), data()  # no output ever reaches threshold
    assert evaluate(net, d)["undecided"] == 1.0


def test_warning_only_above_the_threshold_and_it_names_the_remedy():
    record = {"epoch": 2, "test_firing_fraction": [0.2, 0.03, 0.7]}
    assert undecided_warning({**record, "test_undecided": UNDECIDED_WARNING}) is None
    assert undecided_warning(record) is None  # records from before the field existed
    message = undecided_warning({**record, "test_undecided": 0.902})
    assert message.startswith("warning: epoch 2 left 90.2% of the test images undecided")
    assert "[0.2, 0.03, 0.7]" in message and "rule.revival" in message


def test_training_logs_the_warning_and_writes_the_share(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images, labels = rng.random((40, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 40)
    config = load_config(None, {"model": {"network": "4C3-P2-3", "input_shape": [1, 8, 8], "T": 32},
                                "train": {"epochs": 1, "batch_size": 8, "threads": 1}})
    real = train_module.evaluate
    monkeypatch.setattr(train_module, "evaluate", lambda *a, **k: {**real(*a, **k), "undecided": 0.5})
    messages: list[str] = []
    _, history = train(config, tmp_path, data=(Dataset(images, labels), Dataset(images[:20], labels[:20])),
                       progress=False, log=messages.append)
    assert history[0]["test_undecided"] == 0.5
    assert any(m.startswith("warning: epoch 1 left 50.0% of the test images undecided") for m in messages)
    messages.clear()
    monkeypatch.setattr(train_module, "evaluate", real)
    _, history = train(config, tmp_path / "again", data=(Dataset(images, labels), Dataset(images[:20], labels[:20])),
                       progress=False, log=messages.append)
    assert any("undecided" in m for m in messages) == (history[0]["test_undecided"] > UNDECIDED_WARNING)
