"""Interrupted training loses nothing, runs are reproducible, bad states are caught.

The kill tests run ``stidi train`` in a real subprocess and kill it (SIGKILL, or SIGTERM
which must checkpoint first) once it has written a mid-epoch checkpoint; ``--resume`` must
then end with exactly the weights and metrics of an uninterrupted run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stidi.config import load_config
from stidi.errors import ModelFileError
from stidi.train import NonFiniteError, train

from checkpoint_wait import reached_first_epoch_checkpoint

ARGS = ["--network", "4C5-P2-10", "--T", "32", "--train-limit", "480", "--test-limit", "100",
        "--batch-size", "16", "--epochs", "2", "--checkpoint-every", "3", "--no-progress", "--seed", "7"]


def _train_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stidi.cli", "train", *ARGS, "--out", str(out), *extra]


def _final_state(out: Path) -> tuple[dict, str]:
    return load_file(out / "model.safetensors"), (out / "metrics.jsonl").read_text()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("reference") / "run"
    subprocess.run(_train_cmd(out), check=True, capture_output=True, timeout=600)
    return _final_state(out)


def _start_and_kill(out: Path, sig: int, at_step: int) -> int:
    """Start training, wait for a checkpoint from step ``at_step`` or later of the first epoch,
    send ``sig``; return the exit code."""
    proc = subprocess.Popen(_train_cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if reached_first_epoch_checkpoint(out / "checkpoint.json", proc, min_step=at_step):
        proc.send_signal(sig)
    proc.communicate(timeout=300)
    return proc.returncode


@pytest.mark.parametrize("at_step", [3, 12])
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, uninterrupted, at_step):
    out = tmp_path / "run"
    code = _start_and_kill(out, signal.SIGKILL, at_step)
    assert code == -signal.SIGKILL, "the run finished before it could be killed"
    subprocess.run(_train_cmd(out, "--resume"), check=True, capture_output=True, timeout=600)
    weights, metrics = _final_state(out)
    ref_weights, ref_metrics = uninterrupted
    assert metrics == ref_metrics
    assert weights.keys() == ref_weights.keys()
    assert all(torch.equal(weights[k], ref_weights[k]) for k in weights)


def test_sigterm_checkpoints_before_exiting(tmp_path, uninterrupted):
    out = tmp_path / "run"
    code = _start_and_kill(out, signal.SIGTERM, 6)
    assert code == 128 + signal.SIGTERM
    info = json.loads((out / "checkpoint.json").read_text())
    assert info["partial"] is not None and info["partial"]["step"] >= 1
    proc = subprocess.run(_train_cmd(out, "--resume"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "resuming from" in proc.stderr
    weights, metrics = _final_state(out)
    assert metrics == uninterrupted[1]
    assert all(torch.equal(weights[k], uninterrupted[0][k]) for k in weights)


def test_same_seed_same_threads_gives_identical_metrics(tmp_path, uninterrupted):
    out = tmp_path / "again"
    subprocess.run(_train_cmd(out), check=True, capture_output=True, timeout=600)
    assert (out / "metrics.jsonl").read_text() == uninterrupted[1]


def _small_config(**train):
    return load_config(None, {"model": {"network": "4C5-P2-10", "T": 32},
                              "train": {"train_limit": 96, "test_limit": 32, "batch_size": 16, "epochs": 1,
                                        "checkpoint_every": 2, **train}})


def test_corrupt_checkpoint_falls_back_to_previous_then_refuses(tmp_path):
    out = tmp_path / "run"
    config = _small_config()
    train(config, out, progress=False, log=lambda m: None)
    current, previous = out / "checkpoint.safetensors", out / "checkpoint.prev.safetensors"
    assert current.exists() and previous.exists()
    current.write_bytes(current.read_bytes()[:-7])  # truncated
    messages: list[str] = []
    train(config, out, resume=True, progress=False, log=messages.append)
    assert any("checksum" in m and "previous checkpoint" in m for m in messages)
    for path in (out / "checkpoint.safetensors", out / "checkpoint.prev.safetensors"):
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="no usable checkpoint"):
        train(config, out, resume=True, progress=False, log=lambda m: None)


def _stops_with_a_finite_checkpoint(tmp_path: Path, message: str) -> None:
    """Training stops with ``message`` and checkpoints only finite weights."""
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=message):
        train(_small_config(), out, progress=False, log=lambda m: None)
    saved = load_file(out / "checkpoint.safetensors")
    assert all(torch.isfinite(v).all() for k, v in saved.items() if k.startswith("weight."))


def test_non_finite_update_stops_with_last_good_state(tmp_path, monkeypatch):
    import stidi.train as train_module

    real = train_module.finish_directions
    calls = {"n": 0}

    def poisoned(net, sums, rule, batch):
        calls["n"] += 1
        directions = real(net, sums, rule, batch)
        if calls["n"] == 3:
            directions[1] = directions[1] * float("nan")
        return directions

    monkeypatch.setattr(train_module, "finish_directions", poisoned)
    _stops_with_a_finite_checkpoint(tmp_path, r"step 3: update of weighted layer 2 \('10'\) is not finite")


def test_non_finite_weights_after_a_step_are_rolled_back(tmp_path, monkeypatch):
    """A step whose inputs were finite but whose result is not is undone before the checkpoint."""
    import stidi.train as train_module

    real = train_module.floor_channel_scales  # called right after every optimiser step
    calls = {"n": 0}

    def poisoned(net):
        real(net)
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                net.weights[0].view(-1)[0] = float("inf")

    monkeypatch.setattr(train_module, "floor_channel_scales", poisoned)
    _stops_with_a_finite_checkpoint(tmp_path, r"step 3: weights of weighted layer 1 \('4C5'\) are not finite")


def test_finiteness_checks_agree_with_element_wise_ones():
    """The cheap sum-based checks of the training step never miss an inf or NaN and never
    flag a tensor whose sum overflows while every element is finite."""
    from stidi.train import _all_finite, _has_nan

    big = torch.full((4,), 3e38, dtype=torch.float32)  # finite elements, an infinite sum
    assert _all_finite(big) and torch.isinf(big.sum())
    for bad in (float("inf"), float("-inf"), float("nan")):
        x = torch.zeros(1000)
        x[517] = bad
        assert not _all_finite(x)
    times = torch.tensor([0.0, 12.0, float("inf"), 255.0])
    assert not _has_nan(times)
    assert not _has_nan(torch.tensor([float("inf"), float("-inf")]))  # a NaN sum without a NaN time
    times[1] = float("nan")
    assert _has_nan(times)
