"""Training-time augmentation: random translations and mirror images of the input images.

With ``train.augment_shift = s > 0`` every training image is moved, before TTFS
encoding, by a whole-pixel offset ``(dy, dx)`` drawn uniformly from ``{−s … s}²``;
pixels moved in from outside the frame are black (``x = 0``: they never fire).
With ``train.augment_flip = true`` an image is first mirrored left–right with
probability 1/2 (``x'(y, w) = x(y, W − 1 − w)``), for datasets whose classes look
the same in a mirror (Fashion-MNIST's clothes; not digits).
The moves of an epoch are drawn once, for the whole training set, from generators
seeded by ``(seed, epoch)``: an image gets the same move however the batch is
split between processes and whether or not the run was resumed, so augmentation
keeps training deterministic and data-parallel runs exact. The offsets do not
depend on ``augment_flip``. Validation and test images are never moved.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import StidiError


def epoch_shifts(count: int, max_shift: int, seed: int, epoch: int) -> torch.Tensor:
    """``(count, 2)`` integer offsets ``(dy, dx)`` in ``[−max_shift, max_shift]`` for one epoch."""
    gen = torch.Generator().manual_seed(seed * 100003 + epoch + 7_777_777)
    return torch.randint(-max_shift, max_shift + 1, (count, 2), generator=gen)


def epoch_moves(count: int, max_shift: int, flip: bool, seed: int, epoch: int) -> torch.Tensor | None:
    """``(count, 3)`` integer moves ``(dy, dx, mirrored)`` for one epoch, or None when augmentation is off."""
    if not max_shift and not flip:
        return None
    moves = torch.zeros(count, 3, dtype=torch.long)
    if max_shift:
        moves[:, :2] = epoch_shifts(count, max_shift, seed, epoch)
    if flip:
        gen = torch.Generator().manual_seed(seed * 100003 + epoch + 5_555_555)
        moves[:, 2] = torch.randint(0, 2, (count,), generator=gen)
    return moves


def move_images(images: np.ndarray | torch.Tensor, moves: torch.Tensor) -> torch.Tensor:
    """``images`` each mirrored left–right where ``moves[:, 2]`` is 1, then translated by ``moves[:, :2]``."""
    x = torch.as_tensor(np.asarray(images))
    if x.dim() not in (3, 4):
        raise StidiError(f"train.augment_shift and train.augment_flip need images of shape (N, H, W) or (N, C, H, W); "
                         f"got {tuple(x.shape)}: set augment_shift = 0 and augment_flip = false for flat inputs")
    mirrored = moves[:, 2].bool()
    if bool(mirrored.any()):
        x = x.clone()
        x[mirrored] = x[mirrored].flip(-1)
    return shift_images(x, moves[:, :2]) if bool(moves[:, :2].any()) else x


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
