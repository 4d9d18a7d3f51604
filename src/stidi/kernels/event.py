"""Event-driven spike-time engine (numba, parallel over the batch).

Each input neuron spikes at most once and the PSP is piecewise linear, so a neuron's
potential changes slope only at input events: a spike at ``t_i`` adds ``w / τ`` to the
slope of every neuron it reaches (``w / T`` for the ramp), and, for a finite ``τ``,
removes it again at ``t_i + τ``. The engine sorts each sample's input spikes by time
(counting sort), keeps one slope and one potential per output neuron, and walks the
steps ``1 … T`` applying ``u(t) = u(t − 1) + slope`` to neurons that have not fired yet.
Cost per sample: ``(events × fan-out) + (T × unfired neurons)`` instead of the
``T`` full convolutions of a time-stepped simulation. The learning rule visits each
(output neuron, receptive-field input) pair once.

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

    @njit(cache=True)
    def _events_by_time(times, T):
        """Counting sort of the finite spike times ``< T`` of a flat array: (offsets, indices)."""
        counts = np.zeros(T + 1, dtype=np.int64)
        n = 0
        for i in range(times.size):
            t = times[i]
            if t < T:
                counts[int(t) + 1] += 1
                n += 1
        for k in range(T):
            counts[k + 1] += counts[k]
        order = np.empty(n, dtype=np.int64)
        fill = counts[:T].copy()
        for i in range(times.size):
            t = times[i]
            if t < T:
                order[fill[int(t)]] = i
                fill[int(t)] += 1
        return counts, order

    @njit(parallel=True, cache=True)
    def _dense_forward(t_in, w_t, theta, T, tau, out):
        """``t_in (B, N)``, ``w_t (N, M)`` (transposed weight), ``out (B, M)`` filled with times."""
        B, N = t_in.shape
        M = w_t.shape[1]
        ramp = math.isinf(tau)
        rate = 1.0 / T if ramp else 1.0 / tau
        lag = 0 if ramp else int(tau)
        for b in prange(B):
            offsets, order = _events_by_time(t_in[b], T)
            u = np.zeros(M)
            slope = np.zeros(M)
            fired = np.zeros(M, dtype=np.bool_)
            remaining = M
            for m in range(M):
                out[b, m] = np.inf
            for t in range(1, T + 1):
                s = t - 1
                for e in range(offsets[s], offsets[s + 1]):
                    i = order[e]
                    for m in range(M):
                        slope[m] += w_t[i, m] * rate
                if not ramp and s - lag >= 0:
                    for e in range(offsets[s - lag], offsets[s - lag + 1]):
                        i = order[e]
                        for m in range(M):
                            slope[m] -= w_t[i, m] * rate
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
    def _conv_forward(t_in, w, theta, T, tau, out):
        """``t_in (B, C, H, W)`` already padded, ``w (Co, C, K, K)``, ``out (B, Co, Ho, Wo)``."""
        B, C, H, W = t_in.shape
        Co, _, K, _ = w.shape
        Ho, Wo = H - K + 1, W - K + 1
        ramp = math.isinf(tau)
        rate = 1.0 / T if ramp else 1.0 / tau
        lag = 0 if ramp else int(tau)
        for b in prange(B):
            offsets, order = _events_by_time(t_in[b].ravel(), T)
            u = np.zeros((Co, Ho, Wo))
            slope = np.zeros((Co, Ho, Wo))
            fired = np.zeros((Co, Ho, Wo), dtype=np.bool_)
            remaining = Co * Ho * Wo
            out[b] = np.inf
            for t in range(1, T + 1):
                s = t - 1
                for e in range(offsets[s], offsets[s + 1]):
                    i = order[e]
                    c, rest = i // (H * W), i % (H * W)
                    _scatter_slope(slope, w, c, rest // W, rest % W, rate, K, Ho, Wo)
                if not ramp and s - lag >= 0:
                    for e in range(offsets[s - lag], offsets[s - lag + 1]):
                        i = order[e]
                        c, rest = i // (H * W), i % (H * W)
                        _scatter_slope(slope, w, c, rest // W, rest % W, -rate, K, Ho, Wo)
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


def spike_times(t_in: torch.Tensor, weight: torch.Tensor, theta: float, T: int, tau: float, padding: int = 0) -> torch.Tensor:
    """Same contract as :func:`stidi.kernels.vectorised.spike_times`."""
    _check_tau(tau)
    from .vectorised import pad_never_firing

    x = np.ascontiguousarray(t_in.detach().cpu().numpy(), dtype=np.float64)
    w = weight.detach().cpu().numpy().astype(np.float64)
    if weight.dim() == 2:
        out = np.empty((x.shape[0], w.shape[0]))
        _dense_forward(x, np.ascontiguousarray(w.T), float(theta), int(T), float(tau), out)
    else:
        xp = np.ascontiguousarray(pad_never_firing(torch.from_numpy(x), padding).numpy())
        K = w.shape[-1]
        out = np.empty((x.shape[0], w.shape[0], xp.shape[2] - K + 1, xp.shape[3] - K + 1))
        _conv_forward(xp, np.ascontiguousarray(w), float(theta), int(T), float(tau), out)
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
