"""What ``onnx-am analyze`` is asked to do, and the :class:`RunPlan` made from it, once.

:class:`AnalyzeOptions` holds what the user gave (strings at this public edge), in groups by
concern (what to import, what to search, the input box, how to optimize, the token search,
the budget, the output; :mod:`onnx_am.settings`); :func:`plan_analysis` parses it exactly once
into a :class:`~onnx_am.engine.plan.RunPlan` (targets by one probe forward, methods with the
backward slopes built straight from their floats, a validated config) that the rest of
``analyze`` passes down unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from onnx_am.audit.budget import DEFAULT_TIME_BUDGET
from onnx_am.audit.defaults import AnalysisDefaults, default_targets_for, has_rectifiers
from onnx_am.domain import InputDomain, choose_domain
from onnx_am.engine.checkpoint import CHECKPOINT_INTERVAL
from onnx_am.engine.config import DEFAULT_LR, DEFAULT_SEED, DEFAULT_STEPS, AMConfig
from onnx_am.engine.device import resolve_device
from onnx_am.engine.plan import RunPlan, checked_config
from onnx_am.engine.racing import RacingSettings
from onnx_am.engine.regularizers import ROBUST_TRANSFORMS
from onnx_am.engine.starts import DEFAULT_START, SCREEN_CANDIDATES
from onnx_am.errors import SettingsError
from onnx_am.importer.cut import AUTO, cut_domain
from onnx_am.importer.feeds import FeedInput
from onnx_am.importer.limits import ProbeLimit
from onnx_am.importer.model import ImportedModel
from onnx_am.methods import DEFAULT_BETA, GradientMethod, ReportedMethod, expand_methods
from onnx_am.objectives import Target, parse_targets, resolve_targets
from onnx_am.settings import build, group, replaced

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
#: How a unit spends its rows (:mod:`onnx_am.engine.racing`): racing restarts, which at the
#: same row-steps beat every row running every step on the trained CNNs and the exact family
#: (docs/results.md, "Racing restarts"); None (``--no-racing``) gives the plain restarts.
DEFAULT_RACING: RacingSettings | None = RacingSettings()
#: How the step size changes over a run (:mod:`onnx_am.engine.schedules`).
DEFAULT_LR_SCHEDULE = "constant"
DEFAULT_MAX_UNITS = 64
#: The raw input box when nothing is given or recorded (the paper's); said on stderr.
DEFAULT_INPUT_RANGE = "-1..1"


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

    def resolved(self) -> ImportSettings:
        """These settings with ``at`` decided as :meth:`given` does."""
        return self.given(
            self.input_name, self.input_shape, self.feeds, self.at, self.seq_len, self.probe_limit
        )


@dataclass(frozen=True)
class SearchSettings:
    """What to search: the units and the gradient methods.

    Attributes:
        targets: target strings (``"logits:3"``, ``"conv3:0-7"``) or :class:`Target`
            objects; empty: every unit of the first output (up to ``max_units``).
        layers: intermediate tensors whose channels are added as targets.
        methods: gradient methods (``standard``, ``decoupled(0.3)``, ``proxy(0.6)``, ``best``,
            schedules, or :class:`GradientMethod` objects); bare ``decoupled``/``proxy``
            take every ``backward_slopes`` value. Empty: :data:`DEFAULT_METHODS`, or
            :data:`SWEEP_METHODS` when slopes are given.
        backward_slopes: slopes for bare methods; several make a sweep.
        max_units: cap on units per tensor.
        racing: racing restarts (:class:`~onnx_am.engine.racing.RacingSettings`): each unit
            races more candidates than ``restarts`` at the same row-steps (the default,
            :data:`DEFAULT_RACING`); None: every row runs every step (plain restarts).
    """

    targets: tuple[str | Target, ...] = ()
    layers: tuple[str, ...] = ()
    methods: tuple[str | GradientMethod, ...] = ()
    backward_slopes: tuple[float, ...] = ()
    max_units: int = DEFAULT_MAX_UNITS
    racing: RacingSettings | None = DEFAULT_RACING


@dataclass(frozen=True)
class DomainSettings:
    """The input box as the user gave it (resolved against the model's metadata by
    :func:`~onnx_am.domain.choose_domain`).

    Attributes:
        preset: a named input convention (:data:`onnx_am.domain.PRESETS`: ``imagenet``,
            ``imagenet-255``, ``unit``, ``symmetric``); explicit range / mean / std override
            its parts.
        input_range: the raw input box, ``"-1..1"``, ``"0..1"``, ``"0..255"``. With none of
            preset, range, mean and std, what the model's metadata records is used, else
            :data:`DEFAULT_INPUT_RANGE` is assumed (and the report says so).
        mean, std: per-channel normalization the model expects (raw units).
    """

    preset: str | None = None
    input_range: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class OptimizeSettings:
    """How each unit is searched (made into the engine's
    :class:`~onnx_am.engine.config.AMConfig` by :func:`analysis_config`).

    Attributes:
        steps, lr, restarts, seed: the optimization; ``lr=None`` is ``DEFAULT_LR`` scaled
            to the input range (``DEFAULT_LR * (high - low) / 2``).
        step_rule: ``"normalized"`` (default), ``"raw"`` (the paper's update) or ``"adam"``;
            see :data:`STEP_RULES`.
        lr_schedule: ``"constant"``, ``"linear"``, ``"cosine"`` or ``"cosine-restarts"``
            (:mod:`onnx_am.engine.schedules`).
        parameterization: ``"pixel"`` (the paper's raw input), ``"fourier"`` or
            ``"fourier+decorrelated"`` (image inputs; :mod:`onnx_am.engine.parameterizations`).
        start: the start inputs (:data:`onnx_am.engine.starts.START_KINDS`): ``"random"``
            (default), ``"screened"`` (the best of ``screen`` random corners per restart) or
            ``"hedged"`` (restart 0 random, later restarts screened).
        screen: candidates per screened restart of the ``screened`` / ``hedged`` start.
        regularizers: regularizer strings (``"jitter(8)"``, ``"scale(0.1)"``, ``"tv(0.1)"``;
            :mod:`onnx_am.engine.regularizers`); none by default, as in the paper.
        robust: add lucid's transformation-robustness set
            (:data:`~onnx_am.engine.regularizers.ROBUST_TRANSFORMS`); results then also
            report the mean activation under those transformations.
        device: ``"auto"`` (CUDA when torch sees a GPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.
    """

    steps: int = DEFAULT_STEPS
    lr: float | None = None
    restarts: int = DEFAULT_RESTARTS
    seed: int = DEFAULT_SEED
    step_rule: str = DEFAULT_STEP_RULE
    lr_schedule: str = DEFAULT_LR_SCHEDULE
    parameterization: str = "pixel"
    start: str = DEFAULT_START
    screen: int = SCREEN_CANDIDATES
    regularizers: tuple[str, ...] = ()
    robust: bool = False
    device: str = "auto"


@dataclass(frozen=True)
class BudgetSettings:
    """What the run may spend.

    Attributes:
        time_budget: seconds the whole run may take (None: no budget); the work is cut to
            fit in the order of :mod:`onnx_am.audit.budget`, and the report says what was cut.
        batch_size: rows per engine step (bounds memory); ``None`` fits them to the free
            memory (:mod:`onnx_am.engine.memory`). A chunk stays the unit of resume either way.
    """

    time_budget: float | None = DEFAULT_TIME_BUDGET
    batch_size: int | None = None


@dataclass(frozen=True)
class OutputSettings:
    """The report directory.

    Attributes:
        force: overwrite an existing report.
        resume: continue an existing report made with the same settings.
        checkpoint_interval: seconds between checkpoints of a running chunk.
    """

    force: bool = False
    resume: bool = False
    checkpoint_interval: float = CHECKPOINT_INTERVAL


@dataclass(frozen=True)
class TokenSettings:
    """The search over token ids of a model cut at its lookup (issue 22).

    Attributes:
        fix: ``"POS=ID"`` token ids held fixed by the token search.
        vocab: a ``tokenizer.json``, ``vocab.txt`` or JSON token->id map to show ids as text.
        token_methods: token searches (:data:`onnx_am.tokens.search.SEARCHES`); empty: the
            default (:data:`onnx_am.tokens.run.DEFAULT_TOKEN_METHODS`).
    """

    fix: tuple[str, ...] = ()
    vocab: str | None = None
    token_methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class AnalyzeOptions:
    """What ``onnx-am analyze`` does, by concern; every group has the command's defaults.

    Build it from flat keywords with :meth:`of` (``AnalyzeOptions.of(steps=64,
    targets=("logits:3",), time_budget=None)``; each keyword goes to the group that declares
    it, and the names are the command's options), or from the groups themselves.

    Attributes:
        imports: what to import (:class:`ImportSettings`: input, shape, feeds, ``at``).
        search: what to search (:class:`SearchSettings`: targets, layers, methods, slopes).
        domain: the input box (:class:`DomainSettings`: preset, range, mean, std).
        optimize: how each unit is searched (:class:`OptimizeSettings`: steps, lr, ...).
        tokens: the token search of a model cut at its lookup (:class:`TokenSettings`).
        budget: what the run may spend (:class:`BudgetSettings`: time, rows per step).
        output: the report directory (:class:`OutputSettings`: force, resume, checkpoints).
    """

    imports: ImportSettings = group(ImportSettings)
    search: SearchSettings = group(SearchSettings)
    domain: DomainSettings = group(DomainSettings)
    optimize: OptimizeSettings = group(OptimizeSettings)
    tokens: TokenSettings = group(TokenSettings)
    budget: BudgetSettings = group(BudgetSettings)
    output: OutputSettings = group(OutputSettings)

    @classmethod
    def of(cls, **options: Any) -> AnalyzeOptions:
        """The options from flat keywords named as the command's options (``steps``,
        ``targets``, ``input_name``, ``time_budget``, ...), each routed to its group; a group
        may also be given whole (``search=SearchSettings(...)``).

        Raises:
            TypeError: a keyword no group declares.
        """
        return build(cls, options)

    def replaced(self, **options: Any) -> AnalyzeOptions:
        """A copy with flat keywords (or whole groups) changed, as in :meth:`of`."""
        return replaced(self, **options)


def choose_defaults(options: AnalyzeOptions, imported: ImportedModel) -> AnalysisDefaults:
    """What the run uses where the options leave a choice to the model: the input domain
    (given, recorded in metadata, or assumed), the targets when none are given, and standard
    only when no method is given and the model has no rectifier.

    Raises:
        InputSpecError: an unknown preset or malformed range / mean / std.
    """
    domain = choose_domain(
        options.domain.preset,
        options.domain.input_range,
        options.domain.mean,
        options.domain.std,
        imported.metadata,
    )
    search = options.search
    if imported.cut is not None and domain.source != "given":  # tokens (issue 22)
        domain = cut_domain(imported.cut, imported.input.sample_shape)
    targets = (
        None
        if search.targets
        else default_targets_for(imported, search.max_units, also=search.layers)
    )
    standard_only = not search.methods and not has_rectifiers(imported)
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
    search = options.search
    config = checked_config(analysis_config(options, defaults.domain.domain), imported)
    given = ("standard",) if defaults.standard_only else search.methods
    methods = plan_methods(given, search.backward_slopes, config.default_beta)
    targets = plan_targets(imported, options, defaults)
    return RunPlan(tuple(targets), tuple(methods), config)


def plan_methods(
    methods: tuple[str | GradientMethod, ...], slopes: tuple[float, ...], default_beta: float
) -> list[ReportedMethod]:
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
    search = options.search
    if search.targets:
        return resolve_targets(imported, [*search.targets, *search.layers], search.max_units)
    if defaults is None or defaults.targets is None:
        chosen = default_targets_for(imported, search.max_units, also=search.layers)
    else:
        chosen = defaults.targets
    layers = parse_targets(search.layers, imported, search.max_units, shapes=chosen.shapes)
    return list(dict.fromkeys([*chosen.targets, *layers]))


def analysis_config(options: AnalyzeOptions, domain: InputDomain) -> AMConfig:
    """The engine settings the options ask for (not yet checked against a model)."""
    optimize = options.optimize
    if optimize.step_rule not in STEP_RULES:
        raise SettingsError(
            f"unknown step rule {optimize.step_rule!r}; choose from {', '.join(STEP_RULES)}"
        )
    regularizers = (*(ROBUST_TRANSFORMS if optimize.robust else ()), *optimize.regularizers)
    return AMConfig.of(
        steps=optimize.steps,
        lr=optimize.lr if optimize.lr is not None else _default_lr(options, domain),
        restarts=optimize.restarts,
        seed=optimize.seed,
        domain=domain,
        device=resolve_device(optimize.device),
        batch_size=options.budget.batch_size,
        parameterization=optimize.parameterization,
        lr_schedule=optimize.lr_schedule,
        start=optimize.start,
        screen=optimize.screen,
        racing=options.search.racing,
        regularizers=tuple(regularizers),
        **STEP_RULES[optimize.step_rule],
    )


def _default_lr(options: AnalyzeOptions, domain: InputDomain) -> float:
    """:data:`DEFAULT_LR` in raw units scaled to the input range for ``pixel``; unscaled in
    parameter units for the Fourier parameterizations, whose parameter does not grow with the
    range (scaling it made ``fourier`` on ``0..255`` saturate)."""
    if options.optimize.parameterization != "pixel":
        return DEFAULT_LR
    return DEFAULT_LR * (domain.high - domain.low) / 2
