"""benchmarks/reproduce.py: a run's log belongs to the run in its directory.

A run that starts from scratch starts a new log (so the commit recorded from the log's first
header is that run's); a run resumed from its checkpoint appends to the log it has.
Training itself is replaced by a stand-in that fails, so ``main`` stops after the log is written.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.benchmark_scripts import benchmark_script


@pytest.fixture
def reproduce(tmp_path, monkeypatch):
    mod = benchmark_script("reproduce")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.toml").write_text("[train]\nepochs = 1\n")
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    monkeypatch.setattr(mod, "CONFIGS", tmp_path / "configs")
    monkeypatch.setattr(mod, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(mod, "git", lambda *args: "c0ffee" if args[0] == "rev-parse" else "")
    calls: list[list[str]] = []

    def fake_train(cmd, cwd, stdout, stderr):
        calls.append(cmd)
        stdout.write("stand-in for stidi train\n")
        return subprocess.CompletedProcess(cmd, 3)

    monkeypatch.setattr(mod.subprocess, "run", fake_train)
    monkeypatch.setattr(sys, "argv", ["reproduce.py", "tiny"])
    (tmp_path / "results" / "runs" / "tiny").mkdir(parents=True)
    (tmp_path / "results" / "tiny.log").write_text("# 2026-01-01 00:00:00 an earlier run (commit 0ld)\nepoch 1/1: old\n")
    return mod, tmp_path / "results", calls


def test_fresh_run_starts_a_new_log(reproduce, capsys):
    mod, results, calls = reproduce
    assert mod.main() == 3
    text = (results / "tiny.log").read_text()
    assert "0ld" not in text and "epoch 1/1: old" not in text
    assert text.startswith("# ") and "(commit c0ffee)" in text and "stand-in for stidi train" in text
    assert "--resume" not in calls[0]
    assert mod.commits_in_log(results / "tiny.log") == ["c0ffee"]
    assert "exited with 3" in capsys.readouterr().err


def test_resumed_run_appends_to_its_log(reproduce):
    mod, results, calls = reproduce
    (results / "runs" / "tiny" / "checkpoint.safetensors").write_bytes(b"")
    assert mod.main() == 3
    text = (results / "tiny.log").read_text()
    assert text.startswith("# 2026-01-01 00:00:00 an earlier run") and "stand-in for stidi train" in text
    assert calls[0][-1] == "--resume"
    assert mod.commits_in_log(results / "tiny.log") == ["0ld", "c0ffee"]
