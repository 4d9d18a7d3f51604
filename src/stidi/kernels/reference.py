"""Reference simulator: the model written as plainly as possible.

Every function loops explicitly over time steps (forward) or over neuron pairs
(learning rule), in NumPy float64, one sample at a time. It is slow and exists to be
obviously right: the property tests require the fast engines to agree with it.

Conventions (shared by every engine):

* spike times are floats, integer-valued in ``0 … T``; ``inf`` means "never fired";
* dense weights have shape ``(n_out, n_in)``; convolution weights
  ``(c_out, c_in, k, k)`` applied as a valid cross-correlation (stride 1) after
  padding the input with never-firing neurons;
* a neuron fires at the first step ``t ∈ {0 … T}`` with
  ``u(t) = Σ_i w_i ε(t − t_i) ≥ θ`` (non-leaky, no reset, one spike).
"""

from __future__ import annotations

import numpy as np

from .psp import psp, psp_slope


def _first_crossing(potential_at, theta: float, T: int) -> float:
    """First step ``t`` in ``0 … T`` where ``potential_at(t) ≥ θ``, else ``inf``."""
    for t in range(T + 1):
        if potential_at(t) >= theta:
            return float(t)
    return float("inf")


def spike_times_dense(t_in: np.ndarray, w: np.ndarray, theta: float, T: int, tau: float) -> np.ndarray:
    """Spike times ``(B, n_out)`` of a dense layer for input times ``(B, n_in)``."""
    t_in = np.asarray(t_in, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    out = np.full((t_in.shape[0], w.shape[0]), np.inf)
    for b in range(t_in.shape[0]):
        for j in range(w.shape[0]):
            out[b, j] = _first_crossing(
                lambda t: float(np.sum(w[j] * psp(t - t_in[b], tau, T))), theta, T
            )
    return out


def pad_never_firing(t_in: np.ndarray, padding: int) -> np.ndarray:
    """Pad the two spatial axes of ``(B, C, H, W)`` with never-firing (``inf``) neurons."""
    if padding == 0:
        return np.asarray(t_in, dtype=np.float64)
    pad = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    return np.pad(np.asarray(t_in, dtype=np.float64), pad, constant_values=np.inf)


def spike_times_conv(
    t_in: np.ndarray, w: np.ndarray, theta: float, T: int, tau: float, padding: int = 0
) -> np.ndarray:
    """Spike times ``(B, c_out, H', W')`` of a convolution layer (stride 1)."""
    x = pad_never_firing(t_in, padding)
    w = np.asarray(w, dtype=np.float64)
    c_out, _, k, _ = w.shape
    B, _, H, W = x.shape
    out = np.full((B, c_out, H - k + 1, W - k + 1), np.inf)
    for b in range(B):
        for c in range(c_out):
            for y in range(H - k + 1):
                for xx in range(W - k + 1):
                    window = x[b, :, y : y + k, xx : xx + k]
                    out[b, c, y, xx] = _first_crossing(
                        lambda t: float(np.sum(w[c] * psp(t - window, tau, T))), theta, T
                    )
    return out


def earliest_pool(t_in: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Earliest-spike pooling over ``k × k`` windows with stride ``k``.

    Returns the pooled times and, for each pooled neuron, the flat index ``y * W + x``
    of its winner in the input plane (the first earliest neuron in row-major order).
    """
    t_in = np.asarray(t_in, dtype=np.float64)
    B, C, H, W = t_in.shape
    Ho, Wo = H // k, W // k
    out = np.full((B, C, Ho, Wo), np.inf)
    winner = np.zeros((B, C, Ho, Wo), dtype=np.int64)
    for b in range(B):
        for c in range(C):
            for y in range(Ho):
                for x in range(Wo):
                    best, best_idx = np.inf, (y * k) * W + x * k
                    for dy in range(k):
                        for dx in range(k):
                            t = t_in[b, c, y * k + dy, x * k + dx]
                            if t < best:
                                best, best_idx = t, (y * k + dy) * W + (x * k + dx)
                    out[b, c, y, x], winner[b, c, y, x] = best, best_idx
    return out, winner


def _gate(s: float, gate: str, tau: float, T: int) -> float:
    if gate == "mask":
        return float(s > 0)
    return float(psp_slope(np.float64(s), tau, T))


def _dense_pairs(t_in, t_out, delta):
    """Yield ``(b, j, i)`` over every sample and neuron pair of a dense layer."""
    B, n_out = t_out.shape
    for b in range(B):
        for j in range(n_out):
            if delta[b, j] != 0:
                for i in range(t_in.shape[1]):
                    yield b, j, i


def update_dense(t_in, t_out, delta, tau: float, T: int) -> np.ndarray:
    """``G_ji = Σ_b δ_bj ε(t_bj − t_bi)``: the weight update direction of a dense layer.

    STiDi-BP applies ``Δw = −η G`` (divided by the batch size).
    """
    t_in, t_out, delta = (np.asarray(a, dtype=np.float64) for a in (t_in, t_out, delta))
    G = np.zeros((t_out.shape[1], t_in.shape[1]))
    for b, j, i in _dense_pairs(t_in, t_out, delta):
        G[j, i] += delta[b, j] * psp(np.float64(t_out[b, j] - t_in[b, i]), tau, T)
    return G


def displacement_dense(t_in, t_out, delta, w, gate: str, tau: float, T: int) -> np.ndarray:
    """``Δt_bi = Σ_j δ_bj w_ji g(t_bj − t_bi)``: desired shift of each input spike."""
    t_in, t_out, delta, w = (np.asarray(a, dtype=np.float64) for a in (t_in, t_out, delta, w))
    D = np.zeros_like(t_in)
    for b, j, i in _dense_pairs(t_in, t_out, delta):
        D[b, i] += delta[b, j] * w[j, i] * _gate(t_out[b, j] - t_in[b, i], gate, tau, T)
    return D


def _conv_pairs(x_shape, t_out, delta, k):
    """Yield ``(b, c, y, x, ci, dy, dx)`` over every output neuron and its receptive field."""
    B, c_out, Ho, Wo = t_out.shape
    c_in = x_shape[1]
    for b in range(B):
        for c in range(c_out):
            for y in range(Ho):
                for x in range(Wo):
                    if delta[b, c, y, x] == 0:
                        continue
                    for ci in range(c_in):
                        for dy in range(k):
                            for dx in range(k):
                                yield b, c, y, x, ci, dy, dx


def update_conv(t_in, t_out, delta, k: int, tau: float, T: int, padding: int = 0) -> np.ndarray:
    """Weight update direction of a convolution layer, summed over positions."""
    x = pad_never_firing(t_in, padding)
    t_out, delta = np.asarray(t_out, np.float64), np.asarray(delta, np.float64)
    G = np.zeros((t_out.shape[1], x.shape[1], k, k))
    for b, c, y, xx, ci, dy, dx in _conv_pairs(x.shape, t_out, delta, k):
        s = t_out[b, c, y, xx] - x[b, ci, y + dy, xx + dx]
        G[c, ci, dy, dx] += delta[b, c, y, xx] * psp(np.float64(s), tau, T)
    return G


def displacement_conv(t_in, t_out, delta, w, gate: str, tau: float, T: int, padding: int = 0) -> np.ndarray:
    """Desired shift of each input spike of a convolution layer (a transposed convolution)."""
    x = pad_never_firing(t_in, padding)
    t_out, delta, w = (np.asarray(a, np.float64) for a in (t_out, delta, w))
    k = w.shape[-1]
    D = np.zeros_like(x)
    for b, c, y, xx, ci, dy, dx in _conv_pairs(x.shape, t_out, delta, k):
        s = t_out[b, c, y, xx] - x[b, ci, y + dy, xx + dx]
        D[b, ci, y + dy, xx + dx] += delta[b, c, y, xx] * w[c, ci, dy, dx] * _gate(s, gate, tau, T)
    if padding:
        D = D[:, :, padding:-padding, padding:-padding]
    return D
