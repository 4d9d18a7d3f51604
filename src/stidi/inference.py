"""Early-exit inference: a batch's classes without simulating past the decision.

A prediction needs only the earliest output spike (the decision) and, to break ties,
the output layer's potentials at that step. Both are causal: a neuron fires at the
first step ``m`` with ``u(m) = Σ_i w_i ε(m − t_i) ≥ θ``, and ``ε(s) = 0`` for ``s ≤ 0``,
so ``u(m)`` — hence whether and when the neuron fires at or before a step ``h`` —
depends only on the input spikes before ``h``. By induction over the layers, simulating
every layer only up to a horizon ``h`` (:func:`stidi.kernels.event.spike_times` with
``horizon``) gives every spike at or before ``h`` its exact time and reports every later
one as ``inf``; earliest-spike pooling (a minimum) keeps that property. If an output
fires at some step ``d ≤ h``, then:

* ``d`` is the decision time of the full simulation (no output fires earlier, and all
  outputs that fire at ``d`` are known);
* the tie-break potentials ``u_j(d)`` see only the hidden spikes before ``d``, all known
  exactly; the later ones (``inf`` here, finite there) contribute ``ε = 0`` either way,
  so the readout computes the very same numbers.

Forced firing (an output that never crossed counts as firing at ``T``) only applies at
``T``: a sample whose outputs did not fire by ``h < T`` is not decided yet, and is
simulated again to ``T``. The result — classes, decision times — is therefore identical
to :meth:`stidi.network.Network.predict`. Only the output spike times after the horizon a
sample was decided at are not computed (``inf``).

The horizon adapts (:func:`choose_horizon`): from the decision times of the last batches
this network saw (the full window ``T`` for the first batch), it trades the work saved
on the samples decided in time against the rerun of the others.
"""

from __future__ import annotations

import math
import weakref
from collections import deque

import numpy as np
import torch

from . import kernels
from .network import Network, Prediction, Trace

#: Expected saving (fraction of a full scan) below which the first pass is a full scan.
MIN_SAVING = 0.1
#: How many recent decision times (per network) the horizon is taken from.
HISTORY = 1024

_history: "weakref.WeakKeyDictionary[Network, deque[float]]" = weakref.WeakKeyDictionary()


def supported(net: Network, t_in: torch.Tensor) -> bool:
    """True when the horizon-limited kernels apply (event engine, CPU, integer ``τ`` or the ramp)."""
    return kernels._use_event(kernels.default_engine(), t_in, net.tau)


def forward_until(net: Network, t_in: torch.Tensor, horizon: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Times of the output layer's inputs and of the outputs, simulated up to ``horizon``.

    ``horizon`` has one step per sample (``0 … T``). Every spike at or before the
    sample's horizon has its exact time (the same as in :meth:`Network.trace`), every
    later one is ``inf``: see the module docstring for why this is exact.
    """
    previous = t = t_in
    for i in range(len(net.layers)):
        previous = t
        t, _ = net.layer_forward(i, t, horizon=horizon)
    return previous, t


def decided_by(t_out: torch.Tensor, horizon: np.ndarray, T: int) -> torch.Tensor:
    """Samples whose decision is known after a scan to ``horizon``: an output fired by then,
    or the scan reached ``T`` (where forced firing, or the lack of it, decides)."""
    h = torch.as_tensor(horizon, dtype=t_out.dtype)
    return (t_out.min(dim=1).values <= h) | (h >= T)


def choose_horizon(net: Network) -> int:
    """First-pass horizon from the decision times ``net`` recently produced (``T`` when
    there are none yet).

    The work of a scan to ``h`` grows about in proportion to ``h`` (measured on MNIST:
    0.43, 0.73 and 0.88 of the full scan at ``h/T`` = 0.39, 0.63 and 0.78), and the
    samples not decided by ``h`` cost a full scan more. The horizon minimises that
    expected cost, ``h/T + P(decision > h)``, over the recent decision times; where the
    minimum saves under :data:`MIN_SAVING` (decisions late in the window) it is ``T``:
    a single full scan, no rerun.
    """
    seen = _history.get(net)
    if not seen:
        return net.T
    d = np.sort(np.fromiter(seen, float))
    n, T = d.size, net.T
    later = n - np.searchsorted(d, d, side="right")  # decisions after each candidate horizon
    cost = d / T + later / n
    k = int(np.argmin(cost))
    if cost[k] > 1.0 - MIN_SAVING:
        return T
    return int(min(T, max(1, math.ceil(d[k]))))


def _remember(net: Network, decision_time: torch.Tensor) -> None:
    seen = _history.get(net)
    if seen is None:
        seen = _history[net] = deque(maxlen=HISTORY)
    seen.extend(decision_time.clamp(max=net.T).nan_to_num(posinf=float(net.T)).tolist())


@torch.no_grad()
def predict_early(net: Network, t_in: torch.Tensor, horizon: int | None = None) -> Prediction:
    """Classes and decision times of input spike times ``(B, *input_shape)``, as
    :meth:`Network.predict` gives them, simulating each sample only as long as needed.

    A first pass runs every layer up to ``horizon`` (default: :func:`choose_horizon`);
    the samples not decided by then run again to ``T``. ``output_times`` holds each output
    spike up to the horizon its sample was decided at (all of them for the rerun samples)
    and ``inf`` after it. Falls back to the full simulation where the event engine does
    not apply.
    """
    if not supported(net, t_in):
        return net.predict(t_in)
    B = t_in.shape[0]
    h0 = choose_horizon(net) if horizon is None else int(min(max(horizon, 0), net.T))
    first = np.full(B, h0, dtype=np.int64)
    hidden, t_out = forward_until(net, t_in, first)
    rest = ~decided_by(t_out, first, net.T)
    if bool(rest.any()):
        idx = rest.nonzero().squeeze(1)
        hidden_r, out_r = forward_until(net, t_in[idx], np.full(idx.numel(), net.T, dtype=np.int64))
        hidden, t_out = hidden.clone(), t_out.clone()
        hidden[idx], t_out[idx] = hidden_r, out_r
    prediction = net.readout(Trace([hidden, t_out]))
    _remember(net, prediction.decision_time)
    return prediction
