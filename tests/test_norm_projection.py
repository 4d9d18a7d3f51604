"""Keeping each neuron's weight norm (train.norm_projection) and Adam's decay rates (train.adam_betas)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from stidi.config import load_config
from stidi.errors import ConfigError
from stidi.io import build_network
from stidi.train import Trainer, TrainingInterrupted, builtin_data, make_optimizer, neuron_norms, project_norms, train
from tests.checkpoint_wait import stop_after_step


def test_neuron_norms_has_one_norm_per_output_neuron_or_channel():
    conv, dense = torch.randn(4, 3, 5, 5), torch.randn(7, 12)
    assert neuron_norms(conv).shape == (4, 1, 1, 1)
    assert neuron_norms(dense).shape == (7, 1)
    assert torch.allclose(neuron_norms(conv).flatten(), torch.stack([c.norm() for c in conv]))
    assert torch.allclose(neuron_norms(dense).flatten(), dense.norm(dim=1))


def test_projection_restores_each_kept_norm_keeps_directions_and_leaves_other_layers_alone():
    config = load_config(None, {"model": {"network": "4C5-P2-10", "T": 32}})
    net = build_network(config)
    torch.manual_seed(0)
    with torch.no_grad():
        for w in net.weights:
            w.copy_(torch.randn_like(w))
    kept = [neuron_norms(net.weights[0]), None]
    with torch.no_grad():
        net.weights[0].mul_(torch.tensor([0.5, 2.0, 3.0, 1.0]).reshape(4, 1, 1, 1))
        net.weights[0][3].zero_()  # a neuron whose weights all reached 0 stays at 0
    turned, readout = net.weights[0].detach().clone(), net.weights[1].detach().clone()
    project_norms(net, kept)
    w = net.weights[0]
    assert torch.allclose(neuron_norms(w)[:3], kept[0][:3], rtol=1e-6)
    assert torch.equal(w[3], torch.zeros_like(w[3]))
    for j in range(3):  # the same direction, only the length changed
        assert torch.allclose(w[j] / w[j].norm(), turned[j] / turned[j].norm(), atol=1e-6)
    assert torch.equal(net.weights[1], readout)


def _run_config(projection, betas=(0.9, 0.999)):
    return load_config(None, {"model": {"network": "4C5-P2-10", "T": 32},
                              "train": {"train_limit": 96, "test_limit": 32, "batch_size": 16, "epochs": 2,
                                        "threads": 1, "lr": 0.05, "norm_projection": projection,
                                        "adam_betas": list(betas)}})


def test_a_run_keeps_the_projected_layers_norms_from_initialisation_and_changes_the_others(tmp_path):
    config = _run_config([True, False])
    data = builtin_data(config, lambda m: None)
    start = Trainer(config, tmp_path / "start", data, progress=False, log=lambda m: None)
    start.start_fresh()
    initial = [neuron_norms(w) for w in start.net.weights]
    train(config, tmp_path / "run", progress=False, log=lambda m: None, data=data)
    trained = load_file(tmp_path / "run" / "model.safetensors")
    assert not torch.equal(trained["weight.0"], start.net.weights[0].detach())  # the rule did turn the kernels
    assert torch.allclose(neuron_norms(trained["weight.0"]), initial[0], rtol=1e-5)
    assert not torch.allclose(neuron_norms(trained["weight.1"]), initial[1], rtol=1e-3)


def test_an_interrupted_run_with_projection_resumes_exactly(tmp_path, monkeypatch):
    config = _run_config([True, True], betas=(0.95, 0.99))
    train(config, tmp_path / "whole", progress=False, log=lambda m: None)
    stop_after_step(monkeypatch, 3, steps_per_epoch=6)  # 96 training images, batch 16
    with pytest.raises(TrainingInterrupted):
        train(config, tmp_path / "cut", progress=False, log=lambda m: None)
    monkeypatch.undo()
    assert json.loads((tmp_path / "cut" / "checkpoint.json").read_text())["partial"]["step"] == 3
    assert {"kept_norm.0", "kept_norm.1"} <= load_file(tmp_path / "cut" / "checkpoint.safetensors").keys()
    train(config, tmp_path / "cut", resume=True, progress=False, log=lambda m: None)
    for name in ("model.safetensors", "checkpoint.safetensors"):
        whole, cut = load_file(tmp_path / "whole" / name), load_file(tmp_path / "cut" / name)
        assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole), name
    assert (tmp_path / "whole" / "metrics.jsonl").read_text() == (tmp_path / "cut" / "metrics.jsonl").read_text()


def test_adam_takes_its_decay_rates_from_the_config():
    config = _run_config(False, betas=(0.95, 0.99))
    net = build_network(config)
    opt = make_optimizer(net, config, lr_scale=[1.0, 1.0])
    assert all(group["betas"] == (0.95, 0.99) for group in opt.param_groups)


@pytest.mark.parametrize("betas", [[0.9], [0.9, 1.0], [-0.1, 0.999], [True, 0.999]])
def test_adam_betas_out_of_range_name_the_field(betas):
    with pytest.raises(ConfigError, match=r"train.adam_betas = "):
        load_config(None, {"train": {"adam_betas": betas}})


def test_a_projection_list_of_the_wrong_length_names_the_field():
    with pytest.raises(ConfigError, match=r"train.norm_projection has 3 values for the 2 weighted layers of 4C5-P2-10"):
        load_config(None, {"model": {"network": "4C5-P2-10"}, "train": {"norm_projection": [True, False, True]}})
    with pytest.raises(ConfigError, match=r"train.norm_projection = 'yes'"):
        load_config(None, {"train": {"norm_projection": "yes"}})
