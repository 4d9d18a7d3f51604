"""Revival of late neurons (``revival_scope = "late"``): the closed part of the fired-before
gate, checked against a pairwise loop, and its place in the rule and the configuration."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stidi import kernels
from stidi.config import ConfigError, load_config
from stidi.stidi_bp import RuleOptions, _revive, update_directions

T = 32


def _pairwise_conv(x: torch.Tensor, t_out: torch.Tensor, delta: torch.Tensor, w: torch.Tensor, late: bool) -> torch.Tensor:
    """``Σ_j δ_j w_ij [t_i < t_j]`` (or ``[t_i ≥ t_j]`` with ``late``) by loops over every pair (no padding)."""
    out = torch.zeros_like(x, dtype=torch.float64)
    B, J, H, W = t_out.shape
    k = w.shape[-1]
    for b in range(B):
        for j in range(J):
            for y in range(H):
                for z in range(W):
                    for c in range(x.shape[1]):
                        for dy in range(k):
                            for dz in range(k):
                                t_i, t_j = x[b, c, y + dy, z + dz], t_out[b, j, y, z]
                                if (t_i >= t_j) == late:
                                    out[b, c, y + dy, z + dz] += float(delta[b, j, y, z]) * float(w[j, c, dy, dz])
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), rho=st.sampled_from([0.01, 0.5, 1.0]), silent=st.floats(0.0, 0.5))
def test_late_revival_adds_the_closed_part_of_the_gate_only_when_it_says_fire_earlier(seed: int, rho: float, silent: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, T, (2, 2, 6, 6), generator=g).double()
    x[torch.rand(x.shape, generator=g) < silent] = math.inf  # silent inputs
    t_out = torch.randint(1, T + 1, (2, 3, 4, 4), generator=g).double()
    delta = torch.randn(t_out.shape, generator=g, dtype=torch.float64)
    w = torch.randn((3, 2, 3, 3), generator=g, dtype=torch.float64)
    gated = _pairwise_conv(x, t_out, delta, w, late=False)
    late = _pairwise_conv(x, t_out, delta, w, late=True)
    revived = _revive(gated, x, delta, w, 0, "mask", T, math.inf, rho, "late")
    torch.testing.assert_close(revived, gated + (rho * late).clamp(max=0.0))
    # the rule's own gated displacement is the pairwise one
    _, shift = kernels.rule(x, t_out, delta, w, "mask", T, math.inf, 0)
    torch.testing.assert_close(shift.double().reshape(x.shape), gated)
    # for a silent input the late push is the silent scope's push
    silent_mask = ~torch.isfinite(x)
    by_silent = _revive(gated, x, delta, w, 0, "mask", T, math.inf, rho, "silent")
    torch.testing.assert_close(revived[silent_mask], by_silent[silent_mask])
    # a late push never asks for a later spike than the gated displacement did
    assert (revived <= gated + 1e-12).all()


def test_late_scope_changes_only_the_hidden_layers_update() -> None:
    from tests.test_stidi_bp import _toy_dense_net

    net, t_in, labels = _toy_dense_net(seed=4, output_firing=1.0)
    trace = net.trace(t_in)
    hidden, out = trace.times[1], trace.times[2].clamp(max=net.T)
    assert (hidden.unsqueeze(2) >= out.unsqueeze(1)).any()  # some hidden spike comes after an output it feeds
    silent = update_directions(net, trace, labels, RuleOptions(gamma=8.0, revival=0.5))
    late = update_directions(net, trace, labels, RuleOptions(gamma=8.0, revival=0.5, revival_scope="late"))
    assert torch.equal(silent[1], late[1])
    assert not torch.allclose(silent[0], late[0])
    plain = update_directions(net, trace, labels, RuleOptions(gamma=8.0, revival_scope="late"))
    assert torch.equal(plain[0], update_directions(net, trace, labels, RuleOptions(gamma=8.0))[0])  # ρ = 0: the plain rule


def test_late_scope_needs_the_mask_gate(tmp_path) -> None:
    path = tmp_path / "late.toml"
    path.write_text('[rule]\nrevival = 0.01\nrevival_scope = "late"\ndisplacement_gate = "slope"\n')
    with pytest.raises(ConfigError, match="revival_scope = 'late' needs rule.displacement_gate = 'mask'"):
        load_config(path)
    path.write_text('[rule]\nrevival_scope = "sometimes"\n')
    with pytest.raises(ConfigError, match="revival_scope"):
        load_config(path)
