"""Training/inference throughput and peak memory: STiDi-BP vs a plain CNN vs snnTorch BPTT.

Usage: python benchmarks/throughput.py [--quick] [--threads N] [--model PATH]

Measures, in one run on one machine with one thread count, on real MNIST training
images (the same images, in the same order, for every system), batch 64, with the
default network's layer shapes 28×28 → 32C5 → pool2 → 64C5 → pool2 → (1024) → 10:

* ``stidi``: STiDi-BP training at T = 256 (TTFS encoding included), with the default
  spike-time engine (the numba event engine on CPU), from the calibrated initialisation;
  inference (early exit) of the trained reproduction model ``--model`` (default
  ``results/runs/mnist-rcsnn/best.safetensors``, the same layer shapes), and of the freshly
  initialised network as an extra figure. An event engine's cost follows the network's
  spiking activity, and a trained network is what gets deployed; when the model file is
  missing (or has other layer shapes) the inference row falls back to the fresh network
  and says so;
* ``cnn``: the same shapes as a plain PyTorch CNN (ReLU, max pooling), cross-entropy,
  Adam; inference under ``torch.inference_mode``;
* ``snntorch-bptt-T25``: the same shapes as an snnTorch SNN of ``snn.Leaky`` neurons
  (beta 0.9, default ATan surrogate gradient), T = 25 steps of rate-coded (Bernoulli)
  input, BPTT with ``snntorch.functional.ce_rate_loss``, Adam;
* stidi training throughput at T = 64, 256 and 1024;
* a per-phase profile of one stidi training batch (ms per image);
* peak resident memory of each system's timed training loop.

Every measurement runs in its own subprocess (``--worker NAME``), so peak memory and
warm-up (numba compilation, oneDNN first calls) stay per system. Each one warms up,
then runs batches until it has done at least ``--min-batches`` batches and
``--min-seconds`` seconds; images/s = images processed / wall time after warm-up.

Writes ``results/throughput.json`` and regenerates ``docs/performance.md`` from it
(``--quick``: a ~3 s-per-measurement smoke test written to
``results/throughput-quick.json``, no doc unless ``--doc`` is given).
``--render-only`` regenerates the doc from an existing JSON without measuring.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import hashlib
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "THROUGHPUT-RESULT "
BATCH = 64
SNN_STEPS = 25
SNN_BETA = 0.9
STIDI_T = 256
T_SWEEP = (64, 256, 1024)
CALIBRATION_IMAGES = 256  # as stidi.train
QUICK_CALIBRATION_IMAGES = 64
PROFILE_BATCHES = 10
#: The trained network whose inference is timed (the mnist-rcsnn reproduction run).
DEFAULT_MODEL = "results/runs/mnist-rcsnn/best.safetensors"
#: Test images the trained model's accuracy is measured on (untimed; --quick: fewer).
ACCURACY_IMAGES = 10000
QUICK_ACCURACY_IMAGES = 1000

#: ratio name → (target, comparison, description); ``>=``: at least, ``<=``: at most.
TARGETS = {
    "train_vs_snntorch": (8.0, ">=", "stidi training images/s ÷ snnTorch BPTT (T=25) training images/s"),
    "train_vs_cnn": (0.33, ">=", "stidi training images/s ÷ CNN training images/s"),
    "infer_vs_cnn": (0.5, ">=", "stidi inference images/s ÷ CNN inference images/s"),
    "train_T1024_vs_T64": (0.5, ">=", "stidi training images/s at T=1024 ÷ at T=64"),
    "rss_vs_cnn": (2.0, "<=", "stidi peak training RSS ÷ CNN peak training RSS"),
}

#: One batch of work: ``step(uint8 images (B, 28, 28), long labels (B,))``.
Step = Callable[[object, object], None]


# --------------------------------------------------------------------------- data


def load_mnist(split: str = "train"):
    """MNIST images (uint8 ``(N, 28, 28)``) and labels (int64) of ``split``."""
    from stidi.data import load_dataset

    return load_dataset("mnist", split, log=lambda message: None)


def batches(images, labels) -> Iterator[tuple]:
    """Endless consecutive batches ``(uint8 numpy images, torch long labels)`` in a fixed order."""
    import torch

    n = len(images) - len(images) % BATCH
    while True:
        for lo in range(0, n, BATCH):
            yield images[lo : lo + BATCH], torch.from_numpy(labels[lo : lo + BATCH])


# --------------------------------------------------------------------------- memory


def release_free_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the OS (glibc ``malloc_trim``).

    Run before the peak-RSS counter is reset, so that memory freed by set-up (stidi's
    weight calibration, warm-up) does not count as the training loop's.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """VmHWM of this process in MB (peak since start or since the last reset)."""
    try:
        match = re.search(r"VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def current_rss_mb() -> float | None:
    try:
        match = re.search(r"VmRSS:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def process_max_rss_mb() -> float:
    """``ru_maxrss`` of this process (whole lifetime, warm-up and compilation included) in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- workloads


def stidi_setup(images, T: int, calibration: int = CALIBRATION_IMAGES):
    """Initialised default network at ``T`` with its optimiser and rule options, as in ``stidi.train``.

    Initialisation (untimed) calibrates the weights on the first ``calibration`` images.
    """
    import torch

    from stidi.config import load_config
    from stidi.encoding import ttfs_encode
    from stidi.io import build_network
    from stidi.stidi_bp import RuleOptions
    from stidi.train import make_optimizer

    config = load_config(None, {"model": {"T": T}, "train": {"batch_size": BATCH}})
    net = build_network(config)
    g = torch.Generator().manual_seed(0)
    t_cal = ttfs_encode(images[:calibration], T).reshape(-1, *net.input_shape)
    fired = net.initialise(t_cal, config.model.init_firing_fraction, g)
    opt = make_optimizer(net, config, [float(w.std()) for w in net.weights])
    return net, opt, RuleOptions(**vars(config.rule)), [round(f, 3) for f in fired]


def stidi_step(net, opt, rule, train: bool) -> Step:
    from stidi.encoding import ttfs_encode
    from stidi.stidi_bp import update_directions

    def step(xb, yb) -> None:
        t_in = ttfs_encode(xb, net.T).reshape(-1, *net.input_shape)
        if not train:
            net.predict(t_in, early_exit=True)
            return
        trace = net.trace(t_in)
        net.readout(trace)
        for w, gdir in zip(net.weights, update_directions(net, trace, yb, rule)):
            w.grad = gdir
        opt.step()

    return step


def make_stidi(images, train: bool, T: int, calibration: int) -> tuple[Step, dict]:
    from stidi import kernels

    start = time.perf_counter()
    net, opt, rule, fired = stidi_setup(images, T, calibration)
    info = {"T": T, "engine": kernels.default_engine(), "model": None, "init_firing_fraction": fired,
            "calibration_images": calibration, "init_seconds": round(time.perf_counter() - start, 1)}
    return stidi_step(net, opt, rule, train), info


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def trained_model(model: str) -> tuple[object | None, dict]:
    """The trained network at ``model`` (relative to the repository) and what identifies it;
    ``(None, {"model": None, "fallback": reason})`` when it is missing or has other layer
    shapes than the default network (the CNN's)."""
    from stidi.api import load
    from stidi.config import load_config

    path = (ROOT / model) if not Path(model).is_absolute() else Path(model)
    shown = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    if not path.is_file():
        return None, {"model": None, "fallback": f"{shown} not found"}
    net = load(path)
    default = load_config(None, {}).model
    if net.spec != default.network or tuple(net.input_shape) != tuple(default.input_shape):
        return None, {"model": None, "fallback": f"{shown} has layer shapes {net.spec} on {tuple(net.input_shape)}, "
                                                 f"not the default {default.network} on {tuple(default.input_shape)}"}
    return net, {"model": shown, "model_sha256": file_sha256(path), "T": net.T,
                 "tau": net.tau if math.isfinite(net.tau) else "inf", "spec": net.spec}


def test_accuracy(net, images, labels, count: int) -> dict:
    """Accuracy of ``net`` on the first ``count`` of the MNIST test ``images`` (untimed; undecided counts as wrong)."""
    import numpy as np

    from stidi.api import predict

    images, labels = images[:count], labels[:count]
    classes = predict(net, images, batch_size=BATCH, early_exit=True).classes.numpy()
    return {"test_accuracy": round(float(np.mean(classes == labels)), 4), "test_accuracy_images": int(len(labels))}


def stidi_trained_infer(net, info: dict) -> tuple[Step, dict]:
    """Early-exit inference of a loaded trained network (the timed loop of ``stidi-infer``)."""
    from stidi import kernels

    return stidi_step(net, None, None, False), {**info, "engine": kernels.default_engine()}


def cnn_model():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1024, 10),
    )


def to_float(xb):
    """uint8 ``(B, 28, 28)`` → float ``(B, 1, 28, 28)`` in ``[0, 1]`` (timed, like stidi's encoding)."""
    import torch

    return torch.from_numpy(xb).unsqueeze(1).float().div_(255.0)


def make_cnn(images, train: bool, T: int, calibration: int) -> tuple[Step, dict]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = cnn_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def train_step(xb, yb) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(to_float(xb)), yb).backward()
        opt.step()

    def infer_step(xb, yb) -> None:
        with torch.inference_mode():
            model(to_float(xb)).argmax(dim=1)

    model.train(train)
    return (train_step if train else infer_step), {}


def snntorch_model():
    """Conv → max-pool → Leaky, twice, then Linear → Leaky (the snnTorch convolutional tutorial's layout)."""
    import snntorch as snn
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ConvSNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.lif1 = nn.Conv2d(1, 32, 5), snn.Leaky(beta=SNN_BETA)
            self.conv2, self.lif2 = nn.Conv2d(32, 64, 5), snn.Leaky(beta=SNN_BETA)
            self.fc, self.lif3 = nn.Linear(1024, 10), snn.Leaky(beta=SNN_BETA)

        def forward(self, spikes: torch.Tensor) -> torch.Tensor:
            """``spikes (steps, B, 1, 28, 28)`` → output spikes ``(steps, B, 10)``."""
            mem1, mem2, mem3 = self.lif1.reset_mem(), self.lif2.reset_mem(), self.lif3.reset_mem()
            out = []
            for x in spikes:
                spk1, mem1 = self.lif1(F.max_pool2d(self.conv1(x), 2), mem1)
                spk2, mem2 = self.lif2(F.max_pool2d(self.conv2(spk1), 2), mem2)
                spk3, mem3 = self.lif3(self.fc(spk2.flatten(1)), mem3)
                out.append(spk3)
            return torch.stack(out)

    return ConvSNN()


def make_snntorch(images, train: bool, T: int, calibration: int) -> tuple[Step, dict]:
    import snntorch
    import torch
    from snntorch import functional as SF
    from snntorch import spikegen

    torch.manual_seed(0)
    model = snntorch_model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = SF.ce_rate_loss()

    def train_step(xb, yb) -> None:
        spikes = spikegen.rate(to_float(xb), num_steps=SNN_STEPS)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(spikes), yb).backward()
        opt.step()

    def infer_step(xb, yb) -> None:
        with torch.inference_mode():
            model(spikegen.rate(to_float(xb), num_steps=SNN_STEPS)).sum(dim=0).argmax(dim=1)

    info = {"snntorch_version": snntorch.__version__, "steps": SNN_STEPS, "beta": SNN_BETA,
            "input": "rate-coded input (a Bernoulli spike per pixel and step, p = pixel intensity)", "loss": "ce_rate_loss"}
    return (train_step if train else infer_step), info


SYSTEMS = {"stidi": make_stidi, "cnn": make_cnn, "snntorch": make_snntorch}


# --------------------------------------------------------------------------- timing


def run_timed(step: Step, data: Iterator[tuple], warmup: int, min_seconds: float, min_batches: int) -> dict:
    """Warm up, reset the peak-RSS counter, then time batches until both minimums are reached."""
    for _ in range(warmup):
        step(*next(data))
    release_free_memory()
    rss_reset = reset_peak_rss()
    rss_before = current_rss_mb()
    count, start, last, per_batch = 0, time.perf_counter(), 0.0, []
    while True:
        step(*next(data))
        count += 1
        seconds = time.perf_counter() - start
        per_batch.append(seconds - last)
        last = seconds
        if count >= min_batches and seconds >= min_seconds:
            break
    return {
        "batches": count,
        "images": count * BATCH,
        "seconds": round(seconds, 3),
        "images_per_s": round(count * BATCH / seconds, 2),
        "median_batch_images_per_s": round(BATCH / statistics.median(per_batch), 2),
        "rss_before_loop_mb": round(rss_before, 1) if rss_before else None,
        "peak_rss_mb": round(peak_rss_mb(), 1) if rss_reset else None,
        "process_max_rss_mb": round(process_max_rss_mb(), 1),
    }


def timed_rule(net, seconds: dict[int, float]):
    """A stand-in for ``stidi.kernels.rule`` that adds each call's time to ``seconds[layer index]``."""
    from stidi import kernels

    rule = kernels.rule
    layer_of = {id(w): i for i, w in zip(net.weighted, net.weights)}

    def timed(t_in, t_out, delta, weight, *args, **kwargs):
        start = time.perf_counter()
        result = rule(t_in, t_out, delta, weight, *args, **kwargs)
        seconds[layer_of[id(weight)]] += time.perf_counter() - start
        return result

    return timed


def profile_stidi(images, labels, T: int, warmup: int, count: int, calibration: int) -> dict:
    """Milliseconds per image spent in each phase of a stidi training batch (mean over ``count`` batches).

    ``update_directions`` is split into the learning-rule kernel of each weighted layer
    (``stidi.kernels.rule``: update direction and displacement) and the rest (errors,
    pooling routes, normalisation).
    """
    from stidi import kernels
    from stidi.encoding import ttfs_encode
    from stidi.network import Trace
    from stidi.stidi_bp import update_directions

    net, opt, rule, _ = stidi_setup(images, T, calibration)
    data = batches(images, labels)
    tokens = [layer.token for layer in net.layers]
    rule_names = {i: f"rule layer {i + 1} ({tokens[i]})" for i in reversed(net.weighted)}
    names = (["encode"] + [f"forward layer {i + 1} ({token})" for i, token in enumerate(tokens)]
             + ["readout", *rule_names.values(), "update_directions (rest)", "optimizer step"])
    totals = dict.fromkeys(names, 0.0)
    rule_seconds = dict.fromkeys(net.weighted, 0.0)
    kernels.rule = timed_rule(net, rule_seconds)
    for b in range(warmup + count):
        xb, yb = next(data)
        marks = [time.perf_counter()]
        trace = Trace([ttfs_encode(xb, T).reshape(-1, *net.input_shape)])
        marks.append(time.perf_counter())
        for i in range(len(net.layers)):
            t_out, winners = net.layer_forward(i, trace.times[-1])
            if winners is not None:
                trace.winners[i] = winners
            trace.times.append(t_out)
            marks.append(time.perf_counter())
        net.readout(trace)
        marks.append(time.perf_counter())
        before = dict(rule_seconds)
        for w, gdir in zip(net.weights, update_directions(net, trace, yb, rule)):
            w.grad = gdir
        marks.append(time.perf_counter())
        opt.step()
        marks.append(time.perf_counter())
        if b >= warmup:
            spans = dict(zip(["encode", *names[1 : len(tokens) + 2]], [hi - lo for lo, hi in zip(marks, marks[1:])]))
            in_rules = {i: rule_seconds[i] - before[i] for i in net.weighted}
            spans["update_directions (rest)"] = marks[-2] - marks[-3] - sum(in_rules.values())
            spans.update({rule_names[i]: in_rules[i] for i in net.weighted})
            spans["optimizer step"] = marks[-1] - marks[-2]
            for name, seconds in spans.items():
                totals[name] += seconds
    images_done = count * BATCH
    phases = [{"phase": name, "ms_per_image": round(1000 * s / images_done, 4)} for name, s in totals.items()]
    total = sum(p["ms_per_image"] for p in phases)
    for p in phases:
        p["share"] = round(p["ms_per_image"] / total, 4) if total else None
    return {"T": T, "batches": count, "phases": phases, "total_ms_per_image": round(total, 4)}


def worker(args: argparse.Namespace) -> dict:
    """Run one measurement in this process and return its record."""
    import torch

    torch.set_num_threads(args.threads)
    images, labels = load_mnist()
    # --quick calibrates stidi's initialisation on fewer images: it is untimed but slow at large T.
    calibration = QUICK_CALIBRATION_IMAGES if args.quick else CALIBRATION_IMAGES
    if args.worker == "stidi-profile":
        return profile_stidi(images, labels, args.T, args.warmup, 2 if args.quick else PROFILE_BATCHES, calibration)
    system, mode = args.worker.rsplit("-", 1)
    if args.worker == "stidi-infer" and args.model:
        net, info = trained_model(args.model)
        if net is not None:
            test_images, test_labels = load_mnist("test")
            info.update(test_accuracy(net, test_images, test_labels, QUICK_ACCURACY_IMAGES if args.quick else ACCURACY_IMAGES))
            step, info = stidi_trained_infer(net, info)
            # a trained network's activity (and so its cost) is measured on images it never saw: the test set
            record = run_timed(step, batches(test_images, test_labels), args.warmup, args.min_seconds, args.min_batches)
            info["timed_on"] = "MNIST test images"
            return {**record, **info, "torch_threads": torch.get_num_threads()}
        fallback = info
        step, info = make_stidi(images, False, args.T, calibration)
        info.update(fallback)
    else:
        step, info = SYSTEMS[system](images, mode == "train", args.T, calibration)
    record = run_timed(step, batches(images, labels), args.warmup, args.min_seconds, args.min_batches)
    return {**record, **info, "torch_threads": torch.get_num_threads()}


# --------------------------------------------------------------------------- driver


def worker_env(threads: int) -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = str(threads)
    return env


def run_worker(name: str, T: int, args: argparse.Namespace, model: str = "") -> dict:
    """Run ``--worker name`` in a subprocess; its record, or ``{"error": ...}`` if it failed.

    ``model``: for ``stidi-infer``, the trained model to time (empty: the fresh network)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--T", str(T),
               "--threads", str(args.threads), "--warmup", str(args.warmup),
               "--min-seconds", str(args.min_seconds), "--min-batches", str(args.min_batches),
               "--model", model]
    if args.quick:
        command.append("--quick")
    label = f"{name} (T={T}{', ' + model if model else ''})"
    print(f"[throughput] {label} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(command, check=False, cwd=ROOT, env=worker_env(args.threads), stdout=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        print(f"[throughput] {label} failed (exit {proc.returncode})", file=sys.stderr, flush=True)
        return {"error": f"worker exited with status {proc.returncode}"}
    record = json.loads(lines[-1][len(RESULT_PREFIX):])
    shown = record.get("images_per_s", record.get("total_ms_per_image"))
    print(f"[throughput] {label}: {shown}", file=sys.stderr, flush=True)
    return record


def row(system: str, train: dict, infer: dict, infer_fresh: dict | None = None) -> dict:
    """One system's figures. For stidi, ``infer`` is the trained model's inference (or the
    fresh network's, when it fell back) and ``infer_fresh`` the freshly initialised network's."""
    record = {
        "system": system,
        "train_images_per_s": train.get("images_per_s"),
        "infer_images_per_s": infer.get("images_per_s"),
        "peak_rss_mb": train.get("peak_rss_mb") or train.get("process_max_rss_mb"),
        "details": {"train": train, "infer": infer},
    }
    if infer_fresh is not None:
        record["infer_model"] = infer.get("model")
        record["infer_fresh_images_per_s"] = infer_fresh.get("images_per_s")
        record["details"]["infer_fresh"] = infer_fresh
    return record


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def ratios(rows: dict[str, dict], by_t: dict[int, float | None], key: str = "images_per_s") -> dict:
    """The target ratios from ``key`` (wall-time images/s, or the per-batch median as a noise check)."""
    s, c, n = (rows[name]["details"] for name in ("stidi", "cnn", f"snntorch-bptt-T{SNN_STEPS}"))
    return {
        "train_vs_cnn": ratio(s["train"].get(key), c["train"].get(key)),
        "train_vs_snntorch": ratio(s["train"].get(key), n["train"].get(key)),
        "infer_vs_cnn": ratio(s["infer"].get(key), c["infer"].get(key)),
        "infer_fresh_vs_cnn": ratio((s.get("infer_fresh") or {}).get(key), c["infer"].get(key)),
        "train_T1024_vs_T64": ratio(by_t.get(1024, {}).get(key), by_t.get(64, {}).get(key)),
        "rss_vs_cnn": ratio(rows["stidi"]["peak_rss_mb"], rows["cnn"]["peak_rss_mb"]),
    }


def git(*argv: str) -> str:
    proc = subprocess.run(["git", *argv], check=False, cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def source_fingerprint() -> str:
    """sha256 over the package sources, to detect edits of src/ while the benchmark runs."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def cpu_model() -> str:
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        match = None
    import platform

    return match.group(1).strip() if match else (platform.processor() or platform.machine())


def stidi_row(args: argparse.Namespace) -> dict:
    """stidi's row: training; inference of the trained model (``--model``) with the freshly
    initialised network's as an extra figure, or the fresh network's alone when the model is
    missing (the fallback is recorded as ``details.infer.fallback``)."""
    train = run_worker("stidi-train", STIDI_T, args)
    fresh = run_worker("stidi-infer", STIDI_T, args)
    path = Path(args.model) if args.model else None
    if path is not None and not path.is_absolute():
        path = ROOT / path
    if path is None:
        infer = {**fresh, "fallback": "no model given (--model '')"}
    elif not path.is_file():
        infer = {**fresh, "fallback": f"{args.model} not found"}
    else:
        infer = run_worker("stidi-infer", STIDI_T, args, model=args.model)
    return row("stidi", train, infer, fresh)


def measure(args: argparse.Namespace, command: str) -> dict:
    """Run every measurement (each in its own subprocess) and assemble the result record."""
    import torch

    load_before, source_before, commit = os.getloadavg(), source_fingerprint(), git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "src"))
    started = time.perf_counter()
    rows = {
        "stidi": stidi_row(args),
        "cnn": row("cnn", run_worker("cnn-train", 0, args), run_worker("cnn-infer", 0, args)),
        f"snntorch-bptt-T{SNN_STEPS}": row(f"snntorch-bptt-T{SNN_STEPS}", run_worker("snntorch-train", SNN_STEPS, args),
                                           run_worker("snntorch-infer", SNN_STEPS, args)),
    }
    by_t = {STIDI_T: rows["stidi"]["details"]["train"]}
    for T in T_SWEEP:
        if T not in by_t:
            by_t[T] = run_worker("stidi-train", T, args)
    profile = run_worker("stidi-profile", STIDI_T, args)
    return {
        "commit": commit,
        "commit_at_end": git("rev-parse", "HEAD"),
        "src_modified_at_start": dirty,
        "source_fingerprint": source_before,
        "source_changed_during_run": source_fingerprint() != source_before,
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "threads": args.threads,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "batch_size": BATCH,
        "quick": args.quick,
        "min_seconds": args.min_seconds,
        "min_batches": args.min_batches,
        "warmup_batches": args.warmup,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "rows": list(rows.values()),
        "stidi_by_T": [{"T": T, "train_images_per_s": by_t[T].get("images_per_s"),
                        "median_batch_images_per_s": by_t[T].get("median_batch_images_per_s"), "details": by_t[T]}
                       for T in T_SWEEP],
        "ratios": ratios(rows, by_t),
        "ratios_median_batch": ratios(rows, by_t, "median_batch_images_per_s"),
        "stidi_profile": profile,
    }


# --------------------------------------------------------------------------- report


def commit_notes(result: dict) -> str:
    notes = []
    if result.get("commit_at_end") and result["commit_at_end"] != result["commit"]:
        notes.append(f"`{result['commit_at_end']}` by the end of the run")
    if result.get("src_modified_at_start"):
        notes.append("with uncommitted changes in src/")
    if result.get("source_changed_during_run"):
        notes.append("**src/ changed while the benchmark ran**, so measurements may mix versions")
    return f" ({'; '.join(notes)})" if notes else ""


def median_of(r: dict, mode: str) -> float | None:
    return (r.get("details") or {}).get(mode, {}).get("median_batch_images_per_s")


def fmt(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def verdict(name: str, value: float | None) -> str:
    target, op, _ = TARGETS[name]
    if value is None:
        return "not measured"
    met = value >= target if op == ">=" else value <= target
    return "met" if met else "**not met**"


def render(result: dict, json_path: str) -> str:
    """``docs/performance.md`` generated from a throughput result record."""
    rows = result["rows"]
    stidi_info = next(r for r in rows if r["system"] == "stidi")["details"]["train"]
    snn_info = next(r for r in rows if r["system"].startswith("snntorch"))["details"]["train"]
    lines = [
        "# Performance",
        "",
        f"<!-- Generated by benchmarks/throughput.py from {json_path}; do not edit by hand. -->",
        "",
        f"Throughput and peak memory of STiDi-BP training on MNIST compared with a plain CNN and with an "
        f"snnTorch SNN trained by backpropagation through time, all with the default network's layer shapes "
        f"(28×28 → 32C5 → pool2 → 64C5 → pool2 → 1024 → 10) and batch {result['batch_size']}.",
        "",
        f"* Machine: {result['cpu']} ({result['cores']} cores), {result['threads']} threads "
        f"(PyTorch and numba), Python {result['python']}, PyTorch {result['torch']}",
        f"* Commit: `{result['commit']}`" + commit_notes(result),
        f"* Command: `{result['command']}` ({result['date']}, {result['wall_seconds']} s in all)",
        f"* Load average (1, 5, 15 min) before / after: {result['load_average_before']} / {result['load_average_after']}",
        "",
        "Absolute figures drift between machines, thread counts and with other load on the machine; only the "
        "ratios between figures of one run are comparable.",
    ]
    if result.get("quick"):
        lines += ["", "**This is a `--quick` smoke test: the figures are not representative.**"]
    lines += [
        "",
        "## Throughput and memory",
        "",
        "Images/s are images ÷ wall time of the timed loop; the median-batch figures (64 ÷ median batch time) "
        "are a noise check: far apart, other work on the machine slowed some batches.",
        "",
        "| System | Training images/s | (median batch) | Inference images/s | (median batch) | Peak training RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['system']} | {fmt(r['train_images_per_s'])} | {fmt(median_of(r, 'train'))} "
                     f"| {fmt(r['infer_images_per_s'])} | {fmt(median_of(r, 'infer'))} | {fmt(r['peak_rss_mb'], 0)} |")
    lines += inference_note(next(r for r in rows if r["system"] == "stidi"), result.get("ratios") or {}, result.get("commit"))
    lines += ["", "STiDi-BP training throughput by time window:", "",
              "| T | Training images/s | (median batch) |", "|---:|---:|---:|"]
    lines += [f"| {r['T']} | {fmt(r['train_images_per_s'])} | {fmt(r.get('median_batch_images_per_s'))} |"
              for r in result["stidi_by_T"]]
    lines += ["", "## Against the project's targets", "",
              "| Ratio | Definition | Target | This run | | (from median batches) |", "|---|---|---:|---:|---|---:|"]
    medians = result.get("ratios_median_batch") or {}
    for name, (target, op, text) in TARGETS.items():
        value = result["ratios"].get(name)
        lines.append(f"| `{name}` | {text} | {'≥' if op == '>=' else '≤'} {target:g} | {fmt(value, 2)} "
                     f"| {verdict(name, value)} | {fmt(medians.get(name), 2)} |")
    lines += render_profile(result.get("stidi_profile") or {})
    lines += [
        "",
        "## Method",
        "",
        f"* Images: the MNIST training set in file order, the same batches for every system (the trained stidi "
        f"model's inference runs on the test set instead, images it never saw); each measurement "
        f"warms up for {result['warmup_batches']} batches (numba compilation, first oneDNN calls), then runs "
        f"until it has done at least {result['min_batches']} batches and {result['min_seconds']:g} s; "
        f"images/s = images processed ÷ wall time after warm-up.",
        f"* stidi: `stidi.train`'s step (TTFS encoding, `Network.trace`, `readout`, `update_directions`, Adam) "
        f"with the default configuration at T = {stidi_info.get('T', STIDI_T)}, engine `{stidi_info.get('engine', '?')}`, "
        f"starting from the initialisation calibrated on the first {stidi_info.get('calibration_images', '?')} images "
        f"(firing fraction per weighted layer {stidi_info.get('init_firing_fraction', '?')}; untimed, "
        f"{stidi_info.get('init_seconds', '?')} s); inference is the classes of a batch, "
        f"`Network.predict(t_in, early_exit=True)`: each layer is simulated only "
        f"up to a horizon chosen from recent decision times, the samples not decided by then again to T "
        f"(exact by causality: the same classes and decision times as the full forward pass, `stidi.inference`). "
        f"The event engine's cost grows with the number of spikes, so throughput depends on firing activity: "
        f"the inference row and `infer_vs_cnn` time the trained model named under the table when there is one (what is deployed), the "
        f"freshly initialised network's figure is given beside it; the model's test accuracy is measured "
        f"untimed, with the same early-exit prediction.",
        "* cnn: `Conv2d(1,32,5) ReLU MaxPool2d(2) Conv2d(32,64,5) ReLU MaxPool2d(2) Flatten Linear(1024,10)`, "
        "cross-entropy, Adam; inference under `torch.inference_mode`. Conversion of the uint8 images to floats is timed.",
        f"* {next(r['system'] for r in rows if r['system'].startswith('snntorch'))}: snnTorch "
        f"{snn_info.get('snntorch_version', '?')}, `Conv2d → max_pool2d → snn.Leaky` twice, then "
        f"`Linear → snn.Leaky` (the layout of snnTorch's convolutional tutorial), beta {snn_info.get('beta', SNN_BETA)}, "
        f"default (ATan) surrogate gradient, {snn_info.get('steps', SNN_STEPS)} time steps of "
        f"{snn_info.get('input', 'rate-coded input')}, BPTT through all steps with `snntorch.functional.ce_rate_loss`, "
        "Adam; inference counts output spikes over the steps.",
        "* Peak training RSS: each system's training loop runs in its own process; after warm-up, freed heap memory "
        "is handed back to the OS (`gc.collect`, `malloc_trim`) and the kernel's peak-RSS counter (VmHWM) is reset, "
        "so the figure is the peak resident memory during the timed loop: "
        "interpreter, libraries, the MNIST training set and the working set of training. The whole-process peak "
        "(`ru_maxrss`, compilation included) is in the JSON as `process_max_rss_mb`.",
        "* Where the time goes: the same training step split into phases with a timer around each "
        "(`update_directions` split into each weighted layer's learning-rule kernel, `stidi.kernels.rule`, "
        "and the rest: errors, pooling routes, normalisation), mean over "
        f"{(result.get('stidi_profile') or {}).get('batches', PROFILE_BATCHES)} batches after warm-up, in a separate process.",
        "",
        f"Raw figures, per-measurement details and the load average are in `{json_path}`.",
        "",
    ]
    return "\n".join(lines)


def inference_note(stidi: dict, ratios: dict, commit: str | None = None) -> list[str]:
    """Which stidi network the inference figures are for (trained model, as of the measurement's commit, or fresh network)."""
    infer = (stidi.get("details") or {}).get("infer") or {}
    fresh = (stidi.get("details") or {}).get("infer_fresh")
    if fresh is None:  # a record from before the trained model was timed
        return ["", "stidi inference above: the freshly initialised network (calibrated to the initial firing fraction)."]
    fresh_text = (f"the freshly initialised network (calibrated to the initial firing fraction, not trained) "
                  f"runs at {fmt(stidi.get('infer_fresh_images_per_s'))} images/s "
                  f"(median batch {fmt(fresh.get('median_batch_images_per_s'))}; "
                  f"{fmt(ratios.get('infer_fresh_vs_cnn'), 2)} × the CNN)")
    if infer.get("model"):
        accuracy = infer.get("test_accuracy")
        accuracy_text = ("" if accuracy is None else
                         f", test accuracy {100 * accuracy:.2f} % on {infer.get('test_accuracy_images', '?'):,} MNIST test images")
        as_of = f" as of commit `{commit[:7]}` (`git show {commit[:7]}:{infer['model']}`)" if commit else ""
        return ["", f"**stidi inference is timed on the trained model** `{infer['model']}`{as_of} "
                    f"(sha256 `{infer.get('model_sha256', '?')[:16]}…`, T = {infer.get('T', '?')}{accuracy_text}): "
                    f"{fmt(infer.get('images_per_s'))} images/s, the figure in the table and in `infer_vs_cnn`; "
                    f"{fresh_text}."]
    reason = infer.get("fallback", "no trained model")
    return ["", f"**stidi inference is timed on the freshly initialised network** ({reason}): "
                f"{fmt(infer.get('images_per_s'))} images/s; no trained model was timed."]


def render_profile(profile: dict) -> list[str]:
    if not profile.get("phases"):
        return ["", "## Where the time goes", "", "Not measured in this run."]
    lines = [
        "",
        "## Where the time goes",
        "",
        f"One STiDi-BP training batch at T = {profile['T']}, split into phases "
        f"(mean over {profile['batches']} batches; total {fmt(profile['total_ms_per_image'], 3)} ms per image):",
        "",
        "| Phase | ms per image | Share |",
        "|---|---:|---:|",
    ]
    for p in profile["phases"]:
        share = "n/a" if p["share"] is None else f"{100 * p['share']:.1f} %"
        lines.append(f"| {p['phase']} | {fmt(p['ms_per_image'], 3)} | {share} |")
    return lines


SPEED_START, SPEED_END = "<!-- speed:start -->", "<!-- speed:end -->"


def readme_speed_block(result: dict) -> list[str]:
    """The README's speed table: the three systems of one run side by side, and their ratios."""
    names = {"stidi": "stidi (STiDi-BP, event engine, T = 256)", "cnn": "plain CNN (ReLU, Adam)"}
    lines = [f"| system (same layer shapes, batch {result['batch_size']}, {result['threads']} threads) "
             "| training images/s | inference images/s |", "|---|---:|---:|"]
    for r in result["rows"]:
        name = names.get(r["system"], r["system"].replace("snntorch-bptt-T", "snnTorch, BPTT over T = "))
        lines.append(f"| {name} | {fmt(r['train_images_per_s'], 0)} | {fmt(r['infer_images_per_s'], 0)} |")
    ratios = result.get("ratios") or {}
    lines += ["", f"STiDi-BP trains **{fmt(ratios.get('train_vs_snntorch'))}×** as many images per second as "
              f"BPTT in snnTorch and {fmt(ratios.get('train_vs_cnn'), 2)}× as many as the plain CNN; the trained "
              f"model infers at {fmt(ratios.get('infer_vs_cnn'), 2)}× the CNN "
              f"(`{result['command']}`, commit `{result['commit'][:7]}`, {result['cpu']}, {result['cores']} cores; "
              "details and method in [docs/performance.md](docs/performance.md))."]
    return lines


def update_readme(result: dict) -> bool:
    """Replace the README's speed block (between its markers) with :func:`readme_speed_block`."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from render_results import replace_readme_block

    return replace_readme_block(SPEED_START, SPEED_END, readme_speed_block(result))


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--quick", action="store_true", help="smoke test: ~3 s per measurement, written to results/throughput-quick.json")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch and numba threads (default 2)")
    parser.add_argument("--min-seconds", type=float, help="minimum timed seconds per measurement (default 15, --quick 3)")
    parser.add_argument("--min-batches", type=int, help="minimum timed batches per measurement (default 20, --quick 1)")
    parser.add_argument("--warmup", type=int, help="untimed warm-up batches per measurement (default 3, --quick 1)")
    parser.add_argument("--out", help="result JSON (default results/throughput.json, --quick results/throughput-quick.json)")
    parser.add_argument("--doc", help="generated Markdown (default docs/performance.md; --quick: none unless given); "
                                      "a full run's doc also refreshes the README's speed table")
    parser.add_argument("--render-only", action="store_true", help="only regenerate the doc from the existing result JSON")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"trained model whose inference is timed (default {DEFAULT_MODEL}; empty or missing: "
                             "the freshly initialised network)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--T", type=int, default=STIDI_T, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = (3.0, 1, 1) if args.quick else (15.0, 20, 3)
    for name, default in zip(("min_seconds", "min_batches", "warmup"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.out is None:
        args.out = "results/throughput-quick.json" if args.quick else "results/throughput.json"
    if args.doc is None and not args.quick:
        args.doc = "docs/performance.md"
    return args


def command_line(argv: list[str]) -> str:
    return " ".join(["python", "benchmarks/throughput.py", *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        print(RESULT_PREFIX + json.dumps(worker(args)), flush=True)
        return 0
    out = ROOT / args.out
    if args.render_only:
        result = json.loads(out.read_text())
    else:
        result = measure(args, command_line(argv))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
        print(json.dumps({k: result[k] for k in ("stidi_by_T", "ratios")}, indent=2))
    if args.doc:
        doc = ROOT / args.doc
        doc.parent.mkdir(parents=True, exist_ok=True)
        shown = out.resolve().relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out
        doc.write_text(render(result, str(shown)))
        print(f"wrote {doc}", file=sys.stderr)
        if not result.get("quick") and update_readme(result):
            print("updated the speed table of README.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
