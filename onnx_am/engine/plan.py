"""``RunPlan``: what one run optimizes and how, parsed once from what the user gave.

A plan holds typed objects only: the targets as :class:`~onnx_am.objectives.Target` objects
(checked against the model by one probe forward), the reported methods as
:class:`~onnx_am.methods.ReportedMethod` objects, and a validated
:class:`~onnx_am.engine.config.AMConfig` whose regularizers are objects. It is built at a
public edge, :func:`parse_run_plan` for :func:`~onnx_am.engine.maximizer.maximize` and
:func:`onnx_am.audit.options.plan_analysis` for ``analyze``, and then passed down unchanged:
the engine, the cross-check and the report read its objects and parse nothing again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from onnx_am.engine.config import AMConfig
from onnx_am.engine.parameterizations import check_parameterization
from onnx_am.engine.regularizers import parse_regularizer
from onnx_am.methods import GradientMethod, ReportedMethod, distinct_runs, expand_methods
from onnx_am.objectives import Target, resolve_targets

if TYPE_CHECKING:
    from onnx_am.importer.model import ImportedModel


@dataclass(frozen=True)
class RunPlan:
    """Targets, reported methods and settings of one run, as typed objects.

    Attributes:
        targets: the units to maximize, in report order, without duplicates.
        methods: the reported methods, in the order asked.
        config: the settings, validated against the model.
    """

    targets: tuple[Target, ...]
    methods: tuple[ReportedMethod, ...]
    config: AMConfig

    @property
    def runs(self) -> tuple[GradientMethod, ...]:
        """The gradient methods whose rows the methods need, each once, in order."""
        return tuple(distinct_runs(self.methods))

    @property
    def labels(self) -> tuple[str, ...]:
        """The reported methods' labels (``"decoupled(0.3)"``, ``"best(0.3)"``)."""
        return tuple(plan.label for plan in self.methods)

    @property
    def rows_per_unit(self) -> int:
        """Optimized inputs per target unit (a row per gradient method and restart)."""
        return len(self.runs) * self.config.starts.restarts

    @property
    def needs_rewrite(self) -> bool:
        """Whether any row needs the decoupled-rectifier graph."""
        return any(method.kind != "standard" for method in self.runs)

    def with_targets(self, targets: Sequence[Target]) -> RunPlan:
        """The same methods and settings for some of the targets (a chunk of the run)."""
        return replace(self, targets=tuple(targets))


def parse_run_plan(
    imported: ImportedModel,
    targets: Sequence[Target | str] | str | None,
    methods: Sequence[object] | str | GradientMethod = ("standard",),
    config: AMConfig | None = None,
) -> RunPlan:
    """Parse and check what a caller of :func:`~onnx_am.engine.maximizer.maximize` gave.

    Args:
        imported: the model.
        targets: :class:`Target` objects or strings (``"logits:3"``); ``None`` for every unit
            of the first output (at most 64).
        methods: :class:`GradientMethod` / :class:`ReportedMethod` objects or strings (see
            :func:`onnx_am.methods.expand_methods`).
        config: settings (default :class:`AMConfig`).

    Returns:
        The :class:`RunPlan`.

    Raises:
        SettingsError: a bad setting, or one that does not fit the model's input.
        InputSpecError: an input box that does not fit the model's input.
        TargetError: unknown tensors or units out of range.
        MethodError: an unparsable method.
    """
    config = checked_config(config or AMConfig(), imported)
    return RunPlan(
        tuple(resolve_targets(imported, targets)),
        tuple(expand_methods(methods, config.default_beta)),
        config,
    )


def checked_config(config: AMConfig, imported: ImportedModel) -> AMConfig:
    """``config`` validated against the model, its regularizer strings parsed into objects."""
    config.validate()
    config.domain.check(imported.input)
    check_parameterization(config.parameterization, imported.input)
    regularizers = tuple(
        parse_regularizer(r) if isinstance(r, str) else r for r in config.regularizers
    )
    return replace(config, regularizers=regularizers)
