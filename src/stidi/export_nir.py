"""Export a network as a NIR graph (Neuromorphic Intermediate Representation).

NIR describes continuous-time neurons and their wiring; it has no single-spike neuron
and no earliest-spike pooling. The graph written here is the closest NIR can say,
layer by layer (``k`` is the layer's position in the spec, from 1):

* weighted layer: ``Conv2d`` (or ``Flatten`` + ``Linear`` for a dense layer) with the
  forward weights (``α · sign(w)`` for a binary layer, metadata ``binary``/``alpha``), then
  ``I`` (``r = 1``: integrates the weighted input spikes into a step current, so
  each spike starts a constant current ``w``), then ``IF`` (``r = 1/T``,
  ``v_threshold = θ_l``): ``v(t) = Σ_i w_i (t − t_i)/T``, exactly the ramp PSP
  ``ε(s) = s/T`` of ``τ = inf``;
* earliest-spike pooling: ``SumPool2d`` + ``IF`` (``r = 1``, ``v_threshold = 0.5``):
  with single-spike neurons the first spike in the window makes the sum reach 1 and
  the pooled neuron fires then, i.e. at the window's earliest time.

What NIR cannot say is stored in node and graph metadata (``single_spike``,
``threshold_rule``, ``T``, ``tau``, the encoding and the readout) and listed, with
its consequences, in ``docs/nir.md``; :func:`export_nir` returns it as warnings.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import StidiError
from .layers import Conv, Dense, Pool
from .network import Network

POOL_THRESHOLD = 0.5


def _alpha(w: np.ndarray) -> float | list[float]:
    """``α`` of a binary layer's forward weights ``α · sign(w)``: one number, or one per output
    neuron/channel when they differ (``binary_scale = "channel"``)."""
    per_unit = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    return float(per_unit[0]) if np.all(per_unit == per_unit[0]) else [float(a) for a in per_unit]


def _nir():
    from .inputs import require

    return require("nir", "nir", "nir", "NIR export")


def differences(net: Network) -> list[str]:
    """What a NIR reader will not reproduce without the metadata (one line each)."""
    out = [
        "NIR's IF neuron resets and can fire again; stidi neurons fire at most once and never reset "
        "(metadata single_spike=1, v_reset is unused)",
        "stidi checks the threshold only at integer steps (u >= theta), NIR's IF fires in continuous time "
        "(v > v_threshold): a NIR simulator may fire up to one step earlier",
        f"the time window ends at T={net.T} steps; time is in steps, not seconds (metadata T, time_unit)",
        "TTFS input encoding t = floor(T (1 - x)) and the earliest-spike readout with its tie-break are "
        "outside the graph (graph metadata encoding, readout)",
        "earliest-spike pooling is written as SumPool2d + IF (threshold 0.5), exact only with single-spike inputs",
    ]
    if net.input_power != 1.0:
        out.append(f"input contrast curve: pixels are encoded as x^{net.input_power:g} (t = floor(T (1 - x^p))), "
                   "outside the graph (graph metadata encoding, input_power)")
    if net.input_polarity == "on_off":
        out.append(f"ON/OFF input: channels {net.input_shape[0]}..{2 * net.input_shape[0] - 1} of the input encode 1 - x "
                   "with the same curve, outside the graph (graph metadata input_polarity)")
    if net.population > 1:
        out.append(f"population readout: the {net.shapes[-1][0]} outputs are {net.num_classes} classes of {net.population} "
                   f"consecutive neurons each (class c: outputs c*{net.population}..c*{net.population}+{net.population - 1}), "
                   "a class firing with its earliest neuron, outside the graph (graph metadata population)")
    if not math.isinf(net.tau):
        out.append(f"PSP rise time tau={net.tau:g}: the ramp's saturation after tau steps is not in the graph "
                   "(I + IF model the pure ramp); metadata tau holds it")
    if net.forced_firing:
        out.append("forced firing: an output that never fired counts as firing at T (graph metadata forced_firing)")
    return out


def to_nir(net: Network):
    """The :class:`nir.NIRGraph` of ``net`` (see the module docstring for the mapping)."""
    if getattr(net, "bias", False):
        raise StidiError("NIR export does not cover model.bias = true (the bias input spike at t = 0 has no NIR node "
                         "here yet); export a network trained without it")
    nir = _nir()
    T = float(net.T)
    tau = float(net.tau)
    nodes: dict = {"input": nir.Input(input_type=np.array(net.encoded_shape))}
    edges: list[tuple[str, str]] = []
    last = "input"

    def add(name: str, node) -> None:
        nonlocal last
        nodes[name] = node
        edges.append((last, name))
        last = name

    def neuron_meta(threshold: float, **extra) -> dict:
        return {"single_spike": 1, "threshold_rule": "u >= v_threshold at integer steps", "T": T, "tau": tau,
                "time_unit": "step", **extra}

    for k, layer in enumerate(net.layers):
        name = f"{k + 1}_{layer.token}"
        in_shape, out_shape = net.shapes[k], net.shapes[k + 1]
        if isinstance(layer, Pool):
            kernel = np.array([layer.kernel, layer.kernel])
            add(f"{name}_pool", nir.SumPool2d(kernel_size=kernel, stride=kernel, padding=np.array([0, 0]),
                                               metadata={"stidi_layer": "earliest-spike pooling"}))
            shape = np.array(out_shape)
            add(f"{name}_if", nir.IF(r=np.ones(shape), v_threshold=np.full(shape, POOL_THRESHOLD),
                                     v_reset=np.zeros(shape), metadata=neuron_meta(POOL_THRESHOLD, role="pool")))
            continue
        w = net.weight_of(k).detach().cpu().double().numpy()  # forward weights: α·sign(w) for a binary layer
        theta = net.threshold_of(k)
        binary = bool(getattr(net, "binary", [False] * len(net.weighted))[net.weighted.index(k)])
        weight_meta = {"binary": int(binary), **({"alpha": _alpha(w)} if binary else {})}
        if isinstance(layer, Conv):
            add(f"{name}_conv", nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=w, stride=1, padding=layer.padding,
                                           dilation=1, groups=1, bias=np.zeros(w.shape[0]), metadata=weight_meta))
        else:
            assert isinstance(layer, Dense)
            if len(in_shape) > 1:
                add(f"{name}_flatten", nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1))
            add(f"{name}_linear", nir.Linear(weight=w, metadata=weight_meta))
        shape = np.array(out_shape)
        add(f"{name}_syn", nir.I(r=np.ones(shape), metadata={"role": "synaptic current: each spike starts a constant current w"}))
        add(f"{name}_if", nir.IF(r=np.full(shape, 1.0 / T), v_threshold=np.full(shape, theta), v_reset=np.zeros(shape),
                                 metadata=neuron_meta(theta, role="output" if k == len(net.layers) - 1 else "hidden")))
    add("output", nir.Output(output_type=np.array(net.shapes[-1])))
    metadata = {
        "producer": "stidi", "spec": net.spec, "T": T, "tau": tau, "time_unit": "step",
        "encoding": "TTFS: pixel x in [0, 1] spikes once at t = floor(T (1 - x^p)), p = input_power; x = 0 never spikes",
        "input_power": net.input_power,
        "input_polarity": net.input_polarity,
        "readout": "predicted class = earliest output spike; ties broken by the higher membrane potential",
        "forced_firing": int(net.forced_firing),
        "population": net.population,
        "neuron": "non-leaky IF, no reset, at most one spike, PSP eps(s) = min(s, tau)/tau (s/T for tau = inf)",
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def export_nir(net: Network, path: str | Path) -> list[str]:
    """Write ``net`` as a NIR file (HDF5) at ``path``; returns what NIR does not express."""
    nir = _nir()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(path), to_nir(net))
    return differences(net)
