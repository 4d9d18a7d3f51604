"""Saving and loading models and checkpoints: safetensors + JSON, never pickle.

A model ``NAME.safetensors`` is accompanied by ``NAME.json`` holding the run's
configuration and the sha256 of the tensor file. Loading checks that the tensor file
is safetensors (a pickle is refused), that its checksum matches, and that every tensor
has the shape the configuration implies; nothing in either file is ever executed.

Every file is written atomically: to a temporary file in the same directory, flushed
to disk, then renamed over the target, so an interruption leaves the previous version
intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import Config, from_dict
from .errors import ConfigError, ModelFileError
from .network import Network

FORMAT = "stidi-model-v1"


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: str | Path, value: Any) -> None:
    atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def sidecar(path: str | Path) -> Path:
    """The JSON file that belongs to a ``.safetensors`` file."""
    return Path(path).with_suffix(".json")


def build_network(config: Config) -> Network:
    """An (uninitialised) network described by ``config.model``."""
    m = config.model
    return Network(m.network, tuple(m.input_shape), m.T, m.tau, m.threshold, m.forced_firing)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], info: dict) -> None:
    """Write ``tensors`` as safetensors and ``info`` (plus the file's sha256) as the JSON sidecar.

    The tensor file is renamed into place first; the sidecar, written second, names its
    checksum, so a crash in between is detected as a mismatch instead of loading a mix.
    """
    blob = st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    atomic_write(path, blob)
    atomic_write_json(sidecar(path), {**info, "format": FORMAT, "sha256": hashlib.sha256(blob).hexdigest()})


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a safetensors file and its sidecar, verifying format and checksum."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file; pass a .safetensors file or a run directory containing model.safetensors") from None
    if blob[:2] == b"\x80\x02" or blob[:1] == b"\x80" or path.suffix in (".pt", ".pth", ".pkl", ".ckpt"):
        raise ModelFileError(f"{path}: looks like a pickle file; stidi loads only safetensors + JSON (pickles can run code)")
    try:
        info = json.loads(sidecar(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: its config {sidecar(path)} is missing; a model is a .safetensors file plus its .json") from None
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{sidecar(path)}: not valid JSON ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ModelFileError(f"{sidecar(path)}: not a stidi model description (format {info.get('format') if isinstance(info, dict) else None!r})")
    if hashlib.sha256(blob).hexdigest() != info.get("sha256"):
        raise ModelFileError(f"{path}: checksum does not match {sidecar(path)}; the file is corrupt or was replaced")
    try:
        tensors = st_load(blob)
    except Exception as exc:  # safetensors raises several exception types on bad headers
        raise ModelFileError(f"{path}: not a valid safetensors file ({exc})") from None
    return tensors, info


def network_tensors(net: Network) -> dict[str, torch.Tensor]:
    return {f"weight.{k}": w.data for k, w in enumerate(net.weights)}


def save_model(path: str | Path, net: Network, config: Config, extra: dict | None = None) -> None:
    """Save the network's weights and the configuration that rebuilds it."""
    save_tensors(path, network_tensors(net), {"config": config.to_dict(), **(extra or {})})


def restore_weights(net: Network, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Copy saved weights into ``net``, refusing missing, extra or misshapen tensors."""
    expected = {f"weight.{k}": tuple(w.shape) for k, w in enumerate(net.weights)}
    got = {k: tuple(v.shape) for k, v in tensors.items() if k.startswith("weight.")}
    if got != expected:
        raise ModelFileError(f"{path}: its tensors {got} do not match the network in its config, which needs {expected}")
    for k, w in enumerate(net.weights):
        if not torch.isfinite(tensors[f"weight.{k}"]).all():
            raise ModelFileError(f"{path}: weight.{k} holds NaN or infinite values; the model is unusable")
        w.data.copy_(tensors[f"weight.{k}"].to(w.dtype))


def load_model(path: str | Path) -> tuple[Network, Config, dict]:
    """Load a saved model: the network with its weights, its configuration and the sidecar info."""
    tensors, info = load_tensors(path)
    try:
        config = from_dict(info.get("config", {}), str(sidecar(path)))
    except ConfigError as exc:
        raise ModelFileError(str(exc)) from None
    net = build_network(config)
    restore_weights(net, tensors, Path(path))
    return net, config, info
