"""Spec strings, configuration loading and validation, TTFS encoding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stidi.config import load_config
from stidi.encoding import ttfs_encode
from stidi.errors import ConfigError, DataError
from stidi.layers import Conv, Dense, Pool, parse_spec, shapes


def test_spec_parsing_and_shapes():
    layers = parse_spec("32C5-P2-64C5-P2-10", (1, 28, 28))
    assert layers == [Conv(32, 5), Pool(2), Conv(64, 5), Pool(2), Dense(10)]
    assert shapes(layers, (1, 28, 28))[-2:] == [(64, 4, 4), (10,)]
    assert parse_spec("784-400-10", (1, 28, 28)) == [Dense(400), Dense(10)]  # leading input size skipped
    assert parse_spec("8C3p1-10", (1, 5, 5))[0] == Conv(8, 3, 1)


@pytest.mark.parametrize("spec, fragment", [
    ("32C5-P2", "last layer must be dense"),
    ("32X5-10", "cannot read layer '32X5'"),
    ("32C29-10", "does not fit"),
    ("32C5--10", "empty layer"),
    ("0C5-10", "zero size"),
])
def test_bad_specs_are_explained(spec, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_spec(spec, (1, 28, 28))


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[model]\nnetwork = "16C5-P2-10"\ntau = inf\n[train]\nepochs = 2\nlr = [0.01, 0.02]\n')
    config = load_config(path, {"train": {"epochs": 5}})
    assert config.model.network == "16C5-P2-10" and math.isinf(config.model.tau)
    assert config.train.epochs == 5 and config.train.lr == [0.01, 0.02]


@pytest.mark.parametrize("text, fragment", [
    ("[train]\nepochz = 2\n", "unknown key 'train.epochz'; did you mean 'epochs'"),
    ("[model]\nT = 0\n", "model.T = 0 is out of range"),
    ("[model]\nT = 'many'\n", "model.T = 'many' has the wrong type"),
    ("[model]\nthreshold = -1.0\n", "model.threshold = -1.0 is out of range"),
    ("[model]\nnetwork = '32C5'\n", "model.network"),
    ("[rule]\nerror_norm = 'l1'\n", "one of 'l2', 'none'"),
    ("[modle]\nT = 3\n", "unknown table"),
    ("[model]\nT = 64\n[rule]\ndecision_floor = 64.0\n", "rule.decision_floor = 64.0 must be below model.T = 64"),
    ("[model\n", "not valid TOML"),
])
def test_bad_config_files_name_the_field(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)


@pytest.mark.parametrize("section, name, values", [
    ("model", "threshold", "[1.0, 1.0, 1.0]"), ("model", "binary", "[true, false, true]"),
    ("model", "init_firing_fraction", "[0.3, 0.3, 0.3]"), ("train", "lr", "[0.01, 0.01, 0.01]"),
    ("train", "weight_decay", "[0.0, 0.0, 0.0]"), ("train", "dropout", "[0.5, 0.0, 0.0]"),
    ("train", "binary_scale_lr", "[0.1, 0.1, 0.1]"),
])
def test_a_per_layer_list_of_the_wrong_length_is_caught_when_the_file_is_read(tmp_path, section, name, values):
    path = tmp_path / "run.toml"
    tables = {"model": 'network = "16C5-P2-10"\n', "train": ""}
    tables[section] += f"{name} = {values}\n"
    path.write_text("".join(f"[{table}]\n{body}" for table, body in tables.items()))
    with pytest.raises(ConfigError, match=rf"run.toml: {section}.{name} has 3 values for the 2 weighted layers of 16C5-P2-10"):
        load_config(path)


def test_ttfs_encoding():
    x = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    t = ttfs_encode(x, 256)
    assert math.isinf(t[0, 0]) and t[0, 3] == 0
    assert t[0, 1] == math.floor(256 * (1 - 1 / 255)) and t[0, 2] == math.floor(256 * (1 - 128 / 255))
    assert torch.equal(ttfs_encode(torch.tensor([[1.0, 0.5]]), 10), torch.tensor([[0.0, 5.0]]))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        ttfs_encode(np.array([2.0]), 10)
