"""Event-driven spike-time engine (numba, parallel over the batch).

Each input neuron spikes at most once and the PSP is piecewise linear, so a neuron's
potential changes slope only at input events: a spike at ``t_i`` adds ``w / τ`` to the
slope of every neuron it reaches (``w / T`` for the ramp), and, for a finite ``τ``,
removes it again at ``t_i + τ``. The engine sorts each sample's slope changes by time
(counting sort) and keeps, per output neuron, its potential at the last event that
reached it and its current slope. Only when an event reaches a neuron is the neuron
brought forward, and the linear segment since its last event is solved for a threshold
crossing; neurons that fired are skipped. Cost per sample: ``events × fan-out`` plus
one final solve per silent neuron — independent of ``T`` — instead of the ``T`` full
convolutions of a time-stepped simulation. The learning rule visits each (output
neuron, receptive-field input) pair once.

The functions mirror :mod:`stidi.kernels.vectorised` and take/return torch tensors;
``τ`` must be an integer number of steps or ``inf``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

try:
    from numba import njit, prange

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only without numba
    AVAILABLE = False

if AVAILABLE:

    @njit(cache=True, inline="always")
    def _psp(s, tau, T):
        if s <= 0.0:
            return 0.0
        if math.isinf(tau):
            return s / T
        return min(s, tau) / tau

    @njit(cache=True, inline="always")
    def _gate(s, use_slope, tau, T):
        if s <= 0.0:
            return 0.0
        if not use_slope:
            return 1.0
        if math.isinf(tau):
            return 1.0 / T
        return 1.0 / tau if s < tau else 0.0

    @njit(cache=True, inline="always")
    def _rate_and_lag(tau, T):
        """Slope per unit weight of a rising PSP (``1/τ``, ``1/T`` for the ramp) and the
        steps after which it stops rising (``τ``; 0 for the ramp, which never stops)."""
        if math.isinf(tau):
            return 1.0 / T, 0
        return 1.0 / tau, int(tau)

    @njit(cache=True, inline="always")
    def _advance(n, s, u, slope, since, fired_at, theta):
        """Bring neuron ``n`` from step ``since[n]`` to step ``s`` on its current slope.

        Between slope changes the potential is linear, ``u(t) = u_a + k (t − a)``, so a
        crossing inside ``(a, s]`` exists iff ``u(s) ≥ θ`` (``u_a < θ`` holds for a neuron
        that has not fired). Its step is ``a + ceil((θ − u_a) / k)``, corrected by exact
        comparisons so that rounding in the division can never shift it. Returns True
        when the neuron fired.
        """
        a = since[n]
        k = slope[n]
        u_a = u[n]
        if s > a:
            if k > 0.0 and u_a + k * (s - a) >= theta:
                m = max(1, min(s - a, int(math.ceil((theta - u_a) / k))))
                while m > 1 and u_a + k * (m - 1) >= theta:
                    m -= 1
                while u_a + k * m < theta:
                    m += 1
                fired_at[n] = a + m
                return True
            u[n] = u_a + k * (s - a)
            since[n] = s
        return False

    @njit(cache=True)
    def _events_by_time_with_ends(times, T, lag):
        """Slope-change events per step: starts at ``t_i``, and for a finite τ ends at ``t_i + τ``.

        Returns ``(offsets, inputs, signs)`` with events of step ``s`` at
        ``offsets[s]:offsets[s+1]``; an event at ``s`` changes the slope from step ``s + 1`` on.
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
        inputs = np.empty(n, dtype=np.int64)
        signs = np.empty(n, dtype=np.float64)
        fill = counts[:T].copy()
        for i in range(times.size):
            t = times[i]
            if t < T:
                j = int(t)
                inputs[fill[j]] = i
                signs[fill[j]] = 1.0
                fill[j] += 1
                if lag > 0 and t + lag < T:
                    j = int(t) + lag
                    inputs[fill[j]] = i
                    signs[fill[j]] = -1.0
                    fill[j] += 1
        return counts, inputs, signs

    @njit(parallel=True, cache=True)
    def _dense_forward(t_in, w_t, theta, T, tau, out):
        """``t_in (B, N)``, ``w_t (N, M)`` (transposed weight), ``out (B, M)`` filled with times."""
        B, N = t_in.shape
        M = w_t.shape[1]
        rate, lag = _rate_and_lag(tau, T)
        for b in prange(B):
            offsets, inputs, signs = _events_by_time_with_ends(t_in[b], T, lag)
            u = np.zeros(M)
            slope = np.zeros(M)
            since = np.zeros(M, dtype=np.int64)
            fired_at = np.full(M, -1, dtype=np.int64)
            for s in range(T):
                for e in range(offsets[s], offsets[s + 1]):
                    i, sign = inputs[e], signs[e] * rate
                    for m in range(M):
                        if fired_at[m] < 0:
                            if _advance(m, s, u, slope, since, fired_at, theta):
                                continue
                            slope[m] += sign * w_t[i, m]
            for m in range(M):
                if fired_at[m] < 0:
                    _advance(m, T, u, slope, since, fired_at, theta)
                out[b, m] = fired_at[m] if fired_at[m] >= 0 else np.inf

    @njit(parallel=True, cache=True)
    def _conv_forward(t_in, w, theta, T, tau, out):
        """``t_in (B, C, H, W)`` already padded, ``w (C, K, K, Co)`` (channels last), ``out (B, Co, Ho, Wo)``."""
        B, C, H, W = t_in.shape
        _, K, _, Co = w.shape
        Ho, Wo = H - K + 1, W - K + 1
        rate, lag = _rate_and_lag(tau, T)
        n_out = Ho * Wo * Co
        for b in prange(B):
            offsets, inputs, signs = _events_by_time_with_ends(t_in[b].ravel(), T, lag)
            # neuron n = (oy * Wo + ox) * Co + co: channels innermost, as in w
            u = np.zeros(n_out)
            slope = np.zeros(n_out)
            since = np.zeros(n_out, dtype=np.int64)
            fired_at = np.full(n_out, -1, dtype=np.int64)
            for s in range(T):
                for e in range(offsets[s], offsets[s + 1]):
                    i, sign = inputs[e], signs[e] * rate
                    c, rest = i // (H * W), i % (H * W)
                    y, x = rest // W, rest % W
                    for ky in range(K):
                        oy = y - ky
                        if oy < 0 or oy >= Ho:
                            continue
                        for kx in range(K):
                            ox = x - kx
                            if ox < 0 or ox >= Wo:
                                continue
                            base = (oy * Wo + ox) * Co
                            for co in range(Co):
                                n = base + co
                                if fired_at[n] < 0:
                                    if _advance(n, s, u, slope, since, fired_at, theta):
                                        continue
                                    slope[n] += sign * w[c, ky, kx, co]
            for oy in range(Ho):
                for ox in range(Wo):
                    for co in range(Co):
                        n = (oy * Wo + ox) * Co + co
                        if fired_at[n] < 0:
                            _advance(n, T, u, slope, since, fired_at, theta)
                        out[b, co, oy, ox] = fired_at[n] if fired_at[n] >= 0 else np.inf

    @njit(parallel=True, cache=True)
    def _dense_forward_stepped(t_in, w_t, theta, T, tau, out):
        """Time-stepped variant of :func:`_dense_forward`: ``u(t) = u(t − 1) + slope`` for every unfired neuron."""
        B, N = t_in.shape
        M = w_t.shape[1]
        rate, lag = _rate_and_lag(tau, T)
        for b in prange(B):
            offsets, inputs, signs = _events_by_time_with_ends(t_in[b], T, lag)
            u = np.zeros(M)
            slope = np.zeros(M)
            fired = np.zeros(M, dtype=np.bool_)
            remaining = M
            for m in range(M):
                out[b, m] = np.inf
            for t in range(1, T + 1):
                s = t - 1
                for e in range(offsets[s], offsets[s + 1]):
                    i, sign = inputs[e], signs[e] * rate
                    for m in range(M):
                        slope[m] += sign * w_t[i, m]
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
        rate, lag = _rate_and_lag(tau, T)
        for b in prange(B):
            offsets, inputs, signs = _events_by_time_with_ends(t_in[b].ravel(), T, lag)
            u = np.zeros((Co, Ho, Wo))
            slope = np.zeros((Co, Ho, Wo))
            fired = np.zeros((Co, Ho, Wo), dtype=np.bool_)
            remaining = Co * Ho * Wo
            out[b] = np.inf
            for t in range(1, T + 1):
                s = t - 1
                for e in range(offsets[s], offsets[s + 1]):
                    i = inputs[e]
                    c, rest = i // (H * W), i % (H * W)
                    _scatter_slope(slope, w, c, rest // W, rest % W, signs[e] * rate, K, Ho, Wo)
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

    @njit(parallel=True, cache=True)
    def _pairs_rule(cols, t_out, delta, w2, use_slope, tau, T, G_per_sample, D):
        """Update direction and displacement over receptive fields.

        ``cols (B, R, L)`` input times per output position, ``t_out``/``delta (B, J, L)``,
        ``w2 (J, R)``; accumulates ``G_per_sample (B, J, R)`` and ``D (B, R, L)``.
        """
        B, R, L = cols.shape
        J = t_out.shape[1]
        for b in prange(B):
            for j in range(J):
                for l in range(L):
                    d = delta[b, j, l]
                    if d == 0.0:
                        continue
                    tj = t_out[b, j, l]
                    for r in range(R):
                        s = tj - cols[b, r, l]
                        if s > 0.0:
                            G_per_sample[b, j, r] += d * _psp(s, tau, T)
                            D[b, r, l] += d * w2[j, r] * _gate(s, use_slope, tau, T)


def _check_tau(tau: float) -> None:
    if not (math.isinf(tau) or float(tau).is_integer()):
        raise ValueError(f"the event engine needs an integer tau or inf, got {tau}")


def _prefer_lazy(x: np.ndarray, fan_out: int, n_out: int, T: int, tau: float) -> bool:
    """Choose the kernel by its cost model: the lazy kernel costs about one neuron update per
    (event, target) pair, the stepped one about one per (step, neuron) plus a cheaper one per pair."""
    events = np.count_nonzero(x < T) * (1 if math.isinf(tau) else 2)
    return events * fan_out < T * n_out * x.shape[0]


def spike_times(t_in: torch.Tensor, weight: torch.Tensor, theta: float, T: int, tau: float, padding: int = 0) -> torch.Tensor:
    """Same contract as :func:`stidi.kernels.vectorised.spike_times`.

    Two exact kernels compute the same times: a lazy one whose cost is independent of
    ``T`` (best when few input events reach each neuron) and a time-stepped one (best when
    many do); :func:`_prefer_lazy` picks one per call.
    """
    _check_tau(tau)
    from .vectorised import pad_never_firing

    x = np.ascontiguousarray(t_in.detach().cpu().numpy(), dtype=np.float64)
    w = weight.detach().cpu().numpy().astype(np.float64)
    theta, T, tau = float(theta), int(T), float(tau)
    if weight.dim() == 2:
        out = np.empty((x.shape[0], w.shape[0]))
        kernel = _dense_forward if _prefer_lazy(x, w.shape[0], w.shape[0], T, tau) else _dense_forward_stepped
        kernel(x, np.ascontiguousarray(w.T), theta, T, tau, out)
    else:
        xp = np.ascontiguousarray(pad_never_firing(torch.from_numpy(x), padding).numpy())
        K = w.shape[-1]
        out = np.empty((x.shape[0], w.shape[0], xp.shape[2] - K + 1, xp.shape[3] - K + 1))
        if _prefer_lazy(xp, w.shape[0] * K * K, out[0].size, T, tau):
            _conv_forward(xp, np.ascontiguousarray(w.transpose(1, 2, 3, 0)), theta, T, tau, out)
        else:
            _conv_forward_stepped(xp, np.ascontiguousarray(w), theta, T, tau, out)
    return torch.from_numpy(out).to(t_in.dtype)


def rule(
    t_in: torch.Tensor, t_out: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, gate: str, T: int, tau: float, padding: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Update direction and displacement at once (see :mod:`stidi.kernels.vectorised`)."""
    import torch.nn.functional as F

    from .vectorised import _receptive_fields

    B, J = t_in.shape[0], weight.shape[0]
    cols = _receptive_fields(t_in.double(), weight, padding).numpy()
    cols = np.ascontiguousarray(cols)
    L = cols.shape[2]
    to = np.ascontiguousarray(t_out.reshape(B, J, L).double().numpy())
    de = np.ascontiguousarray(delta.reshape(B, J, L).double().numpy())
    w2 = np.ascontiguousarray(weight.reshape(J, -1).double().numpy())
    G = np.zeros((B, J, cols.shape[1]))
    D = np.zeros_like(cols)
    _pairs_rule(cols, to, de, w2, gate == "slope", float(tau), int(T), G, D)
    G_t = torch.from_numpy(G.sum(0)).to(weight.dtype).view_as(weight)
    D_t = torch.from_numpy(D)
    if weight.dim() == 2:
        D_t = D_t.squeeze(-1)
    else:
        H, W = t_in.shape[-2] + 2 * padding, t_in.shape[-1] + 2 * padding
        D_t = F.fold(D_t, (H, W), weight.shape[-1])
        if padding:
            D_t = D_t[..., padding:-padding, padding:-padding]
    return G_t, D_t.to(t_in.dtype)
