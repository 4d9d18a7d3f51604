"""Reading images to run a model on: PNG/JPEG files, ``.npy`` arrays and IDX files.

Every reader returns intensities in ``[0, 1]`` shaped ``(N, C, H, W)`` to match a
network's input shape, with one name per image (``digit.png``, ``batch.npy[3]``) so
that results can be reported per input. Anything that does not fit ends in a
:class:`~stidi.errors.DataError` naming the file and saying what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import DataError, StidiError

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class MissingExtra(StidiError):
    """An optional dependency is not installed."""


def require(module: str, package: str, extra: str, purpose: str):
    """Import an optional dependency or raise a one-line error saying what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{purpose} needs the '{package}' package: pip install {package} "
                           f"(or pip install 'stidi[{extra}]')") from None


def _fit_shape(array: np.ndarray, input_shape: tuple[int, ...], path: Path) -> np.ndarray:
    """``array`` as ``(N, *input_shape)``: one image or a batch, channel axis optional for one channel."""
    shape, want = tuple(array.shape), tuple(input_shape)
    single = {want} | ({want[1:]} if len(want) == 3 and want[0] == 1 else set())
    flat = (int(np.prod(want)),)
    if shape in single or shape == flat:
        return array.reshape(1, *want)
    if len(shape) >= 2 and (shape[1:] in single or shape[1:] == flat):
        return array.reshape(shape[0], *want)
    if len(want) == 3 and len(shape) == 4 and shape[1:] == (want[1], want[2], want[0]):
        return array.transpose(0, 3, 1, 2)  # channels-last batch
    if len(want) == 3 and shape == (want[1], want[2], want[0]):
        return array.transpose(2, 0, 1)[None]
    raise DataError(f"{path}: array of shape {shape} does not fit the model's input shape {want}; "
                    f"give one image {want} or a batch (N, {', '.join(map(str, want))})")


def _intensities(array: np.ndarray, path: Path) -> np.ndarray:
    """``uint8`` divided by 255, floats checked to lie in ``[0, 1]``."""
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)) or array.dtype == bool:
        raise DataError(f"{path}: dtype {array.dtype} is not an image; use uint8 (0..255) or floats in [0, 1]")
    x = array.astype(np.float64)
    if x.size and (np.isnan(x).any() or x.min() < 0 or x.max() > 1):
        raise DataError(f"{path}: values lie in [{np.nanmin(x):.3g}, {np.nanmax(x):.3g}]; "
                        "images must be uint8 (0..255) or floats in [0, 1]: rescale them")
    return x


def read_image_file(path: Path, input_shape: tuple[int, ...], resize: bool = False) -> np.ndarray:
    """A PNG/JPEG/… file as ``(1, C, H, W)`` in ``[0, 1]``: greyscale for one channel, RGB for three."""
    Image = require("PIL.Image", "pillow", "plots", "reading PNG/JPEG images")
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise DataError(f"{path}: the model takes inputs of shape {input_shape}; image files fit only "
                        "1-channel (greyscale) or 3-channel (RGB) models; pass a .npy array instead")
    c, h, w = input_shape
    try:
        with Image.open(path) as img:
            img = img.convert("L" if c == 1 else "RGB")
            if img.size != (w, h):
                if not resize:
                    raise DataError(f"{path}: image is {img.size[0]}×{img.size[1]} pixels, the model takes {w}×{h}; "
                                    "resize it, or add --resize")
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as exc:  # PIL raises many types for undecodable files
        raise DataError(f"{path}: cannot read the image ({exc})") from None
    arr = arr[None] if c == 1 else arr.transpose(2, 0, 1)
    return arr[None].astype(np.float64) / 255.0


def read_npy(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """A ``.npy`` array (never unpickled) of one image or a batch, as ``(N, C, H, W)`` in ``[0, 1]``."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except ValueError as exc:
        raise DataError(f"{path}: not a plain .npy array ({exc}); object arrays are refused") from None
    except Exception as exc:
        raise DataError(f"{path}: cannot read the .npy file ({exc})") from None
    return _intensities(_fit_shape(array, input_shape, path), path)


def looks_like_idx(path: Path) -> bool:
    """True for IDX files (raw or gzipped), told apart by name or by the ``00 00 08`` magic."""
    if "idx" in path.name.lower() or path.name.endswith("-ubyte") or path.name.endswith("-ubyte.gz"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(3)
    except OSError:
        return False
    return head[:3] == b"\x00\x00\x08"


def read_idx_images(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """An IDX image file (as MNIST ships) as ``(N, C, H, W)`` in ``[0, 1]``."""
    from .data import read_idx

    array = read_idx(path)
    if array.ndim == 1:
        raise DataError(f"{path}: a 1-D IDX file holds labels, not images; pass the images file")
    return _intensities(_fit_shape(array, input_shape, path), path)


def read_inputs(paths: Sequence[str | Path], input_shape: Sequence[int], limit: int = 0,
                invert: bool = False, resize: bool = False) -> tuple[np.ndarray, list[str]]:
    """Read every input file; returns ``(images (N, C, H, W) in [0, 1], one name per image)``.

    ``limit`` keeps the first N images of each array/IDX file (0: all); ``invert``
    maps ``x → 1 − x`` (dark strokes on a light background become bright ones, as in
    MNIST); ``resize`` rescales image files to the model's size instead of refusing them.
    """
    want = tuple(int(s) for s in input_shape)
    batches, names = [], []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise DataError(f"{path}: no such file")
        if path.is_dir():
            raise DataError(f"{path}: is a directory; pass image, .npy or IDX files")
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            x = read_image_file(path, want, resize)
        elif suffix == ".npy":
            x = read_npy(path, want)
        elif looks_like_idx(path):
            x = read_idx_images(path, want)
        else:
            raise DataError(f"{path}: unknown input type '{suffix or path.name}'; "
                            f"use an image ({', '.join(IMAGE_SUFFIXES[:3])}), a .npy array or an IDX file")
        if limit:
            x = x[:limit]
        if len(x) == 1 and suffix in IMAGE_SUFFIXES:
            names.append(str(path))
        else:
            names.extend(f"{path}[{i}]" for i in range(len(x)))
        batches.append(x)
    if not batches:
        raise DataError("no input files given")
    images = np.concatenate(batches)
    return (1.0 - images if invert else images), names


def read_labels(path: str | Path, count: int) -> "torch.Tensor":
    """Labels from an IDX or ``.npy`` file, checked against the number of images."""
    import torch

    from .data import read_idx

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such labels file")
    if p.suffix.lower() == ".npy":
        try:
            y = np.load(p, allow_pickle=False)
        except Exception as exc:
            raise DataError(f"{p}: cannot read the .npy file ({exc})") from None
    else:
        y = read_idx(p)
    y = np.asarray(y).reshape(-1)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{p}: labels must be integers, got dtype {y.dtype}")
    if len(y) < count:
        raise DataError(f"{p}: holds {len(y)} labels for {count} images")
    return torch.as_tensor(y[:count].astype(np.int64))


def evaluation_data(net, config, data: str | None, labels: str | None, limit: int) -> tuple["torch.Tensor", "torch.Tensor | None", str]:
    """Input spike times, labels (or ``None``) and a description of the data to analyse.

    ``data`` is a built-in dataset name (its test split) or an image/``.npy``/IDX file;
    by default the test split of the dataset the model was trained on.
    """
    import torch

    from .data import DATASET_NAMES, load_dataset

    name = data or config.train.dataset
    if name in DATASET_NAMES:
        if tuple(net.input_shape) not in ((1, 28, 28), (784,)):
            raise DataError(f"the model takes inputs of shape {net.input_shape}, {name} images are 1×28×28; "
                            "pass --data FILE with images of the model's shape")
        images, y = load_dataset(name, "test")
        if limit:
            images, y = images[:limit], y[:limit]
        t_in = net.encode(images)
        return t_in, torch.as_tensor(y), f"{len(y)} {name} test images"
    if not Path(name).exists():
        raise DataError(f"--data {name}: neither a dataset ({', '.join(DATASET_NAMES)}) nor an existing file")
    images, _ = read_inputs([name], net.input_shape, limit=limit)
    t_in = net.encode(images)
    y = read_labels(labels, len(t_in)) if labels else None
    return t_in, y, f"{len(t_in)} images from {name}"
