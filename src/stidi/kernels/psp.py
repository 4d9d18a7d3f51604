"""The piecewise linear post-synaptic potential (PSP) kernel and its slope.

``ε(s) = 0`` for ``s ≤ 0``; ``ε(s) = min(s, τ) / τ`` for a finite ``τ``; and for
``τ = ∞`` the pure ramp (ReL-PSP) ``ε(s) = s / T``, normalised so that ``ε(T) = 1``.
Inside the window ``0 ≤ s ≤ T`` the ramp is therefore identical to ``τ = T``.
``τ = 1`` gives the step kernel of S4NN (a spike counts fully one step after it
arrives).

The slope ``ε'(s)`` is ``1/τ`` (``1/T`` for the ramp) while the PSP is still rising,
``0 < s < τ``, and ``0`` elsewhere. It is one of the two choices of the
displacement gate ``g`` of STiDi-BP (the other is the fired-before mask ``[s > 0]``).

These functions work on NumPy arrays and on torch tensors alike.
"""

from __future__ import annotations

import math
from typing import Any


def is_ramp(tau: float) -> bool:
    """True when ``tau`` is infinite, i.e. the PSP is the pure ramp."""
    return math.isinf(tau)


def psp_scale(tau: float, T: int) -> float:
    """The PSP's rise time in steps: ``τ``, or ``T`` for the ramp (``ε(s) = s / scale`` while rising)."""
    return float(T) if is_ramp(tau) else float(tau)


def psp(s: Any, tau: float, T: int) -> Any:
    """ε(s): the PSP value ``s`` steps after an input spike (0 for ``s ≤ 0``)."""
    if is_ramp(tau):
        return s.clip(0, None) / T
    return s.clip(0, tau) / tau


def psp_slope(s: Any, tau: float, T: int) -> Any:
    """ε'(s): ``1/τ`` (``1/T`` for the ramp) for ``0 < s < τ``, else 0."""
    rate = 1.0 / psp_scale(tau, T)
    rising = (s > 0) & (s < tau)
    return rising * rate
