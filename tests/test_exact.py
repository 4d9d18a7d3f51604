"""The update direction is exact: the same to the bit for any split of a batch, thread count,
convolution kernel and engine (fixed-point sums, :mod:`stidi.kernels.fixed_point`).

This is what lets N data-parallel processes apply exactly the update of one process.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stidi import kernels
from stidi.kernels import event, fixed_point, reference, vectorised
from stidi.network import Network
from stidi.stidi_bp import RuleOptions, finish_directions, idle_sums, update_directions, update_sums

needs_numba = pytest.mark.skipif(not event.AVAILABLE, reason="numba not installed")


@st.composite
def rule_case(draw, conv: bool):
    """Training-path operands (float32 times and errors) of a batch of 2–7 samples."""
    T = draw(st.sampled_from([8, 16, 32]))
    tau = draw(st.sampled_from([1.0, 3.0, 8.0, math.inf]))
    B = draw(st.integers(2, 7))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    if conv:
        C, H, k, co, padding = draw(st.integers(1, 3)), draw(st.integers(3, 8)), draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(0, 1))
        t_in = rng.integers(0, T + 1, size=(B, C, H, H)).astype(np.float32)
        w = rng.standard_normal((co, C, k, k)).astype(np.float32)
        out = (B, co, H + 2 * padding - k + 1, H + 2 * padding - k + 1)
    else:
        n_in, n_out, padding = draw(st.integers(1, 30)), draw(st.integers(1, 6)), 0
        t_in = rng.integers(0, T + 1, size=(B, n_in)).astype(np.float32)
        w = rng.standard_normal((n_out, n_in)).astype(np.float32)
        out = (B, n_out)
    t_in[rng.random(t_in.shape) < draw(st.sampled_from([0.0, 0.4, 0.9]))] = np.inf
    t_out = rng.integers(0, T + 1, size=out).astype(np.float32)
    # errors of very different sizes, many of them zero (pooling losers)
    delta = (rng.standard_normal(out) * 10.0 ** rng.integers(-6, 2, size=out)).astype(np.float32)
    delta[rng.random(out) < draw(st.sampled_from([0.0, 0.5, 0.9]))] = 0.0
    split = draw(st.integers(1, B - 1))
    tensors = [torch.from_numpy(a) for a in (t_in, t_out, delta, w)]
    return tensors, T, tau, padding, split


def _quantum(delta: torch.Tensor, T: int, tau: float) -> torch.Tensor:
    B, J = delta.shape[:2]
    return fixed_point.quantum(fixed_point.peak_delta(delta.reshape(B, J, -1)), B * (delta[0].numel() // J), T, tau)


def _event_sums(t_in, t_out, delta, w, T, tau, padding, q, sweep=None):
    chooser = event._prefer_sweep
    if sweep is not None:
        event._prefer_sweep = lambda *a: sweep
    try:
        return event.rule(t_in, t_out, delta, w, "mask", T, tau, padding, quantum=q)
    finally:
        event._prefer_sweep = chooser


@needs_numba
@pytest.mark.parametrize("conv", [True, False])
@given(data=st.data())
def test_sums_are_the_same_for_any_split_kernel_and_engine(conv, data):
    (t_in, t_out, delta, w), T, tau, padding, split = data.draw(rule_case(conv))
    q = _quantum(delta, T, tau)
    G, D = _event_sums(t_in, t_out, delta, w, T, tau, padding, q)
    assert G.dtype == torch.float64
    # two shares of the batch, with the quanta of the whole batch, add up to the whole to the bit
    G1, D1 = _event_sums(t_in[:split], t_out[:split], delta[:split], w, T, tau, padding, q)
    G2, D2 = _event_sums(t_in[split:], t_out[split:], delta[split:], w, T, tau, padding, q)
    assert torch.equal(G1 + G2, G) and torch.equal(G2 + G1, G)
    assert torch.equal(torch.cat([D1, D2]), D), "a sample's displacement depends on that sample alone"
    # both convolution kernels, and the vectorised engine, sum the same rounded terms
    if conv:
        for sweep in (False, True):
            assert torch.equal(_event_sums(t_in, t_out, delta, w, T, tau, padding, q, sweep)[0], G)
    assert torch.equal(vectorised.update_sum(t_in, t_out, delta, w, T, tau, q, padding), G)
    # and the exact sum is the true one up to the quanta's rounding
    scale = T if math.isinf(tau) else tau
    args = [a.double().numpy() for a in (t_in, t_out, delta)]
    if conv:
        expected = reference.update_conv(*args, w.shape[-1], tau, T, padding)
    else:
        expected = reference.update_dense(*args, tau, T)
    np.testing.assert_allclose(G.numpy() / scale, expected, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(expected).max()))


@needs_numba
@pytest.mark.skipif(event.AVAILABLE and event.numba.config.NUMBA_NUM_THREADS < 2, reason="needs NUMBA_NUM_THREADS ≥ 2")
@given(data=st.data())
def test_sums_are_the_same_on_any_number_of_threads(data):
    (t_in, t_out, delta, w), T, tau, padding, _ = data.draw(rule_case(True))
    q = _quantum(delta, T, tau)
    before = event.numba.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            event.numba.set_num_threads(threads)
            results.append(event.rule(t_in, t_out, delta, w, "slope", T, tau, padding, quantum=q))
    finally:
        event.numba.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_quantum_bounds_every_partial_sum():
    q = fixed_point.quantum(torch.tensor([0.75, 0.0, math.nan, 1e-30]), 32 * 576, 256, math.inf)
    assert q.dtype == torch.float64 and q[1] == 1.0 and q[2] == 1.0
    for m, qj in ((0.75, q[0]), (1e-30, q[3])):
        bound = m * 32 * 576 * 256
        assert bound < 2**52 * qj <= 2 * bound  # the finest power of two that keeps 2^53 q clear
        assert math.frexp(float(qj))[0] == 0.5  # a power of two: scaling by it is exact


def _conv_net(seed: int = 0) -> tuple[Network, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    net = Network("4C3-P2-6C3-12", input_shape=(2, 12, 12), T=32, tau=math.inf, thresholds=1.0)
    t_in = torch.randint(0, 40, (10, 2, 12, 12), generator=g).float()
    t_in[t_in >= 32] = math.inf
    net.initialise(t_in, [0.4, 0.4, 0.6], g)
    return net, t_in, torch.randint(0, 12, (10,), generator=g)


@pytest.mark.parametrize("engine", ["event", "vectorised"] if event.AVAILABLE else ["vectorised"])
@pytest.mark.parametrize("opts", [RuleOptions(), RuleOptions(displacement_gate="slope", conv_update="mean", error_norm="none"),
                                  RuleOptions(targets="softmax", error_norm="batch_max")])
def test_a_batch_split_over_processes_gives_the_direction_of_one(monkeypatch, engine, opts):
    """What a data-parallel step does: each share's sums with the global batch's quanta (the
    peaks agreed over the shares), added up, give the direction of the whole batch to the bit
    (on the event engine, whose forward pass and displacements depend on each sample alone)."""
    monkeypatch.setenv("STIDI_ENGINE", engine)
    net, t_in, labels = _conv_net()
    trace = net.trace(t_in)
    peaks: list[torch.Tensor] = []
    whole = update_sums(net, trace, labels, opts, agree=lambda p: peaks.append(p) or p)
    direction = update_directions(net, trace, labels, opts)
    assert all(torch.equal(a, b) for a, b in zip(finish_directions(net, whole, opts, len(labels)), direction))
    for split in (1, 4, 9):
        shares = []
        for part in (slice(0, split), slice(split, None)):
            agreed = iter(peaks)  # the maximum over the shares is the maximum over the batch
            local = net.trace(t_in[part])
            shares.append(update_sums(net, local, labels[part], opts, len(labels), lambda p: torch.maximum(p, next(agreed))))
        total = [a + b for a, b in zip(*shares)]
        if engine == "event":
            assert all(torch.equal(a, b) for a, b in zip(total, whole)), f"split at {split}"
            assert all(torch.equal(a, b) for a, b in zip(finish_directions(net, total, opts, len(labels)), direction))
        else:
            # the vectorised engine sums the top layer exactly too; the displacements handed down
            # are PyTorch float sums whose rounding may depend on the batch: close, not equal
            assert torch.equal(total[-1], whole[-1]), f"split at {split}"
            for a, b in zip(finish_directions(net, total, opts, len(labels)), direction):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("opts", [RuleOptions(), RuleOptions(error_norm="batch_max")])
def test_an_empty_share_takes_part_in_every_agreement_of_a_full_one(opts):
    """A process whose share of a batch is empty must make the same ``agree`` calls, with
    tensors of the same shapes and dtypes, or a data-parallel step would hang or mismatch."""
    net, t_in, labels = _conv_net()
    full: list[torch.Tensor] = []
    update_sums(net, net.trace(t_in), labels, opts, agree=lambda p: full.append(p) or p)
    empty: list[torch.Tensor] = []
    sums = idle_sums(net, opts, agree=lambda p: empty.append(p) or p)
    assert [(p.shape, p.dtype) for p in empty] == [(p.shape, p.dtype) for p in full]
    assert all(not s.any() for s in sums)


def test_the_direction_is_the_float64_one_rounded():
    net, t_in, labels = _conv_net(1)
    trace = net.trace(t_in)
    calls = []
    real = kernels.rule

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    kernels.rule, before = spy, kernels.rule
    try:
        direction = update_directions(net, trace, labels, RuleOptions())
    finally:
        kernels.rule = before
    for (x, t, d, w, gate, T, tau, padding), G in zip(calls, reversed(direction)):
        expected = vectorised.update_direction(x.double(), t.double(), d.double(), w.double(), T, tau, padding) / len(labels)
        torch.testing.assert_close(G, expected.float(), rtol=2e-7, atol=1e-12)
