"""Learnt per-neuron scales of binary layers (``model.binary_scale = "channel"``): the forward pass,
the rule's projected update, clipping, the 1-bit model file and a resumable training run."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stidi.config import ConfigError, load_config
from stidi.io import build_network, load_model, save_model
from stidi.network import Network, scale_directions
from stidi.train import SCALE_FLOOR, TrainingInterrupted, clip_binary_weights, floor_channel_scales, make_optimizer, train
from tests.checkpoint_wait import stop_after_step


def _net(scale: str, seed: int = 3) -> tuple[Network, torch.Tensor]:
    net = Network("4C5-P2-12-10", (1, 12, 12), T=32, binary=True, binary_scale=scale)
    g = torch.Generator().manual_seed(seed)
    t_in = torch.randint(0, 40, (8, 1, 12, 12), generator=g).float()
    t_in[t_in >= 32] = float("inf")
    net.initialise(t_in, 0.3, g)
    return net, t_in


def test_channel_scales_start_at_the_layers_fixed_scale_and_give_the_same_network() -> None:
    net, t_in = _net("channel")
    fixed, _ = _net("fixed")
    for k in range(len(net.weights)):
        assert torch.equal(net.channel_scales[k], torch.full_like(net.channel_scales[k], float(net.fixed_scales[k])))
        assert net.channel_scales[k].shape == (net.weights[k].shape[0],)
    for a, b in zip(net.trace(t_in).times, fixed.trace(t_in).times):
        assert torch.equal(a, b)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_forward_weights_are_each_neurons_scale_times_the_signs(seed: int) -> None:
    net, t_in = _net("channel")
    g = torch.Generator().manual_seed(seed)
    real = Network("4C5-P2-12-10", (1, 12, 12), T=32)
    for k, (w, s) in enumerate(zip(net.weights, net.channel_scales)):
        s.data.copy_(0.5 + torch.rand(s.shape, generator=g))
        column = s.reshape(-1, *[1] * (w.dim() - 1))
        real.weights[k].data.copy_(torch.where(w >= 0, column, -column))
        assert torch.equal(net.weight_of(net.weighted[k]), real.weights[k])
    for a, b in zip(net.trace(t_in).times, real.trace(t_in).times):
        assert torch.equal(a, b)


def test_a_scales_direction_is_the_chain_rule_through_scale_times_sign() -> None:
    """For any layer direction d (the rule's dL/dW), the scale's direction is dL/dα_j with W_ij = α_j sign(w_ij)."""
    net, _ = _net("channel")
    g = torch.Generator().manual_seed(1)
    directions = [torch.randn(w.shape, generator=g) for w in net.weights]
    got = scale_directions(net, directions)
    assert len(got) == 3
    for k, (w, d) in enumerate(zip(net.weights, directions)):
        alpha = net.channel_scales[k].detach().clone().requires_grad_(True)
        W = alpha.reshape(-1, *[1] * (w.dim() - 1)) * torch.where(w >= 0, 1.0, -1.0)
        (W * d).sum().backward()
        torch.testing.assert_close(got[k], alpha.grad)
    plain, _ = _net("fixed")
    assert scale_directions(plain, directions) == []
    assert len(net.trainables()) == 6 and len(plain.trainables()) == 3


def test_clipping_bounds_each_neurons_weights_by_its_own_scale() -> None:
    net, _ = _net("channel")
    with torch.no_grad():
        for w, s in zip(net.weights, net.channel_scales):
            w.mul_(10.0)
            s.copy_(torch.linspace(0.5, 2.0, s.numel()))
    clip_binary_weights(net, 3.0)
    for w, s in zip(net.weights, net.channel_scales):
        bound = 3.0 * s.reshape(-1, *[1] * (w.dim() - 1))
        assert bool((w.abs() <= bound + 1e-6).all())
        assert bool((w.abs() >= bound - 1e-6).any(dim=-1).any())  # the big weights sit on their own neuron's bound


def _config(scale: str = "channel"):
    return load_config(None, {"model": {"network": "4C5-P2-16-10", "T": 32, "binary": True, "binary_scale": scale},
                              "train": {"train_limit": 96, "test_limit": 32, "batch_size": 16, "epochs": 2,
                                        "threads": 1, "lr": 0.05, "binary_clip": 3.0, "weight_average": 0.9}})


def test_a_run_learns_the_scales_saves_them_in_the_1_bit_file_and_resumes_exactly(tmp_path, monkeypatch) -> None:
    quiet = dict(progress=False, log=lambda m: None)
    net, history = train(_config(), tmp_path / "run", **quiet)
    fixed, _ = train(_config("fixed"), tmp_path / "fixed", **quiet)
    for k, s in enumerate(net.channel_scales):
        assert s.unique().numel() > 1, f"layer {k}: the scales did not move apart"
    assert not all(torch.equal(a, b) for a, b in zip(net.weights, fixed.weights))

    loaded, _, _ = load_model(tmp_path / "run" / "model.safetensors")
    assert loaded.binary_scale == "channel"
    probe = torch.randint(0, 40, (16, 1, 28, 28)).float()
    probe[probe >= 32] = float("inf")
    a, b = net.predict(probe), loaded.predict(probe)
    assert torch.equal(a.classes, b.classes) and torch.equal(a.output_times, b.output_times)

    stop_after_step(monkeypatch, 8, steps_per_epoch=6)  # 96 training images, batch 16: in the second epoch
    with pytest.raises(TrainingInterrupted):
        train(_config(), tmp_path / "cut", **quiet)
    monkeypatch.undo()
    resumed, again = train(_config(), tmp_path / "cut", resume=True, **quiet)
    assert all(torch.equal(x, y) for x, y in zip(resumed.trainables(), net.trainables()))
    assert again == history


def test_the_packed_file_holds_one_scale_per_output_neuron(tmp_path) -> None:
    from safetensors.torch import load_file

    config = load_config(None, {"model": {"network": "8C5-P2-10", "T": 32, "binary": True, "binary_scale": "channel"}})
    net = build_network(config)
    t_in = torch.randint(0, 32, (16, 1, 28, 28)).float()
    net.initialise(t_in, 0.3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for s in net.channel_scales:
            s.mul_(torch.linspace(0.5, 1.5, s.numel()))
    save_model(tmp_path / "m.safetensors", net, config)
    tensors = load_file(tmp_path / "m.safetensors")
    assert tensors["scale.0"].shape == (8,) and tensors["scale.1"].shape == (10,)
    assert not any(key.startswith("weight.") for key in tensors)
    loaded, _, _ = load_model(tmp_path / "m.safetensors")
    for k in range(2):
        assert torch.equal(net.weight_of(net.weighted[k]), loaded.weight_of(loaded.weighted[k]))


def test_the_option_is_checked_and_reaches_the_configuration() -> None:
    from stidi.cli import _overrides, build_parser

    with pytest.raises(ConfigError, match="channel"):
        load_config(None, {"model": {"binary_scale": "per_channel"}})
    with pytest.raises(ConfigError, match="channel"):
        Network("4C5-P2-10", (1, 12, 12), T=32, binary=True, binary_scale="per_channel")
    args = build_parser().parse_args(["train", "--binary", "--binary-scale", "channel", "--binary-scale-lr", "0.5"])
    assert _overrides(args)["model"]["binary_scale"] == "channel" and _overrides(args)["train"]["binary_scale_lr"] == 0.5
    with pytest.raises(ConfigError, match="binary_scale_lr"):
        load_config(None, {"train": {"binary_scale_lr": -0.1}})
    net, _ = _net("channel")
    with pytest.raises(ConfigError, match="train.binary_scale_lr has 2 values for the 3 weighted layers"):
        load_config(None, {"model": {"network": "4C5-P2-12-10", "input_shape": [1, 12, 12]}, "train": {"binary_scale_lr": [0.1, 0.1]}})
    config = load_config(None, {})
    config = replace(config, train=replace(config.train, binary_scale_lr=[0.1, 0.1]))
    with pytest.raises(ConfigError, match="binary_scale_lr: got 2 values for 3 weighted layers"):
        make_optimizer(net, config, [1.0] * 6)


def test_the_scales_step_at_a_fraction_of_their_layers_rate_and_stay_above_the_floor() -> None:
    net, _ = _net("channel")
    config = load_config(None, {"model": {"network": "4C5-P2-12-10", "input_shape": [1, 12, 12], "binary": True,
                                          "binary_scale": "channel"},
                                "train": {"lr": [0.01, 0.02, 0.03], "binary_scale_lr": [0.25, 0.5, 0.0]}})
    lr_scale = [1.0] * 3 + [float(a) for a in net.fixed_scales]
    opt = make_optimizer(net, config, lr_scale)
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[:3] == [0.01, 0.02, 0.03]
    assert lrs[3:] == pytest.approx([f * lr * float(a) for f, lr, a in zip([0.25, 0.5, 0.0], [0.01, 0.02, 0.03], net.fixed_scales)])
    assert all(g["weight_decay"] == 0 for g in opt.param_groups[3:])
    with torch.no_grad():
        net.channel_scales[1].fill_(-1.0)
    floor_channel_scales(net)
    assert torch.allclose(net.channel_scales[1], torch.full_like(net.channel_scales[1], SCALE_FLOOR * float(net.fixed_scales[1])))
    assert torch.equal(net.channel_scales[0], torch.full_like(net.channel_scales[0], float(net.fixed_scales[0])))


def test_a_non_finite_scale_update_is_named() -> None:
    from stidi.train import _first_non_finite

    net, t_in = _net("channel")
    directions = [torch.zeros_like(w) for w in net.trainables()]
    directions[4][0] = float("nan")  # the scales of weighted layer 2
    assert _first_non_finite(net, directions, net.trace(t_in).times) == \
        "update of the learnt scales of weighted layer 2 ('12') is not finite"
    directions[4][0] = 0.0
    with torch.no_grad():
        net.channel_scales[2][1] = float("inf")
    assert _first_non_finite(net, directions, net.trace(t_in).times) == \
        "the learnt scales of weighted layer 3 ('10') are not finite"
