"""Repository hygiene: what a commit may carry.

A submission's commits are limited in size, and a binary file that is replaced by every
new reproduction run counts again each time. Model files of the reproduction runs stay
small enough to commit; optimiser checkpoints of finished large runs are not committed
(``.gitignore``), since nothing but a resumed run reads them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 16 * 2**20


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in listing.decode().split("\0") if name]


def test_no_tracked_file_exceeds_the_size_limit() -> None:
    too_big = [(p.relative_to(ROOT), p.stat().st_size) for p in tracked_files() if p.is_file() and p.stat().st_size > LIMIT_BYTES]
    assert not too_big, (
        f"tracked files over {LIMIT_BYTES // 2**20} MiB: {too_big}; keep large checkpoints out of git "
        "(add them to .gitignore, as results/runs/fashion-rcsnn/checkpoint.* is)"
    )
