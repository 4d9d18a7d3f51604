"""A conventional CNN of the same layer shapes as a reproduction run: what backpropagation reaches.

Usage::

    python benchmarks/cnn_reference.py fashion-rcsnn mnist-rcsnn   # writes results/cnn-reference.json

For each named reproduction config (``benchmarks/configs/NAME.toml``) this trains an
ordinary ReLU network with the same layers (each ``NCKpP`` a convolution with the same
padding, each ``PK`` a ``K × K`` max pooling, the analogue of earliest-spike pooling, each
dense layer the same width) by backpropagation of the cross-entropy with Adam (learning
rate ``--lr``, cosine decay), on pixel values in ``[0, 1]``, with the reproduction run's
protocol: its epochs, batch size and seed, the last ``validation`` training images held
out to choose the epoch, and the test accuracy of that epoch on the full official test
set. No augmentation, no weight decay, no weight averaging: a plain reference point, not
a tuned CNN. It tells how much of a gap to the paper's figure is left to a network of
these shapes when its learning rule is exact backpropagation.

``--binary`` also trains each config's binary twin: the weighted layers the config makes binary
(``[model] binary``) compute with ``α · sign(w)``, ``α`` the layer's mean ``|w|``, and the
gradient reaches the real weights ``w`` straight through the sign (BinaryConnect); after each
step the real weights are clipped to ``± c α`` with the config's ``train.binary_clip = c``
(none when 0). Biases stay real, as in the real-valued twin. It tells what exact
backpropagation reaches with binary weights in these shapes::

    python benchmarks/cnn_reference.py fashion-bcsnn --binary --out results/cnn-binary-reference.json

``--only-binary`` trains the binary twin alone; ``--no-bias`` leaves every bias out, as the
spiking network has none::

    python benchmarks/cnn_reference.py fashion-bcsnn --only-binary --no-bias --out results/cnn-binary-no-bias.json

``--network``, ``--epochs``, ``--train-limit`` and ``--test-limit`` replace the config's
values (the limits keep the first images, as ``stidi train`` does, so the validation images
are the last of those kept), and ``--freeze-convs`` leaves the convolutions at their random
initial weights: with them the reference runs on a sweep's short budget, to set what
backpropagation gains from learnt convolutions beside what STiDi-BP gains::

    python benchmarks/cnn_reference.py fashion-rcsnn --network 48C5p2-P2-96C5p2-P2-512-10 --epochs 3 \
        --train-limit 20000 --test-limit 2000 --freeze-convs --threads 1 --out results/cnn-frozen.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stidi.config import load_config  # noqa: E402
from stidi.errors import ConfigError  # noqa: E402
from stidi.io import atomic_write_json  # noqa: E402
from stidi.layers import Conv, Dense, Pool, parse_spec  # noqa: E402
from stidi.provenance import run_provenance  # noqa: E402
from stidi.train import builtin_data  # noqa: E402

EVAL_BATCH = 1000


def binary_weight(w: torch.Tensor) -> torch.Tensor:
    """``α · sign(w)`` (``sign(0) = +1``, ``α`` the mean ``|w|``) in the forward pass, with the
    gradient passed straight through to ``w``."""
    alpha = w.detach().abs().mean()
    forward = alpha * torch.where(w.detach() >= 0, 1.0, -1.0)
    return w + (forward - w).detach()


class BinaryConv2d(nn.Conv2d):
    """A convolution computing with :func:`binary_weight` of its real weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, binary_weight(self.weight), self.bias)


class BinaryLinear(nn.Linear):
    """A dense layer computing with :func:`binary_weight` of its real weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, binary_weight(self.weight), self.bias)


def build_cnn(spec: str, input_shape: tuple[int, ...], binary: bool | list[bool] = False, bias: bool = True) -> nn.Sequential:
    """The ReLU network with ``spec``'s layers (the last dense layer gives the logits); weighted
    layer ``k`` computes with binary weights where ``binary`` (one value, or one per weighted layer
    as in ``[model] binary``) says so (:class:`BinaryConv2d`, :class:`BinaryLinear`); without
    ``bias`` no layer has biases, as in the spiking network."""
    layers = parse_spec(spec, input_shape)
    modules: list[nn.Module] = []
    channels, shape = input_shape[0], tuple(input_shape)
    weighted = 0
    for n, layer in enumerate(layers):
        last = n == len(layers) - 1
        binarised = isinstance(layer, (Conv, Dense)) and bool(binary[weighted] if isinstance(binary, list) else binary)
        if isinstance(layer, Conv):
            conv = BinaryConv2d if binarised else nn.Conv2d
            modules += [conv(channels, layer.channels, layer.kernel, padding=layer.padding, bias=bias), nn.ReLU()]
            channels = layer.channels
            weighted += 1
        elif isinstance(layer, Pool):
            modules.append(nn.MaxPool2d(layer.kernel))
        elif isinstance(layer, Dense):
            if len(shape) > 1:  # the first dense layer sees the flattened map
                modules.append(nn.Flatten())
            modules.append((BinaryLinear if binarised else nn.Linear)(math.prod(shape), layer.units, bias=bias))
            weighted += 1
            if not last:
                modules.append(nn.ReLU())
        shape = layer.output_shape(shape)
    return nn.Sequential(*modules)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(int((model(x[i : i + EVAL_BATCH]).argmax(1) == y[i : i + EVAL_BATCH]).sum()) for i in range(0, len(x), EVAL_BATCH))
    model.train()
    return correct / len(x)


def as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float().div_(255.0).unsqueeze(1)


def clip_binary(model: nn.Module, c: float) -> None:
    """Clip the real weights of every binary layer to ``± c α`` (``α`` their mean ``|w|``)."""
    with torch.no_grad():
        for module in model:
            if isinstance(module, (BinaryConv2d, BinaryLinear)):
                bound = c * float(module.weight.abs().mean())
                module.weight.clamp_(-bound, bound)


def train_reference(name: str, lr: float, log, overrides: dict | None = None, freeze_convs: bool = False,
                    binary: bool = False, bias: bool = True) -> dict:
    """Train the CNN twin of reproduction config ``name``; returns its row of the result.

    ``overrides`` (``{"model": {...}, "train": {...}}``) replace config fields, as on the
    ``stidi train`` command line; ``freeze_convs`` keeps the convolutions' initial weights;
    ``binary`` binarises the layers the config makes binary; ``bias = False`` leaves out every
    bias (:func:`build_cnn`).
    """
    config = load_config(ROOT / "benchmarks" / "configs" / f"{name}.toml", overrides)
    t = config.train
    train_set, test_set = builtin_data(config)  # limited as stidi train limits them
    n_val = t.validation
    if not 0 < n_val < len(train_set):
        raise ConfigError(f"{name}: train.validation = {n_val} must leave training images out of the {len(train_set)} kept "
                          "(raise --train-limit)")
    x, y = as_tensor(train_set.images), train_set.labels
    x_train, y_train, x_val, y_val = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
    x_test, y_test = as_tensor(test_set.images), test_set.labels
    torch.manual_seed(t.seed)
    model = build_cnn(config.model.network, tuple(config.model.input_shape), config.model.binary if binary else False, bias)
    binary_layers = [isinstance(m, (BinaryConv2d, BinaryLinear)) for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    if binary and not any(binary_layers):
        raise ConfigError(f"{name}: --binary needs a config with binary layers (model.binary = {config.model.binary})")
    if freeze_convs:
        for module in model:
            if isinstance(module, nn.Conv2d):
                module.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    steps_per_epoch = math.ceil(len(x_train) / t.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(t.seed)
    epochs = []
    started = time.perf_counter()
    for epoch in range(1, t.epochs + 1):
        order = torch.randperm(len(x_train), generator=gen)
        correct = 0
        for i in range(0, len(order), t.batch_size):
            idx = order[i : i + t.batch_size]
            logits = model(x_train[idx])
            loss = F.cross_entropy(logits, y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if binary and t.binary_clip:
                clip_binary(model, t.binary_clip)
            schedule.step()
            correct += int((logits.argmax(1) == y_train[idx]).sum())
        row = {"epoch": epoch, "train_accuracy": round(correct / len(x_train), 4),
               "validation_accuracy": round(accuracy(model, x_val, y_val), 4),
               "test_accuracy": round(accuracy(model, x_test, y_test), 4)}
        epochs.append(row)
        log(f"{name}: epoch {epoch}/{t.epochs}: train {row['train_accuracy']:.4f}, validation "
            f"{row['validation_accuracy']:.4f}, test {row['test_accuracy']:.4f} ({time.perf_counter() - started:.0f} s)")
    best = max(epochs, key=lambda r: (r["validation_accuracy"], -r["epoch"]))
    return {"name": name, "dataset": t.dataset, "network": config.model.network, "epochs": t.epochs,
            "batch_size": t.batch_size, "lr": lr, "seed": t.seed, "validation": n_val,
            "train_limit": t.train_limit, "test_limit": t.test_limit, "frozen_convs": freeze_convs,
            "binary": binary_layers if binary else False, "binary_clip": t.binary_clip if binary else None, "bias": bias,
            "best_epoch": best["epoch"], "validation_accuracy": best["validation_accuracy"],
            "test_accuracy": best["test_accuracy"], "train_seconds": round(time.perf_counter() - started, 1),
            "by_epoch": epochs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="reproduction configs in benchmarks/configs/ (e.g. fashion-rcsnn)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 0.001)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--out", default="results/cnn-reference.json", help="result JSON")
    parser.add_argument("--network", help="layer spec in place of the config's (e.g. 48C5p2-P2-96C5p2-P2-512-10)")
    parser.add_argument("--epochs", type=int, help="epochs in place of the config's")
    parser.add_argument("--train-limit", type=int, help="keep the first N training images; the config's validation split is the last of them")
    parser.add_argument("--test-limit", type=int, help="test on the first N test images")
    parser.add_argument("--freeze-convs", action="store_true",
                        help="also train each config with its convolutions frozen at their random initial weights (a second row)")
    parser.add_argument("--binary", action="store_true",
                        help="also train each config's binary twin: its binary layers with α·sign(w) forward and "
                             "straight-through gradients (a second row)")
    parser.add_argument("--only-binary", action="store_true", help="train the binary twin only (no real-valued row)")
    parser.add_argument("--no-bias", action="store_true", help="no biases in any layer, as in the spiking network")
    args = parser.parse_args()
    overrides: dict = {}
    if args.network:
        overrides.setdefault("model", {})["network"] = args.network
    for field in ("epochs", "train_limit", "test_limit"):
        if getattr(args, field) is not None:
            overrides.setdefault("train", {})[field] = getattr(args, field)
    for name in args.names:
        if not (ROOT / "benchmarks" / "configs" / f"{name}.toml").is_file():
            parser.error(f"no reproduction config benchmarks/configs/{name}.toml; choose one of: "
                         + ", ".join(sorted(p.stem for p in (ROOT / "benchmarks" / "configs").glob("*.toml"))))
    torch.set_num_threads(args.threads)
    provenance = run_provenance(ROOT, "benchmarks/cnn_reference.py")
    started = time.perf_counter()
    def say(message: str) -> None:
        print(message, flush=True)

    try:
        rows = [train_reference(name, args.lr, say, overrides, frozen, binary, not args.no_bias) for name in args.names
                for frozen in ((False, True) if args.freeze_convs else (False,))
                for binary in ((True,) if args.only_binary else (False, True) if args.binary else (False,))]
    except ConfigError as exc:
        parser.error(str(exc))
    result = {
        **provenance,
        "threads": args.threads,
        "overrides": overrides,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "runs": rows,
    }
    out = ROOT / args.out
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
