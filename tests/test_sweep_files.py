"""The sweep files of benchmarks/sweeps/ are well formed, and a borrowed control names a real result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmark_scripts import benchmark_script

ROOT = Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted((ROOT / "benchmarks" / "sweeps").glob("*.toml"))


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_committed_sweep_files_parse_and_controls_resolve(path):
    sweep_module = benchmark_script("sweep")
    sweep = sweep_module.read_sweep(path)
    control = sweep_module.read_control(path)  # SystemExit if the named sweep or variant is missing
    if "control" in sweep:
        assert control is not None and control[1]["variant"] == sweep["control"].split("/")[1]
    else:
        assert control is None


def test_a_control_that_names_no_result_is_refused(tmp_path):
    path = tmp_path / "borrows.toml"
    path.write_text('base = "mnist-rcsnn"\ncontrol = "fashion-revival/no-such-variant"\n[variants.a]\n')
    with pytest.raises(SystemExit, match="has no variant 'no-such-variant'"):
        benchmark_script("sweep").read_control(path)


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
        benchmark_script("sweep").read_sweep(path)
    assert str(path) in str(exc.value) and message in str(exc.value)


def test_collect_only_keeps_the_training_command_and_adds_training_accuracy(tmp_path, monkeypatch):
    sweep_module = benchmark_script("sweep")
    (tmp_path / "benchmarks" / "sweeps").mkdir(parents=True)
    (tmp_path / "benchmarks" / "configs").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "benchmarks" / "sweeps" / "t.toml").write_text('base = "b"\n[variants.a]\n"train.lr" = 0.02\n')
    (tmp_path / "benchmarks" / "configs" / "b.toml").write_text("[train]\nlr = 0.01\n")
    (tmp_path / "results" / "sweep-t.json").write_text(
        json.dumps({"command": "python3 benchmarks/sweep.py t --jobs 1", "jobs": 1, "wall_seconds": 123.0}))
    run = tmp_path / "out" / "t" / "a"
    run.mkdir(parents=True)
    run.joinpath("metrics.jsonl").write_text(
        '{"epoch": 1, "train_accuracy": 0.5, "val_accuracy": 0.6, "test_accuracy": 0.55}\n'
        '{"epoch": 2, "train_accuracy": 0.7, "val_accuracy": 0.65, "test_accuracy": 0.6}\n')
    for name, value in (("ROOT", tmp_path), ("SWEEPS", tmp_path / "benchmarks" / "sweeps"),
                        ("CONFIGS", tmp_path / "benchmarks" / "configs")):
        monkeypatch.setattr(sweep_module, name, value)
    assert sweep_module.main(["t", "--collect-only", "--jobs", "3", "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "results" / "sweep-t.json").read_text())
    assert result["command"] == "python3 benchmarks/sweep.py t --jobs 1" and result["wall_seconds"] == 123.0 and result["jobs"] == 1
    (row,) = result["rows"]
    assert row["train_accuracy_by_epoch"] == [0.5, 0.7] and row["best_epoch"] == 2 and row["overrides"] == {"train.lr": 0.02}
