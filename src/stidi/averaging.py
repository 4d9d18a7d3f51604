"""Exponential moving average of the weights: the network that is evaluated and saved.

With ``[train] weight_average = β > 0`` the trainer keeps, besides the weights ``w`` that
the STiDi-BP steps move, an average ``w̄`` updated after every step ``n`` (counting from 0):

    w̄ ← β_n · w̄ + (1 − β_n) · w,    β_n = min(β, (1 + n) / (10 + n)),    w̄ = w₀ at the start.

The ramp ``β_n`` gives the first steps a short memory, so the average does not stay near
the initial weights in short runs; after ``(10 β − 1) / (1 − β)`` steps (8,990 for
``β = 0.999``) it is ``β``.
Validation, test and the saved models use ``w̄``; the rule, the optimiser and the training
accuracy use ``w``. The learning rule is unchanged: the average only smooths the step-to-step
noise of what is evaluated. That noise is largest in binary layers, where a real weight
hovering near 0 flips its sign ``α · sign(w)`` back and forth; the sign of the average
flips only when the weight stays on the other side.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch


def average_decay(beta: float, step: int) -> float:
    """``β_n = min(β, (1 + n) / (10 + n))`` of step ``n`` (0-based)."""
    return min(beta, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_average(average: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], beta: float, step: int) -> None:
    """``w̄ ← β_n w̄ + (1 − β_n) w`` in place, for each layer's average and weights."""
    b = average_decay(beta, step)
    for avg, w in zip(average, weights):
        avg.mul_(b).add_(w.detach(), alpha=1.0 - b)


@torch.no_grad()
def assign(weights: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
    """Copy ``values`` into ``weights`` in place, layer by layer."""
    for w, v in zip(weights, values):
        w.copy_(v)


@contextlib.contextmanager
def weights_swapped(weights: Sequence[torch.Tensor], replacement: Sequence[torch.Tensor] | None) -> Iterator[None]:
    """Inside the block ``weights`` hold ``replacement`` (``None``: unchanged); restored on exit, also on error."""
    if replacement is None:
        yield
        return
    saved = [w.detach().clone() for w in weights]
    assign(weights, replacement)
    try:
        yield
    finally:
        assign(weights, saved)
