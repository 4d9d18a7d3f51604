"""Shared by the interruption tests: wait until a training run has checkpointed mid-way through its first
epoch, or make an in-process run ask to stop after a given step."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path


def reached_first_epoch_checkpoint(ckpt: Path, proc: subprocess.Popen, min_step: int = 0,
                                   timeout: float = 300) -> bool:
    """Poll ``ckpt`` (a run's checkpoint.json) until its ``partial`` is from step ``min_step``
    or later of epoch 0; False if ``proc`` ended or ``timeout`` seconds passed first.

    A test that then kills or signals the run has a whole epoch left for it to land in,
    however fast the run goes. Waiting for "the file's n-th change" instead let a fast run
    reach its very end first: it then finished cleanly and the test saw no interruption.
    """
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        try:
            partial = json.loads(ckpt.read_text())["partial"]
        except (OSError, ValueError, KeyError):  # not written yet
            partial = None
        if partial is not None and partial["epoch"] == 0 and partial["step"] >= min_step:
            return True
        time.sleep(0.005)
    return False


def stop_after_step(monkeypatch, count: int, steps_per_epoch: int) -> None:
    """Make in-process training ask to stop (as on SIGTERM) right after its ``count``-th step over
    all epochs: it then checkpoints and raises ``TrainingInterrupted``. Undo with ``monkeypatch.undo()``."""
    import stidi.train as train_module

    real_step = train_module.Trainer._step

    def step_then_stop(self, directions, trace, epoch, step):
        real_step(self, directions, trace, epoch, step)
        if epoch * steps_per_epoch + step + 1 == count:
            self.stop_signal = signal.SIGTERM

    monkeypatch.setattr(train_module.Trainer, "_step", step_then_stop)
