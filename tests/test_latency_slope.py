"""The 'slope' latency derivative: the potential's slope at the spike, against the reference simulator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stidi.config import from_dict
from stidi.errors import ConfigError
from stidi.kernels import reference
from stidi.kernels.psp import psp
from stidi.network import Network
from stidi.stidi_bp import RuleOptions, latency_gain, potential_slope, update_directions


def reference_slope_dense(t_in: np.ndarray, w: np.ndarray, t_out: np.ndarray, T: int) -> np.ndarray:
    """``u_j(t_j) − u_j(t_j − 1)`` from the plain potential, one neuron at a time."""
    out = np.zeros(t_out.shape)
    for b in range(t_out.shape[0]):
        for j in range(t_out.shape[1]):
            t = t_out[b, j]
            u = lambda s: float(np.sum(w[j] * psp(s - t_in[b], math.inf, T)))  # noqa: E731
            out[b, j] = u(t) - u(t - 1)
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), T=st.sampled_from([16, 32, 64]))
def test_exact_slope_matches_the_reference_potential(seed: int, T: int) -> None:
    """With one bin per step the slope is the reference simulator's u(t_j) − u(t_j − 1) at every spike."""
    rng = np.random.default_rng(seed)
    t_in = rng.integers(0, T, size=(3, 7)).astype(np.float64)
    t_in[rng.random(t_in.shape) < 0.2] = np.inf  # some inputs never fire
    w = rng.normal(0.3, 1.0, size=(5, 7))
    t_out = reference.spike_times_dense(t_in, w, 1.0, T, math.inf)
    t_rule = np.minimum(t_out, T)
    got = potential_slope(torch.tensor(t_in), torch.tensor(w), torch.tensor(t_rule), 0, T, bins=T)
    expected = reference_slope_dense(t_in, w, t_rule, T)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12)
    fired = np.isfinite(t_out)
    assert (got.numpy()[fired] > 0).all()  # the potential rose through θ at every spike


def test_exact_slope_of_a_convolution_matches_the_reference_potential() -> None:
    T, rng = 32, np.random.default_rng(1)
    t_in = rng.integers(0, T, size=(2, 2, 6, 6)).astype(np.float64)
    w = rng.normal(0.4, 1.0, size=(3, 2, 3, 3))
    t_out = np.minimum(reference.spike_times_conv(t_in, w, 1.0, T, math.inf, padding=1), T)
    got = potential_slope(torch.tensor(t_in), torch.tensor(w), torch.tensor(t_out), 1, T, bins=T).numpy()
    x = reference.pad_never_firing(t_in, 1)
    for b, c, y, xx in np.ndindex(*t_out.shape):
        window, t = x[b, :, y : y + 3, xx : xx + 3], t_out[b, c, y, xx]
        u = lambda s: float(np.sum(w[c] * psp(s - window, math.inf, T)))  # noqa: E731
        assert got[b, c, y, xx] == pytest.approx(u(t) - u(t - 1), rel=1e-9, abs=1e-12)


def test_coarse_bins_count_inputs_up_to_the_bins_end() -> None:
    """One bin: every input that fired before T counts, also those after the spike."""
    T = 10
    t_in = torch.tensor([[1.0, 8.0]])
    w = torch.tensor([[2.0, 3.0]], dtype=torch.float64)
    t_out = torch.tensor([[5.0]])
    assert float(potential_slope(t_in, w, t_out, 0, T, bins=T)) == pytest.approx(2.0 / T)
    assert float(potential_slope(t_in, w, t_out, 0, T, bins=1)) == pytest.approx(5.0 / T)


def test_gain_is_the_inverse_slope_bounded_by_the_linear_gains_largest_value() -> None:
    T, theta = 100, 2.0
    slope = torch.tensor([0.5, 0.001, -1.0])
    gain = latency_gain(torch.tensor([10.0, 50.0, 100.0]), theta, "slope", slope, T)
    assert torch.allclose(gain, torch.tensor([2.0, T / theta, T / theta]))


def test_slope_option_changes_the_update_and_only_the_gain() -> None:
    g = torch.Generator().manual_seed(0)
    net = Network("20-12-4", input_shape=(20,), T=64, tau=math.inf, thresholds=1.0)
    t_in = torch.randint(0, 32, (16, 20), generator=g).float()
    net.initialise(t_in, [0.6, 0.6], g)
    labels = torch.randint(0, 4, (16,), generator=g)
    trace = net.trace(t_in)
    linear = update_directions(net, trace, labels, RuleOptions())
    slope = update_directions(net, trace, labels, RuleOptions(latency_derivative="slope", slope_bins=64))
    assert any(not torch.allclose(a, b) for a, b in zip(linear, slope))
    assert all(torch.isfinite(s).all() for s in slope)


def test_slope_needs_the_ramp_psp() -> None:
    with pytest.raises(ConfigError, match="latency_derivative = 'slope' needs the ramp PSP"):
        from_dict({"model": {"tau": 8.0}, "rule": {"latency_derivative": "slope"}})
    from_dict({"rule": {"latency_derivative": "slope", "slope_bins": 16}})  # the ramp PSP (default) is fine


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), padding=st.sampled_from([0, 2]), dense=st.booleans())
def test_event_engine_exact_slope_matches_the_masked_maps(seed: int, padding: int, dense: bool) -> None:
    """With one bin per step the event engine's causal sums and the per-step masked maps agree."""
    T, g = 32, torch.Generator().manual_seed(seed)
    shape, w_shape, out_shape = ((3, 40), (6, 40), (3, 6)) if dense else ((2, 3, 7, 7), (4, 3, 5, 5), (2, 4, 3 + 2 * padding, 3 + 2 * padding))
    t_in = torch.randint(0, T + 1, shape, generator=g).double()
    t_in[torch.rand(shape, generator=g) < 0.3] = math.inf
    w = torch.randn(w_shape, generator=g, dtype=torch.float64)
    t_out = torch.randint(1, T + 1, out_shape, generator=g).double()  # any spike time (never 0: u(0) = 0 < θ), T included
    pad = 0 if dense else padding
    fast = potential_slope(t_in, w, t_out, pad, T, bins=T)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STIDI_ENGINE", "vectorised")
        maps = potential_slope(t_in, w, t_out, pad, T, bins=T)
    torch.testing.assert_close(fast, maps, rtol=1e-12, atol=1e-12)
    need = torch.rand(out_shape, generator=g) < 0.5  # only some outputs: those get the same sums, the rest 0
    some = potential_slope(t_in, w, t_out, pad, T, bins=T, need=need)
    torch.testing.assert_close(some, torch.where(need, maps, torch.zeros_like(maps)), rtol=1e-12, atol=1e-12)
