"""Which software a result was computed with.

Training is deterministic on one machine with one thread count (same seed, same weights,
bit for bit), but floating-point results can differ between CPUs (the vector instructions
PyTorch's kernels dispatch to) and library versions, and training amplifies such
differences: the same configuration and seed retrained in another session scored
87.98 % instead of 89.44 % validation on a short Fashion-MNIST budget
(``results/sweep-fashion-control.json``), most likely for that reason. Logs and result
files therefore record the versions and the CPU capability beside the commit, so the
next such difference can be traced.
"""
from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path


def software_versions() -> dict[str, str]:
    """Python, torch (with the CPU capability its kernels dispatch to), numpy and numba versions."""
    import torch

    versions = {"python": platform.python_version()}
    for package in ("torch", "numpy", "numba"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return versions


def software_line() -> str:
    """:func:`software_versions` as one log line, e.g. ``python 3.11.7, torch 2.13.0+cpu, ... cpu_capability AVX512``."""
    return ", ".join(f"{name} {version}" for name, version in software_versions().items())


def git_commit(root: str | Path) -> str:
    """The commit checked out in the git work tree at ``root`` (``""`` outside one)."""
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()


def run_provenance(root: str | Path, script: str) -> dict[str, object]:
    """``command``, ``commit`` and ``software`` of a benchmark script's result file.

    Call it when the script starts, so the commit is that of the code that runs, not of
    a later HEAD; ``script`` is its path from ``root`` (e.g. ``benchmarks/cnn_reference.py``).
    """
    return {"command": " ".join(["python", script, *sys.argv[1:]]), "commit": git_commit(root),
            "software": software_versions()}
