"""Spike-time engines.

* :mod:`stidi.kernels.reference` - a plain simulator that loops over every time step
  (NumPy, float64). Slow, obviously correct; the yardstick for the property tests.
* :mod:`stidi.kernels.vectorised` - the batched PyTorch engine (any device).
* :mod:`stidi.kernels.event` - the event-driven numba engine, the default on CPU.
* :mod:`stidi.kernels.fixed_point` - the power-of-two quanta that make batch sums exact.

All implement the same pure functions on spike-time arrays, where a neuron that never
fired has time ``+inf``.
"""

from __future__ import annotations

import math
import os

import torch

from . import event, vectorised

#: Engine used when none is named: ``"event"`` when numba is installed, else ``"vectorised"``.
ENGINES = ("event", "vectorised")


def default_engine() -> str:
    """``$STIDI_ENGINE`` if set, else the event engine when available."""
    chosen = os.environ.get("STIDI_ENGINE")
    if chosen:
        if chosen not in ENGINES:
            raise ValueError(f"STIDI_ENGINE={chosen!r}: use one of {', '.join(ENGINES)}")
        return chosen
    return "event" if event.AVAILABLE else "vectorised"


def _use_event(engine: str, t: torch.Tensor, tau: float) -> bool:
    return engine == "event" and event.AVAILABLE and t.device.type == "cpu" and (math.isinf(tau) or float(tau).is_integer())


def event_usable(t: torch.Tensor, tau: float = math.inf, engine: str | None = None) -> bool:
    """Whether the event engine serves tensors like ``t`` (CPU, numba, integer τ or ∞) when ``engine`` (default: :func:`default_engine`) is chosen."""
    return _use_event(engine or default_engine(), t, tau)


def spike_times(t_in, weight, theta, T, tau, padding=0, engine: str | None = None, horizon=None):
    """Spike times of a dense or convolution layer with the chosen engine.

    ``horizon`` (``(B,)`` steps, event engine only) stops each sample's scan there: see
    :func:`stidi.kernels.event.spike_times`.
    """
    if _use_event(engine or default_engine(), t_in, tau):
        return event.spike_times(t_in, weight, theta, T, tau, padding, horizon=horizon)
    if horizon is not None:
        raise ValueError("a scan horizon needs the event engine (numba, CPU, integer tau or inf)")
    return vectorised.spike_times(t_in, weight, theta, T, tau, padding)


def earliest_pool(t_in: torch.Tensor, k: int, engine: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Earliest-spike pooling (times and flat winner indices) with the chosen engine."""
    if (engine or default_engine()) == "event" and event.AVAILABLE and t_in.device.type == "cpu":
        return event.earliest_pool(t_in, k)
    return vectorised.earliest_pool(t_in, k)


def rule(t_in, t_out, delta, weight, gate, T, tau, padding=0, need_displacement=True, engine: str | None = None,
         quantum: torch.Tensor | None = None):
    """``(update direction, displacement or None)`` of one weighted layer.

    With ``quantum`` (``(J,)`` float64 powers of two, :func:`stidi.kernels.fixed_point.quantum`)
    the direction is the exact fixed-point sum ``Σ δ ε · scale`` in float64, the same to the
    bit on both engines, for any batch split and thread count (training uses this). Without
    it: ``Σ δ ε`` in the weight's dtype — exact likewise on the event engine, an ordinary
    float sum (whose rounding depends on the batch) on the vectorised one.
    """
    if _use_event(engine or default_engine(), t_in, tau):
        return event.rule(t_in, t_out, delta, weight, gate, T, tau, padding, need_displacement, quantum)
    if quantum is not None:
        G = vectorised.update_sum(t_in, t_out, delta, weight, T, tau, quantum, padding)
    else:
        G = vectorised.update_direction(t_in, t_out, delta, weight, T, tau, padding)
    D = vectorised.displacement(t_in, t_out, delta, weight, gate, T, tau, padding) if need_displacement else None
    return G, D
