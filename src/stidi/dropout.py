"""Dropout for single-spike layers: silence random hidden neurons while training.

With ``train.dropout = p_l > 0`` for weighted layer ``l``, every training image
silences each neuron of that layer with probability ``p_l``: its spike time becomes
``inf``, so it adds nothing to any potential above it. The next weighted layer's
forward weights are multiplied by ``1/(1 − p_l)`` for that image (inverted dropout),
so its potentials keep their expected value and the network evaluated without dropout
(validation, test, saved models) needs no rescaling.

The learning rule treats a dropped neuron as absent for that image: it gets no
displacement (not even revival's push, :mod:`stidi.stidi_bp`), so its incoming
weights get no update from the image; its outgoing weights get none either, since a
spike at ``inf`` is never before the neuron it feeds. The displacement uses the
unscaled weights: with the L2 error normalisation a common factor makes no difference.

Masks depend only on ``(seed, epoch, image index, layer)``: an image gets the same mask
however the batch is split between processes and whether or not the run was resumed,
so dropout keeps training deterministic and data-parallel runs exact.
"""

from __future__ import annotations

import torch

#: ``{layer index: (mask, p)}``: per layer whose outputs are dropped, ``mask`` (``True`` =
#: silenced, shape ``(B, *layer output shape)``) and the rate ``p`` it was drawn with.
DropMasks = dict[int, tuple[torch.Tensor, float]]


def _image_seed(seed: int, epoch: int, image: int, layer: int) -> int:
    return (((seed * 1_000_003 + epoch) * 10_000_019 + image) * 1_009 + layer) % (1 << 62)


def dropout_masks(rates: list[float], weighted: list[int], shapes: list[tuple[int, ...]], images: torch.Tensor,
                  seed: int, epoch: int) -> DropMasks:
    """Masks of one batch: for weighted layer ``k`` (layer index ``weighted[k]``, output shape
    ``shapes[weighted[k] + 1]``) with ``rates[k] > 0``, each neuron of each image in ``images``
    (indices into the training set) is dropped with probability ``rates[k]``."""
    masks: DropMasks = {}
    for k, (p, index) in enumerate(zip(rates, weighted)):
        if p <= 0:
            continue
        shape = tuple(shapes[index + 1])
        rows = [torch.rand(shape, generator=torch.Generator().manual_seed(_image_seed(seed, epoch, int(i), k))) < p
                for i in images.tolist()]
        masks[index] = (torch.stack(rows) if rows else torch.zeros((0, *shape), dtype=torch.bool), float(p))
    return masks
