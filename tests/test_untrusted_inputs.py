"""Untrusted files: bad data through the CLI, and fuzzed model files.

Loading never raises anything but the project's own error types, and the CLI turns them
into one line and exit status 2.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stidi.data as data_module
from stidi.cli import main
from stidi.config import load_config
from stidi.errors import ModelFileError
from stidi.io import build_network, load_model, save_model


def test_truncated_local_data_gives_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    local = tmp_path / "local"
    local.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (local / name).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x10" + b"\x01" * 5)  # header says 16, has 5
    monkeypatch.setitem(data_module.REMOTE_SOURCES, "mnist", [])
    code = main(["data", "fetch", "mnist", "--local-dir", str(local), "--data-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("stidi: error:") and "train-images-idx3-ubyte" in last and "Traceback" not in err
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))  # nothing half-written


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    config = load_config(None, {"model": {"network": "2C3-P2-3", "input_shape": [1, 8, 8], "T": 16}})
    net = build_network(config)
    net.initialise(torch.randint(0, 16, (4, 1, 8, 8)).float(), 0.5, torch.Generator().manual_seed(0))
    save_model(path, net, config)
    return path.read_bytes(), path.with_suffix(".json").read_text()


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(data=st.data())
def test_fuzzed_model_files_load_or_raise_model_file_error(tmp_path, saved_model, data):
    """Random byte edits (with the checksum updated, so the parser itself is exercised)."""
    blob, side = bytearray(saved_model[0]), json.loads(saved_model[1])
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(blob))
    side["sha256"] = hashlib.sha256(bytes(blob)).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(side))
    try:
        net, _, _ = load_model(path)
    except ModelFileError:
        return
    assert [tuple(w.shape) for w in net.weights] == [(2, 1, 3, 3), (3, 18)]
