"""Models are safetensors + JSON: round trip, and refusal of pickles and mismatches."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from stidi.config import load_config
from stidi.errors import ModelFileError, StidiError
from stidi.io import build_network, load_model, read_jsonl, save_model, write_jsonl


def _small_model(tmp_path):
    config = load_config(None, {"model": {"network": "4C5-P2-10", "T": 32}})
    net = build_network(config)
    t_in = torch.randint(0, 32, (8, 1, 28, 28)).float()
    net.initialise(t_in, 0.3, torch.Generator().manual_seed(0))
    path = tmp_path / "model.safetensors"
    save_model(path, net, config)
    return net, config, path, t_in


def test_round_trip_gives_identical_predictions(tmp_path):
    net, config, path, t_in = _small_model(tmp_path)
    loaded, loaded_config, _ = load_model(path)
    assert loaded_config == config
    a, b = net.predict(t_in), loaded.predict(t_in)
    assert torch.equal(a.output_times, b.output_times) and torch.equal(a.classes, b.classes)
    assert load_model(tmp_path)[1] == config  # a run directory works too


def test_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"weight.0": 1}))
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(path)


def test_corrupt_or_mismatched_files_are_refused(tmp_path):
    _, config, path, _ = _small_model(tmp_path)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(path)
    _, config, path, _ = _small_model(tmp_path)
    side = path.with_suffix(".json")
    info = json.loads(side.read_text())
    info["config"]["model"]["network"] = "8C5-P2-10"
    side.write_text(json.dumps(info))
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(path)
    side.unlink()
    with pytest.raises(ModelFileError, match="missing"):
        load_model(path)


def test_a_safetensors_file_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    from safetensors.torch import save as st_save

    from stidi.io import load_tensors, save_tensors

    for pad in range(300):  # find a tensor name that makes the header length ≡ 0x80 (mod 256)
        tensors = {"x" * (pad + 1): torch.zeros(2)}
        if st_save(tensors)[0] == 0x80:
            break
    else:
        pytest.fail("no header length with low byte 0x80 found")
    path = tmp_path / "m.safetensors"
    save_tensors(path, tensors, {})
    assert path.read_bytes()[:1] == b"\x80"
    loaded, _ = load_tensors(path)
    assert torch.equal(loaded["x" * (pad + 1)], torch.zeros(2))


def test_jsonl_round_trip_and_bad_line(tmp_path):
    """What the trainer writes (metrics.jsonl, timing.jsonl) reads back as the same records; a line
    that is not JSON is reported with the file's name, a missing file as FileNotFoundError."""
    records = [{"epoch": 1, "test_accuracy": 0.5}, {"epoch": 2, "firing": [0.1, 0.2]}]
    path = tmp_path / "metrics.jsonl"
    write_jsonl(path, records)
    assert path.read_text().count("\n") == 2
    assert read_jsonl(path) == records
    write_jsonl(path, [])
    assert read_jsonl(path) == []
    path.write_text('{"epoch": 1}\n\n{"epoch": 2\n')
    with pytest.raises(StidiError, match="metrics.jsonl"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "missing.jsonl")
