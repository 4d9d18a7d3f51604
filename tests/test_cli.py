"""The command line: help texts, a short real training run, resume, eval and error exits."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
import torch

from stidi.cli import main

SMALL = ["--network", "4C5-P2-10", "--T", "32", "--train-limit", "300", "--test-limit", "100", "--no-progress"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stidi.cli", *args], capture_output=True, text=True, timeout=600)


def _subparser(parser, *names):
    import argparse

    for name in names:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("command", [["train"], ["eval"], ["data", "fetch"]])
def test_help_explains_every_option(command):
    from stidi.cli import build_parser

    parser = _subparser(build_parser(), *command)
    assert parser.description
    for action in parser._actions:
        assert action.help and len(action.help) > 10, f"{command}: {action.option_strings or action.dest} has no help"
    proc = run_cli(*command, "--help")
    assert proc.returncode == 0 and "usage: stidi" in proc.stdout


def test_train_resume_and_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    # the log names the software the run was computed with (results differ between CPUs and versions)
    captured = capsys.readouterr()
    assert f"software: python {platform.python_version()}, torch {torch.__version__}" in captured.err
    # ... and the training time, which the run's timing.jsonl holds
    seconds = json.loads((out / "timing.jsonl").read_text())["train_seconds"]
    assert f"training time {seconds:.0f} s ({seconds / 60:.1f} min) over 1 epoch, evaluation excluded" in captured.out
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and 0.0 <= json.loads(lines[0])["test_accuracy"] <= 1.0
    # a second run into the same directory needs --resume; with it, training continues at epoch 2
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 2
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(out), "--resume"]) != 0  # config changed (epochs)
    proc = run_cli("eval", str(out / "model.safetensors"), "--test-limit", "100", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["images"] == 100
    assert result["accuracy"] == pytest.approx(json.loads(lines[0])["test_accuracy"])
    assert result["undecided"] == pytest.approx(json.loads(lines[0])["test_undecided"])


def test_checkpoint_from_before_a_new_field_resumes(tmp_path):
    """A run checkpointed by an older stidi, whose config lacks a field added since, resumes
    when the field keeps its default, and is refused when the new run sets it."""
    out = tmp_path / "run"
    args = ["train", *SMALL, "--epochs", "2", "--out", str(out)]
    assert main(args) == 0
    sidecar = out / "checkpoint.json"
    info = json.loads(sidecar.read_text())
    del info["config"]["rule"]["targets"]
    sidecar.write_text(json.dumps(info))
    (out / "checkpoint.prev.safetensors").unlink()
    assert main([*args, "--resume"]) == 0
    assert main([*args, "--resume", "--targets", "split"]) != 0


def test_bad_input_gives_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nT = -3\n")
    proc = run_cli("train", "--config", str(bad))
    assert proc.returncode == 2
    assert "model.T = -3" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("eval", str(tmp_path / "missing.safetensors"))
    assert proc.returncode == 2 and "no such model file" in proc.stderr
    proc = run_cli("train", "--network", "32C5-P2")
    assert proc.returncode == 2 and "last layer must be dense" in proc.stderr
    proc = run_cli("train", "--network", "16C5-P2-10", "--lr", "0.01", "0.01", "0.01")
    assert proc.returncode == 2 and "train.lr has 3 values for the 2 weighted layers" in proc.stderr
    assert "Traceback" not in proc.stderr
