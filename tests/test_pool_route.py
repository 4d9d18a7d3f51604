"""Pooling's displacement to the neurons tied with a window's winner (``rule.pool_route = "ties"`` and
``"share"``), checked against a plain loop over the windows and shown to move the pooled minimum, and one
error normalisation per weighted layer (``rule.error_norm``); both wired into the rule and the configuration."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import stidi.api as st_api
from stidi.config import ConfigError, load_config
from stidi.kernels.vectorised import earliest_pool, route_to_ties, route_to_winners
from stidi.stidi_bp import RuleOptions, update_directions


def _times(seed: int, shape: tuple[int, ...], T: int, silent: float) -> torch.Tensor:
    """Whole-step spike times in ``0..T`` with many ties, a fraction ``silent`` at ``inf``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, T + 1, shape, generator=g).double()
    return t.masked_fill(torch.rand(shape, generator=g) < silent, math.inf)


def _loop(d_out: torch.Tensor, t_in: torch.Tensor, k: int, steps: int, share: bool = False) -> torch.Tensor:
    """Per window: the first earliest neuron takes ``d``; with ``d > 0`` every other neuron that
    fired at most ``steps`` after it takes ``d`` too. ``share``: if the earliest fired, it and those
    neurons take ``d / n`` each, whatever the sign of ``d``."""
    out = torch.zeros_like(t_in)
    B, C, Hp, Wp = d_out.shape
    for b in range(B):
        for c in range(C):
            for y in range(Hp):
                for x in range(Wp):
                    cells = [(y * k + dy, x * k + dx) for dy in range(k) for dx in range(k)]
                    first = min(cells, key=lambda p: (t_in[b, c, p[0], p[1]].item(), p))
                    d = d_out[b, c, y, x].item()
                    out[b, c, first[0], first[1]] = d
                    t_min = t_in[b, c, first[0], first[1]].item()
                    if share and math.isfinite(t_min):
                        near = [p for p in cells if t_in[b, c, p[0], p[1]].item() <= t_min + steps]
                        for p in near:
                            out[b, c, p[0], p[1]] = d / len(near)
                        continue
                    for p in cells:
                        t = t_in[b, c, p[0], p[1]].item()
                        if p != first and d > 0 and math.isfinite(t) and t <= t_min + steps:
                            out[b, c, p[0], p[1]] = d
    return out


def _window_sums(d_in: torch.Tensor) -> torch.Tensor:
    """Each 2 × 2 window's sum (the windows that fit)."""
    H, W = d_in.shape[-2] // 2 * 2, d_in.shape[-1] // 2 * 2
    return torch.nn.functional.avg_pool2d(d_in[..., :H, :W], 2) * 4


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(0, 4), silent=st.floats(0.0, 0.6),
       odd=st.booleans(), T=st.sampled_from([3, 8, 32]))
def test_a_delay_goes_to_every_tied_neuron_and_an_advance_to_the_winner_only(seed, steps, silent, odd, T) -> None:
    shape = (2, 3, 6 + odd, 4 + odd)  # an odd size leaves a row and a column outside every window
    t_in = _times(seed, shape, T, silent)
    t_pool, winner = earliest_pool(t_in, 2)
    d_out = torch.randn(t_pool.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    routed = route_to_ties(d_out, winner, t_in, t_pool, 2, steps)
    assert torch.equal(routed, _loop(d_out, t_in, 2, steps))
    shared = route_to_ties(d_out, winner, t_in, t_pool, 2, steps, share=True)
    assert torch.allclose(shared, _loop(d_out, t_in, 2, steps, share=True), rtol=0, atol=1e-12)
    # a share keeps each window's total, so neither sign is favoured
    assert torch.allclose(_window_sums(shared), d_out, rtol=0, atol=1e-12)
    # an advance and the winner's share are exactly those of the specification's routing
    plain = route_to_winners(d_out, winner, t_in.shape)
    assert torch.equal(route_to_ties(d_out.clamp(max=0), winner, t_in, t_pool, 2, steps), plain.clamp(max=0))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_applying_the_routed_delay_moves_each_pooled_time_by_it(seed) -> None:
    """With every neuron of a window within reach (``steps ≥ T``), delaying the window's neurons
    as routed delays its earliest spike by exactly the pooled neuron's delay; the winner alone
    does not, where another neuron tied with it."""
    T = 16
    t_in = _times(seed, (2, 2, 6, 6), T, 0.0)
    t_pool, winner = earliest_pool(t_in, 2)
    d_out = torch.randint(1, 5, t_pool.shape, generator=torch.Generator().manual_seed(seed)).double()
    moved, _ = earliest_pool(t_in + route_to_ties(d_out, winner, t_in, t_pool, 2, T), 2)
    assert torch.equal(moved, t_pool + d_out)
    alone, _ = earliest_pool(t_in + route_to_winners(d_out, winner, t_in.shape), 2)
    window = t_in.reshape(2, 2, 3, 2, 3, 2).permute(0, 1, 2, 4, 3, 5).reshape(2, 2, 3, 3, 4)
    tied = (window == t_pool.unsqueeze(-1)).sum(-1) > 1
    assert torch.equal(alone == t_pool, tied)  # exactly the tied windows stay put


def test_the_rule_changes_only_below_a_pooling_layer_with_ties() -> None:
    net = st_api.build("3C3-P2-4", (1, 8, 8), T=8)
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t_in = net.encode(images)
    net.initialise(t_in, [0.6, 0.9], torch.Generator().manual_seed(0))
    trace = net.trace(t_in)
    pooled_in = trace.times[1]
    assert torch.isfinite(pooled_in).any()
    labels = torch.arange(16) % 4
    plain = update_directions(net, trace, labels, RuleOptions(gamma=2.0))
    ties = update_directions(net, trace, labels, RuleOptions(gamma=2.0, pool_route="ties", pool_tie_steps=1))
    assert torch.equal(plain[1], ties[1])  # the readout learns from its own error, above the pooling
    assert not torch.equal(plain[0], ties[0])  # T = 8 makes ties common: the convolution hears more delays


def test_per_layer_error_normalisation() -> None:
    """One mode per weighted layer: the same mode listed for each layer is that mode, and a different
    mode below the readout changes only the hidden layers' directions."""
    net = st_api.build("3C3-P2-6-4", (1, 8, 8), T=16)
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t_in = net.encode(images)
    net.initialise(t_in, [0.6, 0.6, 0.9], torch.Generator().manual_seed(1))
    trace = net.trace(t_in)
    labels = torch.arange(16) % 4
    plain = update_directions(net, trace, labels, RuleOptions(gamma=4.0))
    listed = update_directions(net, trace, labels, RuleOptions(gamma=4.0, error_norm=["l2"] * 3))
    assert all(torch.equal(a, b) for a, b in zip(plain, listed))
    mixed = update_directions(net, trace, labels, RuleOptions(gamma=4.0, error_norm=["batch_max", "batch_max", "l2"]))
    assert torch.equal(mixed[2], plain[2])
    assert not torch.equal(mixed[1], plain[1]) and not torch.equal(mixed[0], plain[0])
    with pytest.raises(ConfigError, match=r"rule.error_norm has 2 values for the 3 weighted layers"):
        load_config(None, {"model": {"network": "3C3-P2-6-4", "input_shape": [1, 8, 8]}, "rule": {"error_norm": ["l2", "l2"]}})
    with pytest.raises(ConfigError, match="error_norm"):
        load_config(None, {"rule": {"error_norm": ["l2", "l1"]}})


def test_the_options_are_checked_and_reach_the_configuration() -> None:
    from stidi.cli import _overrides, build_parser

    with pytest.raises(ConfigError, match="pool_route"):
        load_config(None, {"rule": {"pool_route": "all"}})
    with pytest.raises(ConfigError, match="pool_tie_steps"):
        load_config(None, {"rule": {"pool_tie_steps": -1}})
    values = _overrides(build_parser().parse_args(["train", "--pool-route", "ties", "--pool-tie-steps", "2",
                                                    "--error-norm", "batch_max", "batch_max", "batch_max", "l2"]))
    assert values["rule"] == {"pool_route": "ties", "pool_tie_steps": 2, "error_norm": ["batch_max", "batch_max", "batch_max", "l2"]}
    values["model"] = {"network": "4C5-P2-8C5-P2-16-10"}
    config = load_config(None, values)
    assert config.rule.pool_route == "ties" and config.rule.pool_tie_steps == 2


def test_the_tie_diagnostic_counts_the_gap_to_each_windows_second_earliest_neuron() -> None:
    from benchmark_scripts import benchmark_script

    pool_ties = benchmark_script("pool_ties")
    inf = math.inf
    t_in = torch.tensor([[[[3.0, 3.0, 5.0, 9.0, 0.0],
                           [7.0, inf, inf, 6.0, 0.0],
                           [inf, inf, 2.0, inf, 0.0],
                           [inf, inf, inf, inf, 0.0],
                           [0.0, 0.0, 0.0, 0.0, 0.0]]]])  # the last row and column lie outside every window
    first, gap = pool_ties.window_gaps(t_in, 2)
    assert first.tolist() == [[[[3.0, 5.0], [inf, 2.0]]]]
    assert gap[0, 0, 0].tolist() == [0.0, 1.0] and math.isinf(gap[0, 0, 1, 1])
    report = pool_ties.pool_report(t_in, 2, [0, 1])
    assert report["fired"] == 0.75 and report["within"] == {"0": round(1 / 3, 4), "1": round(2 / 3, 4)}
    assert report["runner_up_silent"] == round(1 / 3, 4)
