"""The teacher of distillation: a trained network whose output spike times become soft targets.

With ``[train] teacher = PATH`` and ``[rule] distill = λ > 0`` the output targets of the
rule blend the labels with a teacher's view of each training image (the formula is in
:func:`stidi.stidi_bp.output_error`): which wrong classes the teacher finds close to the
true one, and how close. The student's learning rule is unchanged, STiDi-BP; only its
output targets move. The teacher is typically the real-valued network of the same task
(the binary network learns from it), and may have any shape, as long as it reads the same
images and has as many outputs.

The teacher's output times do not change during training, so without augmentation they
are computed once for the whole training set (one forward pass of the teacher,
:func:`teacher_times`); with augmentation each batch's moved images go through the teacher.
"""

from __future__ import annotations

from typing import Callable

import torch

from .errors import StidiError
from .io import load_model
from .network import Network

#: images per teacher forward pass when the whole training set is done at once
TEACHER_BATCH = 256


def load_teacher(path: str, student: Network, input_shape: tuple[int, ...]) -> Network:
    """The network saved at ``path`` (``train.teacher``), checked against the student: same input
    image shape and the same number of classes; the error names the path and what differs."""
    where = f"train.teacher = '{path}'"
    try:  # load_model's own checks name what is wrong with the file (missing, not a model, corrupt)
        teacher, config, _ = load_model(path)
    except StidiError as exc:
        raise StidiError(f"{where}: {exc}") from None
    if tuple(config.model.input_shape) != tuple(input_shape):
        raise StidiError(f"{where}: the teacher reads images of shape {tuple(config.model.input_shape)}, this network "
                         f"{tuple(input_shape)}; give a teacher trained on the same dataset")
    if teacher.num_classes != student.num_classes:
        raise StidiError(f"{where}: the teacher ({config.model.network}) has {teacher.num_classes} classes, this network "
                         f"({student.spec}) {student.num_classes}; they must classify the same classes")
    return teacher


@torch.no_grad()
def teacher_times(teacher: Network, spike_times: Callable[[torch.Tensor, Network], torch.Tensor], index: torch.Tensor,
                  progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The teacher's output spike times per class (``inf``: silent) for the images ``index``, shape
    ``(len(index), classes)``, in passes of at most ``TEACHER_BATCH`` images:
    ``spike_times(index, teacher)`` encodes the images the teacher's way (its own ``T`` and
    contrast curve); ``progress(n)`` is told of every ``n`` images done."""
    out = []
    for start in range(0, len(index), TEACHER_BATCH):
        part = index[start : start + TEACHER_BATCH]
        out.append(teacher.class_times(teacher.trace(spike_times(part, teacher)).times[-1].reshape(len(part), -1)))
        if progress is not None:
            progress(len(part))
    return torch.cat(out) if out else torch.empty((0, teacher.num_classes))
