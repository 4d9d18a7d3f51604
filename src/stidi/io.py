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
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import Config, from_dict
from .errors import ConfigError, ModelFileError, StidiError
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


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    """Write ``records`` atomically as a JSON-lines file, one object per line (what :func:`read_jsonl` reads)."""
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file (``metrics.jsonl``, ``timing.jsonl``: one object per line, blank
    lines skipped). A missing file raises ``FileNotFoundError``; a line that is not JSON a
    :class:`StidiError` naming the file."""
    path = Path(path)
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise StidiError(f"{path}: not one JSON object per line ({exc})") from None


def sidecar(path: str | Path) -> Path:
    """The JSON file that belongs to a ``.safetensors`` file."""
    return Path(path).with_suffix(".json")


def build_network(config: Config) -> Network:
    """An (uninitialised) network described by ``config.model``."""
    m = config.model
    return Network(m.network, tuple(m.input_shape), m.T, m.tau, m.threshold, m.forced_firing, m.binary, m.binary_scale,
                   m.input_power, m.input_polarity, m.bias, m.population)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], info: dict) -> None:
    """Write ``tensors`` as safetensors and ``info`` (plus the file's sha256) as the JSON sidecar.

    The tensor file is renamed into place first; the sidecar, written second, names its
    checksum, so a crash in between is detected as a mismatch instead of loading a mix.
    """
    blob = st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    atomic_write(path, blob)
    atomic_write_json(sidecar(path), {**info, "format": FORMAT, "sha256": hashlib.sha256(blob).hexdigest()})


def _looks_like_safetensors(blob: bytes) -> bool:
    """A safetensors file starts with its JSON header's length (u64, little-endian) and the header's ``{``.

    (Checked before the pickle test: a header length whose low byte is ``0x80`` makes a
    safetensors file start with the same byte as a pickle.)
    """
    if len(blob) < 10:
        return False
    n = int.from_bytes(blob[:8], "little")
    return 8 + n <= len(blob) and blob[8:9] == b"{"


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a safetensors file and its sidecar, verifying format and checksum."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file; pass a .safetensors file or a run directory containing model.safetensors") from None
    if not _looks_like_safetensors(blob) and (blob[:1] == b"\x80" or path.suffix in (".pt", ".pth", ".pkl", ".ckpt")):
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
    """Everything that defines a network's state: real weights, the fixed binary scales and the learnt ones."""
    return {**{f"weight.{k}": w.data for k, w in enumerate(net.weights)}, "fixed_scales": net.fixed_scales,
            **{f"channel_scale.{k}": net.channel_scales[k].data for k in net.scale_layers}}


def pack_signs(w: torch.Tensor) -> torch.Tensor:
    """``sign(w)`` packed at 1 bit per synapse (bit set for ``w ≥ 0``), as ``uint8``."""
    return torch.from_numpy(np.packbits((w.detach().cpu() >= 0).numpy().ravel()))


def unpack_signs(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_signs`: a ``±1`` float tensor of ``shape``."""
    count = math.prod(shape)
    bits = np.unpackbits(packed.numpy())[:count]
    return torch.from_numpy(bits.astype(np.float32) * 2 - 1).reshape(shape)


def model_tensors(net: Network) -> dict[str, torch.Tensor]:
    """Tensors of a saved model: real layers as weights, binary layers as packed signs plus ``α``.

    A binary layer needs only ``sign(w)`` and ``α`` for inference: 1 bit per synapse
    instead of 32, plus one ``α`` per layer (or per output neuron with ``binary_scale = "channel"``).
    """
    out: dict[str, torch.Tensor] = {}
    for k, w in enumerate(net.weights):
        if net.binary[k]:
            out[f"signs.{k}"] = pack_signs(w)
            out[f"scale.{k}"] = net.scale(k).reshape(-1).to(torch.float64)
        else:
            out[f"weight.{k}"] = w.data
    return out


def save_model(path: str | Path, net: Network, config: Config, extra: dict | None = None) -> None:
    """Save the network for inference (binary layers packed) and the configuration that rebuilds it."""
    save_tensors(path, model_tensors(net), {"config": config.to_dict(), **(extra or {})})


def _expected_tensors(net: Network, packed: bool, has_fixed_scales: bool) -> dict[str, tuple[int, ...]]:
    expected: dict[str, tuple[int, ...]] = {}
    for k, w in enumerate(net.weights):
        if packed and net.binary[k]:
            expected[f"signs.{k}"] = ((w.numel() + 7) // 8,)
            expected[f"scale.{k}"] = (w.shape[0],) if net.learns_scale(k) else (1,)
        else:
            expected[f"weight.{k}"] = tuple(w.shape)
            if net.learns_scale(k):
                expected[f"channel_scale.{k}"] = (w.shape[0],)
    if has_fixed_scales or (not packed and any(net.binary)):
        expected["fixed_scales"] = (len(net.weights),)
    return expected


def restore_weights(net: Network, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Load saved weights into ``net`` (full state, or a model with packed binary layers).

    Missing, extra or misshapen tensors and non-finite values are refused. A packed
    binary layer becomes real weights ``α · sign`` (so ``mean |w| = α`` exactly), and
    its fixed scale is ``α``: either scale option then gives the saved forward weights. With
    ``binary_scale = "channel"`` ``α`` is one value per output neuron, which also becomes its learnt scale.
    """
    packed = any(key.startswith("signs.") for key in tensors)
    expected = _expected_tensors(net, packed, "fixed_scales" in tensors)
    got = {k: tuple(v.shape) for k, v in tensors.items()
           if k.split(".")[0] in ("weight", "signs", "scale", "fixed_scales", "channel_scale")}
    if got != expected:
        raise ModelFileError(f"{path}: its tensors {got} do not match the network in its config, which needs {expected}")
    for key, value in tensors.items():
        if key in expected and value.is_floating_point() and not torch.isfinite(value).all():
            raise ModelFileError(f"{path}: {key} holds NaN or infinite values; the model is unusable")
    for k, w in enumerate(net.weights):
        if packed and net.binary[k]:
            alpha = tensors[f"scale.{k}"].double()
            if not bool((alpha > 0).all()):
                raise ModelFileError(f"{path}: scale.{k} = {float(alpha.min())} must be > 0")
            column = alpha.reshape(-1, *[1] * (w.dim() - 1))
            w.data.copy_((unpack_signs(tensors[f"signs.{k}"], tuple(w.shape)).double() * column).to(w.dtype))
            net.fixed_scales[k] = alpha.mean()
            if net.learns_scale(k):
                net.channel_scales[k].data.copy_(alpha.to(w.dtype))
        else:
            w.data.copy_(tensors[f"weight.{k}"].to(w.dtype))
            if net.learns_scale(k):
                net.channel_scales[k].data.copy_(tensors[f"channel_scale.{k}"].to(w.dtype))
    if "fixed_scales" in tensors and not packed:
        net.fixed_scales.copy_(tensors["fixed_scales"].double())


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
