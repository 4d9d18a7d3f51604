"""Training-time dropout (``train.dropout``): masks, the forward pass's inverted scaling, the rule
leaving dropped neurons out, the configuration's checks, and a training run that uses it."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stidi.config import ConfigError, load_config
from stidi.dropout import dropout_masks
from stidi.stidi_bp import RuleOptions, update_directions
from stidi.train import TrainingInterrupted, train
from tests.checkpoint_wait import stop_after_step
from tests.test_stidi_bp import _toy_dense_net


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), epoch=st.integers(0, 50), cut=st.integers(0, 12))
def test_an_images_mask_does_not_depend_on_the_batch_it_is_in(seed: int, epoch: int, cut: int) -> None:
    shapes = [(1, 6, 6), (3, 4, 4), (7,), (2,)]
    images = torch.randperm(500)[:12]
    whole = dropout_masks([0.3, 0.5], [0, 1], shapes, images, seed, epoch)
    parts = [dropout_masks([0.3, 0.5], [0, 1], shapes, images[s], seed, epoch) for s in (slice(0, cut), slice(cut, None))]
    for layer in (0, 1):
        assert torch.equal(whole[layer][0], torch.cat([p[layer][0] for p in parts]))
    assert whole[0][0].shape == (12, 3, 4, 4) and whole[1][0].shape == (12, 7)


def test_masks_drop_the_asked_fraction_and_change_with_the_epoch() -> None:
    shapes = [(100,), (512,), (10,)]
    images = torch.arange(200)
    masks = dropout_masks([0.25, 0.0], [0, 1], shapes, images, seed=3, epoch=0)
    assert set(masks) == {0}  # a rate of 0 draws nothing
    mask, p = masks[0]
    assert p == 0.25 and abs(mask.float().mean().item() - 0.25) < 0.01
    again = dropout_masks([0.25, 0.0], [0, 1], shapes, images, seed=3, epoch=0)[0][0]
    later = dropout_masks([0.25, 0.0], [0, 1], shapes, images, seed=3, epoch=1)[0][0]
    assert torch.equal(mask, again) and not torch.equal(mask, later)


def test_dropped_neurons_never_fire_and_the_next_layer_sees_weights_scaled_by_one_over_keep() -> None:
    net, t_in, _ = _toy_dense_net(seed=2)
    p = 0.4
    mask = torch.rand((t_in.shape[0], 12), generator=torch.Generator().manual_seed(1)) < p
    trace = net.trace(t_in, {0: (mask, p)})
    assert torch.isinf(trace.times[1][mask]).all()
    plain = net.trace(t_in)
    assert torch.equal(trace.times[1][~mask], plain.times[1][~mask])
    hidden = plain.times[1].masked_fill(mask, math.inf)
    expected, _ = net.layer_forward(1, hidden, weight=net.weight_of(1) / (1 - p))
    assert torch.equal(trace.times[2], expected)
    assert torch.equal(trace.dropped[1], mask)
    # without masks the trace is the plain one
    assert all(torch.equal(a, b) for a, b in zip(net.trace(t_in, {}).times, plain.times))


@pytest.mark.parametrize("revival", [0.0, 0.5])
def test_the_rule_gives_dropped_neurons_no_update_in_or_out(revival: float) -> None:
    net, t_in, labels = _toy_dense_net(seed=5, output_firing=1.0)
    dropped = torch.zeros((t_in.shape[0], 12), dtype=torch.bool)
    dropped[:, [1, 4, 7]] = True  # these three hidden neurons are dropped for every image
    trace = net.trace(t_in, {0: (dropped, 0.5)})
    G = update_directions(net, trace, labels, RuleOptions(gamma=8.0, revival=revival))
    assert torch.count_nonzero(G[0][[1, 4, 7]]) == 0  # their incoming weights
    assert torch.count_nonzero(G[1][:, [1, 4, 7]]) == 0  # their outgoing weights
    assert torch.count_nonzero(G[0]) > 0 and torch.count_nonzero(G[1]) > 0  # the others still learn


def test_dropout_must_leave_the_readout_alone_and_have_one_rate_per_weighted_layer() -> None:
    with pytest.raises(ConfigError, match=r"train.dropout = 0.5 drops output neurons"):
        load_config(None, {"model": {"network": "784-400-10", "input_shape": [784]}, "train": {"dropout": 0.5}})
    with pytest.raises(ConfigError, match=r"train.dropout has 3 values for the 2 weighted layers"):
        load_config(None, {"model": {"network": "784-400-10", "input_shape": [784]}, "train": {"dropout": [0.5, 0.0, 0.0]}})
    with pytest.raises(ConfigError, match=r"train.dropout = \[1.0, 0.0\] is out of range"):
        load_config(None, {"model": {"network": "784-400-10", "input_shape": [784]}, "train": {"dropout": [1.0, 0.0]}})
    config = load_config(None, {"model": {"network": "784-400-10", "input_shape": [784]}, "train": {"dropout": [0.5, 0.0]}})
    assert config.train.dropout == [0.5, 0.0]


def test_a_run_with_dropout_differs_from_one_without_and_resumes_exactly_mid_epoch(tmp_path, monkeypatch) -> None:
    def config(dropout):
        return load_config(None, {"model": {"network": "4C5-P2-16-10", "T": 32},
                                  "train": {"train_limit": 96, "test_limit": 32, "batch_size": 16, "epochs": 2,
                                            "threads": 1, "lr": 0.05, "dropout": dropout}})

    quiet = dict(progress=False, log=lambda m: None)
    net, history = train(config([0.0, 0.5, 0.0]), tmp_path / "drop", **quiet)
    plain, _ = train(config(0.0), tmp_path / "plain", **quiet)
    assert not torch.equal(net.weights[1], plain.weights[1])
    stop_after_step(monkeypatch, 8, steps_per_epoch=6)  # 96 training images, batch 16: in the second epoch
    with pytest.raises(TrainingInterrupted):
        train(config([0.0, 0.5, 0.0]), tmp_path / "cut", **quiet)
    monkeypatch.undo()
    resumed, again = train(config([0.0, 0.5, 0.0]), tmp_path / "cut", resume=True, **quiet)
    assert all(torch.equal(a, b) for a, b in zip(resumed.weights, net.weights))
    assert again == history


def test_the_dropout_flag_reaches_the_configuration() -> None:
    from stidi.cli import _overrides, build_parser

    args = build_parser().parse_args(["train", "--dropout", "0", "0", "0.5", "0"])
    assert _overrides(args)["train"]["dropout"] == [0.0, 0.0, 0.5, 0.0]
