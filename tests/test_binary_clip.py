"""Clipping the real weights of binary layers (train.binary_clip): the bound, and what a run does with it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from stidi.config import load_config
from stidi.errors import ConfigError
from stidi.io import build_network
from stidi.train import clip_binary_weights, train


def _net(binary, scale: str = "fixed"):
    config = load_config(None, {"model": {"network": "784-20-10", "input_shape": [784], "T": 32,
                                          "binary": binary, "binary_scale": scale}})
    net = build_network(config)
    torch.manual_seed(0)
    with torch.no_grad():
        for k, w in enumerate(net.weights):
            w.copy_(torch.randn_like(w))
            net.fixed_scales[k] = 0.5
    return net


@pytest.mark.parametrize("scale", ["fixed", "mean_abs"])
def test_binary_layers_end_within_c_scales_and_real_layers_are_left_alone(scale):
    net = _net([True, False], scale)
    before = [w.detach().clone() for w in net.weights]
    bound = float(2.0 * net.scale(0))
    clip_binary_weights(net, 2.0)
    w = net.weights[0]
    assert w.abs().max() <= bound
    inside = before[0].abs() <= bound
    assert torch.equal(w[inside], before[0][inside])  # weights inside the bound do not move
    assert torch.equal(w[~inside], bound * before[0][~inside].sign())  # the others stop at it
    assert (~inside).any()
    assert torch.equal(net.weights[1], before[1])


def test_binary_clip_must_be_zero_or_at_least_one():
    with pytest.raises(ConfigError, match=r"train.binary_clip = 0.5"):
        load_config(None, {"train": {"binary_clip": 0.5}})


def _run_config(clip: float):
    return load_config(None, {"model": {"network": "4C5-P2-10", "T": 32, "binary": True, "binary_scale": "fixed"},
                              "train": {"train_limit": 96, "test_limit": 32, "batch_size": 16, "epochs": 2,
                                        "threads": 1, "lr": 0.05, "binary_clip": clip}})


def _largest_weight_in_scales(run_dir) -> list[float]:
    state = load_file(run_dir / "checkpoint.safetensors")
    return [float(state[f"weight.{k}"].abs().max() / state["fixed_scales"][k]) for k in range(2)]


def test_a_run_with_clipping_keeps_every_binary_weight_within_the_bound_and_one_without_does_not(tmp_path):
    train(_run_config(0.0), tmp_path / "plain", progress=False, log=lambda m: None)
    train(_run_config(1.5), tmp_path / "clip", progress=False, log=lambda m: None)
    assert max(_largest_weight_in_scales(tmp_path / "plain")) > 1.5
    assert all(r <= 1.5 * (1 + 1e-6) for r in _largest_weight_in_scales(tmp_path / "clip"))


def test_clipping_a_network_without_binary_layers_says_it_has_no_effect(tmp_path):
    config = load_config(None, {"model": {"network": "4C5-P2-10", "T": 32},
                                "train": {"train_limit": 32, "test_limit": 16, "batch_size": 16, "epochs": 1,
                                          "threads": 1, "binary_clip": 2.0}})
    messages = []
    train(config, tmp_path / "real", progress=False, log=messages.append)
    assert any("binary_clip = 2 has no effect" in m for m in messages)
