"""Training loop: batches, STiDi-BP steps, evaluation, metrics and resumable checkpoints.

After every epoch the trainer evaluates on the test set (through the moving average of
the weights when ``weight_average`` is set, :mod:`stidi.averaging`), writes a checkpoint
(``checkpoint.safetensors`` + ``.json``: weights, optimiser state, metrics so far) and
the model (``model.safetensors`` + ``.json``), each atomically, and rewrites
``metrics.jsonl`` (deterministic: same seed and threads give the same file) and
``timing.jsonl`` atomically from the checkpoint's history, so they always agree.
It also checkpoints every ``checkpoint_every`` batches and, on SIGINT/SIGTERM, after
the current batch. ``resume=True`` continues from the last checkpoint, mid-epoch
included; shuffling depends only on ``(seed, epoch)``, so a resumed run ends exactly
as the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import distributed
from .augment import epoch_moves, move_images
from .auxiliary import AuxiliaryReadouts
from .averaging import assign, update_average, weights_swapped
from .config import Config, merge
from .distributed import SINGLE, Context
from .distill import load_teacher, teacher_times
from .dropout import dropout_masks
from .errors import ModelFileError, StidiError
from .io import build_network, load_model, load_tensors, network_tensors, restore_weights, save_model, save_tensors, sidecar, write_jsonl
from .network import Network, Trace, per_layer, scale_directions
from .stidi_bp import RuleOptions, finish_directions, idle_sums, update_sums

Log = Callable[[str], None]
EVAL_BATCH = 256
CALIBRATION_IMAGES = 256


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Dataset:
    """Images (``uint8`` or floats in ``[0, 1]``, shape ``(N, *input_shape)``) and integer labels."""

    images: np.ndarray | torch.Tensor
    labels: np.ndarray | torch.Tensor

    def __post_init__(self) -> None:
        self.labels = torch.as_tensor(np.asarray(self.labels), dtype=torch.long)
        if len(self.images) != len(self.labels):
            raise StidiError(f"{len(self.images)} images but {len(self.labels)} labels; they must match")

    def __len__(self) -> int:
        return len(self.labels)

    def spike_times(self, index: torch.Tensor | slice, net: Network, moves: torch.Tensor | None = None) -> torch.Tensor:
        """``net``'s input spike times for the images ``index``, each first moved by its row of ``moves``
        (``dy, dx, mirrored``, see :func:`stidi.augment.move_images`) if given."""
        images = self.images[index.numpy() if isinstance(index, torch.Tensor) else index]
        if moves is not None:
            images = move_images(images, moves)
        return net.encode(images)


def builtin_data(config: Config, log: Log = _stderr) -> tuple[Dataset, Dataset]:
    """The configured built-in dataset (fetched and cached on first use), limited as configured."""
    from .data import load_dataset

    t = config.train
    train = Dataset(*load_dataset(t.dataset, "train", log=log))
    test = Dataset(*load_dataset(t.dataset, "test", log=log))
    if t.train_limit:
        train = Dataset(train.images[: t.train_limit], train.labels[: t.train_limit])
    if t.test_limit:
        test = Dataset(test.images[: t.test_limit], test.labels[: t.test_limit])
    return train, test


@torch.no_grad()
def evaluate(net: Network, data: Dataset, dist: Context = SINGLE) -> dict:
    """Test accuracy, mean decision time, per-layer fraction of neurons firing before ``T``, and the
    fraction of images left ``undecided``: class ``-1``, because no output fired or the earliest
    outputs tied in time and potential (:meth:`Network.readout`). Those are never counted correct,
    so a large fraction explains an accuracy near or below chance.

    With several ranks (``dist``) each evaluates a contiguous share and the sums are reduced.
    """
    correct, undecided, decision, fired, count = 0, 0, 0.0, None, 0
    first, end = dist.span(len(data))
    for lo in range(first, end, EVAL_BATCH):
        sl = slice(lo, min(lo + EVAL_BATCH, end))
        trace = net.trace(data.spike_times(sl, net))
        pred = net.readout(trace)
        correct += int((pred.classes == data.labels[sl]).sum())
        undecided += int((pred.classes == -1).sum())
        decision += float(pred.decision_time.clamp(max=net.T).sum())
        layer_fired = [int(torch.isfinite(t).sum()) for t in trace.times[1:]]  # integers: exact however the set is split
        fired = layer_fired if fired is None else [a + b for a, b in zip(fired, layer_fired)]
        count += len(pred.classes)
    if dist.active:
        sums = dist.sum_floats([correct, undecided, decision, count, *(fired or [0.0] * len(net.layers))], "evaluation")
        correct, undecided, decision, count, fired = sums[0], sums[1], sums[2], sums[3], sums[4:]
    return {
        "accuracy": correct / max(count, 1),
        "undecided": undecided / max(count, 1),
        "mean_decision_time": decision / max(count, 1),
        "firing_fraction": [round(f / (max(count, 1) * math.prod(shape)), 4)
                            for f, shape in zip(fired or [], net.shapes[1:])],
    }


UNDECIDED_WARNING = 0.1  # warn when more than this fraction of the test images gets no class


def undecided_warning(record: dict) -> str | None:
    """A warning for an epoch's record whose test images were left undecided (class ``-1``) more often
    than ``UNDECIDED_WARNING``, naming the likely cause, or ``None``.

    A network whose hidden layers have gone (nearly) silent gives its readout so few input spikes that
    the earliest outputs fire at the same step with the same potential, and the readout cannot choose;
    accuracy then falls towards or below chance although training has not crashed.
    """
    share = record.get("test_undecided", 0.0)
    if share <= UNDECIDED_WARNING:
        return None
    return (f"warning: epoch {record['epoch']} left {share:.1%} of the test images undecided (no output fired, or the "
            f"earliest outputs tied in time and potential), and they count as wrong; firing per layer "
            f"{record.get('test_firing_fraction')}. A layer firing for few of its neurons starves the readout: "
            f"try rule.revival (e.g. 0.01), a lower learning rate or less dropout")


def initial_patterns(net: Network, path: str | Path) -> dict[int, torch.Tensor]:
    """Weight patterns for ``train.init_from``: the forward weights of the model saved at ``path``
    for the leading weighted layers of ``net`` whose weight shapes match, up to the first that
    does not (keyed by weighted-layer index). A binary source gives its ``α·sign(w)``; only the
    pattern matters, since :meth:`Network.initialise` rescales it."""
    where = f"train.init_from = '{path}'"
    try:  # load_model's own checks name what is wrong with the file (missing, not a model, corrupt)
        source, source_config, _ = load_model(path)
    except StidiError as exc:
        raise StidiError(f"{where}: {exc}") from None
    patterns: dict[int, torch.Tensor] = {}
    for k, (mine, theirs) in enumerate(zip(net.weights, source.weights)):
        if mine.shape != theirs.shape:
            break
        patterns[k] = source.weight_of(source.weighted[k]).detach()
    if not patterns:
        raise StidiError(f"{where}: the first weighted layer of {source_config.model.network} has weights shaped "
                         f"{tuple(source.weights[0].shape)}, {net.spec} needs {tuple(net.weights[0].shape)}: no layer "
                         "can start from it; give a model whose leading layers have this network's shapes")
    return patterns


def calibration_batch(config: Config, data: Dataset, net: Network) -> tuple[torch.Generator, torch.Tensor]:
    """The ``CALIBRATION_IMAGES`` random images of ``data`` that initialisation calibrates on, as ``net``'s
    input spike times, and the generator of ``config.train.seed`` that drew them (it then draws the weights)."""
    gen = torch.Generator().manual_seed(config.train.seed)
    calib = torch.randperm(len(data), generator=gen)[:CALIBRATION_IMAGES]
    return gen, data.spike_times(calib, net)


def initialise(net: Network, config: Config, data: Dataset, log: Log = _stderr) -> list[float]:
    """Draw ``net``'s initial weights from ``config.train.seed`` (or take the patterns of
    ``config.train.init_from``, :func:`initial_patterns`), calibrated on ``CALIBRATION_IMAGES``
    random images of ``data`` (:meth:`Network.initialise`); returns each weighted layer's firing fraction."""
    patterns = initial_patterns(net, config.train.init_from) if config.train.init_from else None
    if patterns:
        log(f"weighted layers 1–{len(patterns)} of {net.spec} start from the weight patterns of {config.train.init_from}")
    gen, t_cal = calibration_batch(config, data, net)
    with _torch_threads(1):  # the calibration's PyTorch convolutions may round differently on other thread counts
        return net.initialise(t_cal, config.model.init_firing_fraction, gen, patterns)


def initialise_auxiliary(auxiliary: AuxiliaryReadouts, net: Network, config: Config, data: Dataset) -> list[float]:
    """Draw the auxiliary readouts' initial weights (:mod:`stidi.auxiliary`), calibrated like the readout
    (its ``init_firing_fraction``) on the spike times that the initialised ``net`` gives the calibration
    images of :func:`initialise` at each readout's input. They are drawn from a generator of their own, so
    the network starts from the same weights with or without them."""
    _, t_cal = calibration_batch(config, data, net)
    with _torch_threads(1):
        times = net.trace(t_cal).times
        fraction = per_layer(config.model.init_firing_fraction, len(net.weighted), "init_firing_fraction")[-1]
        gen = torch.Generator().manual_seed(config.train.seed + AUXILIARY_SEED_OFFSET)
        return auxiliary.initialise({n: times[n] for n in auxiliary.nodes}, fraction, gen)


#: added to ``train.seed`` for the auxiliary readouts' own generator
AUXILIARY_SEED_OFFSET = 1_000_003


def split_validation(data: Dataset, count: int) -> tuple[Dataset, Dataset | None]:
    """Carve the last ``count`` images of a training set off as a validation set.

    The best epoch is chosen on it, never on the test set. ``count = 0``: no validation.
    """
    if count <= 0:
        return data, None
    if count >= len(data):
        raise StidiError(f"train.validation = {count} leaves no training images out of {len(data)}; "
                         "hold out fewer images (or train on more)")
    return Dataset(data.images[:-count], data.labels[:-count]), Dataset(data.images[-count:], data.labels[-count:])


def best_record(history: list[dict]) -> dict:
    """The epoch a user should keep: highest validation accuracy (first on ties), else the last epoch."""
    if history and "val_accuracy" in history[0]:
        return max(history, key=lambda r: (r["val_accuracy"], -r["epoch"]))
    return history[-1]


def learning_rate(base: float, epoch: int, epochs: int, schedule: str) -> float:
    """Learning rate of ``epoch`` (0-based): constant, or cosine decay to 0 over the run."""
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    return base


def make_optimizer(net: Network, config: Config, lr_scale: list[float], extra: list[torch.Tensor] = ()) -> torch.optim.Optimizer:
    """One parameter group per weighted layer, with step size ``lr × lr_scale`` (the layer's initial weight std),
    then one per learnt scale of ``binary_scale = "channel"`` (:meth:`Network.trainables`), whose
    ``lr_scale`` is the layer's initial ``α``, whose learning rate is ``train.binary_scale_lr`` times
    the layer's, and which is never decayed.

    ``train.weight_decay = λ`` is decoupled from the update direction: every step also
    shrinks ``w ← w − η_l λ w`` (AdamW's decay; for SGD the same thing), so it is the same
    pull towards 0 whatever Adam's normalisation does to the rule's directions. Like the
    learning rate, λ is one value for every layer or one per weighted layer.

    ``extra`` (the auxiliary readouts' weights, :mod:`stidi.auxiliary`) get one group each after
    those, at the readout's learning rate and without decay; their ``lr_scale`` ends the list.
    """
    lrs = per_layer(config.train.lr, len(net.weights), "train.lr")
    decays = per_layer(config.train.weight_decay, len(net.weights), "train.weight_decay")
    scale_lrs = per_layer(config.train.binary_scale_lr, len(net.weights), "train.binary_scale_lr")
    lrs = lrs + [lrs[k] * scale_lrs[k] for k in net.scale_layers] + [lrs[-1]] * len(extra)
    decays = decays + [0.0] * (len(net.scale_layers) + len(extra))
    groups = [{"params": [w], "lr": lr * s, "base_lr": lr * s, "weight_decay": decay}
              for w, lr, s, decay in zip(net.trainables() + list(extra), lrs, lr_scale, decays, strict=True)]
    if config.train.optimizer == "adam":
        return torch.optim.Adam(groups, betas=tuple(config.train.adam_betas), decoupled_weight_decay=True)
    return torch.optim.SGD(groups)


@torch.no_grad()
def clip_binary_weights(net: Network, c: float) -> None:
    """Clip the real weights of every binary layer to ``[−c α_l, c α_l]`` (``train.binary_clip``).

    The forward pass of a binary layer sees only ``sign(w)``, so a real weight that has
    drifted far from 0 no longer changes anything: it would take as many steps to flip
    its sign as it took to get there. Clipping keeps every real weight within ``c``
    scales of 0 (BinaryConnect clips to ±1 for the same reason). Real-valued layers are
    left alone. With ``binary_scale = "mean_abs"`` the bound is taken before clipping; with
    ``"channel"`` each output neuron's weights are clipped to ``±c α_j`` of its own scale.
    """
    for k, w in enumerate(net.weights):
        if net.binary[k]:
            bound = (c * net.scale(k)).to(w.dtype)
            w.clamp_(-bound, bound)


def neuron_norms(w: torch.Tensor) -> torch.Tensor:
    """L2 norm of each output neuron's incoming weights: one per row of a dense layer's
    ``(units, inputs)`` and one per output channel of a convolution's ``(channels, in, k, k)``,
    shaped to broadcast against ``w``."""
    return w.detach().flatten(1).norm(dim=1).reshape(-1, *([1] * (w.dim() - 1)))


@torch.no_grad()
def project_norms(net: Network, kept: list[torch.Tensor | None]) -> None:
    """Rescale each output neuron's incoming weights back to its kept norm (``train.norm_projection``).

    For a layer ``l`` with ``kept[l]`` set, every row ``w_j`` (a convolution: every output channel's
    kernel) becomes ``w_j · ‖w_j⁰‖ / ‖w_j‖``, ``‖w_j⁰‖`` the norm it had when the run began. A
    neuron's firing time depends both on which inputs its weights favour and on how large they
    are; the projection leaves the rule only the first, so a step can no longer make one kernel
    drown the others or fall silent by shrinking (weight normalisation with the gain held fixed).
    A row whose norm became 0 is left at 0.
    """
    for w, norm in zip(net.weights, kept, strict=True):
        if norm is not None:
            now = neuron_norms(w)
            w.mul_(torch.where(now > 0, norm / now.clamp_min(torch.finfo(w.dtype).tiny), torch.ones_like(now)))


SCALE_FLOOR = 0.01


@torch.no_grad()
def floor_channel_scales(net: Network) -> None:
    """Keep every learnt scale ``α_j`` of ``binary_scale = "channel"`` at ``≥ SCALE_FLOOR`` times its
    layer's initial ``α``: a step may not make a neuron's forward weights vanish or flip all their signs."""
    for k in net.scale_layers:
        net.channel_scales[k].clamp_(min=SCALE_FLOOR * float(net.fixed_scales[k]))


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {f"opt.{p}.{name}": torch.as_tensor(v) for p, st in sd["state"].items() for name, v in st.items()}
    return tensors, sd["param_groups"]


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, p, name = key.split(".", 2)
            state.setdefault(int(p), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": groups})


class TrainingInterrupted(StidiError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; ``--resume`` continues it."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number


class NonFiniteError(StidiError):
    """A weight, update or spike time became NaN/inf; the last good state was checkpointed."""


def _all_finite(x: torch.Tensor) -> bool:
    """Whether every element of ``x`` is finite. A finite sum proves it in one cheap reduction
    (any inf or NaN makes the sum non-finite); only a non-finite sum, which a large finite
    tensor could also reach by overflow, needs the element-wise check."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def _has_nan(times: torch.Tensor) -> bool:
    """Whether spike times (in ``[0, T]`` or ``+inf`` for silence) contain NaN: without NaN their
    sum is finite or ``+inf``, so only a NaN sum needs the element-wise check."""
    return bool(torch.isnan(times.sum())) and bool(torch.isnan(times).any())


def _trainable_names(net: Network) -> list[tuple[str, str]]:
    """``(what, where)`` naming each of ``net.trainables()`` in messages."""
    layers = list(range(len(net.weights))) + net.scale_layers  # the weighted layer of each trainable tensor
    names = []
    for n, k in enumerate(layers):
        what = "" if n < len(net.weights) else "the learnt scales of "
        names.append((what, f"weighted layer {k + 1} ('{net.layers[net.weighted[k]].token}')"))
    return names


def _non_finite_weights(net: Network) -> str | None:
    """Name the first trainable tensor (weights or learnt scales) that is not finite."""
    for (what, where), w in zip(_trainable_names(net), net.trainables()):
        if not _all_finite(w):
            return f"{what or 'weights of '}{where} are not finite"
    return None


def _first_non_finite(net: Network, directions: list[torch.Tensor], trace_times: list[torch.Tensor]) -> str | None:
    """Name the first layer whose spike times (NaN), update direction or weights are not finite."""
    for i, t in enumerate(trace_times[1:]):
        if _has_nan(t):
            return f"spike times of layer {i + 1} ('{net.layers[i].token}') contain NaN"
    for (what, where), g in zip(_trainable_names(net), directions):
        if not _all_finite(g):
            return f"update of {what}{where} is not finite"
    return _non_finite_weights(net)


class Checkpoints:
    """``checkpoint.safetensors`` + ``.json`` in a run directory, with the previous one kept as
    ``checkpoint.prev.*``: a crash while writing (or a corrupted file) falls back to it."""

    def __init__(self, out: Path) -> None:
        self.current = out / "checkpoint.safetensors"
        self.previous = out / "checkpoint.prev.safetensors"

    def exists(self) -> bool:
        return self.current.exists() or self.previous.exists()

    def save(self, tensors: dict[str, torch.Tensor], info: dict) -> None:
        if self.current.exists():
            for src, dst in ((self.current, self.previous), (sidecar(self.current), sidecar(self.previous))):
                if src.exists():
                    os.replace(src, dst)
        save_tensors(self.current, tensors, info)

    def load(self, log: Log) -> tuple[dict[str, torch.Tensor], dict]:
        errors = []
        for path in (self.current, self.previous):
            if not path.exists():
                continue
            try:
                return load_tensors(path)
            except ModelFileError as exc:
                errors.append(str(exc))
                log(f"warning: {exc}; trying the previous checkpoint")
        raise ModelFileError("no usable checkpoint: " + "; ".join(errors) + "; start a new run with another --out")


def _with_defaults(stored: dict | None, where: Path) -> dict | None:
    """A checkpoint's configuration with the fields it predates set to their defaults.

    A run checkpointed before a configuration field existed resumes with a newer stidi,
    as long as the run's configuration keeps that field at its default.
    """
    try:
        return json.loads(json.dumps(merge(Config(), stored, str(where)).to_dict()))
    except (StidiError, TypeError, AttributeError):
        return stored  # not a readable configuration: the comparison reports the difference


class Trainer:
    """One training run: network, optimiser, run directory and progress (resumable mid-epoch)."""

    def __init__(self, config: Config, out_dir: str | Path, data: tuple[Dataset, Dataset], progress: bool, log: Log,
                 dist: Context = SINGLE) -> None:
        self.config, self.t, self.dist = config, config.train, dist
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.train_set, self.val_set = split_validation(data[0], config.train.validation)
        self.test_set = data[1]
        self.net = build_network(config)
        self.rule = RuleOptions(**vars(config.rule))
        self.dropout = per_layer(config.train.dropout, len(self.net.weighted), "train.dropout")
        self.ckpt = Checkpoints(self.out)
        self.progress, self.log = progress, log
        self.history: list[dict] = []
        self.timing: list[dict] = []
        self.partial: dict | None = None  # {"epoch", "step", "correct", "seconds"} of an unfinished epoch
        self.stop_signal: int | None = None
        self.average: list[torch.Tensor] | None = None  # w̄ of train.weight_average (stidi.averaging)
        self.projected = per_layer(config.train.norm_projection, len(self.net.weights), "train.norm_projection", bool)
        self.kept_norms: list[torch.Tensor | None] = []  # ‖w_j⁰‖ of train.norm_projection, set by _keep_norms
        self.auxiliary: AuxiliaryReadouts | None = None  # rule.auxiliary_after (stidi.auxiliary)
        if config.rule.auxiliary_after:
            self.auxiliary = AuxiliaryReadouts(self.net, config.rule.auxiliary_after, config.rule.auxiliary_share)
        self.teacher: Network | None = None  # train.teacher, for rule.distill (stidi.distill)
        self._teacher_table: torch.Tensor | None = None  # its output times for every training image, made once
        if self.t.teacher and config.rule.distill > 0:
            self.teacher = load_teacher(self.t.teacher, self.net, tuple(config.model.input_shape))
        elif self.t.teacher:
            log(f"warning: train.teacher = '{self.t.teacher}' has no effect with rule.distill = 0 "
                "(set distill to its share of the targets, e.g. 0.5, or leave teacher empty)")
        if self.t.binary_clip and not any(self.net.binary):
            log(f"warning: train.binary_clip = {self.t.binary_clip:g} has no effect: no layer of "
                f"{config.model.network} is binary (set model.binary = true, or leave binary_clip at 0)")

    def _start_average(self) -> None:
        if self.t.weight_average > 0:
            self.average = [w.detach().clone() for w in self.net.trainables()]

    def _trainables(self) -> list[torch.Tensor]:
        """Every tensor the optimiser steps: the network's, then the auxiliary readouts' weights."""
        return self.net.trainables() + (self.auxiliary.weights if self.auxiliary else [])

    def _make_optimizer(self) -> None:
        self.opt = make_optimizer(self.net, self.config, self.lr_scale, self.auxiliary.weights if self.auxiliary else [])

    def _keep_norms(self, stored: dict[str, torch.Tensor] | None = None) -> None:
        """The norms train.norm_projection keeps: a checkpoint's ``kept_norm.k`` when resuming, else (a new run, or
        a checkpoint written before they were saved) those of the weights as they are now."""
        stored = stored or {}

        def kept(k: int, w: torch.Tensor) -> torch.Tensor:
            key = f"kept_norm.{k}"
            return stored[key].clone() if key in stored else neuron_norms(w)

        self.kept_norms = [kept(k, w) if on else None for k, (w, on) in enumerate(zip(self.net.weights, self.projected, strict=True))]

    def evaluated_weights(self):
        """Context in which the network holds the weights that are evaluated and saved (the average, if kept)."""
        return weights_swapped(self.net.trainables(), self.average)

    # -- state -------------------------------------------------------------------------
    def start_fresh(self) -> None:
        fired = initialise(self.net, self.config, self.train_set, self.log)
        self.lr_scale = [float(w.std()) for w in self.net.weights]
        self.lr_scale += [float(self.net.fixed_scales[k]) for k in self.net.scale_layers]
        self.log(f"initialised {self.config.model.network}: firing fraction per weighted layer {[round(f, 3) for f in fired]}")
        if self.auxiliary:
            fired = initialise_auxiliary(self.auxiliary, self.net, self.config, self.train_set)
            self.lr_scale += [float(w.std()) for w in self.auxiliary.weights]
            self.log(f"initialised the auxiliary readouts after layers {self.auxiliary.nodes}: firing fraction {[round(f, 3) for f in fired]}")
        self._make_optimizer()
        self._start_average()
        self._keep_norms()

    def share_initial_state(self) -> None:
        """Every rank starts from rank 0's initial weights (initialisation may round differently elsewhere)."""
        tensors, self.lr_scale = self.dist.broadcast((network_tensors(self.net), self.lr_scale), "sharing the initial weights")
        restore_weights(self.net, tensors, self.out)
        self._make_optimizer()
        self._start_average()
        self._keep_norms()

    def resume(self) -> None:
        loaded = self.ckpt.load(self.log) if self.dist.is_writer else None
        tensors, info = self.dist.broadcast(loaded, "sharing the checkpoint")  # only rank 0 needs the files
        if _with_defaults(info.get("config"), self.ckpt.current) != json.loads(json.dumps(self.config.to_dict())):
            raise StidiError(f"{self.ckpt.current}: was written with a different configuration; "
                             "resume with the same options, or use another --out")
        restore_weights(self.net, tensors, self.ckpt.current)
        self.lr_scale, self.history, self.partial = info["lr_scale"], info["history"], info.get("partial")
        self.timing = info.get("timing", [])
        if self.auxiliary:
            self.auxiliary.restore(tensors, str(self.ckpt.current))
        self._make_optimizer()
        _restore_optimizer(self.opt, tensors, info["optimizer_groups"])
        if self.t.weight_average > 0:
            self.average = [tensors[f"average.{k}"].clone() for k in range(len(self.net.trainables()))]
        self._keep_norms(tensors)
        where = f"step {self.partial['step']} of epoch {self.partial['epoch'] + 1}" if self.partial else f"epoch {len(self.history)}"
        self.log(f"resuming from {self.ckpt.current} after {where}")
        if self.history and not self.partial:
            self._write_epoch_outputs()  # in case the run stopped between the epoch's checkpoint and its outputs

    def save_checkpoint(self) -> None:
        if not self.dist.is_writer:
            return
        opt_tensors, groups = _optimizer_tensors(self.opt)
        info = {"config": self.config.to_dict(), "lr_scale": self.lr_scale, "history": self.history,
                "timing": self.timing, "partial": self.partial, "optimizer_groups": groups}
        average = {f"average.{k}": a for k, a in enumerate(self.average or [])}
        kept = {f"kept_norm.{k}": n for k, n in enumerate(self.kept_norms) if n is not None}
        auxiliary = self.auxiliary.tensors() if self.auxiliary else {}
        self.ckpt.save({**network_tensors(self.net), **opt_tensors, **average, **kept, **auxiliary}, info)

    def _write_epoch_outputs(self) -> None:
        """The latest model, and ``best.safetensors`` when this epoch is the best by validation."""
        if not self.dist.is_writer:
            return
        with self.evaluated_weights():
            save_model(self.out / "model.safetensors", self.net, self.config, {"history": self.history})
            if self.val_set is not None and best_record(self.history) is self.history[-1]:
                save_model(self.out / "best.safetensors", self.net, self.config,
                           {"history": self.history, "best_epoch": self.history[-1]["epoch"]})
        write_jsonl(self.out / "metrics.jsonl", self.history)
        write_jsonl(self.out / "timing.jsonl", self.timing)

    # -- loop --------------------------------------------------------------------------
    def run(self) -> list[dict]:
        with _stop_on_signals(self):
            if len(self.history) < self.t.epochs:
                self._make_teacher_table()
            for epoch in range(len(self.history), self.t.epochs):
                for group in self.opt.param_groups:
                    group["lr"] = learning_rate(group["base_lr"], epoch, self.t.epochs, self.t.lr_schedule)
                record, timing = self._train_epoch(epoch)
                if self.dist.active:
                    timing["processes"] = self.dist.world
                with self.evaluated_weights():
                    if self.val_set is not None:
                        record.update({f"val_{k}": v for k, v in evaluate(self.net, self.val_set, self.dist).items()})
                    record.update({f"test_{k}": v for k, v in evaluate(self.net, self.test_set, self.dist).items()})
                self.history.append(record)
                self.timing.append(timing)
                self.partial = None
                val = f"validation accuracy {record['val_accuracy']:.4f}, " if "val_accuracy" in record else ""
                self.log(f"epoch {epoch + 1}/{self.t.epochs}: train accuracy {record['train_accuracy']:.4f}, {val}"
                         f"test accuracy {record['test_accuracy']:.4f}, {timing['images_per_s']:.1f} images/s, "
                         f"firing {record['test_firing_fraction']}")
                warning = undecided_warning(record)
                if warning:
                    self.log(warning)
                self.save_checkpoint()
                self._write_epoch_outputs()
        return self.history

    def _train_epoch(self, epoch: int) -> tuple[dict, dict]:
        t, data, net = self.t, self.train_set, self.net
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(t.seed * 100003 + epoch))
        moves = epoch_moves(len(data), t.augment_shift, t.augment_flip, t.seed, epoch)  # see stidi.augment
        resumed = self.partial if self.partial and self.partial["epoch"] == epoch else None
        first_step = resumed["step"] if resumed else 0
        correct, seconds = (resumed["correct"], resumed["seconds"]) if resumed else (0, 0.0)
        auxiliary_correct = list(resumed.get("auxiliary_correct", [])) if resumed else []
        if self.auxiliary:
            auxiliary_correct = auxiliary_correct or [0] * len(self.auxiliary.nodes)
            self.auxiliary.take_hits()  # count from this epoch's first step
        steps = math.ceil(len(data) / t.batch_size)
        bar = self._progress_bar(epoch, min(first_step * t.batch_size, len(data)))
        start = time.perf_counter() - seconds
        for step in range(first_step, steps):
            idx = order[step * t.batch_size : (step + 1) * t.batch_size]
            share = self.dist.shard(idx)  # all of idx with one process
            where = f"step {step + 1} of epoch {epoch + 1}"
            sums, trace, hits = self._sums(share, len(idx), where, moves, epoch)
            asked = self.stop_signal  # with several ranks a later signal counts at the next step, on every rank
            sums, hits, agreed = self.dist.reduce_step(sums, trace.times, hits, asked is not None, where)
            directions = finish_directions(net, sums, self.rule, len(idx))
            directions += scale_directions(net, directions)  # the learnt scales of binary_scale = "channel", if any
            if self.auxiliary:
                directions += self.auxiliary.directions(sums[len(net.weighted):], self.rule, len(idx))
                auxiliary_correct = [c + h for c, h in zip(auxiliary_correct, self.auxiliary.take_hits().values(), strict=True)]
            correct += hits
            self._step(directions, trace, epoch, step)
            done = step + 1
            self.partial = {"epoch": epoch, "step": done, "correct": correct, "seconds": time.perf_counter() - start}
            if self.auxiliary:
                self.partial["auxiliary_correct"] = auxiliary_correct
            if bar is not None:
                bar.update(len(idx))
                bar.set_postfix(acc=f"{correct / min(done * t.batch_size, len(data)):.3f}")
            stop = self.stop_signal if not self.dist.active else (asked or signal.SIGTERM) if agreed else None
            if stop is not None:
                self.save_checkpoint()
                name = signal.Signals(stop).name
                raise TrainingInterrupted(f"{name}: checkpoint saved after step {done} of epoch {epoch + 1} "
                                          f"in {self.out}; continue with --resume", stop)
            if t.checkpoint_every and done % t.checkpoint_every == 0 and done < steps:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - start
        record = {"epoch": epoch + 1, "train_accuracy": correct / len(data), "lr": [g["lr"] for g in self.opt.param_groups]}
        if self.auxiliary:  # how well each auxiliary readout classified the training images, keyed by its layer
            record["auxiliary_train_accuracy"] = {str(n): c / len(data) for n, c in zip(self.auxiliary.nodes, auxiliary_correct)}
        return record, {"epoch": epoch + 1, "train_seconds": round(seconds, 2), "images_per_s": round(len(data) / seconds, 2)}

    def _sums(self, idx: torch.Tensor, batch: int, where: str, moves: torch.Tensor | None,
              epoch: int) -> tuple[list[torch.Tensor], Trace, int]:
        """Exact update sums (see :func:`update_sums`), spike times and correct count of the training
        images ``idx``, a share of a global batch of ``batch`` images, moved by the epoch's augmentation
        ``moves`` (one row per training image) if given, with the epoch's dropout (:mod:`stidi.dropout`)."""
        net, data = self.net, self.train_set

        def agree(peak: torch.Tensor) -> torch.Tensor:
            return self.dist.all_reduce_max(peak, f"agreeing on the update's error scales and quanta of {where}")

        if len(idx) == 0:  # a rank's share of a last batch smaller than the number of ranks
            return idle_sums(net, self.rule, agree), Trace([]), 0
        labels = data.labels[idx]
        drop = None
        if any(self.dropout):
            drop = dropout_masks(self.dropout, net.weighted, net.shapes, idx, self.t.seed, epoch)
        trace = net.trace(data.spike_times(idx, net, moves[idx] if moves is not None else None), drop)
        hits = int((net.readout(trace).classes == labels).sum())
        teacher = self._teacher_targets(idx, moves)
        return update_sums(net, trace, labels, self.rule, batch, agree, teacher, self.auxiliary), trace, hits

    def _step(self, directions: list[torch.Tensor], trace, epoch: int, step: int) -> None:
        """Apply one optimiser step; on a non-finite value keep (and checkpoint) the state before it."""
        problem = _first_non_finite(self.net, directions, trace.times)
        if problem is None and not all(_all_finite(g) for g in directions[len(self.net.trainables()):]):
            problem = "update of an auxiliary readout is not finite"
        if problem is None:
            before = ([w.detach().clone() for w in self._trainables()], copy.deepcopy(self.opt.state_dict()))
            for w, g in zip(self._trainables(), directions, strict=True):
                w.grad = g
            self.opt.step()
            floor_channel_scales(self.net)
            if any(self.projected):
                project_norms(self.net, self.kept_norms)
            if self.t.binary_clip:
                clip_binary_weights(self.net, self.t.binary_clip)
            problem = _non_finite_weights(self.net)  # the step's inputs were checked above
            if problem is not None:
                assign(self._trainables(), before[0])
                self.opt.load_state_dict(before[1])
            elif self.average is not None:  # n counts the steps of the run: the ramp of the average's decay
                n = epoch * math.ceil(len(self.train_set) / self.t.batch_size) + step
                update_average(self.average, self.net.trainables(), self.t.weight_average, n)
        if problem is not None:
            self.save_checkpoint()
            raise NonFiniteError(f"epoch {epoch + 1}, step {step + 1}: {problem}; stopped with the last good "
                                 f"state in {self.ckpt.current} (lower train.lr and resume, or start again)")

    def _teacher_targets(self, idx: torch.Tensor, moves: torch.Tensor | None) -> torch.Tensor | None:
        """The teacher's output spike times for training images ``idx`` (moved by ``moves`` if given),
        on the student's time scale (times × student T / teacher T); None without distillation.
        Unmoved images come from a table made once per run (:meth:`_make_teacher_table`)."""
        if self.teacher is None:
            return None
        data, teacher = self.train_set, self.teacher
        if moves is not None:
            times = teacher_times(teacher, lambda index, net: data.spike_times(index, net, moves[index]), idx)
        else:
            self._make_teacher_table()
            times = self._teacher_table[idx]
        return times * (self.net.T / teacher.T)

    def _make_teacher_table(self) -> None:
        """The teacher's output times for every (unmoved) training image, once per run and
        before the first epoch's clock starts, so the epoch's images/s count training only."""
        if self.teacher is None or self._teacher_table is not None or self.t.augment_shift or self.t.augment_flip:
            return
        data = self.train_set
        self.log(f"computing the output spike times of the teacher {self.t.teacher} on {len(data)} training images")
        bar = self._progress_bar(None, 0)
        self._teacher_table = teacher_times(self.teacher, data.spike_times, torch.arange(len(data)),
                                            bar.update if bar else None)
        if bar is not None:
            bar.close()

    def _progress_bar(self, epoch: int | None, initial: int):
        if not self.progress:
            return None
        from tqdm import tqdm

        desc = "teacher" if epoch is None else f"epoch {epoch + 1}/{self.t.epochs}"
        return tqdm(total=len(self.train_set), initial=initial, desc=desc, unit="img", leave=False, file=sys.stderr)


@contextlib.contextmanager
def _torch_threads(n: int):
    """Run PyTorch on ``n`` threads inside the block, so that its results do not depend on
    ``--threads`` or on the number of processes (a data-parallel run initialises on rank 0)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer):
    """Turn SIGINT/SIGTERM into a request to checkpoint and stop after the current batch."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        trainer.stop_signal = signum

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def train(
    config: Config,
    out_dir: str | Path,
    resume: bool = False,
    data: tuple[Dataset, Dataset] | None = None,
    progress: bool = True,
    log: Log = _stderr,
    dist_timeout: float | None = None,
) -> tuple[Network, list[dict]]:
    """Train a network as configured; returns it with one metrics record per epoch.

    ``data`` replaces the built-in dataset with ``(train, test)`` :class:`Dataset` s.
    With ``resume`` the run in ``out_dir`` continues from its last checkpoint (mid-epoch
    included) and ends exactly as an uninterrupted run would.

    Launched by ``torchrun`` (``WORLD_SIZE`` > 1) it trains data-parallel (see
    :mod:`stidi.distributed`): ``batch_size`` is the global batch, only rank 0 writes
    and logs, and ``dist_timeout`` seconds bound every wait for another rank.
    """
    if config.rule.auxiliary_after and distributed.requested_world() > 1:
        raise StidiError(f"rule.auxiliary_after = {config.rule.auxiliary_after}: auxiliary readouts train in one process "
                         "only; run without torchrun (use train.threads for more cores), or leave auxiliary_after empty")
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    dist = distributed.from_environment(dist_timeout)
    if dist.active:  # torchrun sets OMP_NUM_THREADS=1 unless told otherwise; --threads overrides
        distributed.limit_threads(config.train.threads or torch.get_num_threads())
    try:
        if not dist.is_writer:
            progress, log = False, lambda message: None
        if data is None:  # fetched (if need be) by one rank per machine before the others read the cache
            data = dist.local_first(lambda: builtin_data(config, log), "loading the dataset")
        trainer = Trainer(config, out_dir, data, progress, log, dist)
        if dist.broadcast(resume and trainer.ckpt.exists(), "agreeing on --resume"):
            trainer.resume()
        else:
            trainer.start_fresh()
            if dist.active:
                trainer.share_initial_state()
        history = trainer.run()
        if trainer.average is not None:  # the returned network is the one that was evaluated and saved
            assign(trainer.net.trainables(), trainer.average)
        return trainer.net, history
    finally:
        raised = sys.exc_info()[0]  # an agreed stop (TrainingInterrupted) is no failure: every rank is still there
        failed = raised is not None and not issubclass(raised, TrainingInterrupted)
        if failed and dist.active and threading.current_thread() is threading.main_thread():
            # torchrun sends SIGTERM to the other ranks as soon as one dies: the error that says
            # which rank failed and to --resume must still be printed before this one exits
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        distributed.shutdown(dist, wait_for_peers=not failed)
