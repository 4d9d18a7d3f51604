"""Weight averaging (train.weight_average): the formula, what is evaluated and saved, resuming."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from stidi.averaging import average_decay, update_average, weights_swapped
from stidi.config import load_config
from stidi.errors import ConfigError
from stidi.io import load_model
from stidi.train import TrainingInterrupted, builtin_data, evaluate, train
from tests.checkpoint_wait import stop_after_step


@given(st.floats(0.0, 0.9999), st.integers(0, 10_000))
def test_decay_ramps_up_to_beta(beta, step):
    b = average_decay(beta, step)
    assert 0.0 <= b <= beta
    assert b == beta or b == (1 + step) / (10 + step)
    assert average_decay(beta, step + 1) >= b


def test_update_average_is_the_exponential_moving_average():
    torch.manual_seed(0)
    steps = [torch.randn(3, 4, dtype=torch.float64) for _ in range(30)]
    average = [steps[0].clone()]
    expected = steps[0].clone()
    for n, w in enumerate(steps):
        b = min(0.9, (1 + n) / (10 + n))
        expected = b * expected + (1 - b) * w
        update_average(average, [w], 0.9, n)
    assert torch.allclose(average[0], expected, rtol=0, atol=1e-12)


def test_swapped_weights_come_back_after_an_error():
    w = [torch.zeros(2)]
    with pytest.raises(RuntimeError), weights_swapped(w, [torch.ones(2)]):
        assert torch.equal(w[0], torch.ones(2))
        raise RuntimeError
    assert torch.equal(w[0], torch.zeros(2))


def test_weight_average_must_be_below_one():
    with pytest.raises(ConfigError, match=r"train.weight_average = 1.0 is out of range; allowed: a number in \[0, 1\)"):
        load_config(None, {"train": {"weight_average": 1.0}})


def _config(average: float):
    return load_config(None, {"model": {"network": "4C5-P2-10", "T": 32},
                              "train": {"train_limit": 160, "test_limit": 64, "batch_size": 16, "epochs": 2,
                                        "validation": 32, "checkpoint_every": 2, "threads": 1,
                                        "weight_average": average}})


def test_the_saved_model_is_the_average_and_scores_what_the_log_says(tmp_path):
    config = _config(0.8)
    net, history = train(config, tmp_path / "avg", progress=False, log=lambda m: None)
    saved = load_file(tmp_path / "avg" / "model.safetensors")
    trained = load_file(tmp_path / "avg" / "checkpoint.safetensors")
    assert all(torch.equal(saved[f"weight.{k}"], trained[f"average.{k}"]) for k in range(2))
    assert any(not torch.equal(saved[f"weight.{k}"], trained[f"weight.{k}"]) for k in range(2))
    assert all(torch.equal(w, saved[f"weight.{k}"]) for k, w in enumerate(net.weights))
    loaded, _, _ = load_model(tmp_path / "avg" / "model.safetensors")
    _, test_set = builtin_data(config, log=lambda m: None)
    assert evaluate(loaded, test_set)["accuracy"] == history[-1]["test_accuracy"]
    train(_config(0.0), tmp_path / "plain", progress=False, log=lambda m: None)
    plain = load_file(tmp_path / "plain" / "model.safetensors")
    assert any(not torch.equal(saved[k], plain[k]) for k in plain if k.startswith("weight."))


def test_interrupted_run_with_averaging_resumes_exactly(tmp_path, monkeypatch):
    config = _config(0.8)
    train(config, tmp_path / "whole", progress=False, log=lambda m: None)
    stop_after_step(monkeypatch, 5, steps_per_epoch=8)  # 128 training images, batch 16
    with pytest.raises(TrainingInterrupted):
        train(config, tmp_path / "cut", progress=False, log=lambda m: None)
    monkeypatch.undo()
    partial = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())["partial"]
    assert (partial["epoch"], partial["step"]) == (0, 5)
    train(config, tmp_path / "cut", resume=True, progress=False, log=lambda m: None)
    for name in ("model.safetensors", "best.safetensors", "checkpoint.safetensors"):
        whole, cut = load_file(tmp_path / "whole" / name), load_file(tmp_path / "cut" / name)
        assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole), name
    assert (tmp_path / "whole" / "metrics.jsonl").read_text() == (tmp_path / "cut" / "metrics.jsonl").read_text()
