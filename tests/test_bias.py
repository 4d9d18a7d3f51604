"""The bias input (``model.bias``): an input spike at ``t = 0`` with a trainable weight per neuron,
against the reference simulator, in the rule, in the configuration and through save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stidi.config import ConfigError, load_config
from stidi.io import load_model, save_model
from stidi.kernels import reference
from stidi.network import Network
from stidi.stidi_bp import RuleOptions, update_directions

T = 32


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), padding=st.sampled_from([0, 1]))
def test_a_bias_is_an_input_spike_at_zero_seen_the_same_at_every_position(seed: int, padding: int) -> None:
    g = torch.Generator().manual_seed(seed)
    net = Network(f"3C3p{padding}-5" if padding else "3C3-5", input_shape=(2, 6, 6), T=T, bias=True)
    for w in net.weights:
        w.copy_(torch.randn(w.shape, generator=g, dtype=w.dtype) * 0.5)
    t_in = torch.randint(0, T, (2, 2, 6, 6), generator=g).float()
    t_in[torch.rand(t_in.shape, generator=g) < 0.3] = math.inf
    trace = net.trace(t_in)
    # the convolution: the reference simulator with a per-channel drive b·ε(t), b the bias kernel's sum
    conv_w = net.weights[0][:, :-1].double().numpy()
    bias = net.weights[0][:, -1].double().sum(dim=(1, 2)).numpy()
    x = reference.pad_never_firing(t_in.double().numpy(), padding)
    drive = np.zeros((2, 1, *x.shape[2:]))  # one always-firing input channel, as a 1×1 bias
    w_ref = np.concatenate([conv_w, np.zeros((3, 1, 3, 3))], axis=1)
    w_ref[:, -1, 0, 0] = bias
    expected = reference.spike_times_conv(np.concatenate([x, drive], axis=1), w_ref, 1.0, T, math.inf, padding=0)
    np.testing.assert_array_equal(trace.times[1].double().numpy(), expected)
    # the dense layer: one more input, firing at 0
    h = trace.times[1].flatten(1).double().numpy()
    dense = reference.spike_times_dense(np.concatenate([h, np.zeros((2, 1))], axis=1), net.weights[1].double().numpy(), 1.0, T, math.inf)
    np.testing.assert_array_equal(trace.times[2].double().numpy(), dense)


def test_the_rule_learns_the_bias_and_hands_down_a_displacement_of_the_real_inputs_only() -> None:
    g = torch.Generator().manual_seed(3)
    net = Network("4C3p1-P2-6", input_shape=(1, 6, 6), T=T, bias=True)
    t_in = torch.randint(0, T // 2, (8, 1, 6, 6), generator=g).float()
    net.initialise(t_in, [0.5, 0.9], g)
    assert torch.count_nonzero(net.weights[0][:, -1]) == 0 and torch.count_nonzero(net.weights[1][:, -1]) == 0  # biases start at 0
    labels = torch.randint(0, 6, (8,), generator=g)
    G = update_directions(net, net.trace(t_in), labels, RuleOptions(gamma=4.0, revival=0.1))
    assert G[0].shape == net.weights[0].shape and G[1].shape == net.weights[1].shape
    assert torch.count_nonzero(G[1][:, -1]) > 0 and torch.count_nonzero(G[0][:, -1]) > 0
    # the bias kernel's entries all see the same spike at 0: inside the frame their updates are equal
    assert torch.allclose(G[0][:, -1], G[0][:, -1, :1, :1].expand_as(G[0][:, -1]))


def test_bias_is_refused_for_binary_layers_and_survives_save_and_load(tmp_path) -> None:
    with pytest.raises(ConfigError, match="model.bias = true needs real-valued layers"):
        load_config(None, {"model": {"bias": True, "binary": True}})
    config = load_config(None, {"model": {"network": "4C3p1-P2-6", "input_shape": [1, 6, 6], "T": T, "bias": True}})
    from stidi.io import build_network

    net = build_network(config)
    g = torch.Generator().manual_seed(0)
    t_in = torch.randint(0, T // 2, (8, 1, 6, 6), generator=g).float()
    net.initialise(t_in, [0.5, 0.9], g)
    with torch.no_grad():
        net.weights[1][:, -1] = 0.3
    save_model(tmp_path / "m.safetensors", net, config)
    loaded, _, _ = load_model(tmp_path / "m.safetensors")
    assert loaded.bias and all(torch.equal(a, b) for a, b in zip(loaded.weights, net.weights))
    assert torch.equal(loaded.predict(t_in).classes, net.predict(t_in).classes)


def test_the_bias_flag_reaches_the_configuration() -> None:
    from stidi.cli import _overrides, build_parser

    args = build_parser().parse_args(["train", "--bias", "--network", "784-400-10"])
    assert _overrides(args)["model"]["bias"] is True


def test_api_save_without_a_config_keeps_the_bias(tmp_path) -> None:
    from stidi.api import build, load, save

    net = build("4C5-P2-10", (1, 28, 28), T=32, bias=True)
    net.initialise(torch.rand(16, 1, 28, 28).mul(32).floor(), 0.3, torch.Generator().manual_seed(0))
    save(tmp_path / "m", net)
    back = load(tmp_path / "m.safetensors")
    assert back.bias and all(torch.equal(a, b) for a, b in zip(back.weights, net.weights))
