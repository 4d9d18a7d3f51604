"""Batched PyTorch spike-time engine.

Forward pass. The potential of every neuron is ``u(t) = (W ⋆ ε(t − t_in))``, a linear
map (dense or convolution) of the PSP image at step ``t``. The engine evaluates it for a
block of consecutive steps at once (the steps are stacked into the batch axis, so one
large convolution serves ``K`` steps), records the first step where ``u ≥ θ`` and stops
as soon as every neuron has fired. Cost: at most ``T + 1`` linear maps per layer.

Learning rule. Weight updates and displacements need, for every synapse of every
output neuron, the pair ``(t_j, t_i)``. The engine gathers each output neuron's
receptive field with ``unfold`` (the identity for dense layers), so one code path
computes, for a block of samples,

* ``G[j, r] = Σ_{b,l} δ_bjl ε(t_bjl − t_brl)``          (update direction)
* ``D[b, r, l] = Σ_j δ_bjl w_jr g(t_bjl − t_brl)``        (displacement, then folded)

where ``l`` runs over output positions and ``r`` over the receptive field.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .psp import psp, psp_slope

#: Elements per temporary block; bounds peak memory of every function here (~256 MB).
BLOCK_ELEMENTS = 1 << 26


def pad_never_firing(t_in: torch.Tensor, padding: int) -> torch.Tensor:
    """Pad the spatial axes of ``(B, C, H, W)`` with never-firing (``inf``) neurons."""
    if padding == 0:
        return t_in
    return F.pad(t_in, (padding,) * 4, value=float("inf"))


def _linear_map(weight: torch.Tensor):
    """The map ``x ↦ W ⋆ x`` for a dense ``(n_out, n_in)`` or conv ``(c_out, c_in, k, k)`` weight."""
    if weight.dim() == 2:
        return lambda x: x @ weight.t()
    return lambda x: F.conv2d(x, weight)


def scan_potential(
    t_in: torch.Tensor,
    weight: torch.Tensor,
    theta: float,
    T: int,
    tau: float,
    padding: int = 0,
    track_max: bool = False,
    stride: int = 1,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Spike times of a dense or convolution layer, optionally with each neuron's peak potential.

    Returns ``(t_out, u_max)``: ``t_out`` holds the first step with ``u ≥ θ`` (``inf``
    when none) and ``u_max`` the largest potential over ``0 … T`` (only when
    ``track_max``; then the scan does not stop early). With ``stride = k > 1`` the
    potential is looked at only every ``k`` steps (``k, 2k, …`` and ``T``): a scan ``k``
    times cheaper whose ``t_out`` is late by up to ``k − 1`` steps and whose ``u_max`` can
    miss a peak between the steps looked at.
    """
    x = pad_never_firing(t_in, padding) if weight.dim() == 4 else t_in
    apply = _linear_map(weight)
    B = x.shape[0]
    out_shape = apply(x[:1].new_zeros(x[:1].shape)).shape[1:]
    out_numel = max(1, int(torch.Size(out_shape).numel()))
    steps_per_block = max(1, BLOCK_ELEMENTS // (B * max(out_numel, x[0].numel())))
    t_out = torch.full((B, *out_shape), float("inf"), dtype=x.dtype, device=x.device)
    u_max = torch.full_like(t_out, -float("inf")) if track_max else None
    # u(0) = 0 < θ for every neuron (ε(0) = 0), so the scan starts at t = 1.
    grid = torch.arange(stride, T + 1, stride, dtype=x.dtype, device=x.device)
    if grid.numel() == 0 or grid[-1] != T:
        grid = torch.cat([grid, grid.new_tensor([T])])
    for start in range(0, grid.numel(), steps_per_block):
        steps = grid[start : start + steps_per_block]
        k = steps.numel()
        eps = psp(steps.view(k, *([1] * x.dim())) - x.unsqueeze(0), tau, T)
        u = apply(eps.reshape(k * B, *x.shape[1:])).reshape(k, B, *out_shape)
        # the steps rise, so a neuron keeps the first one where u ≥ θ; one slice at a time is
        # several times faster than an argmax over the stacked steps, and needs no temporary
        for j in range(k):
            t_out = torch.where(torch.isinf(t_out) & (u[j] >= theta), steps[j], t_out)
        if track_max:
            u_max = torch.maximum(u_max, u.amax(0))
        elif not torch.isinf(t_out).any():
            break
    return t_out, u_max


def spike_times(t_in: torch.Tensor, weight: torch.Tensor, theta: float, T: int, tau: float, padding: int = 0) -> torch.Tensor:
    """Spike times of a dense ``(B, n_in)`` or convolution ``(B, C, H, W)`` layer."""
    return scan_potential(t_in, weight, theta, T, tau, padding)[0]


def potential_at(t_in: torch.Tensor, weight: torch.Tensor, t: torch.Tensor, T: int, tau: float) -> torch.Tensor:
    """Potential ``u_j(t_b)`` of a dense layer at one step per sample (``t`` has shape ``(B,)``)."""
    return psp(t.view(-1, 1) - t_in, tau, T) @ weight.t()


def earliest_pool(t_in: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Earliest-spike pooling (``k × k``, stride ``k``); returns times and flat winner indices."""
    neg, winner = F.max_pool2d(-t_in, k, k, return_indices=True)
    return -neg, winner


def route_to_winners(d_out: torch.Tensor, winner: torch.Tensor, in_shape: torch.Size) -> torch.Tensor:
    """Pass each pooled neuron's displacement to its window's winner (zeros elsewhere)."""
    B, C = d_out.shape[:2]
    d_in = d_out.new_zeros(B, C, in_shape[-2] * in_shape[-1])
    d_in.scatter_add_(2, winner.reshape(B, C, -1), d_out.reshape(B, C, -1))
    return d_in.view(B, C, *in_shape[-2:])


def route_to_ties(d_out: torch.Tensor, winner: torch.Tensor, t_in: torch.Tensor, t_pooled: torch.Tensor, k: int,
                  tie_steps: int, share: bool = False) -> torch.Tensor:
    """Like :func:`route_to_winners`, but the displacement also reaches the window's neurons that fired
    within ``tie_steps`` steps of the winner (``t_i ≤ t_pool + tie_steps``, the winner's "ties").

    ``share = False``: a delay (``Δt > 0``) goes, whole, to every tie as well as the winner; an advance
    (``Δt < 0``) to the winner only. The pooled time is ``min_i t_i``: delaying the winner alone leaves
    it where a tie fires, so a delay of the minimum asks each tie for it, while advancing one neuron is
    enough to move the minimum earlier.
    ``share = True``: the winner and its ``n − 1`` ties each take ``Δt / n``, of either sign. With exact
    ties (``tie_steps = 0``) that is the mean of the minimum's subgradients, the one of least norm,
    and neither sign is favoured. A window none of whose neurons fired hands ``Δt`` to its winner.
    """
    routed = route_to_winners(d_out, winner, t_in.shape)
    H, W = t_in.shape[-2:]

    def spread(x: torch.Tensor) -> torch.Tensor:
        x = x.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
        return F.pad(x, (0, W - x.shape[-1], 0, H - x.shape[-2]), value=0.0)

    d_out = d_out.reshape(t_pooled.shape)
    near = torch.isfinite(t_in) & (t_in <= spread(t_pooled) + tie_steps)  # the winner, if it fired, and its ties
    if share:
        count = F.avg_pool2d(near.to(d_out.dtype), k, k) * (k * k)
        return torch.where(near, spread(d_out / count.clamp_min(1)), routed)
    return torch.where(near, spread(d_out.clamp_min(0)) + routed.clamp(max=0), routed)


def _receptive_fields(t_in: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """Input times seen by each output position: ``(B, R, L)``."""
    if weight.dim() == 2:
        return t_in.unsqueeze(-1)
    return F.unfold(pad_never_firing(t_in, padding), weight.shape[-1])


def _pair_blocks(t_in, t_out, delta, weight, padding):
    """Yield blocks of samples with ``(sl, s, delta_block)``, ``s = t_out − t_in`` per pair.

    ``s`` has layout ``(J, R, b, L)`` so that reductions become batched matrix products.
    """
    B = t_in.shape[0]
    cols = _receptive_fields(t_in, weight, padding)          # (B, R, L)
    J = weight.shape[0]
    R, L = cols.shape[1], cols.shape[2]
    t_out = t_out.reshape(B, J, L)
    delta = delta.reshape(B, J, L)
    per_sample = J * R * L
    step = max(1, BLOCK_ELEMENTS // (4 * per_sample))
    for lo in range(0, B, step):
        sl = slice(lo, min(lo + step, B))
        s = t_out[sl].permute(1, 0, 2).unsqueeze(1) - cols[sl].permute(1, 0, 2).unsqueeze(0)
        yield sl, s, delta[sl].permute(1, 0, 2)               # (J, R, b, L), (J, b, L)


def update_direction(
    t_in: torch.Tensor, t_out: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, T: int, tau: float, padding: int = 0
) -> torch.Tensor:
    """``G = Σ_{b, positions} δ_j ε(t_j − t_i)`` with the shape of ``weight``.

    ``t_out`` must be finite (neurons that never fired enter the rule at ``T``).
    """
    J = weight.shape[0]
    G = weight.new_zeros(J, weight[0].numel())
    for _, s, d in _pair_blocks(t_in, t_out, delta, weight, padding):
        eps = psp(s, tau, T).flatten(2)                       # (J, R, bL)
        G += torch.bmm(eps, d.reshape(J, -1, 1)).squeeze(-1)
    return G.view_as(weight)


def update_sum(
    t_in: torch.Tensor, t_out: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, T: int, tau: float,
    quantum: torch.Tensor, padding: int = 0,
) -> torch.Tensor:
    """The exact fixed-point sum ``Σ_{b, positions} δ_j ε(t_j − t_i) · scale`` (float64, the shape of ``weight``).

    Every term is rounded to a multiple of ``quantum[j]`` (``(J,)`` powers of two, see
    :mod:`stidi.kernels.fixed_point`) before it is added, so the sum is exact and equals
    :func:`stidi.kernels.event.rule` with the same quanta to the bit. Slower than
    :func:`update_direction` (float64, no matrix product); training uses it so that the
    result does not depend on the batch's split.
    """
    J = weight.shape[0]
    q = quantum.to(device=t_in.device, dtype=torch.float64)
    iq = (1.0 / q).view(J, 1, 1)
    S = torch.zeros(J, weight[0].numel(), dtype=torch.float64, device=t_in.device)
    for _, s, d in _pair_blocks(t_in.double(), t_out.double(), delta.double(), weight, padding):
        s = s.clamp_(min=0.0) if math.isinf(tau) else s.clamp_(0.0, tau)  # ε · scale, (J, R, b, L)
        S += s.mul_((d * iq).unsqueeze(1)).round_().sum((2, 3))  # integers below 2^53: exact in any order
    return S.mul_(q.view(J, 1)).view(weight.shape)


def displacement(
    t_in: torch.Tensor,
    t_out: torch.Tensor,
    delta: torch.Tensor,
    weight: torch.Tensor,
    gate: str,
    T: int,
    tau: float,
    padding: int = 0,
) -> torch.Tensor:
    """``Δt_i = Σ_j δ_j w_ji g(t_j − t_i)`` with the shape of ``t_in``.

    ``gate`` is ``"mask"`` (``g = [t_i < t_j]``) or ``"slope"`` (``g = ε'``). For a
    convolution the sum over output positions is a transposed convolution (``fold``).
    """
    J = weight.shape[0]
    w = weight.reshape(J, -1, 1, 1)
    cols_shape = _receptive_fields(t_in[:1], weight, padding).shape
    D = t_in.new_zeros(t_in.shape[0], cols_shape[1], cols_shape[2])
    for sl, s, d in _pair_blocks(t_in, t_out, delta, weight, padding):
        g = (s > 0).to(s.dtype) if gate == "mask" else psp_slope(s, tau, T).to(s.dtype)
        D[sl] = (g * w * d.unsqueeze(1)).sum(0).permute(1, 0, 2)  # (b, R, L)
    if weight.dim() == 2:
        return D.squeeze(-1)
    H, W = t_in.shape[-2] + 2 * padding, t_in.shape[-1] + 2 * padding
    folded = F.fold(D, (H, W), weight.shape[-1])
    if padding:
        folded = folded[..., padding:-padding, padding:-padding]
    return folded
