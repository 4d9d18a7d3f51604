"""PNG plots of a trained network: learning curves, confusion matrix, firing times, spikes.

matplotlib is imported only when a plot is made (``pip install 'stidi[plots]'``), with
the non-interactive Agg backend, so plotting works on machines without a display.

* ``learning_curves.png`` — train/validation/test accuracy, firing fraction per layer and mean
  decision time per epoch, from the run's ``metrics.jsonl``;
* ``confusion.png`` — true class against predicted class (``none``: undecided);
* ``firing_times.png`` — per layer, how many spikes come at each time step, with the
  mean decision time;
* ``decision_times.png`` — when the first output spike comes, and the accuracy of
  answering at step ``t`` (images decided correctly by ``t``): early-exit inference;
* ``raster.png`` — every spike of one image: neuron against time, one band per layer;
* ``spike_maps.png`` — per layer, each neuron's spike time for the same image as a map.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import StidiError
from .io import read_jsonl

PLOTS = ("curves", "confusion", "histograms", "decisions", "raster", "maps")
FILES = {"curves": "learning_curves.png", "confusion": "confusion.png", "histograms": "firing_times.png",
         "decisions": "decision_times.png", "raster": "raster.png", "maps": "spike_maps.png"}
MAX_MAP_CHANNELS = 8
DPI = 110


def _plt():
    from .inputs import require

    matplotlib = require("matplotlib", "matplotlib", "plots", "plotting")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a run's ``metrics.jsonl`` (one JSON object per epoch)."""
    try:
        return read_jsonl(path)
    except FileNotFoundError:
        raise StidiError(f"{path}: no metrics file; learning curves need the run directory written by 'stidi train'") from None


def plot_learning_curves(records: list[dict], path: Path, layer_names: Sequence[str] = ()) -> Path:
    """Accuracy, firing fraction per layer and mean decision time against the epoch."""
    plt = _plt()
    epochs = [r["epoch"] for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    ax.plot(epochs, [r["train_accuracy"] for r in records], "o-", label="train (during the epoch)")
    if any("val_accuracy" in r for r in records):
        ax.plot(epochs, [r.get("val_accuracy", math.nan) for r in records], "^-", label="validation (after the epoch)")
    ax.plot(epochs, [r["test_accuracy"] for r in records], "s-", label="test (after the epoch)")
    ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    ax = axes[1]
    fractions = np.array([r.get("test_firing_fraction", []) for r in records], dtype=float)
    if fractions.ndim == 2 and fractions.size:
        for j in range(fractions.shape[1]):
            name = layer_names[j] if j < len(layer_names) else f"layer {j + 1}"
            ax.plot(epochs, fractions[:, j], "o-", label=name)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set(xlabel="epoch", ylabel="fraction of neurons", title="fraction of neurons firing (test)")
    ax.grid(alpha=0.3)
    ax = axes[2]
    ax.plot(epochs, [r.get("test_mean_decision_time", math.nan) for r in records], "o-", color="C3")
    ax.set(xlabel="epoch", ylabel="time step", title="mean decision time (test)")
    ax.grid(alpha=0.3)
    for ax in axes:
        ax.set_xticks(epochs)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(labels: np.ndarray, predicted: np.ndarray, classes: int, path: Path) -> Path:
    """Confusion matrix (rows: true class, columns: predicted; ``none`` for undecided)."""
    plt = _plt()
    undecided = bool((predicted < 0).any())
    cols = classes + int(undecided)
    m = np.zeros((classes, cols), dtype=int)
    for y, p in zip(labels, predicted):
        m[int(y), int(p) if p >= 0 else classes] += 1
    rates = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.55 * cols + 2.2, 0.55 * classes + 1.6))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(classes):
        for j in range(cols):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(cols), [str(c) for c in range(classes)] + (["none"] if undecided else []))
    ax.set_yticks(range(classes), [str(c) for c in range(classes)])
    accuracy = float((predicted == labels).mean())
    ax.set(xlabel="predicted class", ylabel="true class", title=f"confusion ({len(labels)} images, accuracy {accuracy:.1%})")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    return _save(fig, path)


def plot_firing_times(report: dict, path: Path) -> Path:
    """Per-layer histograms of spike times (from :func:`stidi.analysis.inspect_network`)."""
    plt = _plt()
    T = report["T"]
    layers = report["layers"]
    width = max(1, T // 64)
    fig, axes = plt.subplots(len(layers), 1, figsize=(8, 1.45 * len(layers) + 0.6), sharex=True)
    t_dec = report["decision"]["mean_decision_time"]
    for ax, entry, color in zip(axes, layers, (f"C{i}" for i in range(10))):
        counts = np.asarray(report["histograms"][entry["layer"]], dtype=float) / report["images"]
        binned = counts[: len(counts) // width * width].reshape(-1, width).sum(axis=1)
        ax.bar(np.arange(len(binned)) * width, binned, width=width, align="edge", color=color)
        ax.axvline(t_dec, color="k", ls="--", lw=1)
        mean = entry["mean_firing_time"]
        ax.set_ylabel("spikes /\nimage", fontsize=8)
        ax.text(0.99, 0.9, f"{entry['layer']} ({'×'.join(map(str, entry['shape']))}): {entry['fraction_firing']:.1%} fire"
                + (f", mean t = {mean:.0f}" if mean is not None else ""), transform=ax.transAxes, ha="right", va="top",
                fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1].set(xlabel=f"spike time (steps, T = {T}); dashed: mean decision time {t_dec:.0f}", xlim=(0, T))
    fig.suptitle(f"firing times per layer ({report['images']} images)", y=1.0)
    fig.tight_layout()
    return _save(fig, path)


def plot_decision_times(decision: np.ndarray, correct: np.ndarray, T: int, path: Path) -> Path:
    """Histogram of decision times and the share of images decided (correctly) by each step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = max(1, T // 64)
    ax.hist(decision, bins=np.arange(0, T + width + 1, width), color="C0", alpha=0.35, density=True)
    ax.set_ylabel("decision time density", color="C0")
    ax.set_xlabel(f"time step (T = {T}; an image with no output spike is decided at T)")
    ax2 = ax.twinx()
    steps = np.arange(T + 1)
    decided = np.searchsorted(np.sort(decision), steps, side="right") / len(decision)
    right = np.searchsorted(np.sort(decision[correct]), steps, side="right") / len(decision)
    ax2.plot(steps, decided, color="C1", label="images decided by t")
    ax2.plot(steps, right, color="C2", label="decided correctly by t (accuracy if stopped at t)")
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("fraction of images")
    mean = float(decision.mean())
    ax2.axvline(mean, color="k", ls="--", lw=1, label=f"mean decision time {mean:.0f}")
    ax2.legend(loc="upper left", fontsize=8)
    ax.set_xlim(0, T)
    ax.set_title(f"decision times ({len(decision)} images, final accuracy {right[-1]:.1%})")
    fig.tight_layout()
    return _save(fig, path)


def plot_raster(times: list[torch.Tensor], names: Sequence[str], T: int, decision: float, title: str, path: Path) -> Path:
    """Spike raster of one image: one panel per layer, neuron index against spike time."""
    plt = _plt()
    sizes = [t.numel() for t in times]
    ratios = [max(1.2, math.log10(max(s, 1))) for s in sizes]
    fig, axes = plt.subplots(len(times), 1, figsize=(8, 1.1 * sum(ratios) + 0.8), sharex=True,
                             gridspec_kw={"height_ratios": ratios})
    for l, (ax, t, name) in enumerate(zip(axes, times, names)):
        flat = t.flatten().double().numpy()
        idx = np.nonzero(flat < T)[0]
        last = l == len(times) - 1
        marker = dict(marker="|", s=160 if last else max(1.0, 300 / math.sqrt(max(len(flat), 1))), linewidths=2.5 if last else 0.6)
        ax.scatter(flat[idx], idx, color=f"C{l}", **marker)
        ax.axvline(decision, color="k", ls="--", lw=1)
        ax.set_ylim(-0.5, len(flat) - 0.5)
        ax.set_ylabel(f"{name}\n({len(idx)} of {len(flat)})", fontsize=8)
        if last:
            ax.set_ylabel(f"{name} (class)\n({len(idx)} of {len(flat)})", fontsize=8)
            ax.set_yticks(range(len(flat)))
            ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3, axis="x")
    axes[-1].set(xlabel=f"time step (T = {T}); dashed: decision at t = {decision:g}", xlim=(-1, T + 1))
    fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return _save(fig, path)


def _as_maps(t: torch.Tensor) -> tuple[list[np.ndarray], int]:
    """A layer's spike times as 2-D maps: channels of a ``(C, H, W)`` layer, a near-square map of a vector."""
    a = t.double().numpy()
    if a.ndim == 3:
        return [a[c] for c in range(min(a.shape[0], MAX_MAP_CHANNELS))], a.shape[0]
    n = a.shape[0]
    if n <= 32:
        return [a.reshape(1, n)], 1
    w = math.ceil(math.sqrt(n))
    padded = np.full(w * math.ceil(n / w), np.inf)
    padded[:n] = a
    return [padded.reshape(-1, w)], 1


def plot_spike_maps(times: list[torch.Tensor], names: Sequence[str], T: int, title: str, path: Path) -> Path:
    """Per layer, each neuron's spike time for one image (early: bright; never: grey)."""
    plt = _plt()
    import matplotlib.colors as mcolors

    maps = [_as_maps(t) for t in times]
    cols = max(len(m) for m, _ in maps)
    fig, axes = plt.subplots(len(maps), cols, figsize=(1.45 * cols + 1.2, 1.55 * len(maps) + 0.4), squeeze=False)
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="#dddddd")
    norm = mcolors.Normalize(0, T)
    image = None
    for row, ((layer_maps, channels), name) in enumerate(zip(maps, names)):
        if channels == 1 and layer_maps[0].shape[0] == 1:  # a short vector (the outputs): one wide row
            n = layer_maps[0].shape[1]
            grid = axes[row, 0].get_gridspec()
            for ax in axes[row]:
                ax.remove()
            ax = fig.add_subplot(grid[row, : min(cols, max(2, math.ceil(n / 2)))])
            m = np.ma.masked_where(~(layer_maps[0] < T), layer_maps[0])
            image = ax.imshow(m, cmap=cmap, norm=norm, interpolation="nearest", aspect="auto")
            for j, v in enumerate(layer_maps[0][0]):
                ax.text(j, 0, f"{v:g}" if v < T else "–", ha="center", va="center", fontsize=8,
                        color="white" if v < T / 2 else "black")
            ax.set_xticks(range(n))
            ax.set_yticks([])
            ax.set_ylabel(name, fontsize=9)
            ax.set_xlabel("output neuron (class)", fontsize=8)
            continue
        for col in range(cols):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(layer_maps):
                ax.axis("off")
                continue
            m = np.ma.masked_where(~(layer_maps[col] < T), layer_maps[col])
            image = ax.imshow(m, cmap=cmap, norm=norm, interpolation="nearest", aspect="auto" if m.shape[0] == 1 else "equal")
            if col == 0:
                ax.set_ylabel(name, fontsize=9)
            if channels > 1:
                ax.set_title(f"ch {col}", fontsize=7)
        if channels > len(layer_maps):
            axes[row, 0].set_ylabel(f"{name}\n(first {len(layer_maps)} of {channels} ch)", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=list(fig.axes), fraction=0.025, pad=0.02, label=f"spike time (steps; grey: none before T = {T})")
    fig.suptitle(title)
    return _save(fig, path)


def make_plots(model: str | Path, out_dir: str | Path | None = None, which: Sequence[str] = PLOTS, data: str | None = None,
               labels: str | None = None, limit: int = 1000, image: int = 0, log: Any = None) -> list[Path]:
    """Write the ``which`` plots of a saved model; returns the PNG paths written.

    ``model`` is a run directory or model file written by ``stidi train``; the plots go
    to ``out_dir`` (default ``RUN/plots``). Learning curves need the run's
    ``metrics.jsonl`` and the confusion matrix needs labels; when all plots are asked
    for, one that cannot be made is skipped with a note.
    """
    from .analysis import inspect_network
    from .inputs import evaluation_data
    from .io import load_model

    _plt()  # fail early, with the install hint, if matplotlib is missing
    log = log or (lambda m: print(f"stidi: {m}", file=sys.stderr))
    every = set(which) == set(PLOTS)
    model = Path(model)
    run = model if model.is_dir() else model.parent
    out = Path(out_dir) if out_dir else run / "plots"
    net, config, _ = load_model(model)
    names = ["input"] + [layer.token for layer in net.layers]
    written: list[Path] = []
    if "curves" in which:
        metrics = run / "metrics.jsonl"
        if metrics.exists() or not every:
            written.append(plot_learning_curves(read_metrics(metrics), out / FILES["curves"], names[1:]))
        else:
            log(f"skipped learning curves: {metrics} does not exist")
    needs_data = [w for w in which if w != "curves"]
    if not needs_data:
        return written
    t_in, y, what = evaluation_data(net, config, data, labels, limit)
    if "confusion" in which:
        if y is None:
            if not every:
                raise StidiError("the confusion matrix needs labels: add --labels FILE (or use a built-in --data)")
            log("skipped confusion matrix: no labels (add --labels FILE)")
        else:
            pred = torch.cat([net.predict(t_in[lo : lo + 256]).classes for lo in range(0, len(t_in), 256)])
            written.append(plot_confusion(y.numpy(), pred.numpy(), net.num_classes, out / FILES["confusion"]))
    if "histograms" in which:
        report = inspect_network(net, t_in, y)
        written.append(plot_firing_times(report, out / FILES["histograms"]))
    if "decisions" in which:
        if y is None:
            if not every:
                raise StidiError("the decision-time plot needs labels: add --labels FILE (or use a built-in --data)")
            log("skipped decision times: no labels (add --labels FILE)")
        else:
            preds = [net.predict(t_in[lo : lo + 256]) for lo in range(0, len(t_in), 256)]
            decision = torch.cat([p.decision_time for p in preds]).clamp(max=net.T).numpy()
            correct = (torch.cat([p.classes for p in preds]) == y).numpy()
            written.append(plot_decision_times(decision, correct, net.T, out / FILES["decisions"]))
    if "raster" in which or "maps" in which:
        if not 0 <= image < len(t_in):
            raise StidiError(f"--image {image}: the data has {len(t_in)} images (0 … {len(t_in) - 1})")
        trace = net.trace(t_in[image : image + 1])
        pred = net.readout(trace)
        cls, t_d = int(pred.classes[0]), float(pred.decision_time[0].clamp(max=net.T))
        truth = f", true class {int(y[image])}" if y is not None else ""
        title = f"image {image} of {what}: predicted {cls if cls >= 0 else 'none'}{truth}, decision at t = {t_d:g}"
        times = [t[0] for t in trace.times]
        if "raster" in which:
            written.append(plot_raster(times, names, net.T, t_d, title, out / FILES["raster"]))
        if "maps" in which:
            written.append(plot_spike_maps(times, names, net.T, title, out / FILES["maps"]))
    return written
