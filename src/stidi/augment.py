"""Training-time augmentation: random translations of the input images.

With ``train.augment_shift = s > 0`` every training image is moved, before TTFS
encoding, by a whole-pixel offset ``(dy, dx)`` drawn uniformly from ``{−s … s}²``;
pixels moved in from outside the frame are black (``x = 0``: they never fire).
The offsets of an epoch are drawn once, for the whole training set, from a
generator seeded by ``(seed, epoch)``: an image gets the same offset however the
batch is split between processes and whether or not the run was resumed, so
augmentation keeps training deterministic and data-parallel runs exact.
Validation and test images are never shifted.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import StidiError


def epoch_shifts(count: int, max_shift: int, seed: int, epoch: int) -> torch.Tensor:
    """``(count, 2)`` integer offsets ``(dy, dx)`` in ``[−max_shift, max_shift]`` for one epoch."""
    gen = torch.Generator().manual_seed(seed * 100003 + epoch + 7_777_777)
    return torch.randint(-max_shift, max_shift + 1, (count, 2), generator=gen)


def shift_images(images: np.ndarray | torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """``images`` (``(N, H, W)`` or ``(N, C, H, W)``) each translated by its row of ``shifts``, zero-filled.

    Pixel ``(y, x)`` of the result is pixel ``(y − dy, x − dx)`` of the input, or 0 outside it.
    """
    x = torch.as_tensor(np.asarray(images))
    if x.dim() not in (3, 4):
        raise StidiError(f"train.augment_shift needs images of shape (N, H, W) or (N, C, H, W); got {tuple(x.shape)}: "
                         "set augment_shift = 0 for flat inputs")
    if len(shifts) != len(x):
        raise StidiError(f"{len(shifts)} shifts for {len(x)} images")
    height, width = x.shape[-2:]
    out = torch.zeros_like(x)
    for dy, dx in torch.unique(shifts, dim=0).tolist():
        if abs(dy) >= height or abs(dx) >= width:
            continue  # moved entirely out of the frame: all black
        rows = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
        ys, yd = (slice(0, height - dy), slice(dy, height)) if dy >= 0 else (slice(-dy, height), slice(0, height + dy))
        xs, xd = (slice(0, width - dx), slice(dx, width)) if dx >= 0 else (slice(-dx, width), slice(0, width + dx))
        out[rows, ..., yd, xd] = x[rows][..., ys, xs]
    return out
