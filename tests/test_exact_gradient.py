"""With softmax targets, the exact latency derivative and no error normalisation, the rule's
directions are the gradient of the cross-entropy through the spike times.

The spike times of a ramp-PSP neuron are whole steps, so their derivatives are those of the
crossing time with its causal set fixed, taken at the spike: ``∂t_j/∂w_ij = −(t_j − t_i)/S_j`` and
``∂t_j/∂t_i = w_ij/S_j`` for the inputs that fired before ``t_j``, ``S_j = Σ_{i: t_i < t_j} w_ij``
(``T`` times the potential's slope). Autograd through spike times that carry those derivatives,
and through the windows' minima for pooling, gives the reference gradient; the rule computes its
directions layer by layer from displacements and never calls autograd. Both bound the latency gain
(``S_j ≥ θ``, docs/algorithm.md), and a silent output, which sits at ``T`` whatever its weights, has no
gradient but is still moved by the rule, so every output fires here. The sweep
``benchmarks/sweeps/fashion-exact-ce.toml`` relies on this to train the spiking network by exact
gradients of the cross-entropy, for comparison with STiDi-BP.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from stidi.layers import Conv, Pool
from stidi.network import Network, Trace
from stidi.stidi_bp import RuleOptions, update_directions

SIGMA = 2.0


def exact_options(T: int) -> RuleOptions:
    return RuleOptions(targets="softmax", softmax_temperature=SIGMA, latency_derivative="slope", slope_bins=T, error_norm="none")


def with_exact_derivatives(t_in: torch.Tensor, w: torch.Tensor, t_out: torch.Tensor, T: int, theta: float) -> torch.Tensor:
    """``t_out`` (the forward pass's spike times, silent neurons at ``T``) carrying the derivatives of
    the crossing time with respect to ``w`` (``(J, I)``) and ``t_in`` (``(B, I)``), per output ``(B, J)``,
    with the rule's bound on the latency gain: ``S_j`` is taken as at least ``θ`` (``u' ≥ θ/T``)."""
    fired = t_out <= T
    at = torch.where(fired, t_out, torch.full_like(t_out, float(T))).detach()
    causal = (t_in.unsqueeze(1) < at.unsqueeze(2)).to(w.dtype)  # (B, J, I): inputs before the spike
    slope = (causal * w).sum(-1).detach().clamp(min=theta)  # S_j, bounded as the rule bounds it
    pull = (causal * w * (t_in.unsqueeze(1) - at.unsqueeze(2))).sum(-1)  # its derivatives are S_j times the time's
    moved = at + (pull - pull.detach()) / slope
    return torch.where(fired, moved, at)


def reference_gradients(net: Network, t_in: torch.Tensor, trace: Trace, labels: torch.Tensor) -> list[torch.Tensor]:
    """Gradient of Σ cross-entropy(softmax(−t_out/σ)) over the batch with respect to every weight, by autograd."""
    T = net.T
    weights = [w.detach().double().clone().requires_grad_(True) for w in net.weights]
    x, times, winners = t_in.double().clamp(max=T), trace.times, trace.winners
    for i, layer in enumerate(net.layers):
        t_out = times[i + 1].double().clamp(max=T + 1)  # silent: beyond T
        if isinstance(layer, Pool):  # a window's minimum is its winner's time (the forward pass's winner on a tie)
            B, C = x.shape[:2]
            x = x.reshape(B, C, -1).gather(2, winners[i].reshape(B, C, -1)).reshape(t_out.shape)
            continue
        w, theta = weights[net.weighted.index(i)], net.threshold_of(i)
        if isinstance(layer, Conv):
            B = x.shape[0]
            padded = F.pad(x, [layer.padding] * 4, value=float(T))  # padding never fires before a spike
            cols = F.unfold(padded, layer.kernel).transpose(1, 2)  # (B, L, C·k·k)
            L = cols.shape[1]
            flat = with_exact_derivatives(cols.reshape(B * L, -1), w.reshape(w.shape[0], -1),
                                          t_out.permute(0, 2, 3, 1).reshape(B * L, -1), T, theta)
            x = flat.reshape(B, t_out.shape[2], t_out.shape[3], -1).permute(0, 3, 1, 2)
        else:
            x = with_exact_derivatives(x.reshape(x.shape[0], -1), w, t_out, T, theta)
    F.cross_entropy(-x / SIGMA, labels, reduction="sum").backward()
    return [w.grad for w in weights]


def _net(spec: str, input_shape: tuple[int, ...], seed: int, T: int) -> tuple[Network, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    net = Network(spec, input_shape=input_shape, T=T, tau=math.inf, thresholds=1.0)
    t_in = torch.randint(0, T // 2, (8, *input_shape), generator=g).float()
    net.initialise(t_in, 0.6, g)
    with torch.no_grad():  # every output fires: a silent output sits at T whatever its weights, where the rule still moves it
        net.weights[-1].abs_().mul_(2.0)
    return net, t_in, torch.randint(0, net.num_classes, (8,), generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("spec,input_shape", [("20-12-4", (20,)), ("3C3p1-P2-4C3-4", (1, 8, 8))])
def test_exact_options_give_the_cross_entropys_gradient_through_spike_times(seed, spec, input_shape):
    T = 64
    net, t_in, labels = _net(spec, input_shape, seed, T)
    trace = net.trace(t_in)
    assert (trace.times[-1] <= T).all(), "every output fires"
    directions = update_directions(net, trace, labels, exact_options(T))
    reference = reference_gradients(net, t_in, trace, labels)
    # the rule's error is σ²/T times −∂L/∂t at the readout and its directions are averaged over the batch
    scale = SIGMA ** 2 / (T * len(labels))
    assert any(d.abs().max() > 0 for d in directions)
    for k, (d, r) in enumerate(zip(directions, reference)):
        # the rule's sums are exact fixed-point sums of terms rounded to a quantum far below the largest term
        torch.testing.assert_close(d.double(), scale * r, rtol=1e-5, atol=1e-6 * float((scale * r).abs().max()),
                                   msg=lambda m: f"weighted layer {k}: {m}")


def test_the_rules_normalisation_departs_from_the_gradient():
    """The per-layer L2 normalisation (the recipe's) gives other directions: the test above can fail."""
    T = 64
    net, t_in, labels = _net("20-12-4", (20,), 0, T)
    trace = net.trace(t_in)
    normalised = update_directions(net, trace, labels, replace(exact_options(T), error_norm="l2"))
    reference = reference_gradients(net, t_in, trace, labels)
    cosine = F.cosine_similarity(normalised[0].double().flatten(), reference[0].flatten(), dim=0)
    assert cosine < 0.999
