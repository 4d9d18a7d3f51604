"""Shared by the tests of the scripts in benchmarks/: load one as a module (benchmarks/ is not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def benchmark_script(name: str) -> ModuleType:
    """A fresh module object for ``benchmarks/NAME.py``; it is not registered in ``sys.modules``."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
