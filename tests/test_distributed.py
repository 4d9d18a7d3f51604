"""Data-parallel training under torchrun: N processes apply the update of one, fail fast, resume.

The end-to-end tests start ``python -m torch.distributed.run`` (torchrun) with two gloo
processes on 127.0.0.1 in real subprocesses, on a tiny network and a few hundred MNIST
images, and compare against a single ``python -m stidi train`` with the same seed and
global batch (on two threads, where each rank runs one): the update sums are exact
(fixed point), so the weights and metrics must be identical to the bit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stidi.distributed import SINGLE, Context, from_environment

from checkpoint_wait import reached_first_epoch_checkpoint

# 481 images in batches of 16: the last batch holds one image, so rank 1's share of it is empty.
ARGS = ["--network", "4C5-P2-10", "--T", "32", "--train-limit", "481", "--test-limit", "100", "--batch-size", "16",
        "--epochs", "2", "--checkpoint-every", "3", "--no-progress", "--seed", "5", "--threads", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stidi", "train", *ARGS, "--out", str(out), *extra]


def _torchrun(out: Path, *extra: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port()), "-m", "stidi", "train", *ARGS, "--out", str(out), *extra]


def _run(cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env or ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    _run(_single(out, "--threads", "2"), {**ENV, "NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"})
    return out


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("two") / "run"
    return out, _run(_torchrun(out))


# -- shards ----------------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("size", [0, 1, 2, 7, 16, 33])
def test_shards_split_every_batch_exactly_once_in_order(world, size):
    index = torch.randperm(50)[:size]
    shares = [Context(rank=r, world=world).shard(index) for r in range(world)]
    assert torch.equal(torch.cat(shares), index)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    spans = [Context(rank=r, world=world).span(size) for r in range(world)]
    assert spans[0][0] == 0 and spans[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_one_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert from_environment() is SINGLE
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert from_environment() is SINGLE
    sums = [torch.ones(2, 3, dtype=torch.float64)]
    assert SINGLE.reduce_step(sums, [], 3, False, "step 1") == (sums, 3, False)
    peak = torch.tensor([0.5, 2.0])
    assert SINGLE.all_reduce_max(peak, "step 1") is peak


def test_incomplete_environment_is_a_clear_error(monkeypatch):
    from stidi.errors import StidiError

    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StidiError, match="launch with 'torchrun"):
        from_environment()


def test_lost_peer_message_is_one_line_naming_rank_and_resume():
    exc = RuntimeError("[/src/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:29896: Connection reset by peer. "
                       "This is typically caused by a remote worker hanging\nmore text")
    message = str(Context(rank=1, world=4).lost("summing the update of step 3 of epoch 1", exc))
    assert "\n" not in message and "pair.cc" not in message
    assert message.startswith("rank 1 of 4: summing the update of step 3 of epoch 1 failed")
    assert "Connection reset by peer" in message and "--resume" in message


def test_python_dash_m_stidi_is_the_command_line():
    result = subprocess.run([sys.executable, "-m", "stidi", "train", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--dist-timeout" in result.stdout


# -- end to end ------------------------------------------------------------------------------
def test_two_processes_apply_the_update_of_one(one_process, two_processes):
    out, result = two_processes
    single, double = load_file(one_process / "model.safetensors"), load_file(out / "model.safetensors")
    assert single.keys() == double.keys()
    for key in single:
        assert torch.equal(double[key], single[key]), key
    assert _metrics(one_process) == _metrics(out)
    timing = [json.loads(line) for line in (out / "timing.jsonl").read_text().splitlines()]
    assert [t["processes"] for t in timing] == [2, 2]
    assert result.stdout.count("test accuracy") == 1, "only rank 0 reports"


def test_two_processes_learn_the_same_binary_channel_scales_as_one(tmp_path):
    """The learnt scales of ``binary_scale = "channel"`` follow from the reduced directions, so the ranks agree."""
    extra = ("--binary", "--binary-scale", "channel", "--binary-clip", "3", "--epochs", "1")
    _run(_single(tmp_path / "one", "--threads", "2", *extra), {**ENV, "NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"})
    _run(_torchrun(tmp_path / "two", *extra))
    single, double = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert single["scale.0"].shape == (4,) and single.keys() == double.keys()
    for key in single:
        assert torch.equal(double[key], single[key]), key
    assert _metrics(tmp_path / "one") == _metrics(tmp_path / "two")


def _rank_pids(agent: int) -> dict[int, int]:
    """``{rank: pid}`` of the worker processes torchrun's agent ``agent`` started."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != agent:
                continue
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item)
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in env:
            ranks[int(env["RANK"])] = int(entry.name)
    return ranks


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes through /proc")
def test_killed_rank_fails_fast_and_resume_finishes(tmp_path, two_processes):
    out = tmp_path / "run"
    agent = subprocess.Popen(_torchrun(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    ckpt, killed = out / "checkpoint.json", False
    if reached_first_epoch_checkpoint(ckpt, agent):
        pids = _rank_pids(agent.pid)
        if 1 in pids:
            os.kill(pids[1], signal.SIGKILL)
            killed = True
    _, stderr = agent.communicate(timeout=300)
    assert killed, "the run finished before rank 1 could be killed:\n" + stderr[-2000:]
    assert agent.returncode != 0
    lines = [line for line in stderr.splitlines() if line.startswith("stidi: error: rank 0 of 2")]
    assert lines and "--resume" in lines[0], stderr[-3000:]
    assert json.loads(ckpt.read_text())["partial"] is not None, "the job should have stopped mid-epoch"

    _run(_torchrun(out, "--resume"))
    reference, _ = two_processes
    resumed, uninterrupted = load_file(out / "model.safetensors"), load_file(reference / "model.safetensors")
    for key in uninterrupted:
        assert torch.equal(resumed[key], uninterrupted[key]), key
    assert _metrics(out) == _metrics(reference)


def test_sigterm_to_torchrun_stops_every_rank_after_the_same_step(tmp_path, two_processes):
    out = tmp_path / "run"
    agent = subprocess.Popen(_torchrun(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    ckpt = out / "checkpoint.json"
    sent = reached_first_epoch_checkpoint(ckpt, agent)
    if sent:
        agent.send_signal(signal.SIGTERM)  # torchrun forwards it to every rank
    _, stderr = agent.communicate(timeout=300)
    assert sent, "the run finished before it could be stopped:\n" + stderr[-2000:]
    # both ranks write to one stderr pipe, so their lines can run together: find the messages, not lines
    stops = re.findall(r"stidi: interrupted by SIGTERM: checkpoint saved after step \d+ of epoch \d+", stderr)
    assert len(stops) == 2 and stops[0] == stops[1], stderr[-3000:]
    partial = json.loads(ckpt.read_text())["partial"]
    assert f"after step {partial['step']} of epoch {partial['epoch'] + 1}" in stops[0]

    _run(_torchrun(out, "--resume"))
    reference, _ = two_processes
    assert _metrics(out) == _metrics(reference)
