"""The sweep files of benchmarks/sweeps/ are well formed, and a borrowed control names a real result."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted((ROOT / "benchmarks" / "sweeps").glob("*.toml"))


def load_sweep_module():
    spec = importlib.util.spec_from_file_location("stidi_bench_sweep", ROOT / "benchmarks" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_committed_sweep_files_parse_and_controls_resolve(path):
    sweep = load_sweep_module().read_sweep(path)
    if "control" in sweep:
        other, variant = sweep["control"].split("/")
        result = ROOT / "results" / f"sweep-{other}.json"
        assert result.exists(), f"{path.name}: control names {other}, which has no {result.name}"
        assert variant in {r["variant"] for r in json.loads(result.read_text())["rows"]}


@pytest.mark.parametrize("text, message", [
    ('base = "mnist-rcsnn"\nvariant = 1\n[variants.a]\n', "unknown key variant"),
    ('[variants.a]\n', "base must name a config"),
    ('base = "no-such-config"\n[variants.a]\n', "there is no"),
    ('base = "mnist-rcsnn"\n', "no variants"),
    ('base = "mnist-rcsnn"\ncontrol = "fashion-revival"\n[variants.a]\n', "SWEEP/VARIANT"),
    ('base = "mnist-rcsnn"\n[variants.a\n', "not valid TOML"),
])
def test_bad_sweep_files_are_refused_with_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exc:
        load_sweep_module().read_sweep(path)
    assert str(path) in str(exc.value) and message in str(exc.value)
