"""Event-driven spike-time engine (numba, parallel over the batch).

Each input neuron spikes at most once and the PSP is piecewise linear, so between input
events a neuron's potential is a straight line. With ``scale = τ`` (``T`` for the ramp),
an input spiking at ``t_i`` adds ``w (t − t_i)`` to ``u · scale`` while its PSP rises:
a start event at ``t_i`` adds ``w`` to the slope ``S1`` and, for a finite τ, an end event
at ``t_i + τ`` takes it off again. Events change the slope only; ``V = u · scale`` is
continuous. The engine sorts each sample's events by step (counting sort) and keeps
``(V, S1)`` per neuron, brought forward lazily: only when an event reaches a neuron is it
advanced, ``V += S1 · (s − a)``, from the step ``a`` of its last event. A neuron can only
cross threshold on that segment, and does so iff it is above threshold at its end; the
crossing step then follows from one division, corrected by exact comparisons. Work per
sample: ``events × fan-out`` slope updates plus one advance per (neuron, distinct event
step it sees) — independent of ``T`` — instead of the ``T`` full convolutions of a
time-stepped simulation. All inner loops run over the output channels, branch-free
(channels-last weights), so they vectorise.

The learning rule pairs each output with a nonzero ``δ`` only with the inputs of its
receptive field that fired before it — the only pairs that contribute — using the same
time-sorted events as the forward pass, and writes the displacement straight into input
coordinates (no unfold/fold). Every term of the update direction is rounded to a
power-of-two quantum first (:mod:`stidi.kernels.fixed_point`), so its sums are exact and
the same for any thread count, kernel choice or split of the batch.

The functions mirror :mod:`stidi.kernels.vectorised` and take/return torch tensors;
``τ`` must be an integer number of steps or ``inf``. Potentials and sums run in float64:
with integer steps every term is exact, so spike times match the reference simulator.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import fixed_point
from .psp import psp_scale

try:
    import numba
    from numba import njit, prange

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only without numba
    AVAILABLE = False

if AVAILABLE:

    @njit(cache=True, inline="always")
    def _scale_and_lag(tau, T):
        """``(scale, lag)``: ``u · scale = Σ_i w_i (t − t_i)`` on a rising PSP (``scale = τ``,
        ``T`` for the ramp), and the steps after which a PSP stops rising (``τ``; 0 for the ramp)."""
        if math.isinf(tau):
            return float(T), 0
        return float(tau), int(tau)

    @njit(cache=True)
    def _sorted_events(times, T, lag):
        """One sample's slope changes sorted by step (counting sort): ``(steps, inputs, signs)``.

        An input spiking at ``t_i < T`` starts a rising PSP at ``t_i`` (sign ``+1``) and, for a
        finite τ, stops it at ``t_i + τ`` (sign ``−1``) when that is before ``T``. An event at
        step ``s`` contributes ``sign · w (t − s)`` to ``u · scale`` from step ``s`` on (0 at ``s``).
        """
        counts = np.zeros(T + 1, dtype=np.int64)
        for i in range(times.size):
            t = times[i]
            if t < T:
                counts[int(t) + 1] += 1
                if lag > 0 and t + lag < T:
                    counts[int(t) + lag + 1] += 1
        for k in range(T):
            counts[k + 1] += counts[k]
        n = counts[T]
        steps = np.empty(n, dtype=np.int64)
        inputs = np.empty(n, dtype=np.int64)
        signs = np.empty(n, dtype=np.float64)
        fill = counts[:T].copy()
        for i in range(times.size):
            t = times[i]
            if t < T:
                j = int(t)
                steps[fill[j]], inputs[fill[j]], signs[fill[j]] = j, i, 1.0
                fill[j] += 1
                if lag > 0 and t + lag < T:
                    j += lag
                    steps[fill[j]], inputs[fill[j]], signs[fill[j]] = j, i, -1.0
                    fill[j] += 1
        return steps, inputs, signs

    @njit(cache=True, inline="always")
    def _crossing_step(a, s, k, v0, thr):
        """First integer ``m`` in ``(a, s]`` with ``v0 + k (m − a) ≥ thr``, given ``v0 < thr`` (the
        value at ``a``) and that it holds at ``m = s``.

        Every comparison evaluates the segment from its start, ``v0 + k (m − a)``, which is
        monotone in ``m`` also in floating point, so the answer does not depend on where the
        segment ends: a scan that stops at a horizon ``h < s`` (:func:`spike_times` with
        ``horizon``) finds the same step for every crossing at or before ``h``. The estimate
        ``a + ceil((thr − v0) / k)`` is corrected by the comparisons themselves, so rounding
        in the division can never shift it.
        """
        m = s
        if k > 0.0:
            q = math.ceil((thr - v0) / k)  # clamped before the integer conversion: k may be tiny
            if q <= 1:
                m = a + 1
            elif q < s - a:
                m = a + int(q)
        while m > a + 1 and v0 + k * (m - 1 - a) >= thr:
            m -= 1
        while m < s and v0 + k * (m - a) < thr:
            m += 1
        return m

    @njit(cache=True, inline="always")
    def _check_crossings(s, a, S1, V, p, thr, fired, remaining, V0):
        """Bring the neurons of position ``p`` from step ``a`` to ``s`` and fire those that reach
        threshold on the way; returns how many remain.

        Between slope changes ``u · scale`` is linear: ``V(s) = V(a) + S1 (s − a)``, below
        ``thr = θ · scale`` at ``a``, so a neuron crosses in ``(a, s]`` iff ``V(s) ≥ thr``.
        A neuron that fired gets ``V = −inf``: it can never cross again, and the loops stay
        branch-free (vectorised over the channels). The state of position ``p`` is row ``p``
        of ``S1``, ``V`` and ``fired``; ``V0`` (one row) keeps ``V(a)`` for the crossing step.
        """
        Co = S1.shape[1]
        dt = float(s - a)
        hits = 0
        for co in range(Co):
            v0 = V[p, co]
            V0[co] = v0
            v = v0 + S1[p, co] * dt
            V[p, co] = v
            hits += v >= thr
        if hits == 0:
            return remaining
        for co in range(Co):
            if V[p, co] >= thr:
                fired[p, co] = _crossing_step(a, s, S1[p, co], V0[co], thr)
                V[p, co] = -np.inf
                remaining -= 1
        return remaining

    @njit(parallel=True, cache=True)
    def _dense_forward(t_in, w_t, theta, T, tau, horizon, out):
        """``t_in (B, N)``, ``w_t (N, M)`` (transposed weight), ``out (B, M)`` filled with times.

        Every output sees every event: the sample's sorted events drive the ``M`` neurons at
        once; they are advanced (and checked for crossings) once per distinct event step
        and at the sample's horizon (``horizon[b] ≤ T``; see :func:`spike_times`), and the
        scan stops when every neuron fired.
        """
        B = t_in.shape[0]
        M = w_t.shape[1]
        scale, lag = _scale_and_lag(tau, T)
        thr = theta * scale
        for b in prange(B):
            h = horizon[b]
            steps, inputs, signs = _sorted_events(t_in[b], h, lag)
            S1, V, V0 = np.zeros((1, M)), np.zeros((1, M)), np.empty(M)
            fired = np.full((1, M), -1, dtype=np.int64)
            remaining, prev = M, -1
            for e in range(steps.size):
                s = steps[e]
                if s > prev:
                    if prev >= 0:
                        remaining = _check_crossings(s, prev, S1, V, 0, thr, fired, remaining, V0)
                        if remaining == 0:
                            break
                    prev = s
                _add_event(S1, 0, w_t, inputs[e], signs[e])
            if remaining > 0 and prev >= 0:
                _check_crossings(h, prev, S1, V, 0, thr, fired, remaining, V0)
            for m in range(M):
                out[b, m] = fired[0, m] if fired[0, m] >= 0 else np.inf

    @njit(cache=True)
    def _input_coordinates(C, H, W, K):
        """Row, column and first weight row (``c · K²``) of every input ``(c, y, x)`` in flat order:
        tables the samples share, so that no event needs an integer division."""
        ys = np.empty(C * H * W, dtype=np.int64)
        xs = np.empty(C * H * W, dtype=np.int64)
        base = np.empty(C * H * W, dtype=np.int64)
        i = 0
        for c in range(C):
            for y in range(H):
                for x in range(W):
                    ys[i], xs[i], base[i] = y, x, c * K * K
                    i += 1
        return ys, xs, base

    @njit(cache=True)
    def _event_coordinates(inputs, tables):
        """Row, column and first weight row of each event's input, looked up in ``tables``."""
        ty, tx, tb = tables
        n = inputs.size
        ys = np.empty(n, dtype=np.int64)
        xs = np.empty(n, dtype=np.int64)
        base = np.empty(n, dtype=np.int64)
        for e in range(n):
            i = inputs[e]
            ys[e], xs[e], base[e] = ty[i], tx[i], tb[i]
        return ys, xs, base

    @njit(cache=True, inline="always")
    def _row_band(ys, n, oy, K, band):
        """Indices of the events in input rows ``oy … oy + K − 1``, in time order (branch-free compaction)."""
        nb = 0
        for e in range(n):
            band[nb] = e
            nb += (ys[e] >= oy) & (ys[e] < oy + K)
        return nb

    @njit(cache=True, inline="always")
    def _add_event(S1, p, w2, r, sign):
        """Slope change of one event at position ``p`` through weight row ``r``: ``S1 += σ w``
        (vectorised over channels; ``V`` is continuous at the event's step)."""
        for co in range(S1.shape[1]):
            S1[p, co] += sign * w2[r, co]

    @njit(parallel=True, cache=True)
    def _conv_forward(t_in, w, theta, T, tau, horizon, out):
        """``t_in (B, C, H, W)`` already padded, ``w (C, K, K, Co)`` (channels last), ``out (B, Co, Ho, Wo)``.

        One output row at a time: the events of the input rows it sees (its row band, in
        time order) are dealt to the ``≤ K`` positions of the row they reach. Each position
        keeps the ``(V, S1)`` of its ``Co`` neurons and the step of the last event that
        reached it, and is advanced (all its channels at once, checking for crossings)
        whenever a later event arrives. Positions whose neurons all fired are skipped; the
        row ends when all have. Only events before the sample's horizon ``horizon[b] ≤ T``
        are dealt, and the last check is at the horizon (see :func:`spike_times`).
        """
        B, C, H, W = t_in.shape
        _, K, _, Co = w.shape
        Ho, Wo = H - K + 1, W - K + 1
        w2 = w.reshape(C * K * K, Co)
        scale, lag = _scale_and_lag(tau, T)
        thr = theta * scale
        tables = _input_coordinates(C, H, W, K)
        for b in prange(B):
            h = horizon[b]
            steps, inputs, signs = _sorted_events(t_in[b].reshape(-1), h, lag)
            n = steps.size
            ys, xs, base = _event_coordinates(inputs, tables)
            band = np.empty(n + 1, dtype=np.int64)
            S1, V, V0 = np.zeros((Wo, Co)), np.zeros((Wo, Co)), np.empty(Co)
            fired = np.full((Wo, Co), -1, dtype=np.int64)
            prev = np.full(Wo, -1, dtype=np.int64)
            remaining = np.full(Wo, Co, dtype=np.int64)
            for oy in range(Ho):
                left = Wo
                nb = _row_band(ys, n, oy, K, band)
                for q in range(nb):
                    e = band[q]
                    s, x, sign = steps[e], xs[e], signs[e]
                    row0 = base[e] + (ys[e] - oy) * K + x
                    for ox in range(max(0, x - K + 1), min(Wo, x + 1)):
                        if remaining[ox] == 0:
                            continue
                        if s > prev[ox]:
                            if prev[ox] >= 0:
                                remaining[ox] = _check_crossings(s, prev[ox], S1, V, ox, thr, fired, remaining[ox], V0)
                                if remaining[ox] == 0:
                                    left -= 1
                                    continue
                            prev[ox] = s
                        _add_event(S1, ox, w2, row0 - ox, sign)
                    if left == 0:
                        break
                for ox in range(Wo):
                    if prev[ox] < 0:  # no event reached this position: silent, state untouched
                        for co in range(Co):
                            out[b, co, oy, ox] = np.inf
                        continue
                    if remaining[ox] > 0:
                        _check_crossings(h, prev[ox], S1, V, ox, thr, fired, remaining[ox], V0)
                    for co in range(Co):
                        out[b, co, oy, ox] = fired[ox, co] if fired[ox, co] >= 0 else np.inf
                        S1[ox, co], V[ox, co], fired[ox, co] = 0.0, 0.0, -1
                    prev[ox], remaining[ox] = -1, Co

    #: Float flags of the learning-rule kernels: sums may be reassociated (so that they
    #: vectorise); infinities and NaNs keep their meaning. The update direction stays exact
    #: whatever the order: every term is rounded to a multiple of its quantum first (see
    #: :mod:`stidi.kernels.fixed_point`), so its sums are integer sums.
    RULE_MATH = {"reassoc", "contract", "nsz"}

    @njit(cache=True)
    def _fields_by_position(steps, inputs, H, W, K, tables):
        """Each output position's receptive-field events, in time order, as one flat list:
        position ``l = oy · Wo + ox`` owns entries ``start[l] : start[l + 1]`` of
        ``(step, weight column (c · K + ky) · K + kx, input index)``.

        The list lengths are box sums of the events per input location; the sample's sorted
        events are then dealt to the ``≤ K × K`` positions they reach, so every list keeps
        the time order.
        """
        n = steps.size
        Ho, Wo = H - K + 1, W - K + 1
        ys, xs, base = _event_coordinates(inputs, tables)
        # events per input location, then K × K box sums (rows, then columns): events per field
        grid = np.zeros((H, W), dtype=np.int64)
        for e in range(n):
            grid[ys[e], xs[e]] += 1
        rows = np.zeros((H, Wo), dtype=np.int64)
        for y in range(H):
            for ox in range(Wo):
                for kx in range(K):
                    rows[y, ox] += grid[y, ox + kx]
        start = np.zeros(Ho * Wo + 1, dtype=np.int64)
        for oy in range(Ho):
            for ox in range(Wo):
                for ky in range(K):
                    start[oy * Wo + ox + 1] += rows[oy + ky, ox]
        for l in range(Ho * Wo):
            start[l + 1] += start[l]
        fill = start[: Ho * Wo].copy()
        m = start[Ho * Wo]
        f_t = np.empty(m)
        f_r = np.empty(m, dtype=np.int64)
        f_i = np.empty(m, dtype=np.int64)
        for e in range(n):
            for oy in range(max(0, ys[e] - K + 1), min(Ho, ys[e] + 1)):
                row = base[e] + (ys[e] - oy) * K + xs[e]
                for ox in range(max(0, xs[e] - K + 1), min(Wo, xs[e] + 1)):
                    k = fill[oy * Wo + ox]
                    f_t[k], f_r[k], f_i[k] = steps[e], row - ox, inputs[e]
                    fill[oy * Wo + ox] = k + 1
        return start, f_t, f_r, f_i

    @njit(cache=True, fastmath=RULE_MATH, inline="always")
    def _output_pairs(j, tj, dj, dq, qj, f_t, f_r, f_i, o, m, w2, G, Db, cap, use_slope, tau, want_D):
        """Output ``j`` (time ``tj``, ``δ = dj``) against its receptive field's events ``o … o + m − 1``
        (time-sorted: step ``f_t``, weight column ``f_r``, input ``f_i``).

        The inputs that fired before ``tj`` are a prefix: ``G[j, r] += δ min(t_j − t_i, cap)``
        (``ε · scale``), rounded to a multiple of the quantum ``qj`` (``dq = δ / qj``), and
        ``D[i] += δ w_jr g`` with ``g = 1`` (mask) or ``[t_j − t_i < τ]`` (slope, before its
        factor ``1/scale``). Every pair writes a different ``G`` and ``D`` entry, so the loop
        carries no dependency.
        """
        for k in range(o, o + m):
            s = tj - f_t[k]
            if s <= 0.0:
                break
            r = f_r[k]
            G[j, r] += np.rint(dq * min(s, cap)) * qj
            if want_D:
                g = 1.0 if (s < tau or not use_slope) else 0.0
                Db[f_i[k]] += dj * w2[j, r] * g

    @njit(parallel=True, cache=True, fastmath=RULE_MATH)
    def _conv_rule(x, t_out, delta, w, use_slope, tau, T, want_D, samples, iq, q, G_parts, D):
        """Update direction and displacement of a convolution, for the samples ``samples``.

        ``x (B, C, H, W)`` padded input times, ``t_out``/``delta (B, Co, Ho, Wo)``, ``w (Co, C, K, K)``.
        Each position gets its receptive field's events in time order (as in the forward
        pass); every output with a nonzero ``δ`` — visited channel by channel, so that its
        rows of ``G`` and ``w`` stay in cache — then meets the prefix that fired before it.
        Accumulates ``G · scale``, every term rounded to a multiple of ``q[co]``
        (``iq = 1 / q``), into ``G_parts (P, Co, C, K, K)`` (one slab per thread) and, when
        ``want_D``, the displacement (without ``1/scale`` for the slope gate) into
        ``D (B, C, H, W)``.
        """
        B, C, H, W = x.shape
        Co, _, K, _ = w.shape
        L = (H - K + 1) * (W - K + 1)
        w2 = w.reshape(Co, C * K * K)
        cap = tau  # ε · scale = min(s, τ); the ramp (τ = inf) is never capped inside the window
        tables = _input_coordinates(C, H, W, K)
        P, n = G_parts.shape[0], samples.size
        for p in prange(P):
            G = G_parts[p].reshape(Co, C * K * K)
            for i in range(p * n // P, (p + 1) * n // P):
                b = samples[i]
                t_j, d_j = t_out[b].reshape(Co, L), delta[b].reshape(Co, L)
                steps, inputs, _ = _sorted_events(x[b].reshape(-1), T, 0)
                start, f_t, f_r, f_i = _fields_by_position(steps, inputs, H, W, K, tables)
                Db = D[b].reshape(-1) if want_D else D[0].reshape(-1)
                for co in range(Co):
                    for l in range(L):
                        d = float(d_j[co, l])
                        if d != 0.0:
                            _output_pairs(co, float(t_j[co, l]), d, d * iq[co], q[co], f_t, f_r, f_i, start[l],
                                          start[l + 1] - start[l], w2, G, Db, cap, use_slope, tau, want_D)

    @njit(parallel=True, cache=True, fastmath=RULE_MATH)
    def _conv_rule_sweep(x, t_out, delta, w, use_slope, tau, T, want_D, samples, iq, q, G_parts, D):
        """:func:`_conv_rule` without event lists: each output with a nonzero ``δ`` sweeps its
        whole receptive field, branch-free (inputs that fired later or never contribute
        ``max(t_j − t_i, 0) = 0`` and a zero gate). Cheaper when the fields are small. The
        terms of ``G`` are those of :func:`_conv_rule`, rounded alike, so both kernels give
        the same ``G`` to the bit."""
        B, C, H, W = x.shape
        Co, _, K, _ = w.shape
        Ho, Wo = H - K + 1, W - K + 1
        P, n = G_parts.shape[0], samples.size
        for p in prange(P):
            G = G_parts[p]
            for i in range(p * n // P, (p + 1) * n // P):
                b = samples[i]
                for co in range(Co):
                    qc, iqc = q[co], iq[co]
                    for oy in range(Ho):
                        for ox in range(Wo):
                            d, tj = float(delta[b, co, oy, ox]), float(t_out[b, co, oy, ox])
                            if d == 0.0:
                                continue
                            dq = d * iqc
                            for c in range(C):
                                for ky in range(K):
                                    xr, Gr = x[b, c, oy + ky, ox : ox + K], G[co, c, ky]
                                    for kx in range(K):
                                        Gr[kx] += np.rint(dq * min(max(tj - xr[kx], 0.0), tau)) * qc
                                    if want_D:
                                        wr, Dr = w[co, c, ky], D[b, c, oy + ky, ox : ox + K]
                                        for kx in range(K):
                                            s = tj - xr[kx]
                                            g = 1.0 if (s > 0.0 and (s < tau or not use_slope)) else 0.0
                                            Dr[kx] += d * wr[kx] * g

    @njit(parallel=True, cache=True, fastmath=RULE_MATH)
    def _dense_rule(x, t_out, delta, w, use_slope, tau, T, want_D, samples, iq, q, G_parts, D):
        """The rule of a dense layer: ``x (B, N)``, ``t_out``/``delta (B, M)``, ``w (M, N)``,
        ``G_parts (P, M, N)``, ``D (B, N)``; the samples ``samples``, terms of ``G`` rounded
        to multiples of ``q[j]`` (``iq = 1 / q``).

        Every output sees every input, so each output with a nonzero ``δ`` sweeps all inputs
        in one branch-free, vectorised loop over contiguous rows; inputs that fired later
        (or never: ``t = inf``) contribute ``max(t_j − t_i, 0) = 0`` and a zero gate.
        """
        B, N = x.shape
        M = w.shape[0]
        P, n = G_parts.shape[0], samples.size
        for p in prange(P):
            G = G_parts[p]
            for k in range(p * n // P, (p + 1) * n // P):
                b = samples[k]
                xb, Db = x[b], D[b] if want_D else D[0]
                for j in range(M):
                    d, tj = float(delta[b, j]), float(t_out[b, j])
                    if d == 0.0:
                        continue
                    Gj, wj, dq, qj = G[j], w[j], d * iq[j], q[j]
                    for i in range(N):
                        s = tj - xb[i]
                        Gj[i] += np.rint(dq * min(max(s, 0.0), tau)) * qj
                    if want_D:
                        for i in range(N):
                            s = tj - xb[i]
                            g = 1.0 if (s > 0.0 and (s < tau or not use_slope)) else 0.0
                            Db[i] += d * wj[i] * g

    @njit(parallel=True, cache=True)
    def _conv_causal_sums(x, t_out, need, w, T, out):
        """``out[b, co, oy, ox] = Σ w`` over the receptive field's inputs that fired before the
        output's time (``x (B, C, H, W)`` padded, ``t_out``/``need``/``out (B, Co, Ho, Wo)``,
        ``w (Co, C, K, K)``), for the outputs where ``need`` is set (0 elsewhere): each position's
        events in time order, as in :func:`_conv_rule`, summed up to the output's time."""
        B, C, H, W = x.shape
        Co, _, K, _ = w.shape
        L = (H - K + 1) * (W - K + 1)
        w2 = w.reshape(Co, C * K * K)
        tables = _input_coordinates(C, H, W, K)
        for b in prange(B):
            t_j, n_j, o = t_out[b].reshape(Co, L), need[b].reshape(Co, L), out[b].reshape(Co, L)
            steps, inputs, _ = _sorted_events(x[b].reshape(-1), T, 0)
            start, f_t, f_r, _ = _fields_by_position(steps, inputs, H, W, K, tables)
            for co in range(Co):
                for l in range(L):
                    tj, total = t_j[co, l], 0.0
                    if not n_j[co, l]:
                        o[co, l] = 0.0
                        continue
                    for k in range(start[l], start[l + 1]):
                        if f_t[k] >= tj:
                            break
                        total += w2[co, f_r[k]]
                    o[co, l] = total

    @njit(parallel=True, cache=True)
    def _dense_causal_sums(x, t_out, need, w, out):
        """``out[b, j] = Σ_i w[j, i] [x[b, i] < t_out[b, j]]`` for a dense layer (``w (M, N)``),
        where ``need[b, j]`` is set (0 elsewhere)."""
        B, N = x.shape
        M = w.shape[0]
        for b in prange(B):
            xb = x[b]
            for j in range(M):
                tj, wj, total = t_out[b, j], w[j], 0.0
                if not need[b, j]:
                    out[b, j] = 0.0
                    continue
                for i in range(N):
                    if xb[i] < tj:
                        total += wj[i]
                out[b, j] = total

    @njit(parallel=True, cache=True)
    def _earliest_pool(t_in, k, out, winner):
        """Earliest-spike pooling of ``t_in (B, C, H, W)`` over ``k × k`` windows (stride ``k``):
        ``out`` gets each window's earliest time, ``winner`` the flat index ``y · W + x`` of the
        first earliest neuron in row-major order (the window's first neuron if all are silent)."""
        B, C, H, W = t_in.shape
        Ho, Wo = H // k, W // k
        for bc in prange(B * C):
            b, c = bc // C, bc % C
            for y in range(Ho):
                for x in range(Wo):
                    best, best_at = np.inf, (y * k) * W + x * k
                    for dy in range(k):
                        for dx in range(k):
                            t = t_in[b, c, y * k + dy, x * k + dx]
                            if t < best:
                                best, best_at = t, (y * k + dy) * W + x * k + dx
                    out[b, c, y, x] = best
                    winner[b, c, y, x] = best_at

    @njit(parallel=True, cache=True)
    def _dense_forward_stepped(t_in, w_t, theta, T, tau, out):
        """Time-stepped variant of :func:`_dense_forward`: ``u(t) = u(t − 1) + slope`` for every unfired neuron."""
        B, N = t_in.shape
        M = w_t.shape[1]
        scale, lag = _scale_and_lag(tau, T)
        rate = 1.0 / scale
        for b in prange(B):
            steps, inputs, signs = _sorted_events(t_in[b], T, lag)
            e = 0
            u = np.zeros(M)
            slope = np.zeros(M)
            fired = np.zeros(M, dtype=np.bool_)
            remaining = M
            for m in range(M):
                out[b, m] = np.inf
            for t in range(1, T + 1):
                while e < steps.size and steps[e] == t - 1:  # events of step t − 1 act from t on
                    i, sign = inputs[e], signs[e] * rate
                    for m in range(M):
                        slope[m] += sign * w_t[i, m]
                    e += 1
                for m in range(M):
                    if not fired[m]:
                        u[m] += slope[m]
                        if u[m] >= theta:
                            fired[m] = True
                            out[b, m] = t
                            remaining -= 1
                if remaining == 0:
                    break

    @njit(cache=True, inline="always")
    def _scatter_slope(slope, w, c, y, x, sign, K, Ho, Wo):
        Co = w.shape[0]
        for ky in range(K):
            oy = y - ky
            if oy < 0 or oy >= Ho:
                continue
            for kx in range(K):
                ox = x - kx
                if ox < 0 or ox >= Wo:
                    continue
                for co in range(Co):
                    slope[co, oy, ox] += sign * w[co, c, ky, kx]

    @njit(parallel=True, cache=True)
    def _conv_forward_stepped(t_in, w, theta, T, tau, out):
        """Time-stepped variant of :func:`_conv_forward` (``w`` as ``(Co, C, K, K)``)."""
        B, C, H, W = t_in.shape
        Co, _, K, _ = w.shape
        Ho, Wo = H - K + 1, W - K + 1
        scale, lag = _scale_and_lag(tau, T)
        rate = 1.0 / scale
        for b in prange(B):
            steps, inputs, signs = _sorted_events(t_in[b].reshape(-1), T, lag)
            e = 0
            u = np.zeros((Co, Ho, Wo))
            slope = np.zeros((Co, Ho, Wo))
            fired = np.zeros((Co, Ho, Wo), dtype=np.bool_)
            remaining = Co * Ho * Wo
            out[b] = np.inf
            for t in range(1, T + 1):
                while e < steps.size and steps[e] == t - 1:  # events of step t − 1 act from t on
                    i = inputs[e]
                    c, rest = i // (H * W), i % (H * W)
                    _scatter_slope(slope, w, c, rest // W, rest % W, signs[e] * rate, K, Ho, Wo)
                    e += 1
                for co in range(Co):
                    for oy in range(Ho):
                        for ox in range(Wo):
                            if not fired[co, oy, ox]:
                                u[co, oy, ox] += slope[co, oy, ox]
                                if u[co, oy, ox] >= theta:
                                    fired[co, oy, ox] = True
                                    out[b, co, oy, ox] = t
                                    remaining -= 1
                if remaining == 0:
                    break


def _check_tau(tau: float) -> None:
    if not (math.isinf(tau) or float(tau).is_integer()):
        raise ValueError(f"the event engine needs an integer tau or inf, got {tau}")


def _prefer_lazy(x: np.ndarray, fan_out: int, n_out: int, T: int, tau: float) -> bool:
    """Choose the kernel by its cost model. Both do one update per (event, target) pair; on
    top, the event-driven kernel checks each neuron once per distinct step among the events
    it sees (at most ``T``), the stepped one once per step (exactly ``T``). The event-driven
    kernel is therefore never the costlier one; the stepped kernel remains as an
    independent implementation that the property tests hold to the same answers."""
    return True


def _prefer_sweep(x: np.ndarray, delta: np.ndarray, K: int, T: int) -> np.ndarray:
    """Choose the convolution rule kernel of each sample by its cost model: ``(B,)`` booleans.

    The sweep visits every (output with a nonzero ``δ``, receptive-field input) pair. The
    event lists cost about 8 such visits per (input event, position it reaches) — dealing
    the events and the pairs that follow — plus a pass over the inputs and the steps. Small
    fields (a first layer on pixels) favour the sweep, wide ones the lists. The choice
    depends on the sample alone, never on the others in the batch: the two kernels give the
    same update direction but sum the displacement in different orders, so a sample's
    displacement must not depend on which shard of a batch it is in.
    """
    B = x.shape[0]
    sweep = np.count_nonzero(delta.reshape(B, -1), axis=1) * x.shape[1] * K * K
    lists = 8 * np.count_nonzero(x.reshape(B, -1) < T, axis=1) * K * K + 4 * (x[0].size + T)
    return sweep < lists


def _as_numpy(a: torch.Tensor) -> np.ndarray:
    """A C-contiguous NumPy view of a CPU tensor (a copy only when it is not contiguous, or
    not float32/float64: other dtypes are widened to float64 for the kernels)."""
    a = a.detach().cpu()
    if a.dtype not in (torch.float32, torch.float64):
        a = a.double()
    return np.ascontiguousarray(a.numpy())


def _padded(t_in: torch.Tensor, padding: int) -> np.ndarray:
    from .vectorised import pad_never_firing

    return _as_numpy(pad_never_firing(t_in.detach(), padding))


def _channels_last(weight: torch.Tensor) -> np.ndarray:
    """The weight with the output channel innermost: ``(n_in, n_out)`` or ``(C, K, K, Co)``.

    It keeps its dtype (float32 weights are read as they are, half the memory traffic of
    a float64 copy); the kernels widen each weight to float64 exactly.
    """
    w = weight.detach()
    return _as_numpy(w.t() if w.dim() == 2 else w.permute(1, 2, 3, 0))


def spike_times(
    t_in: torch.Tensor,
    weight: torch.Tensor,
    theta: float,
    T: int,
    tau: float,
    padding: int = 0,
    horizon: np.ndarray | None = None,
) -> torch.Tensor:
    """Same contract as :func:`stidi.kernels.vectorised.spike_times`.

    Two exact kernels compute the same times: an event-driven one whose cost is
    independent of ``T`` and a time-stepped one; :func:`_prefer_lazy` picks one per call.
    Times keep the dtype of ``t_in`` (integers and ``inf`` are exact in float32).

    ``horizon`` (``(B,)`` integers in ``0 … T``) stops sample ``b``'s scan at step
    ``horizon[b]``: every spike at or before it gets its exact time, every later one
    ``inf``. This is causal: a neuron's potential at step ``m`` sums ``w (m − t_i)`` over
    the inputs with ``t_i < m`` only, so its crossing step, when ``≤ h``, depends on the
    input events before ``h`` alone and not on the rest (the event-driven kernel drops
    those and checks the last time at ``h``; see :func:`_crossing_step` for why the step
    comes out bit for bit the same). A horizon of ``T`` is the full scan.
    """
    _check_tau(tau)
    theta, T, tau = float(theta), int(T), float(tau)
    lazy = horizon is not None
    B = t_in.shape[0]
    h = np.full(B, T, dtype=np.int64) if horizon is None else np.ascontiguousarray(np.clip(horizon, 0, T), dtype=np.int64)
    if h.shape != (B,):
        raise ValueError(f"horizon: expected shape ({B},), got {h.shape}")
    if weight.dim() == 2:
        x = _as_numpy(t_in)
        out = np.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)
        if lazy or _prefer_lazy(x, weight.shape[0], weight.shape[0], T, tau):
            _dense_forward(x, _channels_last(weight), theta, T, tau, h, out)
        else:
            _dense_forward_stepped(x, _channels_last(weight), theta, T, tau, out)
    else:
        xp = _padded(t_in, padding)
        K = weight.shape[-1]
        out = np.empty((xp.shape[0], weight.shape[0], xp.shape[2] - K + 1, xp.shape[3] - K + 1), dtype=xp.dtype)
        if lazy or _prefer_lazy(xp, weight.shape[0] * K * K, out[0].size, T, tau):
            _conv_forward(xp, _channels_last(weight), theta, T, tau, h, out)
        else:
            _conv_forward_stepped(xp, np.ascontiguousarray(weight.detach().cpu().double().numpy()), theta, T, tau, out)
    return torch.from_numpy(out).to(t_in.dtype)


def earliest_pool(t_in: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`stidi.kernels.vectorised.earliest_pool` (one pass, no index tensors)."""
    x = _as_numpy(t_in)
    B, C, H, W = x.shape
    out = np.empty((B, C, H // k, W // k), dtype=x.dtype)
    winner = np.empty(out.shape, dtype=np.int64)
    _earliest_pool(x, int(k), out, winner)
    return torch.from_numpy(out).to(t_in.dtype), torch.from_numpy(winner)


def rule(
    t_in: torch.Tensor,
    t_out: torch.Tensor,
    delta: torch.Tensor,
    weight: torch.Tensor,
    gate: str,
    T: int,
    tau: float,
    padding: int = 0,
    need_displacement: bool = True,
    quantum: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Update direction and displacement at once (see :mod:`stidi.kernels.vectorised`).

    Pairs each output that has a nonzero ``δ`` only with the inputs of its receptive field
    that fired before it (the only pairs that contribute); every sum runs in float64. The
    displacement is ``None`` when not needed (the first layer).

    Each term ``δ_j · ε · scale`` of the update direction is rounded to a multiple of the
    quantum of its output channel (see :mod:`stidi.kernels.fixed_point`), so the sums are
    exact and the direction is the same to the bit whatever the number of threads, the
    kernel chosen and the split of the batch. With ``quantum`` (``(J,)`` float64, one per
    output channel or neuron) the direction comes back as that exact fixed-point sum
    ``Σ δ ε · scale`` in float64 (for sums over several calls or processes; divide by
    ``scale`` at the end); without it the quantum follows from this call's ``δ`` and the
    direction is ``Σ δ ε`` in the weight's dtype. A sample's displacement depends only on
    that sample.
    """
    _check_tau(tau)
    T, tau = int(T), float(tau)
    scale = psp_scale(tau, T)
    w = _as_numpy(weight)
    B = t_in.shape[0]
    exact = quantum is not None
    if quantum is None:
        quantum = fixed_point.batch_quantum(delta, B, T, tau)
    q = np.ascontiguousarray(quantum.detach().cpu().numpy(), dtype=np.float64)
    iq = 1.0 / q
    parts = max(1, min(B, numba.get_num_threads()))
    G_parts = np.zeros((parts, *w.shape))
    if weight.dim() == 2:
        x = _as_numpy(t_in)
        t_j, d_j = _as_numpy(t_out.reshape(B, -1)), _as_numpy(delta.reshape(B, -1))
        D = np.zeros(x.shape if need_displacement else (1,) * x.ndim)
        _dense_rule(x, t_j, d_j, w, gate == "slope", tau, T, need_displacement, np.arange(B), iq, q, G_parts, D)
    else:
        x, t_j, d_j = _padded(t_in, padding), _as_numpy(t_out), _as_numpy(delta)
        D = np.zeros(x.shape if need_displacement else (1,) * x.ndim)
        sweep = np.broadcast_to(np.asarray(_prefer_sweep(x, d_j, weight.shape[-1], T), dtype=bool), (B,))
        for kernel, chosen in ((_conv_rule_sweep, sweep), (_conv_rule, ~sweep)):
            samples = np.flatnonzero(chosen)
            if samples.size:
                kernel(x, t_j, d_j, w, gate == "slope", tau, T, need_displacement, samples, iq, q, G_parts, D)
    total = G_parts.sum(0)  # exact: every entry of every slab is a multiple of its quantum
    G = torch.from_numpy(total) if exact else torch.from_numpy(total / scale).to(weight.dtype)
    if not need_displacement:
        return G, None
    if gate == "slope":
        D /= scale
    D_t = torch.from_numpy(D)
    if padding and weight.dim() == 4:
        D_t = D_t[..., padding:-padding, padding:-padding]
    return G, D_t.to(t_in.dtype).contiguous()


def causal_weight_sums(t_in: torch.Tensor, t_out: torch.Tensor, weight: torch.Tensor, T: int, padding: int = 0,
                       need: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ_{i: t_i < t_j} w_ij`` for every output ``j`` of a dense (``t_in (B, N)``, ``t_out (B, M)``)
    or convolution layer (``t_in (B, C, H, W)`` unpadded, ``t_out (B, Co, Ho, Wo)``), in float64:
    ``T`` times the ramp potential's slope just before ``t_j``. Inputs at ``T`` or later never count.
    With ``need`` (booleans shaped as ``t_out``) only those outputs are summed, the others are 0.
    Each sample is summed on its own, in an order that depends only on that sample."""
    w = np.ascontiguousarray(weight.detach().cpu().double().numpy())
    t_j = np.ascontiguousarray(t_out.detach().cpu().double().numpy())
    n_j = np.ones(t_j.shape, dtype=np.bool_) if need is None else np.ascontiguousarray(need.detach().cpu().numpy(), dtype=np.bool_)
    out = np.empty(t_j.shape)
    if weight.dim() == 2:
        _dense_causal_sums(np.ascontiguousarray(t_in.detach().cpu().double().numpy()), t_j, n_j, w, out)
    else:
        xp = np.ascontiguousarray(_padded(t_in, padding), dtype=np.float64)
        _conv_causal_sums(xp, t_j, n_j, w, int(T), out)
    return torch.from_numpy(out)
