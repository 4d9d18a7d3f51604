"""The conventional CNN of benchmarks/cnn_reference.py has the reproduction network's layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from stidi.errors import ConfigError
from stidi.network import Network
from tests.benchmark_scripts import benchmark_script

#: the binary recipe (three binary weighted layers) on a budget of seconds
SMALL_BINARY = {"model": {"network": "4C5p2-P2-8C5p2-P2-10"},
                "train": {"epochs": 1, "train_limit": 300, "test_limit": 200, "validation": 100}}


def test_cnn_twin_has_the_spiking_networks_shapes_and_weights():
    build_cnn = benchmark_script("cnn_reference").build_cnn
    for spec in ("64C5p2-P2-128C5p2-P2-512-10", "48C5-P2-96C5-P2-10", "784-400-10"):
        cnn = build_cnn(spec, (1, 28, 28))
        snn = Network(spec, input_shape=(1, 28, 28), T=16)
        weighted = [m for m in cnn if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert [tuple(m.weight.shape) for m in weighted] == [tuple(w.shape) for w in snn.weights], spec
        assert isinstance(cnn[-1], nn.Linear) and cnn(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
        # every hidden weighted layer is followed by a ReLU; pooling is max pooling
        for i, m in enumerate(cnn[:-1]):
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                assert isinstance(cnn[i + 1], nn.ReLU), spec
        assert sum(isinstance(m, nn.MaxPool2d) for m in cnn) == spec.count("P"), spec


def test_frozen_convolutions_keep_their_initial_weights_on_the_limited_budget(monkeypatch):
    module = benchmark_script("cnn_reference")
    built: list[nn.Sequential] = []
    build = module.build_cnn
    monkeypatch.setattr(module, "build_cnn", lambda *a: built.append(build(*a)) or built[-1])
    overrides = {"model": {"network": "4C5p2-P2-8C5p2-P2-16-10"},
                 "train": {"epochs": 1, "train_limit": 300, "test_limit": 200, "validation": 100}}
    rows = [module.train_reference("fashion-rcsnn", 1e-3, lambda m: None, overrides, frozen) for frozen in (False, True)]
    torch.manual_seed(0)  # the config's seed: the weights both runs started from
    start = build("4C5p2-P2-8C5p2-P2-16-10", (1, 28, 28))
    assert not torch.equal(built[0][0].weight, start[0].weight)
    assert torch.equal(built[1][0].weight, start[0].weight) and torch.equal(built[1][0].bias, start[0].bias)
    assert torch.equal(built[1][3].weight, start[3].weight)  # the second convolution too
    assert not torch.equal(built[1][-1].weight, start[-1].weight)  # the readout still learns
    assert [(r["frozen_convs"], r["train_limit"], r["test_limit"], r["network"]) for r in rows] == [
        (False, 300, 200, "4C5p2-P2-8C5p2-P2-16-10"), (True, 300, 200, "4C5p2-P2-8C5p2-P2-16-10")]


def test_binary_twin_computes_with_signs_and_learns_the_real_weights():
    module = benchmark_script("cnn_reference")
    torch.manual_seed(0)
    cnn = module.build_cnn("4C5p2-P2-8C5p2-P2-16-10", (1, 28, 28), [True, False, True, True])
    kinds = [type(m) for m in cnn if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert kinds == [module.BinaryConv2d, nn.Conv2d, module.BinaryLinear, module.BinaryLinear]
    conv = cnn[0]
    x = torch.rand(2, 1, 28, 28)
    alpha = conv.weight.abs().mean()
    signs = torch.where(conv.weight >= 0, 1.0, -1.0)
    assert torch.allclose(conv(x), torch.nn.functional.conv2d(x, alpha * signs, conv.bias, padding=2), atol=1e-6)
    assert not torch.allclose(conv(x), torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=2), atol=1e-3)
    cnn(x).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0  # straight through the sign
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = 100.0
        bound = 3.0 * float(conv.weight.abs().mean())  # α before the clip
    module.clip_binary(cnn, 3.0)
    assert abs(float(conv.weight.detach()[0, 0, 0, 0]) - bound) < 1e-5 and conv.weight.abs().max() <= bound + 1e-5


def test_binary_rows_follow_the_configs_binary_layers():
    module = benchmark_script("cnn_reference")
    row = module.train_reference("fashion-bcsnn", 1e-3, lambda m: None, SMALL_BINARY, binary=True)
    assert row["binary"] == [True, True, True] and row["binary_clip"] == 3.0
    assert module.train_reference("fashion-bcsnn", 1e-3, lambda m: None, SMALL_BINARY)["binary"] is False
    with pytest.raises(ConfigError, match="--binary needs a config with binary layers"):
        module.train_reference("fashion-rcsnn", 1e-3, lambda m: None,
                               {**SMALL_BINARY, "model": {"network": "4C5p2-P2-8C5p2-P2-16-10"}}, binary=True)


def test_the_twin_without_biases_has_none():
    module = benchmark_script("cnn_reference")
    cnn = module.build_cnn("4C5p2-P2-8C5p2-P2-16-10", (1, 28, 28), [True, True, True, True], bias=False)
    assert all(m.bias is None for m in cnn if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert cnn(torch.zeros(2, 1, 28, 28)).abs().max() == 0  # no bias: a blank image gives zero logits
    row = module.train_reference("fashion-bcsnn", 1e-3, lambda m: None, SMALL_BINARY, binary=True, bias=False)
    assert row["bias"] is False and row["binary"] == [True, True, True]
