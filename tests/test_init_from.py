"""train.init_from: leading layers start from a saved model's weight patterns, rescaled like a random draw."""

from __future__ import annotations

import pytest
import torch

from stidi.config import load_config
from stidi.errors import StidiError
from stidi.io import build_network, save_model
from stidi.train import Dataset, initialise


def _data(n: int = 64) -> Dataset:
    g = torch.Generator().manual_seed(1)
    return Dataset(torch.rand((n, 1, 12, 12), generator=g), torch.arange(n) % 10)


def _saved_real_model(tmp_path, network: str = "4C5-P2-6C3-10"):
    config = load_config(None, {"model": {"network": network, "input_shape": [1, 12, 12], "T": 32},
                                "train": {"seed": 5}})
    net = build_network(config)
    initialise(net, config, _data())
    path = tmp_path / "real.safetensors"
    save_model(path, net, config)
    return net, path


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def test_binary_network_takes_the_signs_of_the_matching_leading_layers(tmp_path):
    source, path = _saved_real_model(tmp_path)
    config = load_config(None, {"model": {"network": "4C5-P2-6C3-20-10", "input_shape": [1, 12, 12], "T": 32,
                                          "binary": True, "binary_scale": "fixed"},
                                "train": {"init_from": str(path)}})
    logged: list[str] = []
    net = build_network(config)
    fired = initialise(net, config, _data(), logged.append)
    assert any("layers 1–2" in line and str(path) in line for line in logged)
    for k in (0, 1):  # same shapes: the source's pattern, so the same signs
        assert torch.equal(torch.sign(net.weights[k]), torch.sign(source.weights[k]))
        assert _cosine(net.weights[k], source.weights[k]) > 0.999
    # the 20-unit layer has no counterpart (the source goes straight to 10): drawn as without init_from
    plain_config = load_config(None, {"model": {"network": "4C5-P2-6C3-20-10", "input_shape": [1, 12, 12], "T": 32,
                                                "binary": True, "binary_scale": "fixed"}})
    plain = build_network(plain_config)
    initialise(plain, plain_config, _data())
    assert torch.equal(torch.sign(net.weights[2]), torch.sign(plain.weights[2]))
    assert not torch.equal(torch.sign(net.weights[0]), torch.sign(plain.weights[0]))
    # every layer is still calibrated: some but not all of each fires on the calibration images
    assert all(0 < f < 1 for f in fired[:2])


def test_real_network_rescales_the_pattern_to_its_own_firing_fraction(tmp_path):
    source, path = _saved_real_model(tmp_path)
    config = load_config(None, {"model": {"network": "4C5-P2-6C3-10", "input_shape": [1, 12, 12], "T": 32,
                                          "init_firing_fraction": 0.9},
                                "train": {"init_from": str(path)}})
    net = build_network(config)
    initialise(net, config, _data(), lambda _: None)
    assert _cosine(net.weights[0], source.weights[0]) > 0.999
    # a larger firing fraction than the source's 0.3 needs larger weights
    assert float(net.weights[0].abs().mean()) > float(source.weights[0].abs().mean())


def test_missing_or_unmatched_source_is_a_clear_error(tmp_path):
    _, path = _saved_real_model(tmp_path)
    missing = load_config(None, {"model": {"network": "4C5-P2-10", "input_shape": [1, 12, 12], "T": 32},
                                 "train": {"init_from": str(tmp_path / "nope.safetensors")}})
    with pytest.raises(StidiError, match=r"train.init_from = .*nope.safetensors.*no such model file"):
        initialise(build_network(missing), missing, _data())
    other = load_config(None, {"model": {"network": "8C5-P2-10", "input_shape": [1, 12, 12], "T": 32},
                               "train": {"init_from": str(path)}})
    with pytest.raises(StidiError, match=r"weights shaped \(4, 1, 5, 5\), 8C5-P2-10 needs \(8, 1, 5, 5\)"):
        initialise(build_network(other), other, _data())
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    junk = load_config(None, {"model": {"network": "4C5-P2-10", "input_shape": [1, 12, 12], "T": 32},
                              "train": {"init_from": str(tmp_path / "junk.safetensors")}})
    with pytest.raises(StidiError, match=r"train.init_from = .*junk.safetensors"):
        initialise(build_network(junk), junk, _data())
