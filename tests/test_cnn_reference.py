"""The conventional CNN of benchmarks/cnn_reference.py has the reproduction network's layers."""

from __future__ import annotations

import torch
import torch.nn as nn

from stidi.network import Network
from tests.benchmark_scripts import benchmark_script


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
