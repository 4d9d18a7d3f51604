"""Binary weights: α·sign(w) forward, real weights learn, 1-bit model files that load back exactly."""

from __future__ import annotations

import torch

from stidi.config import load_config
from stidi.io import build_network, load_model, save_model
from stidi.network import Network
from stidi.stidi_bp import RuleOptions, update_directions


def _binary_net(scale: str = "mean_abs") -> tuple[Network, torch.Tensor]:
    net = Network("4C5-P2-10", (1, 12, 12), T=32, binary=True, binary_scale=scale)
    g = torch.Generator().manual_seed(3)
    t_in = torch.randint(0, 40, (8, 1, 12, 12), generator=g).float()
    t_in[t_in >= 32] = float("inf")
    net.initialise(t_in, 0.3, g)
    return net, t_in


def test_forward_uses_scaled_signs_of_the_real_weights():
    net, t_in = _binary_net()
    real = Network("4C5-P2-10", (1, 12, 12), T=32)
    for k, w in enumerate(net.weights):
        alpha = w.double().abs().mean()
        assert not torch.equal(w.abs(), torch.full_like(w, float(alpha)))  # real weights are not binary themselves
        real.weights[k].data.copy_(torch.where(w >= 0, alpha, -alpha).float())
    for a, b in zip(net.trace(t_in).times, real.trace(t_in).times):
        assert torch.equal(a, b)
    # initialisation calibrated the binary forward pass: some but not all hidden neurons fire
    fired = torch.isfinite(net.trace(t_in).times[1]).float().mean()
    assert 0.05 < fired < 0.95


def test_fixed_scale_stays_while_mean_abs_follows_the_weights():
    for scale, follows in (("fixed", False), ("mean_abs", True)):
        net, _ = _binary_net(scale)
        before = float(net.scale(0))
        with torch.no_grad():
            net.weights[0].mul_(2.0)
        assert (float(net.scale(0)) == 2 * before) is follows


def test_rule_updates_the_real_weights_and_displaces_with_them():
    net, t_in = _binary_net()
    trace = net.trace(t_in)
    labels = torch.arange(8) % 10
    G = update_directions(net, trace, labels, RuleOptions(gamma=4.0))
    assert any(g.abs().sum() > 0 for g in G)
    # the displacement (hence the first layer's direction) depends on the real weights, not only their signs
    with torch.no_grad():
        net.weights[1].mul_(torch.linspace(0.5, 1.5, net.weights[1].numel()).reshape(net.weights[1].shape))
    G2 = update_directions(net, trace, labels, RuleOptions(gamma=4.0))
    assert not torch.allclose(G[0], G2[0])


def test_packed_binary_model_is_small_and_predicts_identically(tmp_path):
    config = load_config(None, {"model": {"network": "8C5-P2-10", "T": 32, "binary": True}})
    real_config = load_config(None, {"model": {"network": "8C5-P2-10", "T": 32}})
    net = build_network(config)
    t_in = torch.randint(0, 32, (16, 1, 28, 28)).float()
    net.initialise(t_in, 0.3, torch.Generator().manual_seed(0))
    save_model(tmp_path / "binary.safetensors", net, config)
    real = build_network(real_config)
    real.load_state_dict(net.state_dict())
    save_model(tmp_path / "real.safetensors", real, real_config)
    size_binary = (tmp_path / "binary.safetensors").stat().st_size
    size_real = (tmp_path / "real.safetensors").stat().st_size
    assert size_binary * 10 < size_real
    loaded, _, _ = load_model(tmp_path / "binary.safetensors")
    a, b = net.predict(t_in), loaded.predict(t_in)
    assert torch.equal(a.classes, b.classes) and torch.equal(a.output_times, b.output_times)
    for k in range(len(net.weights)):
        assert torch.equal(net.weight_of(net.weighted[k]), loaded.weight_of(loaded.weighted[k]))


def test_binary_flag_per_layer_must_match_the_layer_count():
    import pytest

    from stidi.errors import ConfigError

    with pytest.raises(ConfigError, match="binary"):
        Network("4C5-P2-10", (1, 12, 12), T=32, binary=[True, False, True])


def test_forward_displacement_uses_only_the_signs_and_leaves_the_top_layer_alone():
    net, t_in = _binary_net("fixed")
    trace = net.trace(t_in)
    labels = torch.arange(8) % 10
    opts = RuleOptions(gamma=4.0, binary_displacement="forward")
    G = update_directions(net, trace, labels, opts)
    real = update_directions(net, trace, labels, RuleOptions(gamma=4.0))
    assert torch.equal(G[1], real[1])  # the top layer's update does not involve a displacement
    assert not torch.allclose(G[0], real[0])
    # with the fixed scale, rescaling the top layer's real weights without changing their signs changes nothing
    with torch.no_grad():
        net.weights[1].mul_(torch.linspace(0.5, 1.5, net.weights[1].numel()).reshape(net.weights[1].shape))
    G2 = update_directions(net, trace, labels, opts)
    assert all(torch.equal(a, b) for a, b in zip(G, G2))
