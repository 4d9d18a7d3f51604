"""Early-exit inference gives the full simulation's classes and decision times (property tests).

Weights, thresholds and PSP values are dyadic rationals (as in ``test_engines``), so
potentials are exact and ties — equal output times, equal potentials — are common.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stidi import inference
from stidi.kernels import event, reference
from stidi.network import Network

pytestmark = pytest.mark.skipif(not event.AVAILABLE, reason="the horizon-limited scan is an event-engine kernel")

TAUS = [1.0, 4.0, 8.0, math.inf]


@st.composite
def network_case(draw):
    """A small random conv → pool → conv/dense → dense network and a batch of input times."""
    T = draw(st.sampled_from([8, 16, 32]))
    tau = draw(st.sampled_from(TAUS))
    spec = draw(st.sampled_from(["2C3-P2-4", "3C3-P2-2C2-5", "2C3-3", "6-3"]))
    shape = (1, 6, 6) if "C" in spec else (12,)
    thresholds = [draw(st.integers(1, 24)) / 16.0 for _ in range(spec.count("-") + 1 - spec.count("P"))]
    net = Network(spec, shape, T=T, tau=tau, thresholds=thresholds, forced_firing=draw(st.booleans()))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    for w in net.weights:
        w.copy_(torch.from_numpy(rng.integers(-8, 17, size=tuple(w.shape)) / 16.0))
    B = draw(st.integers(1, 6))
    t_in = rng.integers(0, T + 1, size=(B, *shape)).astype(np.float64)
    t_in[rng.random(t_in.shape) < draw(st.sampled_from([0.0, 0.3, 0.7]))] = np.inf
    return net, torch.tensor(t_in, dtype=torch.float32)


def _same_decision(a, b) -> None:
    assert torch.equal(a.classes, b.classes)
    assert torch.equal(a.decision_time, b.decision_time)


@given(case=network_case(), seed=st.integers(0, 1000))
def test_horizon_scan_gives_exact_times_up_to_the_horizon(case, seed):
    """Every layer's spikes at or before a sample's horizon keep their times; later ones are ``inf``."""
    net, t_in = case
    trace = net.trace(t_in)
    horizon = np.random.default_rng(seed).integers(0, net.T + 1, size=t_in.shape[0])
    hidden, t_out = inference.forward_until(net, t_in, horizon)
    h = torch.tensor(horizon, dtype=torch.float32)
    for got, full in ((hidden, trace.times[-2]), (t_out, trace.times[-1])):
        hb = h.view(-1, *[1] * (full.dim() - 1))
        assert torch.equal(got, torch.where(full <= hb, full, torch.full_like(full, math.inf)))


@given(case=network_case(), horizon=st.integers(0, 32))
def test_early_exit_matches_full_prediction_at_any_horizon(case, horizon):
    """Whatever the first-pass horizon, classes and decision times are the full simulation's,
    ties and forced firing included; output times agree up to the decision."""
    net, t_in = case
    full = net.predict(t_in)
    early = inference.predict_early(net, t_in, horizon=horizon)
    _same_decision(full, early)
    known = full.output_times <= full.decision_time.unsqueeze(1)
    assert torch.equal(early.output_times[known], full.output_times[known])


@given(case=network_case())
def test_adaptive_horizon_matches_full_prediction(case):
    """``Network.predict(early_exit=True)`` over repeated batches (the horizon then comes
    from the decision times seen) agrees with the full forward pass every time."""
    net, t_in = case
    full = net.predict(t_in)
    for _ in range(3):
        _same_decision(full, net.predict(t_in, early_exit=True))


def test_horizon_scan_matches_reference_simulator():
    """The horizon-limited event kernels agree with the reference simulator cut at the horizon."""
    rng = np.random.default_rng(0)
    T, tau, theta = 16, math.inf, 1.0
    t_in = rng.integers(0, T + 1, size=(4, 2, 6, 6)).astype(np.float64)
    t_in[rng.random(t_in.shape) < 0.3] = np.inf
    w = rng.integers(-8, 17, size=(3, 2, 3, 3)) / 16.0
    ref = reference.spike_times_conv(t_in, w, theta, T, tau)
    for h in range(T + 1):
        got = event.spike_times(torch.tensor(t_in), torch.tensor(w), theta, T, tau, horizon=np.full(4, h)).numpy()
        np.testing.assert_array_equal(got, np.where(ref <= h, ref, np.inf))
    x, wd = t_in.reshape(4, -1), rng.integers(-8, 17, size=(5, 72)) / 16.0
    ref = reference.spike_times_dense(x, wd, theta, T, tau)
    for h in range(T + 1):
        got = event.spike_times(torch.tensor(x), torch.tensor(wd), theta, T, tau, horizon=np.full(4, h)).numpy()
        np.testing.assert_array_equal(got, np.where(ref <= h, ref, np.inf))


def test_forced_firing_is_not_applied_before_T():
    """A network whose outputs never fire: without a full scan nothing is decided, and the
    forced decision at ``T`` (tie-break by potential) comes out as in the full pass."""
    net = Network("4", (3,), T=8, thresholds=100.0, forced_firing=True)
    net.weights[0].copy_(torch.tensor([[1.0, 0, 0], [0, 2, 0], [0, 0, 0.5], [0.25, 0.25, 0.25]]))
    t_in = torch.tensor([[0.0, 1.0, 2.0], [math.inf, 3.0, 0.0]])
    full = net.predict(t_in)
    assert torch.equal(full.decision_time, torch.tensor([8.0, 8.0]))
    for h in range(9):
        _same_decision(full, inference.predict_early(net, t_in, horizon=h))


def test_choose_horizon_trades_rerun_for_saved_work():
    net = Network("4", (3,), T=100)
    assert inference.choose_horizon(net) == 100  # nothing seen yet: full scan
    inference._remember(net, torch.tensor([20.0] * 95 + [100.0] * 5))
    assert inference.choose_horizon(net) == 20
    inference._history.pop(net)
    inference._remember(net, torch.tensor([95.0] * 100))
    assert inference.choose_horizon(net) == 100  # late decisions: no saving worth a rerun
