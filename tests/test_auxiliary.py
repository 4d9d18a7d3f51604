"""Auxiliary readouts (``rule.auxiliary_after``, :mod:`stidi.auxiliary`): the rule at the readouts and
the blend of displacements, the configuration's checks, and a training run that uses them."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stidi.auxiliary import AuxiliaryReadouts
from stidi.config import ConfigError, load_config
from stidi.kernels import vectorised as engine
from stidi.network import Network
from stidi.stidi_bp import RuleOptions, layer_rule, normalise, readout_error, update_sums
from stidi.train import TrainingInterrupted, train
from tests.checkpoint_wait import stop_after_step


def _conv_net_with_readouts(seed: int, positions: list[int], share: float):
    """``3C3-P2-10`` on 1×8×8 inputs, with auxiliary readouts after ``positions``, all weights random."""
    g = torch.Generator().manual_seed(seed)
    net = Network("3C3-P2-10", input_shape=(1, 8, 8), T=32)
    aux = AuxiliaryReadouts(net, positions, share)
    t_in = torch.randint(0, 20, (6, 1, 8, 8), generator=g).float()
    net.initialise(t_in, 0.6, g)
    times = net.trace(t_in).times
    aux.initialise({n: times[n] for n in aux.nodes}, 0.6, g)
    labels = torch.randint(0, 10, (6,), generator=g)
    return net, aux, t_in, labels


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), share=st.sampled_from([0.2, 0.5, 0.8]))
def test_the_layers_below_a_readout_learn_from_the_blend_of_both_displacements(seed: int, share: float) -> None:
    net, aux, t_in, labels = _conv_net_with_readouts(seed, [2], share)
    opts = RuleOptions(gamma=3.0)
    trace = net.trace(t_in)
    sums = update_sums(net, trace, labels, opts, auxiliary=aux)
    plain = update_sums(net, trace, labels, opts)
    assert len(sums) == 3 and torch.equal(sums[1], plain[1])  # the readout does not see the auxiliary one
    # by hand: the readout's displacement of the pooled spikes, the auxiliary readout's, their blend
    x = trace.times[2]
    _, from_above = layer_rule(net, 2, x, trace.times[3], readout_error(net, trace.times[3], labels, opts, "l2"), opts, 6)
    head = aux.heads[2]
    t_head = head.trace(x).times[-1]
    head_sums, own = layer_rule(head, 0, x, t_head, readout_error(head, t_head, labels, opts, "l2"), opts, 6)

    def unit(s):
        return s / s.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    blend = (1 - share) * unit(from_above) + share * unit(own)
    routed = engine.route_to_winners(blend, trace.winners[1], trace.times[1].shape)
    conv_sums, _ = layer_rule(net, 0, t_in, trace.times[1], normalise(routed / net.T, "l2"), opts, 6, need_displacement=False)
    assert torch.equal(sums[0], conv_sums)
    assert torch.equal(sums[2], head_sums)
    # the auxiliary readout learns exactly as a one-layer network trained alone on those spike times would
    assert torch.equal(sums[2], update_sums(head, head.trace(x), labels, opts)[0])


def test_readouts_count_their_hits_and_their_sums_follow_the_networks_in_layer_order() -> None:
    net, aux, t_in, labels = _conv_net_with_readouts(7, [2, 1], 0.3)
    assert aux.nodes == [1, 2]
    trace = net.trace(t_in)
    sums = update_sums(net, trace, labels, RuleOptions(gamma=3.0), auxiliary=aux)
    assert [s.shape for s in sums[2:]] == [w.shape for w in aux.weights] == [(10, 3 * 6 * 6), (10, 3 * 3 * 3)]
    hits = aux.take_hits()
    expected = [int((aux.heads[n].predict(trace.times[n]).classes == labels).sum()) for n in (1, 2)]
    assert list(hits.values()) == expected and aux.take_hits() == {1: 0, 2: 0}


def test_readouts_attach_only_to_hidden_layers() -> None:
    base = {"model": {"network": "4C5-P2-16-10"}}
    with pytest.raises(ConfigError, match=r"rule.auxiliary_after = \[3, 4\]: 4 is not a hidden layer of 4C5-P2-16-10, "
                                          r"which has 3 before its readout"):
        load_config(None, {**base, "rule": {"auxiliary_after": [3, 4]}})
    with pytest.raises(ConfigError, match=r"rule.auxiliary_after = \[0\] is out of range"):
        load_config(None, {**base, "rule": {"auxiliary_after": [0]}})
    with pytest.raises(ConfigError, match=r"rule.auxiliary_share = 1.0 is out of range"):
        load_config(None, {**base, "rule": {"auxiliary_after": [2], "auxiliary_share": 1.0}})
    assert load_config(None, {**base, "rule": {"auxiliary_after": [2, 3]}}).rule.auxiliary_after == [2, 3]


def test_a_run_with_readouts_differs_reports_their_accuracy_saves_none_and_resumes_exactly(tmp_path, monkeypatch) -> None:
    def config(positions):
        return load_config(None, {"model": {"network": "4C5-P2-16-10", "T": 32},
                                  "rule": {"auxiliary_after": positions},
                                  "train": {"train_limit": 96, "test_limit": 32, "batch_size": 16, "epochs": 2,
                                            "threads": 1, "lr": 0.05}})

    quiet = dict(progress=False, log=lambda m: None)
    net, history = train(config([2]), tmp_path / "aux", **quiet)
    plain, plain_history = train(config([]), tmp_path / "plain", **quiet)
    assert not torch.equal(net.weights[0], plain.weights[0])  # the convolution learnt from the blend
    assert all(0 <= r["auxiliary_train_accuracy"]["2"] <= 1 for r in history)
    assert "auxiliary_train_accuracy" not in plain_history[0]
    # the saved model is the network alone: it loads and predicts like the trained one
    from stidi.io import load_model, load_tensors

    assert not any(key.startswith("auxiliary.") for key in load_tensors(tmp_path / "aux" / "model.safetensors")[0])
    assert any(key.startswith("auxiliary.") for key in load_tensors(tmp_path / "aux" / "checkpoint.safetensors")[0])
    loaded, _, _ = load_model(tmp_path / "aux" / "model.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(loaded.weights, net.weights))
    stop_after_step(monkeypatch, 8, steps_per_epoch=6)  # 96 training images, batch 16: in the second epoch
    with pytest.raises(TrainingInterrupted):
        train(config([2]), tmp_path / "cut", **quiet)
    monkeypatch.undo()
    resumed, again = train(config([2]), tmp_path / "cut", resume=True, **quiet)
    assert all(torch.equal(a, b) for a, b in zip(resumed.weights, net.weights))
    assert again == history


def test_the_readout_flags_reach_the_configuration() -> None:
    from stidi.cli import _overrides, build_parser

    args = build_parser().parse_args(["train", "--auxiliary-after", "2", "4", "--auxiliary-share", "0.5"])
    assert _overrides(args)["rule"] == {"auxiliary_after": [2, 4], "auxiliary_share": 0.5}


def test_a_data_parallel_run_refuses_readouts_with_a_clear_error(tmp_path, monkeypatch) -> None:
    from stidi.errors import StidiError

    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it: refused before joining any process group
    config = load_config(None, {"model": {"network": "4C5-P2-16-10"}, "rule": {"auxiliary_after": [2]}})
    with pytest.raises(StidiError, match=r"rule.auxiliary_after = \[2\]: auxiliary readouts train in one process only; "
                                         r"run without torchrun"):
        train(config, tmp_path, progress=False, log=lambda m: None)
