"""The one way an audit is imported and planned: import -> settings parsed once -> rewrite ->
time real steps -> fit to the command's :class:`~onnx_am.engine.deadline.Deadline`.

Every way in goes through :class:`AuditPipeline`: :func:`~onnx_am.audit.analyze.analyze`
(one model), :func:`~onnx_am.audit.analyze.estimate_analysis` (``--dry-run``),
:func:`~onnx_am.audit.many.analyze_many` (many models sharing one deadline: each plans against
what is left, less what the models planned before it will need, split with the models after
it, see :class:`BudgetShare`) and the Ray workers (:func:`import_model` and
:func:`rewrite_for`, the same import and rewrite from the model's bytes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from onnx_am.audit import chunks
from onnx_am.audit.budget import Work, format_duration
from onnx_am.audit.defaults import AnalysisDefaults
from onnx_am.audit.options import AnalyzeOptions, ImportSettings, choose_defaults, plan_analysis
from onnx_am.audit.planning import BudgetPlan, measure_costs, plan_budget
from onnx_am.audit.progress import AnalyzeProgress, ProgressCallback
from onnx_am.engine.deadline import Deadline
from onnx_am.engine.plan import RunPlan
from onnx_am.errors import BudgetError
from onnx_am.importer.model import ImportedModel, import_onnx
from onnx_am.methods import method_label
from onnx_am.tokens.run import TokenPlan, plan_tokens

if TYPE_CHECKING:
    import onnx

    from onnx_am.passes.decouple import RewriteResult


def import_model(
    source: str | Path | bytes | onnx.ModelProto,
    settings: ImportSettings,
    deadline: Deadline | None = None,
) -> ImportedModel:
    """The model as every part of an audit imports it (driver and workers alike); its probes
    and parity check also end with ``deadline`` when it has a budget."""
    limit = settings.probe_limit
    left = None if deadline is None else deadline.left()
    if left is not None:
        limit = limit.until(time.monotonic() + left, deadline.budget)
    return import_onnx(
        source,
        settings.input_name,
        settings.input_shape,
        settings.feeds,
        at=settings.at,
        seq_len=settings.seq_len,
        probe_limit=limit,
    )


def rewrite_for(imported: ImportedModel, plan: RunPlan) -> RewriteResult | None:
    """The rectifier rewrite every chunk of ``plan`` shares; None when every row is standard."""
    if not plan.needs_rewrite:
        return None
    from onnx_am.passes import decouple_rectifiers

    return decouple_rectifiers(imported)


@dataclass(frozen=True)
class BudgetShare:
    """One model's part of a deadline that several models of one command share.

    The models are planned one after another and their chunks run together afterwards, so a
    model plans against what is left, less what the earlier models' plans will still need
    (``committed``), split evenly with the ``models_after`` models still to plan (whose own
    import and timing then come out of their parts). A model whose even part cannot hold one
    unit takes from the later models' parts what it lacks for one unit (as the budget
    error's smallest budget says, rounded up), never more than the earlier plans left.

    Attributes:
        models_after: models still to plan after this one.
        committed: estimated seconds of the models planned before this one.
    """

    models_after: int = 0
    committed: float = 0.0

    def alone(self) -> BudgetShare:
        """The share of this model if no model came after it."""
        return BudgetShare(0, self.committed)

    def kept_for_others(self, left: float | None) -> float:
        """Seconds of ``left`` that this model leaves to the others (0 without a budget)."""
        if left is None:
            return 0.0
        mine = (left - self.committed) / (self.models_after + 1)
        return max(0.0, left - mine)


#: The share of a command with one model: all of it.
WHOLE = BudgetShare()


@dataclass(frozen=True)
class LoadedModel:
    """A model imported for an audit, with the choices made for it and the run it asks for.

    Attributes:
        imported: the model.
        defaults: what was chosen where the settings left a choice to the model.
        asked: the run the settings ask for, parsed once (before any budget cut).
        tokens: the token searches asked for (a model cut at a lookup), else ``None``.
    """

    imported: ImportedModel
    defaults: AnalysisDefaults
    asked: RunPlan
    tokens: TokenPlan | None = None


class AuditPipeline:
    """Imports and plans audits with one set of options against one deadline.

    Args:
        options: what the user gave.
        deadline: the command's deadline (every model of the command shares it).
        notify: progress events (``"import"``, ``"timing"``).
    """

    def __init__(self, options: AnalyzeOptions, deadline: Deadline, notify: ProgressCallback):
        self.options, self.deadline, self.notify = options, deadline, notify
        self.imports = options.imports.resolved()

    def load(self, source: str | Path) -> LoadedModel:
        """Import the model and parse every option against it, once.

        Raises:
            BudgetError: the deadline has passed already (nothing is imported).
            OnnxAmError: unreadable model, bad settings, targets or methods.
        """
        if self.deadline.expired():
            spent = self.deadline.spent()
            raise BudgetError(
                f"time budget {format_duration(self.deadline.budget)} was used up before "
                f"{Path(str(source)).name} was started ({format_duration(spent)} spent)",
                smallest=spent,
            )
        self.notify(AnalyzeProgress("import"))
        imported = import_model(source, self.imports, self.deadline)
        defaults = choose_defaults(self.options, imported)
        asked = plan_analysis(self.options, imported, defaults)
        tokens, optimize = self.options.tokens, self.options.optimize  # tokens (issue 22)
        tokens = plan_tokens(
            imported, tokens.token_methods, optimize.steps, tokens.fix, tokens.vocab, optimize.seed
        )
        return LoadedModel(imported, defaults, asked, tokens)

    def fit(
        self,
        loaded: LoadedModel,
        rewrite: RewriteResult | None,
        resumed: Work | None = None,
        share: BudgetShare = WHOLE,
    ) -> tuple[BudgetPlan, RunPlan]:
        """Time real steps and fit the run to this model's share of the deadline; a resumed
        report keeps its work. Returns the plan and the run to do.

        Raises:
            BudgetError: the share cannot hold one unit.
        """
        self.notify(AnalyzeProgress("timing"))
        asked, config = loaded.asked, loaded.asked.config
        measured = measure_costs(
            loaded.imported,
            config,
            asked.targets,
            asked.runs,
            chunks.chunk_rows(config.device),
            rewrite,
            loaded.tokens,
        )
        budget, spent = self.deadline.budget, self.deadline.spent()  # one reading
        left = None if budget is None else budget - spent
        methods = [method_label(m) for m in asked.runs]

        def plan(others: float):
            return plan_budget(
                asked.targets, asked.labels, methods, config, measured, budget, spent,
                fixed_work=resumed, others=others,
            )  # fmt: skip

        even = share.kept_for_others(left)
        try:
            budget_plan, kept, work = plan(even)
        except BudgetError as exc:
            if not share.models_after:
                raise
            # Its even part cannot hold one unit: it takes from the later models' parts what
            # the smallest budget that could (rounded up) lacks, never from earlier plans.
            lacking = exc.smallest - budget
            budget_plan, kept, work = plan(max(share.alone().kept_for_others(left), even - lacking))
        return budget_plan, fitted(asked, kept, work)


def fitted(asked: RunPlan, targets, work: Work) -> RunPlan:
    """``asked`` cut to ``targets`` and the work's restarts and steps."""
    config = asked.config.replaced(restarts=work.restarts, steps=work.steps)
    return replace(asked, targets=tuple(targets), config=config)


__all__ = [
    "WHOLE",
    "AuditPipeline",
    "BudgetShare",
    "LoadedModel",
    "fitted",
    "import_model",
    "rewrite_for",
]
