"""What a trained single-spike network does: activity, cost and early-exit statistics.

Per layer (the input included): the fraction of neurons that fire before ``T``, their
mean firing time, spikes per inference and, for weighted layers, the synaptic
operations actually triggered by spikes against the multiply-accumulates (MACs) a
conventional CNN of the same shapes performs. Network-wide: the mean decision time
(earliest output spike) and the accuracy of stopping there.

Counting rules (also in ``docs/tutorial.md``):

* a *spike* is a firing time ``t < T``: a spike at ``T`` (or none) changes nothing
  downstream, because ``ε(s) = 0`` for ``s ≤ 0`` and the window ends at ``T``;
* a *synaptic operation* is one weight accumulation ``u_j += w_ij ε(·)`` started by a
  spike of neuron ``i``: a dense layer's spike triggers one per output neuron; a
  convolution input spike at ``(c, y, x)`` triggers ``C_out`` times the number of
  kernel placements that cover ``(y, x)`` (fewer at the borders, exact count);
* a *MAC* of the CNN is ``C_out · H_out · W_out · C_in · K²`` for a convolution and
  ``inputs · outputs`` for a dense layer, whatever the input;
* *spikes before the decision*: input and hidden spikes at ``t < t_d``, output
  spikes at ``t ≤ t_d`` (the decisive one included), as a share of all spikes;
* *early exit* stops every layer at the decision time ``t_d`` of each image: the
  input is cut to its spikes before ``t_d`` and the network run again. Nothing
  before ``t_d`` depends on a later spike, so the class cannot change; the
  statistic measures it instead of assuming it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .layers import Conv, Dense, Pool
from .network import Network

BATCH = 256


def fan_out(net: Network, index: int) -> torch.Tensor:
    """Accumulations triggered by one spike of each input neuron of weighted layer ``index``.

    Shape: the layer's input shape without channels for a convolution (``(H, W)``,
    the same for every channel), ``(1,)`` for a dense layer.
    """
    layer, in_shape, out_shape = net.layers[index], net.shapes[index], net.shapes[index + 1]
    if isinstance(layer, Dense):
        return torch.tensor([float(layer.units)], dtype=torch.float64)
    assert isinstance(layer, Conv)
    ones_out = torch.ones(1, 1, *out_shape[1:], dtype=torch.float64)
    kernel = torch.ones(1, 1, layer.kernel, layer.kernel, dtype=torch.float64)
    cover = F.conv_transpose2d(ones_out, kernel, padding=layer.padding)[0, 0]
    assert tuple(cover.shape) == tuple(in_shape[1:])
    return cover * layer.channels


def cnn_macs(net: Network, index: int) -> int:
    """Multiply-accumulates of the same layer in a conventional (dense-activation) CNN."""
    layer, in_shape, out_shape = net.layers[index], net.shapes[index], net.shapes[index + 1]
    if isinstance(layer, Dense):
        return math.prod(in_shape) * layer.units
    if isinstance(layer, Conv):
        return math.prod(out_shape) * in_shape[0] * layer.kernel**2
    return 0


def synaptic_ops(net: Network, index: int, t_in: torch.Tensor, before: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample count of accumulations triggered by the spikes of ``t_in`` into weighted layer ``index``.

    ``before`` (per sample) counts only spikes earlier than it (early exit).
    """
    limit = torch.full((len(t_in),), float(net.T)) if before is None else torch.minimum(before.float(), torch.tensor(float(net.T)))
    fired = (t_in < limit.view(-1, *([1] * (t_in.dim() - 1)))).double()
    fan = fan_out(net, index)
    if isinstance(net.layers[index], Dense):
        return fired.flatten(1).sum(1) * fan[0]
    return (fired * fan).flatten(1).sum(1)


def _layer_names(net: Network) -> list[str]:
    return ["input"] + [layer.token for layer in net.layers]


def _kind(layer: Any) -> str:
    return {Conv: "conv", Pool: "pool", Dense: "dense"}[type(layer)]


#: Quantiles of the spike-time and output-gap distributions in the report.
QUANTILES = (0.1, 0.5, 0.9)


@torch.no_grad()
def inspect_network(net: Network, t_in: torch.Tensor, labels: torch.Tensor | None = None, batch: int = BATCH) -> dict:
    """Activity, cost and early-exit statistics of ``net`` on input spike times ``t_in`` ``(N, *input_shape)``.

    Returns a JSON-ready dict: ``layers`` (one entry per layer, the input first, with the
    10/50/90 % quantiles of its spike times), ``totals``, ``decision`` (with the quantiles
    of the gap between the first and second output spikes, silent outputs at ``T``: how
    far the runner-up class is from the decision) and ``histograms`` (per layer, spike counts at each step
    ``0 … T − 1``, for plots).
    """
    n, T, L = len(t_in), net.T, len(net.layers)
    spikes = [0.0] * (L + 1)
    time_sum = [0.0] * (L + 1)
    before_dec = [0.0] * (L + 1)
    hist = [torch.zeros(T, dtype=torch.float64) for _ in range(L + 1)]
    ops = [0.0] * L
    ops_early = [0.0] * L
    correct = correct_early = decided_same = undecided = 0
    decision_sum = 0.0
    gaps = []
    for lo in range(0, n, batch):
        x = t_in[lo : lo + batch]
        trace = net.trace(x)
        pred = net.readout(trace)
        t_dec = pred.decision_time.clamp(max=T)
        if net.num_classes > 1:
            first_two = net.class_times(trace.times[-1]).clamp(max=T).topk(2, dim=1, largest=False).values
            gaps.append(first_two[:, 1] - first_two[:, 0])
        for l, t in enumerate(trace.times):
            flat = t.flatten(1)
            fired = flat < T
            spikes[l] += float(fired.sum())
            time_sum[l] += float(flat[fired].double().sum())
            # the decision needs the input/hidden spikes before t_d and the output spike at t_d
            needed = flat <= t_dec.view(-1, 1) if l == L else flat < t_dec.view(-1, 1)
            before_dec[l] += float((needed & fired).sum())
            hist[l] += torch.bincount(flat[fired].long(), minlength=T)[:T].double()
        for i in net.weighted:
            ops[i] += float(synaptic_ops(net, i, trace.times[i]).sum())
            ops_early[i] += float(synaptic_ops(net, i, trace.times[i], before=t_dec).sum())
        # early exit: rerun with every input spike at or after the decision time removed
        cut = torch.where(x < t_dec.view(-1, *([1] * (x.dim() - 1))), x, torch.full_like(x, math.inf))
        early = net.predict(cut)
        decided_same += int((early.classes == pred.classes).sum())
        undecided += int((pred.classes == -1).sum())
        decision_sum += float(t_dec.sum())
        if labels is not None:
            y = labels[lo : lo + batch]
            correct += int((pred.classes == y).sum())
            correct_early += int((early.classes == y).sum())
    names, sizes = _layer_names(net), [math.prod(s) for s in net.shapes]
    layers = []
    for l in range(L + 1):
        entry = {
            "layer": names[l],
            "kind": "input" if l == 0 else _kind(net.layers[l - 1]),
            "shape": list(net.shapes[l]),
            "neurons": sizes[l],
            "fraction_firing": spikes[l] / (n * sizes[l]),
            "mean_firing_time": time_sum[l] / spikes[l] if spikes[l] else None,
            "spikes_per_inference": spikes[l] / n,
            "spikes_before_decision": before_dec[l] / max(spikes[l], 1.0) if spikes[l] else None,
            "firing_time_quantiles": _histogram_quantiles(hist[l], QUANTILES),
        }
        if l >= 1 and (l - 1) in net.weighted:
            i = l - 1
            entry.update({
                "synaptic_ops_per_inference": ops[i] / n,
                "synaptic_ops_to_decision": ops_early[i] / n,
                "cnn_macs": cnn_macs(net, i),
                "ops_vs_macs": ops[i] / n / cnn_macs(net, i),
            })
        layers.append(entry)
    total_ops, total_early = sum(ops) / n, sum(ops_early) / n
    total_macs = sum(cnn_macs(net, i) for i in net.weighted)
    return {
        "images": n,
        "T": T,
        "layers": layers,
        "totals": {
            "spikes_per_inference": sum(spikes) / n,
            "synaptic_ops_per_inference": total_ops,
            "synaptic_ops_to_decision": total_early,
            "cnn_macs": total_macs,
            "ops_vs_macs": total_ops / total_macs,
            "ops_to_decision_vs_macs": total_early / total_macs,
        },
        "decision": {
            "mean_decision_time": decision_sum / n,
            "mean_decision_fraction_of_T": decision_sum / n / T,
            "accuracy": correct / n if labels is not None else None,
            "early_exit_accuracy": correct_early / n if labels is not None else None,
            "early_exit_same_class": decided_same / n,
            "undecided": undecided / n,
            "runner_up_gap_quantiles": _quantiles(torch.cat(gaps), QUANTILES) if gaps else None,
        },
        "histograms": {names[l]: hist[l].tolist() for l in range(L + 1)},
    }


def _histogram_quantiles(counts: torch.Tensor, qs: tuple[float, ...]) -> dict[str, int] | None:
    """The steps below which a fraction ``q`` of the spikes counted per step in ``counts`` fall."""
    total = float(counts.sum())
    if total == 0:
        return None
    cumulative = counts.cumsum(0) / total
    return {f"{q:.0%}": int(torch.searchsorted(cumulative, torch.tensor(q, dtype=cumulative.dtype))) for q in qs}


def _quantiles(values: torch.Tensor, qs: tuple[float, ...]) -> dict[str, float]:
    return {f"{q:.0%}": float(values.double().quantile(q)) for q in qs}


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _fmt_quantiles(q: dict | None) -> str:
    return "—" if q is None else "/".join(f"{v:g}" for v in q.values())


def format_report(report: dict) -> str:
    """The inspect report as an aligned text table."""
    T = report["T"]
    head = f"{'layer':<8} {'shape':<12} {'firing<T':>8} {'mean t':>7} {'t 10/50/90 %':>13} {'spikes/inf':>11} {'syn-ops/inf':>12} {'CNN MACs':>11} {'ops/MACs':>8}"
    lines = [f"{report['images']} images, T = {T}", head, "-" * len(head)]
    for e in report["layers"]:
        shape = "×".join(map(str, e["shape"]))
        lines.append(
            f"{e['layer']:<8} {shape:<12} {e['fraction_firing']:>8.1%} {_fmt(e['mean_firing_time'], '.1f'):>7} "
            f"{_fmt_quantiles(e['firing_time_quantiles']):>13} "
            f"{e['spikes_per_inference']:>11.1f} {_fmt(e.get('synaptic_ops_per_inference'), ',.0f'):>12} "
            f"{_fmt(e.get('cnn_macs'), ',d'):>11} {_fmt(e.get('ops_vs_macs'), '.1%'):>8}")
    t = report["totals"]
    lines.append(f"{'total':<8} {'':<12} {'':>8} {'':>7} {'':>13} {t['spikes_per_inference']:>11.1f} "
                 f"{t['synaptic_ops_per_inference']:>12,.0f} {t['cnn_macs']:>11,d} {t['ops_vs_macs']:>8.1%}")
    d = report["decision"]
    lines.append("")
    lines.append(f"decision: first output spike at t = {d['mean_decision_time']:.1f} on average "
                 f"({d['mean_decision_fraction_of_T']:.0%} of T); the runner-up class fires "
                 f"{_fmt_quantiles(d['runner_up_gap_quantiles'])} steps later (10/50/90 %); "
                 f"{d['undecided']:.1%} of the images undecided (no output fired, or a tie in time and potential)")
    if d["accuracy"] is not None:
        lines.append(f"accuracy {d['accuracy']:.4f}; stopping every layer at the decision (early exit): "
                     f"{d['early_exit_accuracy']:.4f}")
    lines.append(f"early exit keeps the class of {d['early_exit_same_class']:.1%} of the images and needs "
                 f"{t['synaptic_ops_to_decision']:,.0f} syn-ops per inference "
                 f"({t['ops_to_decision_vs_macs']:.1%} of the CNN's MACs)")
    spread = ", ".join(f"{e['layer']} {e['spikes_before_decision']:.0%}" for e in report["layers"]
                       if e["spikes_before_decision"] is not None)
    lines.append(f"share of each layer's spikes that come in time for the decision: {spread}")
    return "\n".join(lines)
