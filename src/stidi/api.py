"""A small high-level API: build, train and run single-spike networks on any image data.

The built-in datasets are 28×28 greyscale, but nothing in the engine is: this module
lets a user bring their own images (NumPy arrays or any ``torch.utils.data.Dataset``
yielding ``(image, label)``), of any size and channel count, and get back a trained
:class:`~stidi.network.Network` and its predictions::

    import stidi.api as st

    net, history = st.fit("16C5-P2-10", x_train, y_train, test=(x_test, y_test), epochs=3)
    pred = st.predict(net, x_test[:8])
    pred.classes, pred.output_times, pred.decision_time

Images are ``uint8`` (0..255) or floats in ``[0, 1]``, shaped ``(N, H, W)`` (one
channel) or ``(N, C, H, W)``; labels are integers ``0 … classes − 1``.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .config import SECTIONS, Config, load_config, merge
from .errors import ConfigError, DataError
from .io import build_network, load_model, save_model
from .network import Network, Prediction
from .train import Dataset, train

__all__ = ["make_config", "build", "as_dataset", "fit", "predict", "encode", "load", "save"]

PREDICT_BATCH = 256


def image_shape(images: np.ndarray | torch.Tensor) -> tuple[int, ...]:
    """``(C, H, W)`` of a batch of images shaped ``(N, H, W)`` or ``(N, C, H, W)`` (or ``(N, D)`` flat)."""
    shape = tuple(int(s) for s in images.shape[1:])
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) in (1, 3):
        return shape
    raise DataError(f"images of shape {tuple(images.shape)}: expected (N, H, W), (N, C, H, W) or (N, D)")


def make_config(network: str, input_shape: Sequence[int], config: Config | None = None, **options: Any) -> Config:
    """A checked :class:`Config` for ``network`` on inputs of ``input_shape`` (``(C, H, W)`` or ``(D,)``).

    ``options`` are configuration fields by their plain name (``epochs=3``,
    ``T=128``, ``gamma=40``, ``lr=[0.03, 0.01]``; see ``docs/algorithm.md``); each
    name is looked up in the ``[model]``, ``[rule]`` and ``[train]`` tables. A base
    ``config`` (e.g. from :func:`stidi.config.load_config`) can supply the rest.
    """
    owner = {f.name: section for section, cls in SECTIONS.items() for f in fields(cls)}
    values: dict[str, dict] = {"model": {"network": network, "input_shape": [int(s) for s in input_shape]}}
    for key, value in options.items():
        if key not in owner:
            raise ConfigError(f"unknown option {key!r}; known options: {', '.join(sorted(owner))}")
        if isinstance(value, tuple):
            value = list(value)
        values.setdefault(owner[key], {})[key] = value
    base = config if config is not None else load_config(None)
    return merge(base, values, "stidi.api")


def build(network: str | Config, input_shape: Sequence[int] | None = None, **options: Any) -> Network:
    """An untrained network (all weights zero): from a spec and an input shape, or from a :class:`Config`.

    ``build("16C5-P2-10", (3, 32, 32), T=128)`` or ``build(load_config("run.toml"))``.
    """
    if isinstance(network, Config):
        if input_shape is not None or options:
            network = make_config(network.model.network, input_shape or network.model.input_shape, network, **options)
        return build_network(network)
    if input_shape is None:
        raise ConfigError(f"build('{network}'): give the input shape, e.g. (1, 28, 28) or (3, 32, 32)")
    return build_network(make_config(network, input_shape, **options))


def _torch_item(x: Any) -> np.ndarray:
    """One image from a torch dataset as a NumPy array (tensor, array or PIL image)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if hasattr(x, "mode") and hasattr(x, "size") and not isinstance(x, np.ndarray):  # a PIL image
        arr = np.asarray(x)
        return arr.transpose(2, 0, 1) if arr.ndim == 3 else arr
    return np.asarray(x)


def as_dataset(images: Any, labels: Any = None) -> Dataset:
    """A training :class:`~stidi.train.Dataset` from arrays or a ``torch.utils.data.Dataset``.

    ``images`` is an array/tensor of images with ``labels`` beside it, or an object
    with ``__len__`` and ``__getitem__`` returning ``(image, label)`` (any torch
    dataset, e.g. torchvision's with ``transforms.ToTensor()``), read once into memory.
    """
    if isinstance(images, Dataset):
        return images
    if labels is not None:
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        return Dataset(_checked(np.asarray(images), "images"), _checked_labels(labels))
    if not (hasattr(images, "__len__") and hasattr(images, "__getitem__")):
        raise DataError(f"{type(images).__name__} is neither an array of images (give labels too) nor a dataset of (image, label) pairs")
    xs, ys = [], []
    for i in range(len(images)):
        item = images[i]
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise DataError(f"dataset item {i} is a {type(item).__name__}, not an (image, label) pair")
        xs.append(_torch_item(item[0]))
        ys.append(int(item[1].item() if isinstance(item[1], torch.Tensor) else item[1]))
    if not xs:
        raise DataError("the dataset is empty")
    shapes = {x.shape for x in xs}
    if len(shapes) != 1:
        raise DataError(f"dataset images have different shapes {sorted(shapes)[:3]}; resize them to one shape")
    dtype = np.uint8 if all(x.dtype == np.uint8 for x in xs) else np.float32
    return Dataset(_checked(np.stack(xs).astype(dtype, copy=False), "images"), _checked_labels(ys))


def _checked(images: np.ndarray, what: str) -> np.ndarray:
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating) and not np.issubdtype(images.dtype, np.integer):
            raise DataError(f"{what} have dtype {images.dtype}; expected uint8 or floats in [0, 1]")
        images = images.astype(np.float32, copy=False)
        if images.size and (np.isnan(images).any() or images.min() < 0 or images.max() > 1):
            raise DataError(f"{what} hold values in [{np.nanmin(images):.3g}, {np.nanmax(images):.3g}]; "
                            "scale them to [0, 1] (or pass uint8 0..255)")
    if images.ndim not in (2, 3, 4):
        raise DataError(f"{what} have shape {images.shape}; expected (N, H, W), (N, C, H, W) or (N, D)")
    return images


def _checked_labels(labels: Any) -> np.ndarray:
    """Labels as int64, refusing anything but a 1-D array of whole numbers ≥ 0."""
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    whole = np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and bool(np.all(y == np.round(y))))
    if y.ndim != 1 or not (whole or y.size == 0):
        raise DataError(f"labels must be a 1-D array of integers, got shape {y.shape} and dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise DataError(f"labels must be ≥ 0, got {y.min()}")
    return y.astype(np.int64)


def _split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A deterministic ``(train, held-out)`` split."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).numpy()
    n_test = max(1, int(round(len(data) * fraction)))
    test, rest = order[:n_test], order[n_test:]
    return Dataset(data.images[rest], data.labels[rest]), Dataset(data.images[test], data.labels[test])


def fit(
    network: str,
    images: Any,
    labels: Any = None,
    test: Any = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
    config: Config | None = None,
    **options: Any,
) -> tuple[Network, list[dict]]:
    """Train ``network`` with STiDi-BP on your images; returns the network and per-epoch metrics.

    Args:
        network: layer spec, e.g. ``"16C5-P2-10"``; the last layer needs one neuron per class.
        images, labels: training images and labels, or ``images`` alone as a dataset of pairs
            (see :func:`as_dataset`).
        test: ``(images, labels)`` or a dataset of pairs to evaluate after every epoch;
            by default 10 % of the training data is held out for it.
        out_dir: run directory for the model, checkpoints and ``metrics.jsonl``; by
            default a temporary one, removed afterwards (save with :func:`save`).
        options: configuration fields by name (``epochs``, ``T``, ``lr``, ``threads``…).
    """
    train_set = as_dataset(images, labels)
    input_shape = image_shape(train_set.images)
    cfg = make_config(network, input_shape, config, **options)
    n_classes = int(train_set.labels.max()) + 1 if len(train_set) else 0
    net_classes = build_network(cfg).num_classes
    if n_classes > net_classes:
        raise ConfigError(f"network '{network}' has {net_classes} classes but the labels go up to {n_classes - 1}; "
                          f"end the spec with -{n_classes * cfg.model.population}")
    if test is None:
        train_set, test_set = _split(train_set, 0.1, cfg.train.seed)
    else:
        test_set = as_dataset(*test) if isinstance(test, tuple) else as_dataset(test)
        if image_shape(test_set.images) != input_shape:
            raise DataError(f"test images have shape {image_shape(test_set.images)}, training images {input_shape}; they must match")
    if out_dir is not None:
        return train(cfg, out_dir, data=(train_set, test_set), progress=progress, log=_quiet if not progress else print)
    with tempfile.TemporaryDirectory(prefix="stidi-") as tmp:
        return train(cfg, tmp, data=(train_set, test_set), progress=progress, log=_quiet if not progress else print)


def _quiet(message: str) -> None:
    """Log sink that drops progress messages (the returned history holds the metrics) but raises
    the trainer's warnings (lines starting ``warning:``) as Python ``RuntimeWarning``s, so that a
    script or notebook still sees them."""
    if message.startswith("warning: "):
        warnings.warn(message.removeprefix("warning: "), RuntimeWarning, stacklevel=2)


def encode(net: Network, images: Any) -> torch.Tensor:
    """Input spike times for ``images``, shaped ``(N, *net.input_shape)``.

    Accepts one image (``input_shape``, or ``(H, W)`` for one channel) or a batch
    (``(N, *input_shape)``, ``(N, H, W)`` for one channel, or flat ``(N, D)``).
    """
    x = images.detach().cpu() if isinstance(images, torch.Tensor) else np.asarray(images)
    shape, want = tuple(x.shape), net.input_shape
    single = {want} | ({want[1:]} if len(want) == 3 and want[0] == 1 else set())
    if shape in single:
        n = 1
    elif shape[1:] in single | {(int(np.prod(want)),)}:
        n = shape[0]
    else:
        raise DataError(f"images of shape {shape} do not match the network's input shape {want}; "
                        f"give one image {want} or a batch (N, {', '.join(map(str, want))})")
    if n == 0:
        raise DataError("no images given")
    return net.encode(x)


@torch.no_grad()
def predict(net: Network, images: Any, batch_size: int = PREDICT_BATCH, early_exit: bool = False) -> Prediction:
    """Predicted classes (``-1``: undecided), output spike times and decision time of ``images``.

    ``output_times`` are the natural output spike times (``inf``: never fired);
    ``decision_time`` is the earliest output spike (``T`` when forced firing decides).
    With ``early_exit`` each image is simulated only until its decision is known
    (:mod:`stidi.inference`): the same classes and decision times, faster, but output
    spikes after the decision may be reported as ``inf``.
    """
    t_in = encode(net, images)
    parts = [net.predict(t_in[lo : lo + batch_size], early_exit=early_exit) for lo in range(0, len(t_in), batch_size)]
    return Prediction(*(torch.cat([getattr(p, f) for p in parts]) for f in ("classes", "output_times", "decision_time")))


def load(path: str | Path) -> Network:
    """A trained network from a model file or run directory written by ``stidi train`` or :func:`save`."""
    return load_model(path)[0]


def save(path: str | Path, net: Network, config: Config | None = None) -> None:
    """Save ``net`` as ``PATH.safetensors`` + ``PATH.json`` (readable by every ``stidi`` command)."""
    if config is None:
        config = make_config(net.spec, net.input_shape, T=net.T, tau=net.tau, forced_firing=net.forced_firing,
                             threshold=list(net.thresholds), binary=list(net.binary), binary_scale=net.binary_scale,
                             input_power=net.input_power, input_polarity=net.input_polarity, bias=net.bias,
                             population=net.population)
    save_model(Path(path).with_suffix(".safetensors"), net, config)
