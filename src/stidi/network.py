"""A convolutional single-spike network: layers, weights, forward pass and readout.

The network is a thin :class:`torch.nn.Module` around the pure engine functions of
:mod:`stidi.kernels`. Its weights are parameters so that any ``torch.optim``
optimiser can apply the STiDi-BP update directions; autograd is never used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .dropout import DropMasks
from .encoding import encode_images, encoded_shape
from .config import BINARY_SCALES
from .errors import ConfigError
from . import kernels
from .kernels import vectorised as engine
from .layers import Dense, Layer, Pool, parse_spec, shapes


def binarise(w: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``α · sign(w)`` with ``sign(0) = +1``, in ``w``'s dtype: the forward weight of a binary layer."""
    return torch.where(w >= 0, alpha, -alpha).to(w.dtype)


def scale_directions(net: "Network", directions: list[torch.Tensor]) -> list[torch.Tensor]:
    """Update directions of the learnt scales ``α_lj`` of ``binary_scale = "channel"``, in the order of
    :meth:`Network.trainables` after the weights.

    The forward weight of such a layer is ``W_ij = α_j · sign(w_ij)``; the rule's direction
    ``d_ij`` for the layer (what it would apply to ``W_ij``, and applies to the real ``w_ij``)
    moves ``α_j`` by the chain rule through ``W``: ``Σ_i sign(w_ij) · d_ij``. The projection is
    local to the layer and needs no further backward pass.
    """
    out = []
    for k in net.scale_layers:
        signs = binarise(net.weights[k], torch.ones((), dtype=torch.float64))  # sign(w), sign(0) = +1
        out.append((signs * directions[k]).flatten(1).sum(1))
    return out


def per_layer(value: Any, count: int, name: str, cast: Callable[[Any], Any] = float) -> list:
    """Broadcast a scalar to ``count`` weighted layers, or check a list has that length (values passed through ``cast``)."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ConfigError(f"{name}: got {len(value)} values for {count} weighted layers; give one per layer or a single value")
        return [cast(v) for v in value]
    return [cast(value)] * count


@dataclass
class Trace:
    """Spike times of every layer for one batch: ``times[0]`` is the input, ``times[l+1]`` the output of layer ``l``.

    ``winners[l]`` holds, for a pooling layer ``l``, the flat index of each window's winner.
    Times are natural firing times (``inf`` for a neuron that never reached threshold).
    ``dropped[l + 1]`` marks the outputs of layer ``l`` that training-time dropout silenced
    (:mod:`stidi.dropout`); the learning rule gives them no displacement.
    """

    times: list[torch.Tensor]
    winners: dict[int, torch.Tensor] = field(default_factory=dict)
    dropped: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class Prediction:
    """Readout of a batch: ``classes`` is ``-1`` where no unique earliest output exists."""

    classes: torch.Tensor
    output_times: torch.Tensor
    decision_time: torch.Tensor


#: The calibration of :meth:`Network.initialise` looks at the potential on about this many steps.
CALIBRATION_STEPS = 256


def calibration_stride(T: int) -> int:
    """Every how many steps :meth:`Network.initialise` looks at the potential: 1 up to
    ``T = CALIBRATION_STEPS``, then ``⌈T / CALIBRATION_STEPS⌉``."""
    return max(1, math.ceil(T / CALIBRATION_STEPS))


class Network(nn.Module):
    """Stack of dense, convolution and earliest-spike pooling layers of non-leaky IF neurons.

    Args:
        spec: layer spec string (see :mod:`stidi.layers`), e.g. ``"32C5-P2-64C5-P2-10"``.
        input_shape: ``(C, H, W)`` of the images (or ``(N,)`` for flat inputs).
        input_polarity: ``"on"`` (one TTFS input per pixel) or ``"on_off"`` (a second input
            per pixel encoding ``1 − x``; the first layer sees ``2C`` channels, see
            :mod:`stidi.encoding`). ``encoded_shape`` is the shape the first layer consumes.
        T: last time step of the window ``0 … T``.
        tau: PSP rise time (``inf`` for the pure ramp).
        thresholds: one firing threshold ``θ_l`` per weighted layer, or one for all.
        forced_firing: an output neuron that never reached threshold counts as firing at ``T``.
        binary: per weighted layer (or one flag for all): the forward pass uses
            ``α_l · sign(w)`` while the learning rule updates the real weights ``w``.
        binary_scale: ``"mean_abs"`` — ``α_l = mean |w_l|``, following the real weights
            as they learn (as XNOR-Net and BS4NN-style scaled binary layers do); or
            ``"fixed"`` — ``α_l`` is set at initialisation and never changes, which is the
            same network as ``α = 1`` with the threshold divided by ``α_l``; or
            ``"channel"`` — one ``α_lj`` per output neuron (per output channel of a
            convolution), set at initialisation to the layer's ``α_l`` and then learnt by
            the rule: the forward weight is ``W_ij = α_lj · sign(w_ij)``, so the update of
            ``α_lj`` is the rule's update of ``W_ij`` projected on the signs,
            ``Σ_i sign(w_ij) ΔW_ij`` (:func:`scale_directions`). It gives each binary
            neuron the gain that a real-valued one learns through its weight magnitudes,
            which is the same as a learnt threshold ``θ_l / α_lj`` per neuron.
        bias: every weighted layer also gets an input spike at ``t = 0`` with a trainable
            weight per neuron (per output channel for a convolution), see :meth:`layer_operands`.
        population: output neurons per class. The last layer's ``C·k`` units form ``C`` groups
            of ``k`` consecutive neurons (class ``c``: units ``c·k … c·k + k − 1``); a class's
            output time is the earliest spike of its group, ``t_c = min_m t_{c·k+m}``
            (:meth:`class_times`), so a class can answer to any of ``k`` learnt templates.
            ``1``: one neuron per class.
    """

    def __init__(
        self,
        spec: str,
        input_shape: tuple[int, ...] = (1, 28, 28),
        T: int = 256,
        tau: float = math.inf,
        thresholds: float | list[float] = 1.0,
        forced_firing: bool = True,
        binary: bool | list[bool] = False,
        binary_scale: str = "mean_abs",
        input_power: float = 1.0,
        input_polarity: str = "on",
        bias: bool = False,
        population: int = 1,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.input_shape = tuple(int(s) for s in input_shape)
        self.encoded_shape = encoded_shape(self.input_shape, input_polarity)
        self.input_polarity = input_polarity
        self.layers: list[Layer] = parse_spec(spec, self.encoded_shape, math.prod(self.input_shape))
        self.shapes = shapes(self.layers, self.encoded_shape)
        self.T, self.tau, self.forced_firing = int(T), float(tau), bool(forced_firing)
        self.input_power = float(input_power)
        self.weighted = [i for i, layer in enumerate(self.layers) if not isinstance(layer, Pool)]
        self.thresholds = per_layer(thresholds, len(self.weighted), "threshold")
        if any(th <= 0 for th in self.thresholds):
            raise ConfigError(f"threshold: every value must be > 0, got {self.thresholds}")
        self.bias = bool(bias)
        self.population = int(population)
        if self.population < 1 or self.layers[-1].units % self.population:
            raise ConfigError(f"population = {population}: the last layer's {self.layers[-1].units} outputs must split into "
                              f"groups of that many neurons, one group per class; end the spec with classes × population")
        self.weights = nn.ParameterList(
            nn.Parameter(torch.zeros(self.layers[i].weight_shape(self.operand_shape(i))), requires_grad=False)
            for i in self.weighted
        )
        self.binary = per_layer(binary, len(self.weighted), "binary", bool)
        if self.bias and any(self.binary):
            raise ConfigError("model.bias = true needs real-valued layers: a binary layer would keep only the bias weight's sign; "
                              "set model.binary = false or model.bias = false")
        if binary_scale not in BINARY_SCALES:
            raise ConfigError(f"binary_scale: {binary_scale!r} is not one of {', '.join(map(repr, BINARY_SCALES))}")
        self.binary_scale = binary_scale
        #: ``α_l`` of the ``"fixed"`` scale, and the initial ``α_l`` of the ``"channel"`` scale
        #: (float64 scalars; unused for real layers)
        self.register_buffer("fixed_scales", torch.ones(len(self.weighted), dtype=torch.float64))
        #: the learnt ``α_lj`` of the ``"channel"`` scale, one per output neuron of each binary
        #: layer (empty for real layers and for the other scale options)
        self.channel_scales = nn.ParameterList(
            nn.Parameter(torch.ones(w.shape[0] if self.learns_scale(k) else 0, dtype=w.dtype), requires_grad=False)
            for k, w in enumerate(self.weights)
        )

    @property
    def num_classes(self) -> int:
        return self.layers[-1].units // self.population

    def class_times(self, t_out: torch.Tensor) -> torch.Tensor:
        """Output time of each class, ``(B, classes)``: the earliest spike of its group of
        ``population`` output neurons (``inf`` when the whole group is silent); ``t_out`` itself
        for one neuron per class."""
        if self.population == 1:
            return t_out
        return t_out.reshape(t_out.shape[0], self.num_classes, self.population).min(dim=2).values

    def weight_of(self, layer_index: int) -> torch.Tensor:
        """Weight used in the forward pass of weighted layer ``layer_index`` (``α · sign(w)`` if binary)."""
        k = self.weighted.index(layer_index)
        w = self.weights[k]
        return binarise(w, self.scale(k)) if self.binary[k] else w

    def learns_scale(self, k: int) -> bool:
        """Whether weighted layer ``k`` is binary with a learnt ``α`` per output neuron (``binary_scale = "channel"``)."""
        return self.binary[k] and self.binary_scale == "channel"

    def scale(self, k: int) -> torch.Tensor:
        """``α`` of weighted layer ``k`` in float64: ``mean |w|`` or the fixed value (scalars), or
        the learnt ``α_j`` shaped ``(units, 1, …)`` to broadcast over the layer's weights.

        The mean is taken in float64, so a layer whose weights all have the same
        magnitude (a binary model loaded from its packed signs) gets exactly that value.
        """
        if self.binary_scale == "channel":
            w = self.weights[k]
            return self.channel_scales[k].detach().double().reshape(-1, *[1] * (w.dim() - 1))
        if self.binary_scale == "fixed":
            return self.fixed_scales[k]
        return self.weights[k].detach().double().abs().mean()

    @property
    def scale_layers(self) -> list[int]:
        """Weighted layers (0-based) whose scales are learnt (:meth:`learns_scale`), in order."""
        return [k for k in range(len(self.weights)) if self.learns_scale(k)]

    def trainables(self) -> list[torch.Tensor]:
        """Every tensor the optimiser moves: the weights, then the learnt scales of :attr:`scale_layers`."""
        return [*self.weights, *(self.channel_scales[k] for k in self.scale_layers)]

    def threshold_of(self, layer_index: int) -> float:
        return self.thresholds[self.weighted.index(layer_index)]

    def operand_shape(self, index: int) -> tuple[int, ...]:
        """Shape of one sample's input to weighted layer ``index`` as its weights see it: the layer's
        input shape, or with ``bias`` one more input (dense) or one more channel over the padded
        frame (convolution) for the bias spike."""
        shape, layer = self.shapes[index], self.layers[index]
        if not self.bias:
            return shape
        if isinstance(layer, Dense):
            return (math.prod(shape) + 1,)
        return (shape[0] + 1, shape[1] + 2 * layer.padding, shape[2] + 2 * layer.padding)

    def layer_operands(self, index: int, t_in: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Input times as weighted layer ``index`` consumes them (flattened for a dense layer) and its padding.

        With ``bias`` every weighted layer also sees a bias input that fires at ``t = 0``: one more
        input of a dense layer, or one more channel of a convolution, which then comes already
        padded (never-firing border, a bias channel that fires everywhere, so every position sees
        the same bias ``Σ_k w[co, bias, k]``) with padding 0. Its weight adds ``b_j ε(t)`` to the
        potential, a drive (``b > 0``) or leak (``b < 0``) that the rule learns like any weight.
        """
        layer = self.layers[index]
        if isinstance(layer, Dense):
            x = t_in.flatten(1)
            return (torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1) if self.bias else x), 0
        if not self.bias:
            return t_in, layer.padding
        x = engine.pad_never_firing(t_in, layer.padding)
        return torch.cat([x, x.new_zeros(x.shape[0], 1, *x.shape[2:])], dim=1), 0

    def input_displacement(self, index: int, shift: torch.Tensor, in_shape: torch.Size) -> torch.Tensor:
        """The rule's displacement of weighted layer ``index``'s operands (:meth:`layer_operands`)
        restricted to its real inputs, shaped ``in_shape``: the bias input and the padded border dropped."""
        if not self.bias:
            return shift.reshape(in_shape)
        if isinstance(self.layers[index], Dense):
            return shift.reshape(shift.shape[0], -1)[:, :-1].reshape(in_shape)
        p = self.layers[index].padding
        shift = shift[:, :-1]
        return (shift[..., p:-p, p:-p] if p else shift).reshape(in_shape)

    def layer_forward(self, index: int, t_in: torch.Tensor, weight: torch.Tensor | None = None,
                      horizon: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Output times of layer ``index`` (and pooling winners, for a pooling layer).

        ``horizon`` (``(B,)`` steps) simulates each sample only up to its step: spikes at or
        before it are exact, later ones ``inf`` (:mod:`stidi.inference`; event engine only).
        Pooling, a minimum, needs no horizon: it keeps that property.
        """
        layer = self.layers[index]
        if isinstance(layer, Pool):
            return kernels.earliest_pool(t_in, layer.kernel)
        w = self.weight_of(index) if weight is None else weight
        x, padding = self.layer_operands(index, t_in)
        return kernels.spike_times(x, w, self.threshold_of(index), self.T, self.tau, padding, horizon=horizon), None

    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Input spike times ``(N, *encoded_shape)`` of a batch of images (``uint8`` or ``[0, 1]``), with the
        network's window ``T``, contrast curve ``input_power`` and ``input_polarity`` (:mod:`stidi.encoding`)."""
        return encode_images(images, self.input_shape, self.T, self.input_power, self.input_polarity)

    @torch.no_grad()
    def trace(self, t_in: torch.Tensor, drop: DropMasks | None = None) -> Trace:
        """Spike times of every layer for input spike times ``(B, *encoded_shape)``.

        ``drop`` (training only, :func:`stidi.dropout.dropout_masks`): ``{layer index: (mask, p)}``;
        the masked outputs of that layer are silenced (``inf``) and the next weighted layer's
        forward weights multiplied by ``1/(1 − p)``.
        """
        tr = Trace([t_in])
        gain = 1.0  # inverted dropout's factor for the next weighted layer
        for i in range(len(self.layers)):
            weight = None
            if gain != 1.0 and i in self.weighted:
                forward = self.weight_of(i)
                weight = forward * gain
                if self.bias:  # the bias input is never dropped: its weight stays
                    weight[:, -1] = forward[:, -1]
                gain = 1.0
            t_out, winners = self.layer_forward(i, tr.times[-1], weight=weight)
            if winners is not None:
                tr.winners[i] = winners
            if drop and i in drop:
                mask, p = drop[i]
                t_out = t_out.masked_fill(mask, math.inf)
                tr.dropped[i + 1] = mask
                gain = 1.0 / (1.0 - p)
            tr.times.append(t_out)
        return tr

    @torch.no_grad()
    def readout(self, trace: Trace) -> Prediction:
        """Earliest output spike wins; ties go to the higher potential at that step.

        A tie that the potential does not break, or (without forced firing) a sample
        whose outputs all stayed silent, gets class ``-1`` and is never counted correct.
        With a ``population`` of output neurons per class, neurons of one class never tie
        with each other: a class's time is its group's earliest spike and its potential
        the highest among its neurons that fired then. ``output_times`` are the classes' times.
        """
        t_out = trace.times[-1]
        t_read = t_out.clamp(max=self.T) if self.forced_firing else t_out
        t_min = t_read.min(dim=1).values
        decided = torch.isfinite(t_min)
        last = len(self.layers) - 1
        u = engine.potential_at(
            self.layer_operands(last, trace.times[-2])[0], self.weight_of(last), torch.where(decided, t_min, 0.0), self.T, self.tau
        )
        u = torch.where(t_read == t_min.unsqueeze(1), u, torch.full_like(u, -math.inf))
        if self.population > 1:
            u = u.reshape(len(u), self.num_classes, self.population).max(dim=2).values
            t_out = self.class_times(t_out)
        best = u.max(dim=1, keepdim=True).values
        unique = ((u == best) & torch.isfinite(u)).sum(dim=1) == 1
        classes = torch.where(decided & unique, u.argmax(dim=1), torch.full_like(t_min, -1, dtype=torch.long))
        return Prediction(classes, t_out, t_min)

    @torch.no_grad()
    def predict(self, t_in: torch.Tensor, early_exit: bool = False) -> Prediction:
        """Classes, output spike times and decision time for input spike times.

        With ``early_exit`` each sample is simulated only until its decision is known
        (:func:`stidi.inference.predict_early`): the same classes and decision times, but
        output spikes after the decision may be reported as ``inf``.
        """
        if early_exit:
            from .inference import predict_early

            return predict_early(self, t_in)
        return self.readout(self.trace(t_in))

    @torch.no_grad()
    def initialise(self, t_in: torch.Tensor, firing_fraction: float | list[float], generator: torch.Generator,
                   patterns: dict[int, torch.Tensor] | None = None) -> list[float]:
        """Random weights scaled so that a given fraction of each layer fires before ``T``.

        Weights are drawn from ``N(0, 1)``, or, for a weighted layer ``k`` in ``patterns``,
        taken from ``patterns[k]`` (weights of another model, used up to a factor: only
        their pattern counts; the draw is still made, so the other layers get the same
        random pattern as without). The potential is linear in the weights, so
        scaling them by ``a`` scales every neuron's peak potential by ``a``. Layer by
        layer, ``a = θ / q`` with ``q`` the ``(1 − f)``-quantile of the positive peak
        potentials on the calibration batch ``t_in`` makes a fraction ``f`` of the
        neurons that receive any net excitation fire. (Neurons that see no input spike,
        such as convolution positions over a blank background, are left out: counting
        them would ask the few driven neurons for a huge gain and make them all fire at
        once.) The peak is looked for at no more than about ``CALIBRATION_STEPS`` evenly
        spaced steps (:func:`calibration_stride`), so calibrating a long window costs no
        more than ``T = 256``. Returns the fraction of all neurons that fires in each
        weighted layer.
        """
        fractions = per_layer(firing_fraction, len(self.weighted), "init_firing_fraction")
        if any(not 0 < f <= 1 for f in fractions):
            raise ConfigError(f"init_firing_fraction: values must be in (0, 1], got {fractions}")
        reached = []
        t = t_in
        for i, layer in enumerate(self.layers):
            if i in self.weighted:
                k = self.weighted.index(i)
                w = torch.randn(self.weights[k].shape, generator=generator, dtype=self.weights[k].dtype)
                if patterns and k in patterns:
                    w = patterns[k].to(w.dtype).clone()
                if self.bias:  # the bias weights start at 0
                    w[:, -1] = 0.0
                forward_w = binarise(w, torch.tensor(1.0, dtype=torch.float64)) if self.binary[k] else w
                x, padding = self.layer_operands(i, t)
                _, u_max = engine.scan_potential(x, forward_w, self.thresholds[k], self.T, self.tau, padding, track_max=True,
                                                 stride=calibration_stride(self.T))
                driven = u_max[u_max > 0].double()[: 1 << 24]
                q = torch.quantile(driven, 1.0 - fractions[k]).item() if driven.numel() else 0.0
                scale = self.thresholds[k] / q if q > 0 else 1.0 / math.sqrt(w[0].numel())
                if self.binary[k]:
                    # real weights with mean |w| = scale, so α·sign(w) is the calibrated binary layer
                    self.weights[k].copy_(w * (scale / w.abs().mean()))
                    self.fixed_scales[k] = self.weights[k].double().abs().mean()
                    self.channel_scales[k].fill_(float(self.fixed_scales[k]))
                else:
                    self.weights[k].copy_(w * scale)
            t, _ = self.layer_forward(i, t)
            if i in self.weighted:
                reached.append(torch.isfinite(t).float().mean().item())
        return reached
