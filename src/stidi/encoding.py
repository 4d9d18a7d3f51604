"""Time-to-first-spike (TTFS) input encoding.

A pixel of intensity ``x ∈ [0, 1]`` fires once, at step ``t = floor(T · (1 − x^p))``:
brighter pixels fire earlier, ``x = 1`` fires at ``0`` and ``x = 0`` never fires
(time ``+inf``). ``uint8`` images are read as ``x = value / 255``.

The power ``p`` (``[model] input_power``, default 1: the plain TTFS code) is a
contrast curve applied before encoding: ``p < 1`` moves dim pixels earlier while
keeping the order of intensities, so that grey-level images (Fashion-MNIST) put their
shapes into the first part of the window instead of spreading them over all of it.

With ``[model] input_polarity = "on_off"`` every pixel has a second, *OFF* input that
encodes the complement ``1 − x`` with the same curve, ``t_off = floor(T (1 − (1 − x)^p))``:
dark pixels (the background) fire early there and ``x = 1`` never fires. The ON code
says where the image is bright, the OFF code where it is dark; without it a region of
``x = 0`` sends no spike at all, so the network can see it only as missing input. With
``p < 1`` the ON code spreads dim intensities over the window and the OFF code bright
ones. The OFF channels follow the ON channels (``(2C, H, W)``, or ``(2N,)`` for flat inputs).
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import ConfigError, DataError


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


POLARITIES = ("on", "on_off")


def encoded_shape(input_shape: tuple[int, ...], polarity: str = "on") -> tuple[int, ...]:
    """Shape of one encoded input: the image's, with the channels (or flat size) doubled for ``"on_off"``."""
    if polarity not in POLARITIES:
        raise ConfigError(f"input_polarity must be one of {', '.join(repr(p) for p in POLARITIES)}, got {polarity!r}")
    if polarity == "on":
        return tuple(input_shape)
    return (2 * input_shape[0], *input_shape[1:])


def encode_images(images: np.ndarray | torch.Tensor, input_shape: tuple[int, ...], T: int, power: float = 1.0,
                  polarity: str = "on", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Input spike times ``(N, *encoded_shape(input_shape, polarity))`` of a batch of images.

    ``"on"``: :func:`ttfs_encode` of the intensities. ``"on_off"``: that, followed along the
    channel axis by :func:`ttfs_encode` of ``1 − x`` (the OFF code of the same pixels).
    """
    want = encoded_shape(input_shape, polarity)
    x = to_unit_interval(images).reshape(-1, *input_shape)
    on = ttfs_encode(x, T, dtype, power)
    if polarity == "on":
        return on
    return torch.cat([on, ttfs_encode(1.0 - x, T, dtype, power)], dim=1).reshape(-1, *want)
