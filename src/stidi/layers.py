"""Layer descriptions and the compact network spec string.

A spec such as ``32C5-P2-64C5-P2-10`` lists the layers after the input:

* ``NC K`` (e.g. ``32C5``): a convolution with ``N`` output channels and a ``K × K``
  kernel, stride 1; ``32C5p2`` pads the input with 2 never-firing neurons per side;
* ``P K`` (e.g. ``P2``): earliest-spike pooling over ``K × K`` windows, stride ``K``;
* ``N`` (e.g. ``400``): a dense layer with ``N`` neurons (the input is flattened).

The last layer must be dense: its neurons are the class outputs. A leading number equal
to the flattened input size (``784-400-10`` for 28×28 images) names the input and is
skipped, so the S4NN-style notation works too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import ConfigError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Conv:
    """Convolution layer: ``channels`` outputs, ``kernel × kernel``, stride 1."""

    channels: int
    kernel: int
    padding: int = 0

    def output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3:
            raise ConfigError(f"a convolution needs a (C, H, W) input, got shape {in_shape}")
        c, h, w = in_shape
        ho, wo = h + 2 * self.padding - self.kernel + 1, w + 2 * self.padding - self.kernel + 1
        if ho < 1 or wo < 1:
            raise ConfigError(f"kernel {self.kernel} does not fit the {h}×{w} input of layer '{self.token}'")
        return (self.channels, ho, wo)

    def weight_shape(self, in_shape: Shape) -> Shape:
        return (self.channels, in_shape[0], self.kernel, self.kernel)

    @property
    def token(self) -> str:
        return f"{self.channels}C{self.kernel}" + (f"p{self.padding}" if self.padding else "")


@dataclass(frozen=True)
class Pool:
    """Earliest-spike pooling: the pooled neuron fires at the earliest time of its window."""

    kernel: int

    def output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3:
            raise ConfigError(f"pooling needs a (C, H, W) input, got shape {in_shape}")
        c, h, w = in_shape
        if h < self.kernel or w < self.kernel:
            raise ConfigError(f"pool size {self.kernel} does not fit the {h}×{w} input of layer '{self.token}'")
        return (c, h // self.kernel, w // self.kernel)

    @property
    def token(self) -> str:
        return f"P{self.kernel}"


@dataclass(frozen=True)
class Dense:
    """Fully connected layer of ``units`` neurons over the flattened input."""

    units: int

    def output_shape(self, in_shape: Shape) -> Shape:
        return (self.units,)

    def weight_shape(self, in_shape: Shape) -> Shape:
        return (self.units, math.prod(in_shape))

    @property
    def token(self) -> str:
        return str(self.units)


Layer = Conv | Pool | Dense

_CONV = re.compile(r"^(\d+)[cC](\d+)(?:[pP](\d+))?$")
_POOL = re.compile(r"^[pP](\d+)$")
_DENSE = re.compile(r"^(\d+)$")


def _parse_token(token: str, spec: str) -> Layer:
    for pattern, build in (
        (_CONV, lambda m: Conv(int(m[1]), int(m[2]), int(m[3] or 0))),
        (_POOL, lambda m: Pool(int(m[1]))),
        (_DENSE, lambda m: Dense(int(m[1]))),
    ):
        match = pattern.match(token)
        if match:
            layer = build(match)
            if any(v <= 0 for v in (getattr(layer, f) for f in ("channels", "kernel", "units") if hasattr(layer, f))):
                raise ConfigError(f"network '{spec}': layer '{token}' has a zero size")
            return layer
    raise ConfigError(
        f"network '{spec}': cannot read layer '{token}'; use NCk (convolution, e.g. 32C5), "
        f"Pk (pooling, e.g. P2) or N (dense, e.g. 400), joined by '-'"
    )


def parse_spec(spec: str, input_shape: Shape, image_size: int | None = None) -> list[Layer]:
    """Parse a spec string and check that every layer fits the shape it receives.

    A leading dense size equal to the input's size names the input, not a layer
    (``784-400-10``). ``image_size``, when the encoded input is larger than the image
    (ON/OFF input), makes a leading token equal to the image's size an error instead of
    a silent hidden layer of that size.
    """
    tokens = [t.strip() for t in spec.strip().split("-")]
    if not spec.strip() or any(not t for t in tokens):
        raise ConfigError(f"network '{spec}': empty layer in the spec (two '-' in a row?)")
    layers = [_parse_token(t, spec) for t in tokens]
    n_in = math.prod(input_shape)
    if (image_size is not None and image_size != n_in and len(layers) > 1 and isinstance(layers[0], Dense)
            and layers[0].units == image_size):
        rest = "-".join(tokens[1:])
        raise ConfigError(f"network '{spec}': with ON/OFF input (input_polarity = 'on_off') the input has {n_in} values, "
                          f"not {image_size}; write '{n_in}-{rest}' or '{rest}'")
    if len(layers) > 1 and isinstance(layers[0], Dense) and layers[0].units == n_in:
        layers = layers[1:]
    if not isinstance(layers[-1], Dense):
        raise ConfigError(f"network '{spec}': the last layer must be dense (one neuron per class), e.g. '{spec}-10'")
    shape = tuple(input_shape)
    for layer in layers:
        shape = layer.output_shape(shape)
    return layers


def shapes(layers: list[Layer], input_shape: Shape) -> list[Shape]:
    """Input shape followed by every layer's output shape."""
    out = [tuple(input_shape)]
    for layer in layers:
        out.append(layer.output_shape(out[-1]))
    return out
