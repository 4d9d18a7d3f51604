"""Distillation (``rule.distill`` with ``train.teacher``): the blended output targets, the checks on the
teacher, and a training run that learns from one and resumes exactly."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stidi.config import ConfigError, load_config
from stidi.errors import StidiError
from stidi.io import build_network, save_model
from stidi.stidi_bp import output_error
from stidi.train import Trainer, TrainingInterrupted, train
from tests.checkpoint_wait import stop_after_step

T = 100


def _error(t, labels, teacher=None, distill=0.0, targets="split", gamma=2.0, scope="all"):
    return output_error(torch.tensor(t, dtype=torch.float64), torch.tensor(labels), T, gamma, True,
                        targets=targets, teacher=None if teacher is None else torch.tensor(teacher, dtype=torch.float64),
                        distill=distill, distill_scope=scope)


def test_wrong_classes_aim_between_their_label_target_and_the_teachers_delay() -> None:
    # label 0 fires at 50, the others at 60 and 55: the margin γ = 2 holds, so the labels ask for no change
    assert torch.equal(_error([[50.0, 60.0, 55.0]], [0]), torch.zeros(1, 3, dtype=torch.float64))
    # the teacher puts class 1 5 steps and class 2 30 steps behind the true class
    e = _error([[50.0, 60.0, 55.0]], [0], teacher=[[40.0, 45.0, 70.0]], distill=0.5)
    expected = torch.tensor([[0.0, (0.5 * 60 + 0.5 * 55 - 60) / T, (0.5 * 55 + 0.5 * 80 - 55) / T]], dtype=torch.float64)
    assert torch.allclose(e, expected)
    # a teacher that ranks class 1 first asks for no delay (never for class 1 before the true one); a silent
    # teacher output counts as T, and no target lies beyond T
    e = _error([[50.0, 60.0, 55.0]], [0], teacher=[[40.0, 30.0, math.inf]], distill=1.0)
    assert torch.allclose(e, torch.tensor([[0.0, (50 - 60) / T, (100 - 55) / T]], dtype=torch.float64))


def test_the_errors_scope_blends_only_images_the_labels_already_correct() -> None:
    # image 0 holds its margin (no label error), image 1 does not (class 2 fires 1 step after the true class)
    t, labels, teacher = [[50.0, 60.0, 55.0], [50.0, 60.0, 51.0]], [0, 0], [[40.0, 45.0, 70.0]] * 2
    everywhere = _error(t, labels, teacher=teacher, distill=0.5)
    scoped = _error(t, labels, teacher=teacher, distill=0.5, scope="errors")
    assert torch.count_nonzero(everywhere[0]) == 2 and torch.count_nonzero(scoped[0]) == 0
    assert torch.equal(scoped[1], everywhere[1])
    assert not torch.equal(scoped[1], _error(t, labels)[1])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.one_of(st.integers(0, T), st.just(math.inf)), min_size=4, max_size=4), min_size=1, max_size=6),
       st.data(), st.sampled_from(["earliest", "split", "softmax"]))
def test_no_share_or_no_teacher_leaves_the_label_targets(times, data, targets) -> None:
    labels = [data.draw(st.integers(0, 3)) for _ in times]
    teacher = [[data.draw(st.integers(0, T)) for _ in range(4)] for _ in times]
    plain = _error(times, labels, targets=targets)
    assert torch.equal(_error(times, labels, teacher=teacher, distill=0.0, targets=targets), plain)
    assert torch.equal(_error(times, labels, teacher=None, distill=0.7, targets=targets), plain)
    # the true class's target never moves with the teacher (earliest / split)
    if targets != "softmax":
        blended = _error(times, labels, teacher=teacher, distill=0.7, targets=targets)
        rows = torch.arange(len(labels))
        assert torch.equal(blended[rows, labels], plain[rows, labels])


def test_softmax_targets_with_the_teacher_as_the_student_and_a_full_share_ask_for_nothing() -> None:
    t = [[50.0, 52.0, 70.0], [61.0, 60.0, 90.0]]
    assert torch.allclose(_error(t, [0, 2], teacher=t, distill=1.0, targets="softmax"), torch.zeros(2, 3, dtype=torch.float64))
    assert not torch.allclose(_error(t, [0, 2], targets="softmax"), torch.zeros(2, 3, dtype=torch.float64))


def _config(teacher: str = "", distill: float = 0.0, **train):
    return load_config(None, {"model": {"network": "4C5-P2-10", "T": 32},
                              "rule": {"targets": "split", "gamma": 2.0, "distill": distill},
                              "train": {"train_limit": 96, "test_limit": 32, "batch_size": 16, "epochs": 2,
                                        "threads": 1, "lr": 0.05, "teacher": teacher, **train}})


def _saved_teacher(tmp_path, network: str = "6C5-P2-10", population: int = 1) -> str:
    config = load_config(None, {"model": {"network": network, "T": 64, "population": population}, "train": {"seed": 3}})
    net = build_network(config)
    torch.manual_seed(0)
    net.initialise(torch.rand(64, 1, 28, 28).mul(64).floor(), 0.3, torch.Generator().manual_seed(3))
    path = tmp_path / "teacher.safetensors"
    save_model(path, net, config)
    return str(path)


def test_a_run_learns_from_the_teacher_and_resumes_exactly_mid_epoch(tmp_path, monkeypatch) -> None:
    teacher = _saved_teacher(tmp_path)
    logged: list[str] = []
    net, history = train(_config(teacher, 0.5), tmp_path / "distil", progress=False, log=logged.append)
    assert any(line.startswith("computing the output spike times of the teacher") and teacher in line for line in logged)
    plain, _ = train(_config(), tmp_path / "plain", progress=False, log=lambda m: None)
    assert not torch.equal(net.weights[0], plain.weights[0])
    stop_after_step(monkeypatch, 8, steps_per_epoch=6)  # in the second epoch
    with pytest.raises(TrainingInterrupted):
        train(_config(teacher, 0.5), tmp_path / "cut", progress=False, log=lambda m: None)
    monkeypatch.undo()
    resumed, again = train(_config(teacher, 0.5), tmp_path / "cut", resume=True, progress=False, log=lambda m: None)
    assert all(torch.equal(a, b) for a, b in zip(resumed.weights, net.weights))
    assert again == history


def test_moved_images_go_through_the_teacher_like_the_table(tmp_path) -> None:
    trainer = Trainer(_config(_saved_teacher(tmp_path), 0.5), tmp_path / "run", _tiny_data(), False, lambda m: None)
    idx = torch.tensor([3, 0, 7])
    table = trainer._teacher_targets(idx, None)
    moved = trainer._teacher_targets(idx, torch.zeros((len(trainer.train_set), 3), dtype=torch.long))
    assert torch.equal(table, moved)
    # on the student's time scale: the teacher runs with T = 64, the student with T = 32
    assert float(table[torch.isfinite(table)].max()) <= 32


def test_a_teacher_with_a_population_per_class_gives_one_time_per_class(tmp_path) -> None:
    trainer = Trainer(_config(_saved_teacher(tmp_path, "6C5-P2-30", population=3), 0.5), tmp_path / "run", _tiny_data(),
                      False, lambda m: None)
    table = trainer._teacher_targets(torch.tensor([3, 0, 7]), None)
    assert table.shape == (3, 10)


def _tiny_data():
    from stidi.train import Dataset

    g = torch.Generator().manual_seed(2)
    return (Dataset(torch.rand((40, 28, 28), generator=g), torch.arange(40) % 10),
            Dataset(torch.rand((8, 28, 28), generator=g), torch.arange(8) % 10))


def test_a_share_without_a_teacher_or_a_teacher_of_other_classes_is_refused_by_name(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"rule.distill = 0.5 needs a teacher"):
        _config("", 0.5)
    with pytest.raises(ConfigError, match=r"rule.distill = 1.5 is out of range"):
        _config("x", 1.5)
    other = _saved_teacher(tmp_path, "6C5-P2-12")
    with pytest.raises(StidiError, match=r"train.teacher = .*teacher.safetensors.*12 classes.*10"):
        Trainer(_config(other, 0.5), tmp_path / "run", _tiny_data(), False, lambda m: None)
    with pytest.raises(StidiError, match=r"train.teacher = .*nope.safetensors"):
        Trainer(_config(str(tmp_path / "nope.safetensors"), 0.5), tmp_path / "run", _tiny_data(), False, lambda m: None)
    warned: list[str] = []
    Trainer(_config(other, 0.0), tmp_path / "run", _tiny_data(), False, warned.append)
    assert any("no effect with rule.distill = 0" in line for line in warned)


def test_the_flags_reach_the_configuration() -> None:
    from stidi.cli import _overrides, build_parser

    values = _overrides(build_parser().parse_args(["train", "--teacher", "run/best.safetensors", "--distill", "0.5",
                                                   "--distill-scope", "errors"]))
    assert values["train"]["teacher"] == "run/best.safetensors" and values["rule"]["distill"] == 0.5
    assert values["rule"]["distill_scope"] == "errors"
