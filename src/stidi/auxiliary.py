"""Auxiliary readouts: training-only class outputs on hidden layers (``rule.auxiliary_after``).

The convolutions learn only from the displacement that comes down from the readout, through
every layer between. An auxiliary readout gives a hidden layer a second, direct signal (deep
supervision): after layer ``n`` of the network (``rule.auxiliary_after = [n, …]``, 1-based
positions in ``model.network``) sits a real-valued dense layer of one neuron per class, of the
same neurons and threshold as the readout, reading that layer's spike times ``x``:

* its output times ``t^a`` are the forward pass of that dense layer on ``x``;
* its error is the readout's (:func:`stidi.stidi_bp.readout_error`: the same targets, margin
  and normalisation), its weights learn by the same local update ``Δw_ij = −η δ_j ε(t_j − t_i)``
  (at the readout's learning rate, relative to their initial std), and it displaces ``x`` by the
  same rule, ``Δt^a_i = Σ_j δ_j w_ij g(t_j − t_i)``;
* at ``x`` the displacement from above, ``Δt``, and the auxiliary one are blended per image,
  each at unit norm: ``(1 − λ) Δt/‖Δt‖ + λ Δt^a/‖Δt^a‖``, ``λ = rule.auxiliary_share``. The
  layers below learn from the blend as they learn from ``Δt`` alone.

No chain of derivatives is added: each auxiliary readout is one more layer trained by
STiDi-BP from its own temporal error. The readouts exist only while training: they are kept
in the run's checkpoints (so a resumed run continues them), never in a saved model, and
never change a prediction.
"""

from __future__ import annotations

import torch

from .errors import ConfigError, ModelFileError
from .network import Network
from .stidi_bp import Agree, RuleOptions, _alone, finish_directions, layer_rule, readout_error

#: the state of the auxiliary readouts in a checkpoint: ``auxiliary.{n}`` the weights of the one after layer ``n``
CHECKPOINT_PREFIX = "auxiliary."


def _unit(shift: torch.Tensor) -> torch.Tensor:
    """Each image's displacement scaled to unit L2 norm (an all-zero one stays zero)."""
    norm = shift.flatten(1).norm(dim=1).clamp_min(1e-12)
    return shift / norm.view(-1, *([1] * (shift.dim() - 1)))


class AuxiliaryReadouts:
    """The auxiliary readouts of ``net`` after the layers at ``positions`` (1-based), blended at ``share``."""

    def __init__(self, net: Network, positions: list[int], share: float) -> None:
        self.nodes = sorted(int(n) for n in positions)  # index into a Trace's times: the output of layer n
        self.share = float(share)
        last = len(net.layers)
        for n in self.nodes:
            if not 1 <= n < last:
                raise ConfigError(f"auxiliary_after: {n} is not a hidden layer of {net.spec}; give positions 1 … {last - 1}")
        self.heads = {
            n: Network(str(net.layers[-1].units), input_shape=net.shapes[n], T=net.T, tau=net.tau,
                       thresholds=net.thresholds[-1], forced_firing=net.forced_firing, population=net.population)
            for n in self.nodes
        }
        #: images each readout classified correctly since :meth:`take_hits` was last called
        self.hits = {n: 0 for n in self.nodes}

    @property
    def weights(self) -> list[torch.Tensor]:
        """The trainable weights, one tensor per readout, in the order of ``nodes``."""
        return [self.heads[n].weights[0] for n in self.nodes]

    def initialise(self, node_times: dict[int, torch.Tensor], firing_fraction: float, generator: torch.Generator) -> list[float]:
        """Random weights calibrated like any weighted layer (:meth:`Network.initialise`) on the spike
        times ``node_times[n]`` of the calibration images at each readout's input; returns their firing fractions."""
        return [self.heads[n].initialise(node_times[n], firing_fraction, generator)[0] for n in self.nodes]

    @torch.no_grad()
    def blend(self, node: int, x: torch.Tensor, labels: torch.Tensor, shift: torch.Tensor | None, opts: RuleOptions,
              norm: str, batch: int, agree: Agree = _alone) -> tuple[torch.Tensor, torch.Tensor]:
        """The update sums of the readout at ``node`` for input spike times ``x``, and the displacement of
        ``x``: ``shift`` (from above) blended with the readout's own, each at unit norm per image.
        ``norm``: the network readout's error normalisation, which this readout's error takes too."""
        head = self.heads[node]
        trace = head.trace(x)
        self.hits[node] += int((head.readout(trace).classes == labels).sum())
        t_head = trace.times[-1]
        error = readout_error(head, t_head, labels, opts, norm, agree)
        sums, own = layer_rule(head, 0, x, t_head, error, opts, batch, agree, need_displacement=True)
        if shift is None:
            return sums, own
        return sums, (1 - self.share) * _unit(shift) + self.share * _unit(own)

    def directions(self, sums: list[torch.Tensor], opts: RuleOptions, batch: int) -> list[torch.Tensor]:
        """Batch-mean update directions of the readouts' weights from their exact sums (:func:`finish_directions`)."""
        return [finish_directions(self.heads[n], [s], opts, batch)[0] for n, s in zip(self.nodes, sums, strict=True)]

    def take_hits(self) -> dict[int, int]:
        """The correct counts of each readout since the last call (keyed by layer position), reset to 0."""
        hits, self.hits = self.hits, {n: 0 for n in self.nodes}
        return hits

    def tensors(self) -> dict[str, torch.Tensor]:
        """The readouts' weights for a checkpoint, keyed ``auxiliary.{n}``."""
        return {f"{CHECKPOINT_PREFIX}{n}": self.heads[n].weights[0].data for n in self.nodes}

    @torch.no_grad()
    def restore(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        """Load the readouts' weights from a checkpoint's ``tensors`` (read from ``where``)."""
        for n in self.nodes:
            key = f"{CHECKPOINT_PREFIX}{n}"
            mine = self.heads[n].weights[0]
            if key not in tensors or tuple(tensors[key].shape) != tuple(mine.shape):
                raise ModelFileError(f"{where}: holds no auxiliary readout after layer {n} shaped {tuple(mine.shape)}; "
                                     "the checkpoint does not match its configuration (start the run again with another --out)")
            mine.copy_(tensors[key])
