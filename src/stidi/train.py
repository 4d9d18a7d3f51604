"""Training loop: batches, STiDi-BP steps, evaluation, metrics and resumable checkpoints.

After every epoch the trainer evaluates on the test set, writes a checkpoint
(``checkpoint.safetensors`` + ``.json``: weights, optimiser state, metrics so far) and
the model (``model.safetensors`` + ``.json``), each atomically, and rewrites
``metrics.jsonl`` atomically from the checkpoint's history, so the three always agree.
``resume=True`` continues after the last completed epoch; shuffling depends only on
``(seed, epoch)``, so a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import Config
from .encoding import ttfs_encode
from .errors import StidiError
from .io import atomic_write, build_network, load_tensors, network_tensors, restore_weights, save_model, save_tensors
from .network import Network, per_layer
from .stidi_bp import RuleOptions, update_directions

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

    def spike_times(self, index: torch.Tensor | slice, T: int, input_shape: tuple[int, ...]) -> torch.Tensor:
        images = self.images[index.numpy() if isinstance(index, torch.Tensor) else index]
        return ttfs_encode(images, T).reshape(-1, *input_shape)


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
def evaluate(net: Network, data: Dataset) -> dict:
    """Test accuracy, mean decision time and per-layer fraction of neurons firing before ``T``."""
    correct, decision, fired, count = 0, 0.0, None, 0
    for lo in range(0, len(data), EVAL_BATCH):
        sl = slice(lo, lo + EVAL_BATCH)
        trace = net.trace(data.spike_times(sl, net.T, net.input_shape))
        pred = net.readout(trace)
        correct += int((pred.classes == data.labels[sl]).sum())
        decision += float(pred.decision_time.clamp(max=net.T).sum())
        layer_fired = [float(torch.isfinite(t).float().sum() / t[0].numel()) for t in trace.times[1:]]
        fired = layer_fired if fired is None else [a + b for a, b in zip(fired, layer_fired)]
        count += len(pred.classes)
    return {
        "accuracy": correct / max(count, 1),
        "mean_decision_time": decision / max(count, 1),
        "firing_fraction": [round(f / max(count, 1), 4) for f in fired or []],
    }


def learning_rate(base: float, epoch: int, epochs: int, schedule: str) -> float:
    """Learning rate of ``epoch`` (0-based): constant, or cosine decay to 0 over the run."""
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    return base


def make_optimizer(net: Network, config: Config, lr_scale: list[float]) -> torch.optim.Optimizer:
    lrs = per_layer(config.train.lr, len(net.weights), "train.lr")
    groups = [{"params": [w], "lr": lr * s, "base_lr": lr * s} for w, lr, s in zip(net.weights, lrs, lr_scale)]
    return torch.optim.Adam(groups) if config.train.optimizer == "adam" else torch.optim.SGD(groups)


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


def _check_finite(net: Network, epoch: int, step: int) -> None:
    for k, w in enumerate(net.weights):
        if not torch.isfinite(w).all():
            layer = net.layers[net.weighted[k]].token
            raise StidiError(f"epoch {epoch + 1}, step {step}: weights of layer {k + 1} ('{layer}') became non-finite; "
                             f"lower train.lr (the last checkpoint holds the last good state)")


def train(
    config: Config,
    out_dir: str | Path,
    resume: bool = False,
    data: tuple[Dataset, Dataset] | None = None,
    progress: bool = True,
    log: Log = _stderr,
) -> tuple[Network, list[dict]]:
    """Train a network as configured; returns it with one metrics record per epoch.

    ``data`` replaces the built-in dataset with ``(train, test)`` :class:`Dataset` s.
    """
    t = config.train
    if t.threads:
        torch.set_num_threads(t.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_set, test_set = data if data is not None else builtin_data(config, log)
    net = build_network(config)
    rule = RuleOptions(**vars(config.rule))
    ckpt = out / "checkpoint.safetensors"
    history: list[dict] = []
    if resume and ckpt.exists():
        tensors, info = load_tensors(ckpt)
        if info.get("config") != json.loads(json.dumps(config.to_dict())):
            raise StidiError(f"{ckpt}: was written with a different configuration; resume with the same options or use another --out")
        restore_weights(net, tensors, ckpt)
        lr_scale, history = info["lr_scale"], info["history"]
        opt = make_optimizer(net, config, lr_scale)
        _restore_optimizer(opt, tensors, info["optimizer_groups"])
        log(f"resuming from {ckpt} after epoch {len(history)}")
    else:
        gen = torch.Generator().manual_seed(t.seed)
        calib = torch.randperm(len(train_set), generator=gen)[:CALIBRATION_IMAGES]
        fired = net.initialise(train_set.spike_times(calib, net.T, net.input_shape), config.model.init_firing_fraction, gen)
        lr_scale = [float(w.std()) for w in net.weights]
        opt = make_optimizer(net, config, lr_scale)
        log(f"initialised {config.model.network}: firing fraction per weighted layer {[round(f, 3) for f in fired]}")
    for epoch in range(len(history), t.epochs):
        for group in opt.param_groups:
            group["lr"] = learning_rate(group["base_lr"], epoch, t.epochs, t.lr_schedule)
        record = _train_epoch(net, opt, rule, train_set, config, epoch, progress)
        record.update({f"test_{k}": v for k, v in evaluate(net, test_set).items()})
        history.append(record)
        log(f"epoch {epoch + 1}/{t.epochs}: train accuracy {record['train_accuracy']:.4f}, "
            f"test accuracy {record['test_accuracy']:.4f}, {record['images_per_s']:.1f} images/s, "
            f"firing {record['test_firing_fraction']}")
        opt_tensors, groups = _optimizer_tensors(opt)
        info = {"config": config.to_dict(), "lr_scale": lr_scale, "history": history, "optimizer_groups": groups}
        save_tensors(ckpt, {**network_tensors(net), **opt_tensors}, info)
        save_model(out / "model.safetensors", net, config, {"history": history})
        atomic_write(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history).encode())
    return net, history


def _train_epoch(net: Network, opt: torch.optim.Optimizer, rule: RuleOptions, data: Dataset, config: Config, epoch: int, progress: bool) -> dict:
    t = config.train
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(t.seed * 100003 + epoch))
    batches = range(0, len(data), t.batch_size)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(data), desc=f"epoch {epoch + 1}/{t.epochs}", unit="img", leave=False, file=sys.stderr)
    correct, start = 0, time.perf_counter()
    for step, lo in enumerate(batches):
        idx = order[lo : lo + t.batch_size]
        labels = data.labels[idx]
        trace = net.trace(data.spike_times(idx, net.T, net.input_shape))
        correct += int((net.readout(trace).classes == labels).sum())
        for w, g in zip(net.weights, update_directions(net, trace, labels, rule)):
            w.grad = g
        opt.step()
        _check_finite(net, epoch, step)
        if bar is not None:
            bar.update(len(idx))
            bar.set_postfix(acc=f"{correct / min(lo + len(idx), len(data)):.3f}")
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    return {"epoch": epoch + 1, "train_accuracy": correct / len(data), "train_seconds": round(seconds, 2),
            "images_per_s": round(len(data) / seconds, 2), "lr": [g["lr"] for g in opt.param_groups]}
