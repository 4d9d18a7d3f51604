"""STiDi-BP: spike time displacement based error backpropagation.

No chain of derivatives crosses a layer. Each weighted layer ``l`` learns from its own
temporal error ``e`` with a local rule, and the error of the layer below comes in one
step from layer ``l``'s error and weights (the spike time displacement):

* output targets (``t_min`` the earliest output spike, ``γ`` the margin): the true
  class aims at ``t_min``, every other output that fired before ``t_min + γ`` aims at
  ``t_min + γ``, the others keep their time; if no output fired the true class aims
  at ``T − γ``. Error ``e_j = (target_j − t_j) / T``. Two options change the reference
  time ``r`` (``t_min`` above): ``targets = "split"`` puts it halfway, so the true class
  and the earliest other output share the missed margin (:func:`output_error`), and a
  decision floor ``t_f > 0`` (``decision_floor``) raises it to ``max(r, t_f)``, so a
  decision taken before ``t_f`` pushes the true class later too;
  ``targets = "softmax"`` replaces the margin by a smooth rule: with ``p = softmax(−t/σ)``
  (``σ`` the ``softmax_temperature``) every output aims at ``t_j + σ (p_j − y_j)``, the
  descent direction of the cross-entropy ``−log p_y`` in spike time, so the true class
  is pulled earlier by ``σ (1 − p_y)`` and every other output pushed later by ``σ p_j``;
* distillation (``distill = λ > 0``, with a trained teacher's output spike times ``s``,
  :mod:`stidi.distill`): every output other than the true class aims at
  ``(1 − λ) target_j + λ (target_y + max(0, s_j − s_y))``, its label target blended with the
  teacher's delay behind the true class added to the true class's own target; with
  ``targets = "softmax"`` the one-hot ``y`` becomes ``(1 − λ) y + λ softmax(−s/σ)``;
  ``distill_scope = "errors"`` blends only images the labels already correct.
  Only the targets change; the rule below is the same;
* a population of ``k`` output neurons per class (``model.population``): the targets above
  are set on the classes' times, each the earliest spike of its group, and a class's error
  goes to its earliest neuron (``population_update = "winner"``), moves every neuron of
  the group toward the class's target (``"all"``), or, for the wrong classes only, pushes every
  neuron that fires before the class's target (``"offenders"``; :func:`population_error`);
* errors are normalised per layer and sample (``error_norm = "l2"``: ``e / ‖e‖₂``) or
  per layer and batch (``"batch_max"``: ``e / max_b ‖e_b‖₂``, so a sample with a small
  error keeps a small share of the step instead of a unit one), one mode for every layer or
  one per weighted layer (e.g. per sample at the readout and per batch below it, so that a
  sample's share of the hidden layers' step follows how much of its output error came down);
* latency derivative ``∂t_j/∂u_j ≈ −t_j/θ_l`` (``latency_derivative = "linear"``:
  the potential rises on a straight line from 0 to ``θ`` at ``t_j``), ``−1``
  (``"unit"``), or ``−1/u_j'(t_j)`` (``"slope"``, ramp PSP only): the inverse of the
  potential's actual slope at the spike, ``u_j'(t_j) = Σ_{i: t_i < t_j} w_ij / T``
  (:func:`potential_slope`), bounded below by ``θ/T`` so that the gain never exceeds
  the linear one's largest value ``T/θ``. In deeper layers, whose inputs arrive late,
  the linear gain hardly tracks the slope's (``benchmarks/latency_derivative.py``);
  with ``a_j`` its magnitude, ``δ_j = e_j a_j``;
* local update ``Δw_ij = −η δ_j ε(t_j − t_i)``: gradient descent on
  ``½ Σ_j (t_j − target_j)²`` under that approximation;
* displacement ``Δt_i = Σ_j δ_j w_ij g(t_j − t_i)``, ``g`` the fired-before mask
  ``[t_i < t_j]`` (``displacement_gate = "mask"``) or ``ε'`` (``"slope"``); the layer
  below has error ``Δt_i / T``; pooling hands each displacement to its window's winner
  (``pool_route = "winner"``); ``"ties"`` hands a delay also to every other neuron of the
  window that fired within ``pool_tie_steps`` steps of the winner, since the pooled time, a
  minimum, moves later only when all of them do, and ``"share"`` gives the winner and those
  neurons an equal share of either sign (:func:`stidi.kernels.vectorised.route_to_ties`).
  In a binary layer ``w`` is the real weight (``binary_displacement = "real"``) or the
  forward pass's ``α · sign(w)`` (``"forward"``).

Neurons that never fired enter the rule at ``t = T``. With the fired-before gate, a
hidden neuron that stayed silent gets no displacement, so a neuron silenced during
training can never learn to fire again. ``revival = ρ > 0`` gives a silent neuron the
part of the ungated displacement that asks it to fire,
``Δt_i = ρ · min(0, Σ_j δ_j w_ij g₀)`` (``W^T δ``; a transposed convolution for conv
layers), so neurons the layer above needs come back; ``ρ = 0`` is the plain rule.
``revival_scope = "late"`` extends the same push to every input that fired too late for
some of the neurons it feeds: ``Δt_i = Δt_i^gated + ρ · min(0, Σ_j δ_j w_ij [t_i ≥ t_j])``,
the closed part of the gate (for a silent input that is all of it, so "late" includes
"silent"); with the mask gate it is ``W^T δ`` less the gated displacement.
A neuron that training-time dropout silenced (:mod:`stidi.dropout`) gets no displacement,
revival's included. Update directions are averaged
over the batch; a convolution's shared weights sum (``conv_update = "sum"``) or average
(``"mean"``) the contributions of all positions.

The batch sum is exact (fixed point, :mod:`stidi.kernels.fixed_point`): the direction of a
batch is the same to the bit however the batch is split over threads or processes, so a
data-parallel run applies exactly the update of one process (:mod:`stidi.distributed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from . import kernels
from .kernels import event, fixed_point
from .kernels import vectorised as engine
from .kernels.psp import psp_scale
from .layers import Conv, Pool
from .network import Network, Trace, per_layer

if TYPE_CHECKING:
    from .auxiliary import AuxiliaryReadouts


@dataclass(frozen=True)
class RuleOptions:
    """The options of the learning rule (see the module docstring)."""

    gamma: float = 5.0
    latency_derivative: str = "linear"
    displacement_gate: str = "mask"
    error_norm: str | tuple[str, ...] | list[str] = "l2"
    conv_update: str = "sum"
    revival: float = 0.0
    decision_floor: float = 0.0
    targets: str = "earliest"
    binary_displacement: str = "real"
    softmax_temperature: float = 2.0
    slope_bins: int = 8
    revival_scope: str = "silent"
    distill: float = 0.0
    distill_scope: str = "all"
    population_update: str = "winner"
    pool_route: str = "winner"
    pool_tie_steps: int = 0
    auxiliary_after: tuple[int, ...] | list[int] = ()
    auxiliary_share: float = 0.3


def population_error(t_out: torch.Tensor, class_error: torch.Tensor, labels: torch.Tensor, T: int, mode: str) -> torch.Tensor:
    """Output error of each of the ``k`` neurons per class (``t_out``: ``(B, C·k)``), from the
    classes' errors ``class_error`` (``(B, C)``, :func:`output_error` on the class times
    ``t_c = min_m t_{c·k+m}``).

    ``"winner"``: the class's error goes to its earliest neuron only (the first, on a tie),
    as a pooling layer routes its error: that is ``∂t_c/∂t_n``. ``"all"``: with ``τ_c = t_c + T e_c``
    the class's target, every neuron ``n`` of the true class aims at ``τ_y``, ``e_n = (τ_y − t_n)/T``,
    and every neuron of another class that fires before ``τ_c`` is pushed to it,
    ``e_n = max(0, τ_c − t_n)/T`` (silent neurons read as ``T``), so no neuron of a wrong class
    is ever asked to fire earlier. ``"offenders"``: the true class's error goes to its earliest
    neuron, as with ``"winner"``, and every neuron of another class that fires before ``τ_c`` is
    pushed to it, as with ``"all"``. A sample whose classes' errors are all zero (classified with
    its margin) keeps a zero error in every mode, as with one neuron per class.
    """
    B, C = class_error.shape
    k = t_out.shape[1] // C
    t = torch.where(torch.isfinite(t_out), t_out, torch.full_like(t_out, T)).reshape(B, C, k)
    winner = torch.zeros_like(t)
    winner.scatter_(2, t.argmin(dim=2, keepdim=True), class_error.unsqueeze(2))
    if mode == "winner":
        return winner.reshape(B, C * k)
    target = (t.min(dim=2).values + T * class_error).unsqueeze(2)
    error = (target - t) / T
    wrong = ~F.one_hot(labels, C).bool().unsqueeze(2)
    error = torch.where(wrong, error.clamp_min(0), error if mode == "all" else winner)
    learns = (class_error != 0).any(dim=1).view(B, 1, 1)
    return torch.where(learns, error, torch.zeros_like(error)).reshape(B, C * k)


def output_error(t_out: torch.Tensor, labels: torch.Tensor, T: int, gamma: float, forced_firing: bool,
                 floor: float = 0.0, targets: str = "earliest", temperature: float = 2.0,
                 teacher: torch.Tensor | None = None, distill: float = 0.0, distill_scope: str = "all") -> torch.Tensor:
    """Temporal error ``(target − t) / T`` of the output layer (unnormalised).

    The true class aims at a reference time ``r`` and every other output that fires
    before ``r + γ`` aims at ``r + γ``. ``targets = "earliest"``: ``r = t_min``, the
    earliest output spike. ``"split"``: with ``v = t_true + γ − t_other`` the margin the
    true class misses (``t_other`` the earliest other output), ``r = t_true − v/2`` when
    ``v > 0`` (else ``t_true``): the true class and the earliest other output move by the
    same amount, instead of the true class all the way to ``t_min``. Then ``r`` is raised
    to ``floor`` if it is earlier. If no output fired the true class aims at ``T − γ``.

    ``"softmax"`` (``γ`` and ``floor`` unused): with ``p = softmax(−t/σ)``, ``σ`` the
    ``temperature`` in steps and silent outputs at ``T``, output ``j`` aims at
    ``t_j + σ (p_j − y_j)``: ``σ² ∂/∂t_j`` of ``−log p_y`` with the sign of descent.

    ``teacher`` (the same shape as ``t_out``: a teacher network's output spike times for
    these images, ``inf`` for silent outputs, read as ``T``) with ``distill = λ > 0``
    blends in the teacher's view: each output ``j`` other than the true class ``y`` aims at
    ``(1 − λ) target_j + λ min(T, target_y + max(0, s_j − s_y))``, the teacher's delay of
    ``j`` behind the true class (``s`` the teacher's times), counted from the true class's own
    target. A teacher that ranks ``j`` before the true class asks for no delay, never for
    ``j`` first. With ``"softmax"`` the one-hot ``y`` becomes ``(1 − λ) y + λ softmax(−s/σ)``
    (the soft labels of distillation). ``λ = 0`` or no teacher: the targets above.
    ``distill_scope = "errors"`` blends only the images whose label targets already ask for a
    change (some output off its label target), so an image classified with its margin keeps a
    zero error; ``"all"`` blends every image.
    """
    fired = torch.isfinite(t_out)
    t = torch.where(fired, t_out, torch.full_like(t_out, T))
    soft = None if teacher is None or distill == 0 else torch.where(torch.isfinite(teacher), teacher, torch.full_like(t, T))
    if targets == "softmax":
        p = torch.softmax(-t / temperature, dim=1)
        y = F.one_hot(labels, t.shape[1]).to(p.dtype)
        if soft is not None:
            y = (1 - distill) * y + distill * torch.softmax(-soft / temperature, dim=1)
        return temperature * (p - y) / T
    t_read = t if forced_firing else t_out
    any_fired = fired.any(dim=1)
    rows = torch.arange(t.shape[0])
    if targets == "split":
        t_true = t[rows, labels]
        others = t_read.clone()
        others[rows, labels] = float("inf")
        missed = t_true + gamma - others.min(dim=1).values
        ref = torch.where(missed > 0, t_true - missed / 2, t_true)
    else:
        ref = torch.where(fired, t_out, torch.full_like(t_out, float("inf"))).min(dim=1).values
    ref = torch.where(any_fired, ref.clamp_min(floor), torch.zeros_like(ref))
    target = t.clone()
    too_early = (t_read < (ref + gamma).unsqueeze(1)) & any_fired.unsqueeze(1)
    target = torch.where(too_early, (ref + gamma).unsqueeze(1).expand_as(t), target)
    target[rows, labels] = torch.where(any_fired, ref, torch.full_like(ref, T - gamma))
    if soft is not None:
        true_target = target[rows, labels].unsqueeze(1)
        delay = (soft - soft[rows, labels].unsqueeze(1)).clamp_min(0)
        blended = (1 - distill) * target + distill * (true_target + delay).clamp(max=T)
        others = ~F.one_hot(labels, t.shape[1]).bool()
        if distill_scope == "errors":
            others &= (target != t).any(dim=1, keepdim=True)
        target = torch.where(others, blended, target)
    return (target - t) / T


#: ``agree(tensor)``: the element-wise maximum of ``tensor`` over all processes of a
#: data-parallel job (the identity for one process).
Agree = Callable[[torch.Tensor], torch.Tensor]


def _alone(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def normalise(e: torch.Tensor, mode: str, agree: Agree = _alone) -> torch.Tensor:
    """Scale each sample's error to unit L2 norm (``"l2"``), leave it (``"none"``), or
    divide the batch's errors by the largest sample norm of the batch (``"batch_max"``).

    For ``"batch_max"`` the largest norm is that of the global batch: ``agree`` (the
    element-wise maximum over the processes of a data-parallel job) is called once.
    """
    if mode == "none":
        return e
    norm = e.flatten(1).norm(dim=1)
    if mode == "batch_max":
        peak = norm.max().reshape(1).double() if norm.numel() else torch.zeros(1, dtype=torch.float64)
        return e / agree(peak).clamp_min(1e-12).to(e.dtype)
    return e / norm.clamp_min(1e-12).view(-1, *([1] * (e.dim() - 1)))


def latency_gain(t: torch.Tensor, theta: float, mode: str, slope: torch.Tensor | None = None, T: int | None = None) -> torch.Tensor:
    """Magnitude of ``∂t/∂u``: ``t/θ`` (``"linear"``), ``1`` (``"unit"``), or ``1/max(u', θ/T)``
    (``"slope"``, with ``slope`` the potential's slope at ``t`` from :func:`potential_slope`)."""
    if mode == "linear":
        return t / theta
    if mode == "slope":
        return 1.0 / slope.clamp_min(theta / T)
    return torch.ones_like(t)


def potential_slope(x: torch.Tensor, w: torch.Tensor, t_out: torch.Tensor, padding: int, T: int, bins: int,
                    need: torch.Tensor | None = None) -> torch.Tensor:
    """The ramp-PSP potential's slope at each output's spike, ``u_j'(t_j) = Σ_{i: t_i < t_j} w_ij / T``.

    ``0 … T`` is cut into ``bins`` equal bins; a spike in bin ``(e_{k−1}, e_k]`` counts the
    inputs that fired before ``e_k`` (one masked convolution or matrix product per bin that
    holds a spike), so inputs that fired in the spike's own bin but after it count too.
    With ``bins = T`` every bin is one step and the slope is exact: ``u_j(t_j) − u_j(t_j − 1)``;
    on the CPU the event engine then sums each spike's own causal inputs
    (:func:`stidi.kernels.event.causal_weight_sums`, about the cost of the rule's pair loop)
    instead of one masked map per distinct spike step, and only for the outputs marked in
    ``need`` (the others, whose slope the rule does not use, may come back as 0).
    ``x`` and ``t_out`` are a weighted layer's operands as :meth:`Network.layer_operands`
    and the forward pass give them (``t_out`` with silent neurons at ``T``); ``w`` is the
    forward weight. Computed in ``w``'s dtype (the masked sums need no more).
    """
    if bins >= T and kernels.event_usable(x):  # exact: each spike's own causal inputs
        return (event.causal_weight_sums(x, t_out, w, T, padding, need) / T).to(t_out.dtype)
    if w.dim() == 4:
        x = engine.pad_never_firing(x, padding)
        apply = lambda mask: F.conv2d(mask, w)  # noqa: E731
    else:
        apply = lambda mask: mask @ w.t()  # noqa: E731
    edges = torch.linspace(0, T, bins + 1, dtype=torch.float64)[1:].ceil().to(device=t_out.device, dtype=t_out.dtype)
    bin_of = torch.searchsorted(edges, t_out.reshape(-1).contiguous()).clamp_(max=bins - 1)  # first edge ≥ t
    present = torch.unique(bin_of)
    position = torch.full((bins,), -1, dtype=torch.long, device=t_out.device)
    position[present] = torch.arange(present.numel(), device=t_out.device)
    # One masked map per bin that holds a spike, then each neuron picks its bin's.
    sums = torch.stack([apply((x < edges[k]).to(w.dtype)).reshape(-1) for k in present.tolist()])
    return (sums.gather(0, position[bin_of].unsqueeze(0)).reshape(t_out.shape) / T).to(t_out.dtype)


@torch.no_grad()
def update_sums(net: Network, trace: Trace, labels: torch.Tensor, opts: RuleOptions, batch: int | None = None,
                agree: Agree = _alone, teacher: torch.Tensor | None = None,
                auxiliary: "AuxiliaryReadouts | None" = None) -> list[torch.Tensor]:
    """Exact fixed-point sums ``Σ δ ε · scale`` over this batch, one float64 tensor per weighted layer.

    Walks the layers from the top once. For every weighted layer it uses only that
    layer's input and output spike times, its error and its own weights; the error
    handed down is the displacement, never a product of derivatives.

    Every term is rounded to a multiple of its output channel's quantum
    (:mod:`stidi.kernels.fixed_point`), which depends only on ``batch`` (the global batch,
    default ``len(labels)``) and the largest ``|δ|`` of the channel over the global batch
    (``agree`` takes the maximum over the processes). The sums are therefore exact: the
    sums of two shares of a batch add up to the sum of the whole batch to the bit, in any
    order, on any number of threads. :func:`finish_directions` turns them into directions.
    ``teacher``: a teacher's output spike times for these images, for ``opts.distill``
    (:func:`output_error`). ``auxiliary``: training-only readouts on hidden layers
    (:mod:`stidi.auxiliary`), whose displacements are blended into the one from above where they
    attach; their sums follow the network's, in the order of ``auxiliary.nodes``.
    """
    T, B = net.T, labels.shape[0]
    batch = B if batch is None else batch
    sums: list[torch.Tensor | None] = [None] * len(net.weighted)
    norms = per_layer(opts.error_norm, len(net.weighted), "error_norm", str)
    error = readout_error(net, trace.times[-1], labels, opts, norms[-1], agree, teacher)
    extra: list[torch.Tensor] = []
    shift = None  # displacement of the current layer's outputs, from the layer above
    for i in reversed(range(len(net.layers))):
        layer, t_in = net.layers[i], trace.times[i]
        if auxiliary is not None and i + 1 in auxiliary.nodes:
            head_sums, shift = auxiliary.blend(i + 1, trace.times[i + 1], labels, shift, opts, norms[-1], batch, agree)
            shift = _without_dropped(shift, trace, i + 1)
            extra.append(head_sums)
        if isinstance(layer, Pool):
            if opts.pool_route in ("ties", "share"):
                routed = engine.route_to_ties(shift, trace.winners[i], t_in, trace.times[i + 1], layer.kernel,
                                              opts.pool_tie_steps, share=opts.pool_route == "share")
            else:
                routed = engine.route_to_winners(shift, trace.winners[i], t_in.shape)
            shift = _without_dropped(routed, trace, i)
            continue
        k = net.weighted.index(i)
        if shift is not None:
            error = normalise(shift / T, norms[k], agree)
        sums[k], shift = layer_rule(net, i, t_in, trace.times[i + 1], error, opts, batch, agree, need_displacement=i > 0)
        if shift is not None:
            shift = _without_dropped(shift, trace, i)
    return sums + extra[::-1]


def readout_error(net: Network, t_out: torch.Tensor, labels: torch.Tensor, opts: RuleOptions, norm: str,
                  agree: Agree = _alone, teacher: torch.Tensor | None = None) -> torch.Tensor:
    """The output layer's error for output spike times ``t_out``: :func:`output_error` on the classes'
    times (then :func:`population_error` for a population per class), normalised with ``norm``."""
    error = output_error(net.class_times(t_out), labels, net.T, opts.gamma, net.forced_firing, opts.decision_floor,
                         opts.targets, opts.softmax_temperature, teacher, opts.distill, opts.distill_scope)
    if net.population > 1:
        error = population_error(t_out, error, labels, net.T, opts.population_update)
    return normalise(error, norm, agree)


def layer_rule(net: Network, i: int, t_in: torch.Tensor, t_out: torch.Tensor, error: torch.Tensor, opts: RuleOptions,
               batch: int, agree: Agree = _alone, need_displacement: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rule at weighted layer ``i`` of ``net``, from its input and output spike times and its (normalised)
    error: the exact update sums of its weights, and the displacement of its input ``t_in`` (revival's
    included; ``None`` without ``need_displacement``)."""
    T = net.T
    k = net.weighted.index(i)
    w = net.weight_of(i) if opts.binary_displacement == "forward" else net.weights[k]
    theta = net.thresholds[k]
    x, padding = net.layer_operands(i, t_in)
    t_rule = t_out.clamp(max=T)
    slope = None
    if opts.latency_derivative == "slope":
        slope = potential_slope(x, net.weight_of(i), t_rule, padding, T, opts.slope_bins,
                                need=error.reshape(t_rule.shape) != 0)
    delta = error.reshape(t_rule.shape) * latency_gain(t_rule, theta, opts.latency_derivative, slope, T)
    q = fixed_point.batch_quantum(delta, batch, T, net.tau, agree)
    sums, shift = kernels.rule(x, t_rule, delta, w, opts.displacement_gate, T, net.tau, padding,
                               need_displacement=need_displacement, quantum=q)
    if shift is None:
        return sums, None
    if opts.revival > 0:
        shift = _revive(shift, x, delta, w, padding, opts.displacement_gate, T, net.tau, opts.revival, opts.revival_scope)
    return sums, net.input_displacement(i, shift, t_in.shape)


def _without_dropped(shift: torch.Tensor, trace: Trace, i: int) -> torch.Tensor:
    """The displacement of ``trace.times[i]`` with the neurons dropout silenced set to 0 (:mod:`stidi.dropout`)."""
    dropped = trace.dropped.get(i)
    return shift if dropped is None else shift.masked_fill(dropped, 0.0)


def idle_sums(net: Network, opts: RuleOptions, agree: Agree = _alone) -> list[torch.Tensor]:
    """The sums of an empty share (zeros), taking part in every ``agree`` that :func:`update_sums` makes."""
    norms = per_layer(opts.error_norm, len(net.weighted), "error_norm", str)
    for k in reversed(range(len(net.weighted))):
        normalise(torch.zeros(0, 1), norms[k], agree)  # the error scale of an empty share, where one is agreed
        agree(torch.zeros(net.weights[k].shape[0], dtype=torch.float64))
    return [torch.zeros(w.shape, dtype=torch.float64) for w in net.weights]


@torch.no_grad()
def finish_directions(net: Network, sums: list[torch.Tensor], opts: RuleOptions, batch: int) -> list[torch.Tensor]:
    """Batch-mean directions ``G_l`` from the exact sums of a batch of ``batch`` images: apply ``w ← w − η G``.

    In float64 the sum is divided by the PSP scale (``τ``, ``T`` for the ramp), by the
    number of positions for ``conv_update = "mean"`` and by ``batch``, then rounded once
    to the weights' dtype — the same arithmetic whoever computed the sums.
    """
    scale = psp_scale(net.tau, net.T)
    directions = []
    for k, i in enumerate(net.weighted):
        G = sums[k].double() / scale
        if isinstance(net.layers[i], Conv) and opts.conv_update == "mean":
            G = G / (net.shapes[i + 1][-1] * net.shapes[i + 1][-2])
        directions.append((G / batch).to(net.weights[k].dtype))
    return directions


def update_directions(net: Network, trace: Trace, labels: torch.Tensor, opts: RuleOptions) -> list[torch.Tensor]:
    """STiDi-BP update directions ``G_l`` (one per weighted layer) of one batch: apply ``w ← w − η G``.

    :func:`update_sums` then :func:`finish_directions`; the result depends only on the
    batch's images, not on how they were split or on the number of threads.
    """
    return finish_directions(net, update_sums(net, trace, labels, opts), opts, labels.shape[0])


def _revive(shift: torch.Tensor, x: torch.Tensor, delta: torch.Tensor, w: torch.Tensor, padding: int,
            gate: str, T: int, tau: float, strength: float, scope: str = "silent") -> torch.Tensor:
    """Displacement of inputs the gate shut out, only ever "fire earlier".

    ``scope = "silent"``: a silent input gets ``Δt_i = ρ · min(0, Σ_j δ_j w_ij g₀)``, ``g₀``
    the gate's value on a rising PSP (1 for the mask; ``1/τ``, or ``1/T`` for the ramp, for
    the slope gate); inputs that fired keep their gated displacement.
    ``scope = "late"`` (mask gate only): every input adds ``ρ · min(0, Σ_j δ_j w_ij [t_i ≥ t_j])``,
    the ungated ``W^T δ`` less the gated displacement, to its gated one; for a silent input
    the gated part is zero, so this is the silent case's push.
    """
    g0 = 1.0 if gate == "mask" else 1.0 / psp_scale(tau, T)
    if w.dim() == 2:
        open_shift = delta.reshape(delta.shape[0], -1) @ w
    else:
        open_shift = F.conv_transpose2d(delta, w, padding=padding)
    open_shift = open_shift.reshape(x.shape)
    gated = shift.reshape(x.shape)
    if scope == "late":
        if gate != "mask":
            raise ValueError("revival_scope = 'late' needs displacement_gate = 'mask'")
        return gated + (strength * (open_shift - gated)).clamp(max=0.0)
    silent = ~torch.isfinite(x) | (x >= T)
    revive = (strength * g0 * open_shift).clamp(max=0.0)
    return torch.where(silent, revive, gated)
