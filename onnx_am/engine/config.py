"""``AMConfig``: the settings of one :func:`onnx_am.engine.maximizer.maximize` call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from onnx_am.domain import InputDomain
from onnx_am.engine.parameterizations import check_parameterization
from onnx_am.engine.racing import RacingSettings
from onnx_am.engine.regularizers import Regularizer, parse_regularizer
from onnx_am.engine.schedules import check_lr_schedule
from onnx_am.engine.starts import DEFAULT_START, SCREEN_CANDIDATES, START_KINDS
from onnx_am.errors import SettingsError
from onnx_am.methods import DEFAULT_BETA
from onnx_am.reference.tolerance import DEFAULT_TOLERANCE
from onnx_am.settings import build, flat, group, replaced

OPTIMIZERS = ("pga", "adam")
#: Defaults shared by the library and ``analyze`` (which reads them from here): 256 steps at
#: lr 0.1 converge on the sample models (benchmarks/results/am_quality.md); seed 0.
DEFAULT_STEPS = 256
DEFAULT_LR = 0.1
DEFAULT_SEED = 0

#: ``progress(done_steps, total_steps, info)``; ``info`` has ``batch``, ``batches``, ``rows``.
Progress = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class AscentSettings:
    """How each gradient step is taken.

    Attributes:
        steps: gradient steps per row.
        lr: step size (raw-input units per unit gradient for ``pga``).
        optimizer: ``"pga"`` (projected gradient ascent) or ``"adam"``.
        normalize_grad: scale each row's gradient to unit RMS before a ``pga`` step.
        lr_schedule: how ``lr`` changes over the steps, one of
            :data:`onnx_am.engine.schedules.LR_SCHEDULES` (``"constant"``, as in the paper).
        lr_floor: the factor on ``lr`` at the end of a decay.
        lr_cycles: decays of a ``"cosine-restarts"`` schedule.
    """

    steps: int = DEFAULT_STEPS
    lr: float = DEFAULT_LR
    optimizer: str = "pga"
    normalize_grad: bool = False
    lr_schedule: str = "constant"
    lr_floor: float = 0.05
    lr_cycles: int = 1


@dataclass(frozen=True)
class StartSettings:
    """Where the rows start, and how many starts each unit gets.

    Attributes:
        restarts: independent starts per (unit, method); the best is reported.
        seed: seeds starts, random corners and jitter.
        start: one of :data:`onnx_am.engine.starts.START_KINDS`.
        init_scale: noise of the ``random`` start, as a fraction of half the range.
        screen: candidates (forward passes) per screened restart of the ``screened`` and
            ``hedged`` starts.
    """

    restarts: int = 1
    seed: int = DEFAULT_SEED
    start: str = DEFAULT_START
    init_scale: float = 0.1
    screen: int = SCREEN_CANDIDATES


@dataclass(frozen=True)
class CheckSettings:
    """How every result is checked.

    Attributes:
        crosscheck: recompute every result with onnxruntime.
        tolerance: relative tolerance of the cross-check.
        baseline_corners: random corners tried by the trivial baselines.
    """

    crosscheck: bool = True
    tolerance: float = DEFAULT_TOLERANCE
    baseline_corners: int = 16


@dataclass(frozen=True)
class AMConfig:
    """Settings of one :func:`~onnx_am.engine.maximizer.maximize` call, in groups.

    Build it from flat keywords with :meth:`of` (``AMConfig.of(steps=64, restarts=3)``; each
    keyword goes to the group that declares it) or from the groups themselves.

    Attributes:
        ascent: how each step is taken (:class:`AscentSettings`: steps, lr, optimizer, ...).
        starts: where rows start (:class:`StartSettings`: restarts, seed, start, ...).
        checks: how results are checked (:class:`CheckSettings`: crosscheck, tolerance, ...).
        domain: the raw input box and preprocessing.
        parameterization: what the loop optimizes: ``"pixel"`` (default, as in the paper:
            the raw input), ``"fourier"`` or ``"fourier+decorrelated"`` (image inputs; see
            :mod:`onnx_am.engine.parameterizations`; ``lr`` then is in parameter units).
        regularizers: regularizers or strings like ``"tv(0.1)"``; none by default.
        default_beta: beta of a bare ``decoupled``/``proxy`` and of ``best``.
        batch_size: rows per engine step (bounds memory); ``None`` (default) picks it from
            the measured activation memory of one row and the free memory
            (:mod:`onnx_am.engine.memory`, at most 64); rowwise-only models use 1. Results
            do not depend on it.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"``).
        racing: race candidates per unit (:mod:`onnx_am.engine.racing`) at the cost of
            ``restarts`` plain rows per method; None (default): every row runs every step.
            The engine stays plain, as its other defaults are the paper's (one start, the raw
            step); ``analyze`` races by default (``onnx_am.audit.options.DEFAULT_RACING``).
    """

    ascent: AscentSettings = group(AscentSettings)
    starts: StartSettings = group(StartSettings)
    checks: CheckSettings = group(CheckSettings)
    domain: InputDomain = field(default_factory=InputDomain)
    parameterization: str = "pixel"
    regularizers: tuple[Regularizer | str, ...] = ()
    default_beta: float = DEFAULT_BETA
    batch_size: int | None = None
    device: str = "cpu"
    racing: RacingSettings | None = None

    @classmethod
    def of(cls, **settings: Any) -> AMConfig:
        """The config from flat keywords (``steps=64, restarts=3, device="cuda"``), each
        routed to its group; a group may also be given whole (``ascent=...``).

        Raises:
            TypeError: a keyword no group declares.
        """
        return build(cls, settings)

    def replaced(self, **settings: Any) -> AMConfig:
        """A copy with flat keywords (or whole groups) changed, as in :meth:`of`."""
        return replaced(self, **settings)

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first bad setting."""
        ascent, starts = self.ascent, self.starts
        checks = [
            (ascent.steps >= 1, f"steps must be >= 1, got {ascent.steps}"),
            (ascent.lr > 0, f"lr must be > 0, got {ascent.lr}"),
            (
                ascent.optimizer in OPTIMIZERS,
                f"unknown optimizer {ascent.optimizer!r}; choose pga or adam",
            ),
            (starts.restarts >= 1, f"restarts must be >= 1, got {starts.restarts}"),
            (
                starts.start in START_KINDS,
                f"unknown start {starts.start!r}; choose from {', '.join(START_KINDS)}",
            ),
            (starts.screen >= 1, f"screen must be >= 1 candidate, got {starts.screen}"),
            (
                self.batch_size is None or self.batch_size >= 1,
                f"batch_size must be >= 1 or None (auto), got {self.batch_size}",
            ),
            (self.checks.tolerance > 0, f"tolerance must be > 0, got {self.checks.tolerance}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)
        check_parameterization(self.parameterization)
        check_lr_schedule(ascent.lr_schedule, ascent.lr_floor, ascent.lr_cycles)
        if self.racing is not None:
            self.racing.validate()
        if self.parameterization != "pixel":
            self._check_smoothing()
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise SettingsError(f"device {self.device!r} asked for but torch sees no CUDA device")
        if not self.device.startswith(("cpu", "cuda")):
            raise SettingsError(f"unknown device {self.device!r}; use cpu or cuda")

    def _check_smoothing(self) -> None:
        """A regularizer that smooths the raw input has nothing to act on with a parameter."""
        for regularizer in self.regularizers:
            parsed = parse_regularizer(regularizer) if isinstance(regularizer, str) else regularizer
            if type(parsed).smooth is not Regularizer.smooth:
                raise SettingsError(
                    f"regularizer {parsed.label!r} smooths the raw input and cannot be combined "
                    f"with parameterization {self.parameterization!r}"
                )

    def to_dict(self) -> dict:
        """The settings as flat JSON-ready values (domain as a dict, regularizers as labels)."""
        skip = ("domain", "regularizers", "racing")
        data = {k: v for k, v in flat(self).items() if k not in skip}
        data["domain"] = self.domain.to_dict()
        data["racing"] = None if self.racing is None else self.racing.to_dict()
        data["regularizers"] = [r if isinstance(r, str) else r.label for r in self.regularizers]
        return data
