"""A population of output neurons per class (``model.population``, ``rule.population_update``): the
classes' times and readout, the error of each neuron, the equivalence with one neuron per class when
the neurons of a group are copies, and the option's path through config, training, saving and NIR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stidi.api import build, fit, load, predict, save
from stidi.config import ConfigError, load_config
from stidi.network import Network
from stidi.stidi_bp import RuleOptions, output_error, population_error, update_directions

T = 100


def test_a_class_fires_with_the_earliest_neuron_of_its_group() -> None:
    net = build("4C5-P2-6", (1, 28, 28), population=2)
    assert net.num_classes == 3
    t = torch.tensor([[50.0, 40.0, 45.0, 60.0, math.inf, 41.0], [math.inf] * 6])
    assert torch.equal(net.class_times(t), torch.tensor([[40.0, 45.0, 41.0], [math.inf] * 3]))
    assert build("4C5-P2-6", (1, 28, 28)).class_times(t) is t


def _pop(t, labels, class_error, mode):
    return population_error(torch.tensor(t, dtype=torch.float64), torch.tensor(class_error, dtype=torch.float64),
                            torch.tensor(labels), T, mode)


def test_the_winner_takes_its_class_error_and_all_moves_the_group() -> None:
    # two classes of three neurons; true class 0 (times 50, 42, 70: class time 42), class 1 (44, 90, silent: 44)
    t = [[50.0, 42.0, 70.0, 44.0, 90.0, math.inf]]
    e = [[-0.02, 0.04]]  # class 0 aims at 40, class 1 at 48
    assert torch.allclose(_pop(t, [0], e, "winner"), torch.tensor([[0, -0.02, 0, 0.04, 0, 0]], dtype=torch.float64))
    # all: every neuron of the true class aims at 40; of class 1 only the neuron before 48 is pushed
    want = torch.tensor([[(40 - 50) / T, (40 - 42) / T, (40 - 70) / T, (48 - 44) / T, 0, 0]], dtype=torch.float64)
    assert torch.allclose(_pop(t, [0], e, "all"), want)
    # offenders: the true class's winner only, and the wrong class's neurons before 48
    want[0, [0, 2]] = 0
    assert torch.allclose(_pop(t, [0], e, "offenders"), want)
    # a sample classified with its margin keeps a zero error in every mode
    for mode in ("winner", "all", "offenders"):
        assert torch.equal(_pop(t, [0], [[0.0, 0.0]], mode), torch.zeros(1, 6, dtype=torch.float64))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.one_of(st.integers(0, T), st.just(math.inf)), min_size=6, max_size=6), min_size=1, max_size=5),
       st.data(), st.sampled_from(["earliest", "split", "softmax"]))
def test_each_group_sums_to_its_class_error_for_the_winner_and_wrong_classes_never_move_earlier(times, data, targets) -> None:
    labels = torch.tensor([data.draw(st.integers(0, 2)) for _ in times])
    t_out = torch.tensor(times, dtype=torch.float64)
    t_class = t_out.reshape(len(times), 3, 2).min(dim=2).values
    e_class = output_error(t_class, labels, T, 2.0, True, targets=targets)
    winner = population_error(t_out, e_class, labels, T, "winner").reshape(len(times), 3, 2)
    assert torch.equal(winner.sum(dim=2), e_class)
    assert int((winner != 0).sum(dim=2).max()) <= 1
    wrong = ~torch.nn.functional.one_hot(labels, 3).bool()
    for mode in ("all", "offenders"):
        spread = population_error(t_out, e_class, labels, T, mode).reshape(len(times), 3, 2)
        assert (spread[wrong] >= 0).all()
        # the group's earliest neuron gets the class's own error in every mode
        first = spread.gather(2, t_out.clamp(max=T).reshape(len(times), 3, 2).argmin(dim=2, keepdim=True)).squeeze(2)
        assert torch.allclose(first, e_class)
    # offenders: the true class as for the winner, the wrong classes as for all
    offenders = population_error(t_out, e_class, labels, T, "offenders").reshape(len(times), 3, 2)
    assert torch.equal(offenders[~wrong], winner[~wrong]) and torch.equal(offenders[wrong], spread[wrong])


def _copied(net: Network, k: int) -> Network:
    """``net`` with every output neuron repeated ``k`` times (``population = k``)."""
    out = Network(net.spec.rsplit("-", 1)[0] + f"-{net.layers[-1].units * k}", net.input_shape, net.T, net.tau,
                  net.thresholds, population=k)
    with torch.no_grad():
        for mine, theirs in zip(out.weights[:-1], net.weights[:-1]):
            mine.copy_(theirs)
        out.weights[-1].copy_(net.weights[-1].repeat_interleave(k, dim=0))
    return out


def test_copies_of_each_output_neuron_read_and_learn_like_one_neuron_per_class() -> None:
    g = torch.Generator().manual_seed(4)
    net = Network("20-12-4", input_shape=(20,), T=64, thresholds=1.0)
    t_in = torch.randint(0, 32, (24, 20), generator=g).float()
    net.initialise(t_in, [0.6, 0.6], g)
    labels = torch.randint(0, 4, (24,), generator=g)
    pop = _copied(net, 3)
    one, three = net.predict(t_in), pop.predict(t_in)
    assert torch.equal(one.classes, three.classes) and torch.equal(one.output_times, three.output_times)
    assert torch.equal(pop.predict(t_in, early_exit=True).classes, three.classes)
    for targets in ("split", "earliest", "softmax"):
        opts = RuleOptions(gamma=4.0, targets=targets)
        G1 = update_directions(net, net.trace(t_in), labels, opts)
        # winner: a copy's ties go to the group's first neuron, which learns what the single neuron learns
        G3 = update_directions(pop, pop.trace(t_in), labels, opts)
        assert torch.allclose(G3[-1][0::3], G1[-1], atol=1e-12) and not G3[-1][1::3].any() and not G3[-1][2::3].any()
        assert torch.allclose(G3[0], G1[0], atol=1e-12)
        if targets == "softmax":  # (its errors of confident images are tiny, below the L2 normalisation's floor)
            continue
        # all: every copy gets the class's error, so each learns in the single neuron's direction, scaled by
        # 1/√3 (the L2 norm of three copies); the error handed down is normalised again, so layer 0 learns the same
        G3 = update_directions(pop, pop.trace(t_in), labels, RuleOptions(gamma=4.0, targets=targets, population_update="all"))
        for m in range(3):
            assert torch.allclose(G3[-1][m::3] * math.sqrt(3), G1[-1], atol=1e-12)
        assert torch.allclose(G3[0], G1[0], atol=1e-12)


def test_a_population_network_trains_saves_and_loads_back_to_the_same_predictions(tmp_path) -> None:
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(64, 28, 28), dtype=np.uint8)
    labels = np.arange(64) % 10
    net, history = fit("4C5-P2-30", images, labels, T=32, epochs=1, population=3, population_update="all", threads=1)
    assert history and net.num_classes == 10
    pred = predict(net, images)
    assert pred.output_times.shape == (64, 10) and int(pred.classes.max()) < 10
    save(tmp_path / "m", net)
    back = load(tmp_path / "m.safetensors")
    assert back.population == 3
    assert torch.equal(predict(back, images).classes, pred.classes)


def test_a_population_that_does_not_divide_the_outputs_is_refused_with_the_fix(tmp_path) -> None:
    path = tmp_path / "pop.toml"
    path.write_text('[model]\nnetwork = "4C5-P2-10"\npopulation = 3\n')
    with pytest.raises(ConfigError, match=r"pop.toml: model.population = 3 does not divide the 10 outputs.*-30"):
        load_config(path)
    with pytest.raises(ConfigError, match="population"):
        load_config(None, {"model": {"population": 0}})
    with pytest.raises(ConfigError, match="population_update"):
        load_config(None, {"rule": {"population_update": "some"}})
    with pytest.raises(ConfigError, match="end the spec with -30"):
        fit("4C5-P2-6", np.zeros((10, 28, 28), np.uint8), np.arange(10), population=3, epochs=1, threads=1)


def test_the_flags_reach_the_configuration() -> None:
    from stidi.cli import _overrides, build_parser

    values = _overrides(build_parser().parse_args(["train", "--population", "5", "--population-update", "offenders"]))
    assert values["model"]["population"] == 5 and values["rule"]["population_update"] == "offenders"


def test_nir_export_names_the_groups() -> None:
    pytest.importorskip("nir")
    from stidi.export_nir import differences, to_nir

    net = build("4C5-P2-20", (1, 28, 28), population=2)
    assert to_nir(net).metadata["population"] == 2
    assert any("10 classes of 2 consecutive neurons" in line for line in differences(net))
