"""The fast engines agree with the reference simulator (property tests).

Weights, thresholds and PSP values are dyadic rationals (k/16, τ and T powers of two),
so every potential is computed exactly in float32 and float64 whatever the summation
order: agreement on spike times must then be exact, not approximate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stidi import kernels
from stidi.kernels import event, reference, vectorised
from stidi.kernels.psp import psp

TAUS = [1.0, 2.0, 4.0, 8.0, math.inf]
ENGINES = ["vectorised"] + (["event-lazy", "event-stepped"] if event.AVAILABLE else [])
RULE_ENGINES = ["vectorised"] + (["event"] if event.AVAILABLE else [])
CONV_RULE_ENGINES = ["vectorised"] + (["event-lists", "event-sweep"] if event.AVAILABLE else [])


@st.composite
def conv_case(draw):
    T = draw(st.sampled_from([8, 16, 32]))
    tau = draw(st.sampled_from(TAUS))
    B, C, H = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(3, 7))
    k = draw(st.integers(1, min(3, H)))
    co = draw(st.integers(1, 3))
    padding = draw(st.integers(0, 1))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    t_in = rng.integers(0, T + 1, size=(B, C, H, H)).astype(np.float64)
    t_in[rng.random(t_in.shape) < draw(st.sampled_from([0.0, 0.3, 0.8]))] = np.inf
    w = rng.integers(-16, 17, size=(co, C, k, k)) / 16.0  # negative weights included
    theta = draw(st.integers(1, 24)) / 16.0
    return t_in, w, theta, T, tau, padding


@st.composite
def dense_case(draw):
    T = draw(st.sampled_from([8, 16, 32]))
    tau = draw(st.sampled_from(TAUS))
    B, n_in, n_out = draw(st.integers(1, 3)), draw(st.integers(1, 20)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    t_in = rng.integers(0, T + 1, size=(B, n_in)).astype(np.float64)
    t_in[rng.random(t_in.shape) < draw(st.sampled_from([0.0, 0.3, 0.8]))] = np.inf
    w = rng.integers(-16, 17, size=(n_out, n_in)) / 16.0
    theta = draw(st.integers(1, 24)) / 16.0
    return t_in, w, theta, T, tau


def _engine_times(name, t_in, w, theta, T, tau, padding=0):
    """Spike times from one engine; the event engine's two kernels are each forced in turn."""
    args = (torch.tensor(t_in, dtype=torch.float32), torch.tensor(w, dtype=torch.float32), theta, T, tau, padding)
    if name == "vectorised":
        return vectorised.spike_times(*args).double().numpy()
    chooser = event._prefer_lazy
    event._prefer_lazy = lambda *a: name == "event-lazy"
    try:
        return event.spike_times(*args).double().numpy()
    finally:
        event._prefer_lazy = chooser


def _sparse_delta(shape, seed, zero_fraction):
    """Errors as the rule meets them: many outputs (e.g. pooling losers) have ``δ = 0``."""
    rng = np.random.default_rng(seed)
    delta = rng.standard_normal(shape)
    delta[rng.random(shape) < zero_fraction] = 0.0
    return delta


def _engine_rule(name, t_in, t_out, delta, w, gate, T, tau, padding=0):
    """Update direction and displacement from one engine; the event engine's two convolution
    kernels are each forced in turn."""
    args = [torch.tensor(a, dtype=torch.float64) for a in (t_in, t_out, delta, w)]
    if name.startswith("event"):
        chooser = event._prefer_sweep
        if name != "event":
            event._prefer_sweep = lambda *a: name == "event-sweep"
        try:
            G, D = event.rule(*args, gate, T, tau, padding)
        finally:
            event._prefer_sweep = chooser
    else:
        G = vectorised.update_direction(*args, T, tau, padding)
        D = vectorised.displacement(*args, gate, T, tau, padding)
    return G.numpy(), D.numpy()


@pytest.mark.parametrize("engine", ENGINES)
@given(case=conv_case())
def test_conv_spike_times_match_reference(engine, case):
    t_in, w, theta, T, tau, padding = case
    expected = reference.spike_times_conv(t_in, w, theta, T, tau, padding)
    np.testing.assert_array_equal(_engine_times(engine, t_in, w, theta, T, tau, padding), expected)


@pytest.mark.parametrize("engine", ENGINES)
@given(case=dense_case())
def test_dense_spike_times_match_reference(engine, case):
    t_in, w, theta, T, tau = case
    expected = reference.spike_times_dense(t_in, w, theta, T, tau)
    np.testing.assert_array_equal(_engine_times(engine, t_in, w, theta, T, tau), expected)


@pytest.mark.parametrize("engine", CONV_RULE_ENGINES)
@pytest.mark.parametrize("gate", ["mask", "slope"])
@given(case=conv_case(), seed=st.integers(0, 1000), zeros=st.sampled_from([0.0, 0.5, 0.9]))
def test_conv_rule_matches_reference(engine, gate, case, seed, zeros):
    t_in, w, theta, T, tau, padding = case
    t_out = np.minimum(reference.spike_times_conv(t_in, w, theta, T, tau, padding), T)
    delta = _sparse_delta(t_out.shape, seed, zeros)
    G, D = _engine_rule(engine, t_in, t_out, delta, w, gate, T, tau, padding)
    np.testing.assert_allclose(G, reference.update_conv(t_in, t_out, delta, w.shape[-1], tau, T, padding), atol=1e-9)
    np.testing.assert_allclose(D, reference.displacement_conv(t_in, t_out, delta, w, gate, tau, T, padding), atol=1e-9)


@pytest.mark.parametrize("engine", RULE_ENGINES)
@pytest.mark.parametrize("gate", ["mask", "slope"])
@given(case=dense_case(), seed=st.integers(0, 1000), zeros=st.sampled_from([0.0, 0.5, 0.9]))
def test_dense_rule_matches_reference(engine, gate, case, seed, zeros):
    t_in, w, theta, T, tau = case
    t_out = np.minimum(reference.spike_times_dense(t_in, w, theta, T, tau), T)
    delta = _sparse_delta(t_out.shape, seed, zeros)
    G, D = _engine_rule(engine, t_in, t_out, delta, w, gate, T, tau)
    np.testing.assert_allclose(G, reference.update_dense(t_in, t_out, delta, tau, T), atol=1e-9)
    np.testing.assert_allclose(D, reference.displacement_dense(t_in, t_out, delta, w, gate, tau, T), atol=1e-9)


@pytest.mark.skipif(not event.AVAILABLE, reason="numba not installed")
@given(case=conv_case(), seed=st.integers(0, 1000))
def test_event_rule_in_float32_without_displacement(case, seed):
    """The training path: float32 operands, and no displacement for the first layer; the
    update direction is the float64 one rounded once."""
    t_in, w, theta, T, tau, padding = case
    t_out = np.minimum(reference.spike_times_conv(t_in, w, theta, T, tau, padding), T)
    delta = _sparse_delta(t_out.shape, seed, 0.5).astype(np.float32)
    args = [torch.tensor(a, dtype=torch.float32) for a in (t_in, t_out, delta, w)]
    expected = reference.update_conv(t_in, t_out, delta.astype(np.float64), w.shape[-1], tau, T, padding)
    chooser = event._prefer_sweep
    try:
        for sweep in (False, True):
            event._prefer_sweep = lambda *a: sweep
            G, D = event.rule(*args, "mask", T, tau, padding, need_displacement=False)
            assert D is None and G.dtype == torch.float32
            np.testing.assert_allclose(G.numpy(), expected, rtol=1e-6, atol=1e-6)
    finally:
        event._prefer_sweep = chooser


POOL_ENGINES = ["vectorised"] + (["event"] if event.AVAILABLE else [])


@pytest.mark.parametrize("engine", POOL_ENGINES)
@given(
    t=st.lists(st.sampled_from([0.0, 1.0, 2.0, 3.0, 7.0, math.inf]), min_size=2 * 7 * 7, max_size=2 * 7 * 7),
    k=st.sampled_from([2, 3]),
)
def test_pooling_matches_reference(engine, t, k):
    t_in = np.array(t).reshape(1, 2, 7, 7)  # 7 = 3k + 1 or 2k + 3: the last row and column are dropped
    times, winners = kernels.earliest_pool(torch.tensor(t_in), k, engine=engine)
    ref_times, ref_winners = reference.earliest_pool(t_in, k)
    np.testing.assert_array_equal(times.numpy(), ref_times)
    finite = np.isfinite(ref_times)  # the winner of an all-silent window is irrelevant
    np.testing.assert_array_equal(winners.numpy()[finite], ref_winners[finite])


def test_reference_neuron_by_hand():
    """One neuron, two inputs: the ramp and step PSPs give the spike times worked out on paper."""
    t_in = np.array([[0.0, 2.0]])
    w = np.array([[1.0, 1.0]])
    # step PSP (τ = 1): u(1) = 1, u(3) = 2 -> fires at 3 for θ = 2
    assert reference.spike_times_dense(t_in, w, 2.0, 16, 1.0)[0, 0] == 3.0
    # ramp over T = 16: u(t) = (t + (t - 2)) / 16 ≥ 0.5 <=> t ≥ 5
    assert reference.spike_times_dense(t_in, w, 0.5, 16, math.inf)[0, 0] == 5.0
    # a never-firing input adds nothing; the neuron stays silent
    assert math.isinf(reference.spike_times_dense(np.array([[np.inf, np.inf]]), w, 0.1, 16, 1.0)[0, 0])


@given(conv_case(), st.integers(2, 5))
def test_strided_scan_looks_at_every_kth_step_and_at_T(case, stride):
    """The calibration's strided scan: its peak and its spikes are those of the potential on
    the steps it looks at (every ``stride``-th and ``T``), so its spikes are never early."""
    t_in, w, theta, T, tau, padding = case
    t_in, w = torch.from_numpy(t_in), torch.from_numpy(w)
    full_t, _ = vectorised.scan_potential(t_in, w, theta, T, tau, padding)
    coarse_t, coarse_max = vectorised.scan_potential(t_in, w, theta, T, tau, padding, track_max=True, stride=stride)
    steps = sorted(set(range(stride, T + 1, stride)) | {T})
    x = vectorised.pad_never_firing(t_in, padding)
    u = torch.stack([torch.nn.functional.conv2d(psp(s - x, tau, T), w) for s in steps])
    torch.testing.assert_close(coarse_max, u.amax(0))
    crossed = u >= theta
    first = torch.tensor(steps, dtype=full_t.dtype)[crossed.to(torch.uint8).argmax(0)]
    assert torch.equal(coarse_t, torch.where(crossed.any(0), first, torch.full_like(first, math.inf)))
    assert (coarse_t >= full_t).all()
