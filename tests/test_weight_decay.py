"""Decoupled weight decay (train.weight_decay): one step's shrink, and what a run does with it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from stidi.config import load_config
from stidi.errors import ConfigError
from stidi.io import build_network
from stidi.train import make_optimizer, train


def _net_and_config(optimizer: str, decay: float | list[float]):
    config = load_config(None, {"model": {"network": "784-20-10", "input_shape": [784], "T": 32},
                                "train": {"optimizer": optimizer, "lr": [0.1, 0.2], "weight_decay": decay}})
    net = build_network(config)
    torch.manual_seed(0)
    with torch.no_grad():
        for w in net.weights:
            w.copy_(torch.randn_like(w))
    return net, config


def _step_without_a_direction(net, config, lr_scale: list[float]) -> list[torch.Tensor]:
    """Take one optimiser step with all-zero directions; returns the weights before it."""
    before = [w.detach().clone() for w in net.weights]
    opt = make_optimizer(net, config, lr_scale=lr_scale)
    for w in net.weights:
        w.grad = torch.zeros_like(w)
    opt.step()
    return before


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_step_without_a_direction_shrinks_each_layer_by_its_step_size_times_lambda(optimizer):
    net, config = _net_and_config(optimizer, 0.5)
    before = _step_without_a_direction(net, config, [1.0, 3.0])
    for w, w0, step_size in zip(net.weights, before, [0.1, 0.6]):
        assert torch.allclose(w, w0 * (1 - step_size * 0.5), rtol=1e-6, atol=0)


def test_a_decay_per_layer_shrinks_each_layer_by_its_own_lambda():
    net, config = _net_and_config("adam", [0.0, 0.5])
    before = _step_without_a_direction(net, config, [1.0, 3.0])
    assert torch.equal(net.weights[0], before[0])
    assert torch.allclose(net.weights[1], before[1] * (1 - 0.6 * 0.5), rtol=1e-6, atol=0)


def test_a_decay_list_of_the_wrong_length_names_the_field(tmp_path):
    config_file = tmp_path / "run.toml"
    config_file.write_text('[model]\nnetwork = "784-20-10"\ninput_shape = [784]\n[train]\nweight_decay = [0.1, 0.1, 0.1]\n')
    with pytest.raises(ConfigError, match=r"run.toml: train.weight_decay has 3 values for the 2 weighted layers of 784-20-10"):
        load_config(config_file)
    # a Config built in code without load_config's checks is still caught when the optimiser is made
    net, config = _net_and_config("adam", 0.1)
    config = replace(config, train=replace(config.train, weight_decay=[0.1, 0.1, 0.1]))
    with pytest.raises(ConfigError, match=r"train.weight_decay: got 3 values for 2 weighted layers"):
        make_optimizer(net, config, lr_scale=[1.0, 1.0])


def test_no_decay_leaves_a_step_without_a_direction_alone():
    net, config = _net_and_config("adam", 0.0)
    before = _step_without_a_direction(net, config, [1.0, 1.0])
    assert all(torch.equal(w, w0) for w, w0 in zip(net.weights, before))


def test_weight_decay_must_not_be_negative():
    with pytest.raises(ConfigError, match=r"train.weight_decay = -0.1"):
        load_config(None, {"train": {"weight_decay": -0.1}})
    with pytest.raises(ConfigError, match=r"train.weight_decay"):
        load_config(None, {"train": {"weight_decay": [0.1, -0.1]}})


def _run_config(decay: float):
    return load_config(None, {"model": {"network": "4C5-P2-10", "T": 32},
                              "train": {"train_limit": 96, "test_limit": 32, "batch_size": 16, "epochs": 2,
                                        "threads": 1, "lr": 0.05, "weight_decay": decay}})


def test_a_run_with_decay_ends_with_smaller_weights_than_the_same_run_without(tmp_path):
    train(_run_config(0.0), tmp_path / "plain", progress=False, log=lambda m: None)
    train(_run_config(2.0), tmp_path / "decay", progress=False, log=lambda m: None)
    plain, decayed = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "decay" / "model.safetensors")
    for k in ("weight.0", "weight.1"):
        assert decayed[k].norm() < plain[k].norm(), k
