"""Typed configuration: model, learning rule and training, loaded from TOML and the CLI.

A config file has up to three tables, every key optional::

    [model]
    network = "32C5-P2-64C5-P2-10"
    T = 256
    tau = inf            # TOML's inf: the pure ramp PSP

    [rule]
    gamma = 5.0

    [train]
    dataset = "mnist"
    epochs = 3
    lr = [0.01, 0.01, 0.01]   # one per weighted layer, or a single value

Every field is checked when the file is loaded; an unknown key, a wrong type or a
value out of range raises :class:`~stidi.errors.ConfigError` naming the field, the
value and what is allowed.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

from .encoding import encoded_shape
from .errors import ConfigError
from .layers import Pool, parse_spec

Check = tuple[Callable[[Any], bool], str]

POSITIVE: Check = (lambda v: v > 0, "a number > 0")
NON_NEGATIVE: Check = (lambda v: v >= 0, "a number ≥ 0")
FRACTION: Check = (lambda v: 0 < v <= 1, "a number in (0, 1]")


#: the options of ``model.binary_scale`` (also checked by :class:`stidi.network.Network`)
BINARY_SCALES = ("mean_abs", "fixed", "channel")


def one_of(*choices: str) -> Check:
    return (lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


def each(check: Check) -> Check:
    """Apply ``check`` to a scalar or to every element of a list."""
    test, text = check
    return (lambda v: all(test(x) for x in v) if isinstance(v, list) else test(v), f"{text} (or a list of them)")


def _field(default: Any, check: Check | None = None, help: str = "") -> Any:
    factory = (lambda: list(default)) if isinstance(default, list) else None
    meta = {"check": check, "help": help}
    return field(default_factory=factory, metadata=meta) if factory else field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """Network shape and neuron model."""

    network: str = _field("32C5-P2-64C5-P2-10", None, "layer spec, e.g. 32C5-P2-64C5-P2-10 or 784-400-10")
    input_shape: list = _field([1, 28, 28], (lambda v: len(v) in (1, 3) and all(isinstance(x, int) and x > 0 for x in v), "[C, H, W] or [N] of positive integers"), "shape of one input image")
    T: int = _field(256, POSITIVE, "last time step of the window 0..T")
    input_power: float = _field(1.0, POSITIVE, "encode x^p instead of x (t = floor(T (1 − x^p))): p < 1 makes dim pixels fire earlier")
    input_polarity: str = _field("on", one_of("on", "on_off"), "'on': one TTFS input per pixel; 'on_off': also an OFF input per pixel encoding 1 − x with the same curve (dark pixels fire early; the first layer sees 2C channels)")
    tau: float = _field(math.inf, POSITIVE, "PSP rise time in steps (inf: pure ramp, 1: step)")
    forced_firing: bool = _field(True, None, "an output that never reached threshold fires at T")
    threshold: float | list = _field(1.0, each(POSITIVE), "firing threshold per weighted layer")
    init_firing_fraction: float | list = _field(0.3, each(FRACTION), "fraction of each weighted layer that fires before T after initialisation")
    binary: bool | list = _field(False, (lambda v: all(isinstance(x, bool) for x in v) if isinstance(v, list) else True, "true/false or a list of them"), "binary weights: forward with α·sign(w), the rule updates the real w (per weighted layer or one for all)")
    bias: bool = _field(False, None, "every weighted layer also sees an input spike at t = 0 whose weight (one per neuron, per output channel in a convolution) the rule learns: a drive or leak b·ε(t) added to the potential (real-valued layers only)")
    population: int = _field(1, POSITIVE, "output neurons per class: the last layer's units form one group of this many consecutive neurons per class (end the spec with classes × population), and a class fires when the earliest neuron of its group does (1: one neuron per class)")
    binary_scale: str = _field("mean_abs", one_of(*BINARY_SCALES), "α of a binary layer: mean |w| of the real weights ('mean_abs'), fixed at initialisation ('fixed'), or one α per output neuron or channel, set at initialisation and learnt by the rule ('channel')")


@dataclass
class RuleConfig:
    """Options of the STiDi-BP learning rule (see docs/algorithm.md)."""

    gamma: float = _field(5.0, NON_NEGATIVE, "margin (steps) between the true class and the others")
    latency_derivative: str = _field("linear", one_of("linear", "unit", "slope"), "dt/du ≈ -t/θ ('linear'), -1 ('unit'), or -1/u'(t), the potential's slope at the spike ('slope'; ramp PSP only)")
    slope_bins: int = _field(8, POSITIVE, "latency_derivative = 'slope': the slope counts the inputs that fired before the end of the spike's bin, one of K equal bins of 0..T (K = T: exact)")
    displacement_gate: str = _field("mask", one_of("mask", "slope"), "g in the displacement: fired-before mask or PSP slope ε'")
    error_norm: str | list = _field("l2", each(one_of("l2", "none", "batch_max")), "error normalisation of each layer: per sample to unit L2 norm ('l2'), none, or by the batch's largest sample norm ('batch_max'); one for every layer or one per weighted layer")
    conv_update: str = _field("sum", one_of("sum", "mean"), "shared conv weights: sum or average over positions")
    revival: float = _field(0.0, NON_NEGATIVE, "ρ: a silent hidden neuron gets displacement ρ·min(0, W^T δ), asking it to fire again (0: the plain rule)")
    revival_scope: str = _field("silent", one_of("silent", "late"), "who revival pushes: silent hidden neurons only ('silent'), or also every neuron that fired too late for some of the neurons it feeds, by ρ·min(0, Σ_j δ_j w_ij [t_i ≥ t_j]) ('late'; mask gate only)")
    targets: str = _field("earliest", one_of("earliest", "split", "softmax"), "output targets: relative to the earliest output spike ('earliest'), halfway between the true class and the earliest other output less γ/2 ('split'), or t_j + σ (p_j − y_j) with p = softmax(−t/σ) ('softmax', the cross-entropy's descent; γ unused)")
    softmax_temperature: float = _field(2.0, POSITIVE, "σ (steps) of targets = 'softmax': the time scale of p = softmax(−t/σ)")
    binary_displacement: str = _field("real", one_of("real", "forward"), "weights of a binary layer in the displacement: the real weights w ('real', the specification) or the forward pass's α·sign(w) ('forward')")
    distill: float = _field(0.0, (lambda v: 0 <= v <= 1, "a number in [0, 1]"), "λ: blend the output targets with those of the teacher network of train.teacher, λ its share: each other class aims at its label target mixed with the teacher's delay of it behind the true class (0: labels only; needs train.teacher when > 0)")
    distill_scope: str = _field("all", one_of("all", "errors"), "which images rule.distill blends: every image ('all'), or only those whose label targets already ask for a change ('errors'), so an image classified with its margin keeps a zero error; margin targets only, since with targets = 'softmax' every image has an error")
    population_update: str = _field("winner", one_of("winner", "all", "offenders"), "with model.population > 1, which neurons of a class's group the output error moves: the group's earliest spike only, as a pooling layer routes its error ('winner'); every neuron of the group toward the class's target, wrong classes' neurons only ever later ('all'); or the true class's earliest neuron and every wrong-class neuron that fires before its class's target ('offenders')")
    pool_route: str = _field("winner", one_of("winner", "ties", "share"), "where a pooling layer sends its displacement: to each window's winner ('winner', the specification); a delay also, whole, to every neuron of the window that fired within rule.pool_tie_steps steps of the winner, since the window's earliest spike moves later only when all of them do ('ties'; an advance still goes to the winner only); or an equal share of it, of either sign, to the winner and each of those neurons ('share'; with exact ties the mean subgradient of the minimum)")
    pool_tie_steps: int = _field(0, NON_NEGATIVE, "with pool_route = 'ties' or 'share': how many steps after the winner a neuron of the window may fire and still take part (0: exact ties only)")
    decision_floor: float = _field(0.0, NON_NEGATIVE, "t_f (steps): the targets' reference time r becomes max(r, t_f), so a decision before t_f is pushed later (0: the plain rule)")
    auxiliary_after: list = _field([], (lambda v: all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v) and len(set(v)) == len(v), "a list of distinct layer positions ≥ 1"), "training-only readouts (deep supervision): after each listed layer of model.network (1-based, e.g. [2, 4] after both pooling layers of 64C5p2-P2-128C5p2-P2-512-10) a dense layer of one neuron per class learns from the labels by the rule, and its displacement of that layer's spikes is blended into the one from above; never saved with the model ([]: none)")
    auxiliary_share: float = _field(0.3, (lambda v: 0 < v < 1, "a number in (0, 1)"), "λ: with auxiliary_after, a hidden layer's displacement is (1 − λ) of the one from above plus λ of its auxiliary readout's, each at unit norm per image")


@dataclass
class TrainConfig:
    """Data, optimiser and schedule."""

    dataset: str = _field("mnist", one_of("mnist", "fashion-mnist"), "built-in dataset")
    epochs: int = _field(3, POSITIVE, "passes over the training set")
    batch_size: int = _field(32, POSITIVE, "images per update")
    optimizer: str = _field("adam", one_of("adam", "sgd"), "how update directions become steps")
    lr: float | list = _field(0.01, each(POSITIVE), "learning rate per weighted layer, relative to the layer's initial weight std")
    lr_schedule: str = _field("cosine", one_of("constant", "cosine"), "learning-rate schedule over the epochs")
    weight_decay: float | list = _field(0.0, each(NON_NEGATIVE), "λ per weighted layer: decoupled weight decay, w ← w − η_l λ w after every step, η_l the layer's step size (0: none)")
    dropout: float | list = _field(0.0, each((lambda v: 0 <= v < 1, "a number in [0, 1)")), "p per weighted layer: while training, silence each neuron of that layer with probability p for each image and scale the next layer's forward weights by 1/(1 − p) (inverted dropout; the output layer's must be 0; 0: none)")
    binary_scale_lr: float | list = _field(0.1, each(NON_NEGATIVE), "learning rate of the learnt scales of model.binary_scale = 'channel', as a fraction of their layer's (relative to its initial α), one value or one per weighted layer (0: that layer's scales stay at their initial α); after every step each scale is also kept ≥ 1 % of its layer's initial α")
    binary_clip: float = _field(0.0, (lambda v: v == 0 or v >= 1, "0 (no clipping) or a number ≥ 1"), "c: after every step, clip the real weights of each binary layer to [−c α_l, c α_l], so their signs can still flip (0: no clipping)")
    train_limit: int = _field(0, NON_NEGATIVE, "use only the first N training images (0: all)")
    test_limit: int = _field(0, NON_NEGATIVE, "evaluate on the first N test images (0: all)")
    seed: int = _field(0, NON_NEGATIVE, "seed of initialisation and shuffling")
    init_from: str = _field("", None, "path of a saved model (.safetensors): the leading weighted layers whose weight shapes match take their weight pattern from it instead of a random draw, and are then scaled like a random draw to init_firing_fraction; the rest are drawn as usual ('': all drawn)")
    teacher: str = _field("", None, "path of a trained model (.safetensors, or its run directory) whose output spike times on the training images become soft targets, blended in by rule.distill; any network with the same inputs and number of classes ('': none)")
    threads: int = _field(0, NON_NEGATIVE, "CPU threads (0: PyTorch's default)")
    validation: int = _field(0, NON_NEGATIVE, "hold out the last N training images to choose the best epoch (saved as best.safetensors); never the test set")
    checkpoint_every: int = _field(100, NON_NEGATIVE, "also checkpoint every N batches within an epoch (0: only at epoch ends)")
    augment_shift: int = _field(0, NON_NEGATIVE, "move each training image by up to N pixels each way, a fresh random offset every epoch (0: no augmentation)")
    augment_flip: bool = _field(False, None, "mirror each training image left-right with probability 1/2, a fresh draw every epoch (for mirror-symmetric classes such as clothes; not digits)")
    weight_average: float = _field(0.0, (lambda v: 0 <= v < 1, "a number in [0, 1)"), "β: evaluate and save an exponential moving average of the weights, updated after every step (0: the weights as trained)")
    adam_betas: list = _field([0.9, 0.999], (lambda v: len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1 for x in v), "[β1, β2], two numbers in [0, 1)"), "optimizer = 'adam': decay rates of its running mean of the update directions (β1) and of their squares (β2); a larger β1 averages the rule's directions over more batches")
    norm_projection: bool | list = _field(False, (lambda v: all(isinstance(x, bool) for x in v) if isinstance(v, list) else isinstance(v, bool), "true/false or a list of them"), "per weighted layer: after every step, rescale each output neuron's (each convolution's output channel's) incoming weights back to the L2 norm they had when training began, so the rule turns a neuron's weights without changing how strongly its inputs drive it (false: none)")


@dataclass
class Config:
    """The whole configuration of a run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    rule: RuleConfig = field(default_factory=RuleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)


SECTIONS = {"model": ModelConfig, "rule": RuleConfig, "train": TrainConfig}


def _type_ok(value: Any, annotation: str) -> bool:
    kinds = {"str": str, "int": int, "float": (int, float), "bool": bool, "list": list}
    options = [a.strip() for a in annotation.split("|")]
    for option in options:
        kind = kinds[option]
        if isinstance(value, bool) and option != "bool":
            continue
        if isinstance(value, kind):
            return True
    return False


def _coerce(section: str, f, value: Any, source: str) -> Any:
    name = f"{section}.{f.name}"
    if not _type_ok(value, f.type):
        raise ConfigError(f"{source}: {name} = {value!r} has the wrong type; expected {f.type.replace('|', 'or')} ({f.metadata['help']})")
    if isinstance(value, list) and "float" in f.type and not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        raise ConfigError(f"{source}: {name} = {value!r}: every element must be a number")
    if "float" in f.type and isinstance(value, int):
        value = float(value)
    check = f.metadata.get("check")
    if check is not None and not check[0](value):
        raise ConfigError(f"{source}: {name} = {value!r} is out of range; allowed: {check[1]}")
    return value


def _section_from(section: str, values: dict, base: Any, source: str) -> Any:
    cls = SECTIONS[section]
    known = {f.name: f for f in fields(cls)}
    updates = {}
    for key, value in values.items():
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            extra = f"; did you mean '{hint[0]}'?" if hint else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"{source}: unknown key '{section}.{key}'{extra}")
        updates[key] = _coerce(section, known[key], value, source)
    return replace(base, **updates)


def merge(config: Config, values: dict[str, dict], source: str) -> Config:
    """A copy of ``config`` with ``values`` (``{section: {key: value}}``) applied and checked."""
    out = config
    for section, table in values.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown table [{section}]; expected one of [model], [rule], [train]")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of key = value pairs")
        out = replace(out, **{section: _section_from(section, table, getattr(out, section), source)})
    validate(out, source)
    return out


#: Fields that take one value for all weighted layers or a list with one per weighted layer.
PER_LAYER_FIELDS = (("model", "threshold"), ("model", "binary"), ("model", "init_firing_fraction"),
                    ("train", "lr"), ("train", "weight_decay"), ("train", "dropout"), ("train", "binary_scale_lr"),
                    ("train", "norm_projection"), ("rule", "error_norm"))


def validate(config: Config, source: str = "config") -> None:
    """Checks across fields: the network must parse and fit the (encoded) input shape; every per-layer field
    (:data:`PER_LAYER_FIELDS`) is one value or a list with one per weighted layer, so a wrong length is caught when
    the configuration is read, with the file named, not when training starts; the slope latency derivative needs
    the ramp PSP; late revival needs the mask gate; the decision floor must lie before ``T``; dropout must leave
    the output layer alone; distillation needs a teacher; the population must divide the outputs; auxiliary
    readouts attach to hidden layers."""
    try:
        layers = parse_spec(config.model.network, encoded_shape(tuple(config.model.input_shape), config.model.input_polarity),
                            math.prod(config.model.input_shape))
    except ConfigError as exc:
        raise ConfigError(f"{source}: model.network: {exc}") from None
    weighted = [layer for layer in layers if not isinstance(layer, Pool)]
    for section, name in PER_LAYER_FIELDS:
        value = getattr(getattr(config, section), name)
        if isinstance(value, list) and len(value) != len(weighted):
            raise ConfigError(f"{source}: {section}.{name} has {len(value)} values for the {len(weighted)} weighted layers of "
                              f"{config.model.network}; give one per weighted layer or a single value")
    dropout = config.train.dropout
    if (dropout[-1] if isinstance(dropout, list) else dropout) > 0:
        raise ConfigError(f"{source}: train.dropout = {dropout!r} drops output neurons (the readout); give one value per "
                          f"weighted layer with 0 for the last, e.g. {[0.0] * (len(weighted) - 2) + [0.5, 0.0]}")
    if config.model.bias and (any(config.model.binary) if isinstance(config.model.binary, list) else config.model.binary):
        raise ConfigError(f"{source}: model.bias = true needs real-valued layers (model.binary = false): a binary layer "
                          "would keep only the sign of its bias weight")
    if config.rule.latency_derivative == "slope" and not math.isinf(config.model.tau):
        raise ConfigError(f"{source}: rule.latency_derivative = 'slope' needs the ramp PSP (model.tau = inf), got tau = {config.model.tau}; "
                          "use 'linear' or 'unit' with a finite tau")
    if config.rule.revival_scope == "late" and config.rule.displacement_gate != "mask":
        raise ConfigError(f"{source}: rule.revival_scope = 'late' needs rule.displacement_gate = 'mask' (the closed part of the "
                          f"fired-before gate), got '{config.rule.displacement_gate}'; use revival_scope = 'silent' with that gate")
    if config.rule.distill > 0 and not config.train.teacher:
        raise ConfigError(f"{source}: rule.distill = {config.rule.distill} needs a teacher: set train.teacher to a trained "
                          "model (e.g. a run's best.safetensors), or distill = 0 to learn from the labels only")
    if layers[-1].units % config.model.population:
        raise ConfigError(f"{source}: model.population = {config.model.population} does not divide the {layers[-1].units} outputs "
                          f"of {config.model.network}; end the spec with classes × population, e.g. -{10 * config.model.population} "
                          "for 10 classes")
    hidden = len(layers) - 1
    late = [n for n in config.rule.auxiliary_after if n > hidden]
    if late:
        raise ConfigError(f"{source}: rule.auxiliary_after = {config.rule.auxiliary_after}: {late[0]} is not a hidden layer of "
                          f"{config.model.network}, which has {hidden} before its readout; give positions 1 … {hidden}")
    if config.rule.decision_floor >= config.model.T:
        raise ConfigError(f"{source}: rule.decision_floor = {config.rule.decision_floor} must be below model.T = {config.model.T} "
                          "(the reference time of the output targets; 0 turns it off)")


def load_config(path: str | Path | None = None, overrides: dict[str, dict] | None = None) -> Config:
    """Defaults, then the TOML file at ``path`` (if any), then ``overrides``."""
    config = Config()
    if path is not None:
        p = Path(path)
        try:
            values = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        config = merge(config, values, str(p))
    if overrides:
        config = merge(config, overrides, "command line")
    validate(config)
    return config


def from_dict(values: dict, source: str = "config") -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (e.g. a saved model's JSON)."""
    return merge(Config(), values, source)
