"""Exact, order-independent sums for the update direction: fixed point carried in float64.

The update direction of a weighted layer sums one term ``δ_j · min(t_j − t_i, cap)``
(``ε · scale``) per (sample, output position, input) pair. Floating-point addition is
not associative, so an ordinary float sum depends on the order of its terms: on the
number of threads, on the kernel, on how a batch is split over processes. STiDi-BP
training is chaotic enough that such last-bit differences grow into different networks.

So every term is first rounded to a multiple of a quantum ``q_j``, a power of two chosen
per output channel (or dense neuron) ``j`` from a bound on the whole sum: with ``n`` terms
per weight (global batch × output positions), ``|δ| ≤ m_j`` (the largest ``|δ|`` of channel
``j`` over the whole global batch) and ``0 ≤ min(t_j − t_i, cap) ≤ c = min(T, τ)``, every
partial sum in any order is below ``n · m_j · c < 2^52 q_j`` (plus ``n · q_j / 2`` of rounding).
Multiples of ``q_j`` below ``2^53 q_j`` are exactly representable in float64, so every
float64 addition of them is exact: an integer addition, associative and commutative. The
sums therefore come out the same to the bit in any order, on any number of threads or
processes — the same as an int64 accumulator in units of ``q_j``, with NaN and inf kept.

Each term keeps about ``52 − log2 n`` bits relative to the largest possible term
(≈ 38 bits for a batch of 32 over 24 × 24 positions), far finer than the float32 the
direction is finally rounded to.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .psp import psp_scale

#: ``q = 2^(e − HEADROOM)`` for a bound ``< 2^e``: the bound stays below ``2^52 q``.
HEADROOM = 52


def quantum(peak: torch.Tensor, terms: int, T: int, tau: float) -> torch.Tensor:
    """Quanta ``(J,)`` (float64 powers of two) for sums of ``terms`` terms per weight.

    ``peak[j]`` bounds ``|δ|`` of output channel ``j`` over every term of the sum (in a
    data-parallel run: the maximum over all processes, so that all use the same quanta);
    ``terms`` is the number of (sample, output position) pairs per weight, summed over
    all processes. A channel without a finite, nonzero bound gets ``q = 1`` (its terms
    are zero, or NaN/inf and stay so).
    """
    cap = min(float(T), psp_scale(tau, T))  # the largest value of ε · scale inside the window
    out = []
    for m in peak.detach().double().cpu().tolist():
        bound = m * (max(1, terms) * cap)
        if not (math.isfinite(bound) and bound > 0):
            out.append(1.0)
            continue
        _, e = math.frexp(bound)  # bound < 2^e
        out.append(math.ldexp(1.0, max(e - HEADROOM, -1022)))
    return torch.tensor(out, dtype=torch.float64)


def peak_delta(delta: torch.Tensor) -> torch.Tensor:
    """``max |δ|`` per output channel (axis 1) over the batch and positions, as float64 ``(J,)``."""
    J = delta.shape[1]
    if delta.shape[0] == 0:
        return torch.zeros(J, dtype=torch.float64)
    return delta.detach().abs().transpose(0, 1).reshape(J, -1).amax(1).double()


def batch_quantum(delta: torch.Tensor, batch: int, T: int, tau: float,
                  agree: Callable[[torch.Tensor], torch.Tensor] = lambda peak: peak) -> torch.Tensor:
    """Quanta for the update sums of a layer with errors ``delta`` ``(B, J, *positions)``.

    ``batch`` is the global batch (``B`` for one process); ``agree`` turns this process's
    per-channel ``max |δ|`` into the maximum over all processes (the identity alone), so
    every process of a data-parallel step uses the same quanta.
    """
    peak = agree(peak_delta(delta.reshape(delta.shape[0], delta.shape[1], -1)))
    return quantum(peak, batch * math.prod(delta.shape[2:]), T, tau)
