"""What ``onnx-am analyze`` is asked to do, and the :class:`RunPlan` made from it, once.

:class:`AnalyzeOptions` holds what the user gave (strings at this public edge);
:func:`plan_analysis` parses it exactly once into a
:class:`~onnx_am.engine.plan.RunPlan` (targets by one probe forward, methods with the
backward slopes built straight from their floats, a validated config) that the rest of
``analyze`` passes down unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from onnx_am.audit.budget import DEFAULT_TIME_BUDGET
from onnx_am.audit.defaults import AnalysisDefaults, default_targets_for, has_rectifiers
from onnx_am.domain import InputDomain, choose_domain
from onnx_am.engine.checkpoint import CHECKPOINT_INTERVAL
from onnx_am.engine.config import DEFAULT_LR, DEFAULT_SEED, DEFAULT_STEPS, AMConfig
from onnx_am.engine.device import resolve_device
from onnx_am.engine.plan import RunPlan, checked_config
from onnx_am.engine.regularizers import ROBUST_TRANSFORMS
from onnx_am.engine.starts import DEFAULT_START, SCREEN_CANDIDATES
from onnx_am.errors import SettingsError
from onnx_am.importer.cut import AUTO, cut_domain
from onnx_am.importer.feeds import FeedInput
from onnx_am.importer.limits import ProbeLimit
from onnx_am.importer.model import ImportedModel
from onnx_am.methods import DEFAULT_BETA, GradientMethod, MethodPlan, expand_methods
from onnx_am.objectives import Target, parse_targets, resolve_targets

# Defaults chosen from benchmarks/results/am_quality_defaults.md (see README "Results"):
# standard and the annealed decoupled gradient side by side (its backward slope falls from
# DEFAULT_BETA to each rectifier's forward slope over the run), and best, the per-unit higher
# true value of the two (it shares their rows, so it costs nothing more). At the same cost it
# beat standard + decoupled(0.3) on every trained digits CNN at 64 and 256 steps and on the
# exact-maximum family. Steps, lr (for the -1..1 box; scaled by (high - low) / 2 for other
# input ranges unless given) and seed are the library's (onnx_am.engine.config).
DEFAULT_METHODS = (
    "standard",
    f"decoupled(anneal({DEFAULT_BETA:g}))",
    f"best(anneal({DEFAULT_BETA:g}))",
)
#: The methods when only ``--backward-slope`` is given: standard against each slope.
SWEEP_METHODS = ("standard", "decoupled")
#: The library keeps one start per unit (AMConfig.restarts); the audit tries three.
DEFAULT_RESTARTS = 3
#: How a step is taken. ``raw`` is the paper's ``x <- clip(x + lr * grad)``; its step scales
#: with the gradient, which for a channel of an early layer is orders of magnitude smaller
#: than for a logit: benchmarks/results/step_rule.md measured raw steps at lr 0.1 failing to
#: beat a trivial input on 16/16 early-channel runs, while ``normalized`` (each row's gradient
#: scaled to unit RMS) reached 0.88-1.00 of the best known and matched or beat raw steps on
#: class logits. ``adam`` is also offered.
STEP_RULES = {
    "normalized": {"optimizer": "pga", "normalize_grad": True},
    "raw": {"optimizer": "pga", "normalize_grad": False},
    "adam": {"optimizer": "adam", "normalize_grad": False},
}
DEFAULT_STEP_RULE = "normalized"
#: How the step size changes over a run (:mod:`onnx_am.engine.schedules`).
DEFAULT_LR_SCHEDULE = "constant"
DEFAULT_MAX_UNITS = 64
#: The raw input box when nothing is given or recorded (the paper's); said on stderr.
DEFAULT_INPUT_RANGE = "-1..1"


@dataclass(frozen=True)
class AnalyzeOptions:
    """What ``onnx-am analyze`` does; every field has the command's default.

    Attributes:
        targets: target strings (``"logits:3"``, ``"conv3:0-7"``) or :class:`Target`
            objects; empty: every unit of the first output (up to ``max_units``).
        layers: intermediate tensors whose channels are added as targets.
        methods: gradient methods (``standard``, ``decoupled(0.3)``, ``proxy(0.6)``, ``best``,
            schedules, or :class:`GradientMethod` objects); bare ``decoupled``/``proxy``
            take every ``backward_slopes`` value. Empty: :data:`DEFAULT_METHODS`, or
            :data:`SWEEP_METHODS` when slopes are given.
        backward_slopes: slopes for bare methods; several make a sweep.
        steps, lr, restarts, seed: the optimization; ``lr=None`` is ``DEFAULT_LR`` scaled
            to the input range (``DEFAULT_LR * (high - low) / 2``).
        input_name, input_shape: which input, and its full shape when symbolic.
        feeds: values of the other inputs by name (see :func:`onnx_am.import_onnx`); float
            inputs not named are fed zeros.
        preset: a named input convention (:data:`onnx_am.domain.PRESETS`: ``imagenet``,
            ``imagenet-255``, ``unit``, ``symmetric``); explicit range / mean / std override
            its parts.
        input_range: the raw input box, ``"-1..1"``, ``"0..1"``, ``"0..255"``. With none of
            preset, range, mean and std, what the model's metadata records is used, else
            :data:`DEFAULT_INPUT_RANGE` is assumed (and the report says so).
        mean, std: per-channel normalization the model expects (raw units).
        device: ``"auto"`` (CUDA when torch sees a GPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.
        batch_size: rows per engine step inside a chunk; ``None`` fits them to the free
            memory (:mod:`onnx_am.engine.memory`). A chunk stays the unit of resume either way.
        step_rule: ``"normalized"`` (default), ``"raw"`` (the paper's update) or ``"adam"``;
            see :data:`STEP_RULES`.
        parameterization: ``"pixel"`` (the paper's raw input), ``"fourier"`` or
            ``"fourier+decorrelated"`` (image inputs; :mod:`onnx_am.engine.parameterizations`).
        lr_schedule: ``"constant"``, ``"linear"``, ``"cosine"`` or ``"cosine-restarts"``
            (:mod:`onnx_am.engine.schedules`).
        start: the start inputs (:data:`onnx_am.engine.starts.START_KINDS`): ``"random"``
            (default), ``"screened"`` (the best of ``screen`` random corners per restart) or
            ``"hedged"`` (restart 0 random, later restarts screened).
        screen: candidates per screened restart of the ``screened`` / ``hedged`` start.
        regularizers: regularizer strings (``"jitter(8)"``, ``"scale(0.1)"``, ``"tv(0.1)"``;
            :mod:`onnx_am.engine.regularizers`); none by default, as in the paper.
        robust: add lucid's transformation-robustness set
            (:data:`~onnx_am.engine.regularizers.ROBUST_TRANSFORMS`); results then also
            report the mean activation under those transformations.
        max_units: cap on units per tensor.
        force: overwrite an existing report.
        resume: continue an existing report made with the same settings.
        time_budget: seconds the whole run may take (None: no budget); the work is cut to
            fit in the order of :mod:`onnx_am.audit.budget`, and the report says what was cut.
        checkpoint_interval: seconds between checkpoints of a running chunk.
        at: an ONNX tensor to start the search at (the graph is cut there,
            :mod:`onnx_am.importer.cut`); ``None``: a model without float inputs starts at
            its embedding lookup or one-hot, any other at its input.
        seq_len: the sequence length of a cut model (default: the model's, else 16).
        fix: ``"POS=ID"`` token ids held fixed by the token search.
        vocab: a ``tokenizer.json``, ``vocab.txt`` or JSON token->id map to show ids as text.
        token_methods: token searches (:data:`onnx_am.tokens.search.SEARCHES`); empty: the
            default (:data:`onnx_am.tokens.run.DEFAULT_TOKEN_METHODS`).
        probe_limit: how long the import probes and the parity check may each run (they
            also end with the time budget; see :class:`~onnx_am.importer.limits.ProbeLimit`).
    """

    targets: tuple[str | Target, ...] = ()
    layers: tuple[str, ...] = ()
    methods: tuple[str | GradientMethod, ...] = ()
    backward_slopes: tuple[float, ...] = ()
    steps: int = DEFAULT_STEPS
    lr: float | None = None
    restarts: int = DEFAULT_RESTARTS
    seed: int = DEFAULT_SEED
    input_name: str | None = None
    input_shape: tuple[int, ...] | None = None
    feeds: Mapping[str, FeedInput] = field(default_factory=dict)
    preset: str | None = None
    input_range: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    device: str = "auto"
    batch_size: int | None = None
    parameterization: str = "pixel"
    step_rule: str = DEFAULT_STEP_RULE
    lr_schedule: str = DEFAULT_LR_SCHEDULE
    start: str = DEFAULT_START
    screen: int = SCREEN_CANDIDATES
    regularizers: tuple[str, ...] = ()
    robust: bool = False
    max_units: int = DEFAULT_MAX_UNITS
    force: bool = False
    resume: bool = False
    time_budget: float | None = DEFAULT_TIME_BUDGET
    checkpoint_interval: float = CHECKPOINT_INTERVAL
    # --- tokens (issue 22): where the search starts and the search over token ids ---
    at: str | None = None
    seq_len: int | None = None
    fix: tuple[str, ...] = ()
    vocab: str | None = None
    token_methods: tuple[str, ...] = ()
    probe_limit: ProbeLimit = field(default_factory=ProbeLimit)


@dataclass(frozen=True)
class ImportSettings:
    """What to import: which input is optimized, its full shape, the other inputs' values,
    and the tensor the search starts at.

    Attributes:
        input_name: the float input to optimize (required when there are several).
        input_shape: its full shape, where the model's is symbolic.
        feeds: values of the other inputs by name (parsed values or arrays; see
            :func:`onnx_am.import_onnx`).
        at: the ONNX tensor the search sets (the graph before it is cut away), ``"auto"``
            (a model without float inputs starts at its embedding lookup), or ``None``.
        seq_len: the sequence length of a cut at a token lookup.
        probe_limit: how long the import probes and the parity check may each run (they
            also end with the command's deadline, see :func:`~onnx_am.audit.pipeline.import_model`).
    """

    input_name: str | None = None
    input_shape: tuple[int, ...] | None = None
    feeds: Mapping[str, FeedInput] | None = None
    at: str | None = None
    seq_len: int | None = None
    probe_limit: ProbeLimit = field(default_factory=ProbeLimit)

    @classmethod
    def given(
        cls,
        input_name: str | None = None,
        input_shape: tuple[int, ...] | None = None,
        feeds: Mapping[str, FeedInput] | None = None,
        at: str | None = None,
        seq_len: int | None = None,
        probe_limit: ProbeLimit | None = None,
    ) -> ImportSettings:
        """The settings as the user gave them: a model without float inputs starts at its
        embedding lookup or one-hot (``at="auto"``) unless ``at`` or ``input_name`` is given."""
        at = at or (AUTO if input_name is None else None)
        return cls(input_name, input_shape, feeds, at, seq_len, probe_limit or ProbeLimit())

    @classmethod
    def of(cls, options: AnalyzeOptions) -> ImportSettings:
        """The import ``options`` ask for (see :meth:`given`)."""
        return cls.given(
            options.input_name,
            options.input_shape,
            options.feeds,
            options.at,
            options.seq_len,
            options.probe_limit,
        )


def choose_defaults(options: AnalyzeOptions, imported: ImportedModel) -> AnalysisDefaults:
    """What the run uses where the options leave a choice to the model: the input domain
    (given, recorded in metadata, or assumed), the targets when none are given, and standard
    only when no method is given and the model has no rectifier.

    Raises:
        InputSpecError: an unknown preset or malformed range / mean / std.
    """
    domain = choose_domain(
        options.preset, options.input_range, options.mean, options.std, imported.metadata
    )
    if imported.cut is not None and domain.source != "given":  # tokens (issue 22)
        domain = cut_domain(imported.cut, imported.input.sample_shape)
    targets = (
        None
        if options.targets
        else default_targets_for(imported, options.max_units, also=options.layers)
    )
    standard_only = not options.methods and not has_rectifiers(imported)
    cut = imported.cut.note if imported.cut is not None else ""  # tokens (issue 22)
    return AnalysisDefaults(domain, targets, standard_only, cut)


def plan_analysis(
    options: AnalyzeOptions, imported: ImportedModel, defaults: AnalysisDefaults | None = None
) -> RunPlan:
    """Parse the options once into the run's typed plan.

    Args:
        options: what the user gave.
        imported: the model.
        defaults: from :func:`choose_defaults` (computed here when not given).

    Raises:
        SettingsError, InputSpecError, TargetError, MethodError: the first bad option.
    """
    defaults = defaults or choose_defaults(options, imported)
    config = checked_config(analysis_config(options, defaults.domain.domain), imported)
    given = ("standard",) if defaults.standard_only else options.methods
    methods = plan_methods(given, options.backward_slopes, config.default_beta)
    targets = plan_targets(imported, options, defaults)
    return RunPlan(tuple(targets), tuple(methods), config)


def plan_methods(
    methods: tuple[str | GradientMethod, ...], slopes: tuple[float, ...], default_beta: float
) -> list[MethodPlan]:
    """The reported methods: as given, or the defaults; bare ``decoupled``/``proxy`` once per
    slope, each built from the float itself."""
    if not methods:
        methods = SWEEP_METHODS if slopes else DEFAULT_METHODS
    return expand_methods(methods, default_beta, slopes)


def plan_targets(
    imported: ImportedModel, options: AnalyzeOptions, defaults: AnalysisDefaults | None = None
) -> list[Target]:
    """``--target`` strings (or the model's default targets, see
    :func:`~onnx_am.audit.defaults.default_targets_for`), plus ``--layer`` channels; one
    probe forward for all of them."""
    if options.targets:
        return resolve_targets(imported, [*options.targets, *options.layers], options.max_units)
    if defaults is None or defaults.targets is None:
        chosen = default_targets_for(imported, options.max_units, also=options.layers)
    else:
        chosen = defaults.targets
    layers = parse_targets(options.layers, imported, options.max_units, shapes=chosen.shapes)
    return list(dict.fromkeys([*chosen.targets, *layers]))


def analysis_config(options: AnalyzeOptions, domain: InputDomain) -> AMConfig:
    """The engine settings the options ask for (not yet checked against a model)."""
    if options.step_rule not in STEP_RULES:
        raise SettingsError(
            f"unknown step rule {options.step_rule!r}; choose from {', '.join(STEP_RULES)}"
        )
    regularizers = (*(ROBUST_TRANSFORMS if options.robust else ()), *options.regularizers)
    return AMConfig(
        steps=options.steps,
        lr=options.lr if options.lr is not None else _default_lr(options, domain),
        restarts=options.restarts,
        seed=options.seed,
        domain=domain,
        device=resolve_device(options.device),
        batch_size=options.batch_size,
        parameterization=options.parameterization,
        lr_schedule=options.lr_schedule,
        start=options.start,
        screen=options.screen,
        regularizers=tuple(regularizers),
        **STEP_RULES[options.step_rule],
    )


def _default_lr(options: AnalyzeOptions, domain: InputDomain) -> float:
    """:data:`DEFAULT_LR` in raw units scaled to the input range for ``pixel``; unscaled in
    parameter units for the Fourier parameterizations, whose parameter does not grow with the
    range (scaling it made ``fourier`` on ``0..255`` saturate)."""
    if options.parameterization != "pixel":
        return DEFAULT_LR
    return DEFAULT_LR * (domain.high - domain.low) / 2
