"""Shared by the interruption tests: wait until a training run has checkpointed mid-way through its first epoch."""

from __future__ import annotations

import json
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
