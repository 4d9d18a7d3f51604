"""Time-to-first-spike (TTFS) input encoding.

A pixel of intensity ``x ∈ [0, 1]`` fires once, at step ``t = floor(T · (1 − x^p))``:
brighter pixels fire earlier, ``x = 1`` fires at ``0`` and ``x = 0`` never fires
(time ``+inf``). ``uint8`` images are read as ``x = value / 255``.

The power ``p`` (``[model] input_power``, default 1: the plain TTFS code) is a
contrast curve applied before encoding: ``p < 1`` moves dim pixels earlier while
keeping the order of intensities, so that grey-level images (Fashion-MNIST) put their
shapes into the first part of the window instead of spreading them over all of it.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import DataError


def to_unit_interval(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Images as float64 intensities in ``[0, 1]`` (``uint8`` is divided by 255)."""
    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        return x.to(torch.float64) / 255.0
    x = x.to(torch.float64)
    if x.numel() and (bool(torch.isnan(x).any()) or x.min() < 0 or x.max() > 1):
        raise DataError(
            f"images must hold intensities in [0, 1] (or uint8 0..255); got values in "
            f"[{x.min().item():.3g}, {x.max().item():.3g}]: rescale them first"
        )
    return x


def ttfs_encode(images: np.ndarray | torch.Tensor, T: int, dtype: torch.dtype = torch.float32,
                power: float = 1.0) -> torch.Tensor:
    """Spike times of ``images`` (any shape): ``floor(T (1 − x^power))``, ``inf`` where ``x = 0``."""
    if not power > 0:
        raise DataError(f"input_power must be > 0, got {power}")
    x = to_unit_interval(images)
    if power != 1.0:
        x = x**power
    t = torch.floor(T * (1.0 - x))
    t = torch.where(x > 0, t, torch.full_like(t, float("inf")))
    return t.to(dtype)
