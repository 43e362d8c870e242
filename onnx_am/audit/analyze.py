"""``analyze``: the zero-config audit of an ONNX model, written to a report directory.

import -> one :class:`~onnx_am.engine.plan.RunPlan` from the options
(:func:`~onnx_am.audit.options.plan_analysis`) -> parity with onnxruntime -> time a few real
steps and fit the run to the time budget (:mod:`onnx_am.audit.planning`; ``report.json`` gets
the ``plan`` before any step) -> maximize chunk by chunk (:mod:`onnx_am.audit.chunks`),
checkpointing the running chunk at least every minute and writing ``report.json`` after every
chunk -> plots and ``index.html``.

:func:`prepare_audit` (everything up to the plan), :func:`run_audits` and :func:`finish_audit`
are those stages. By default (no executor) the chunks run here, one after another, with
checkpoints (:meth:`~onnx_am.audit.chunks.ChunkedRun.optimize`); given an executor (Ray workers:
:mod:`onnx_am.audit.executor`, :mod:`onnx_am.audit.ray_executor`), :func:`run_audits` sends
them there and keeps each as it finishes, without checkpoints (a chunk stopped midway is
run again on resume); :mod:`onnx_am.audit.many` runs the chunks of several models in one
:func:`run_audits`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path

import onnx

from onnx_am.audit import chunks
from onnx_am.audit.budget import Work, spread
from onnx_am.audit.chunks import ChunkedRun
from onnx_am.audit.executor import (
    ChunkExecutor,
    ChunkRecipe,
    ChunkTask,
    ModelWork,
    portable_imports,
)
from onnx_am.audit.options import (
    DEFAULT_INPUT_RANGE,
    DEFAULT_LR,
    DEFAULT_MAX_UNITS,
    DEFAULT_METHODS,
    DEFAULT_RESTARTS,
    DEFAULT_SEED,
    DEFAULT_STEP_RULE,
    DEFAULT_STEPS,
    STEP_RULES,
    AnalyzeOptions,
    plan_targets,
)
from onnx_am.audit.pipeline import WHOLE, AuditPipeline, BudgetShare, fitted, rewrite_for
from onnx_am.audit.planning import BudgetPlan
from onnx_am.audit.progress import AnalyzeProgress, ProgressCallback
from onnx_am.audit.render.images import DisplayDomain
from onnx_am.audit.render.site import render_timed
from onnx_am.audit.report import REPORT_FILE, SCHEMA_VERSION, ReportDir
from onnx_am.audit.writer import ResultWriter
from onnx_am.domain import InputDomain
from onnx_am.engine.deadline import Deadline
from onnx_am.engine.pace import Pace
from onnx_am.engine.plan import RunPlan
from onnx_am.engine.results import UnitResult
from onnx_am.engine.starts import SCREENING_FROM
from onnx_am.importer.model import ImportedModel
from onnx_am.reference.parity import ParityResult, check_parity
from onnx_am.tokens.run import TokenPlan, search_tokens, token_cut, token_cut_text


@dataclass
class AnalyzeReport:
    """What :func:`analyze` wrote.

    Attributes:
        out_dir: the report directory.
        doc: the content of ``report.json``.
        results: every result, images included.
        parity: torch vs onnxruntime on random inputs.
    """

    out_dir: Path
    doc: dict
    results: list[UnitResult]
    parity: ParityResult

    @property
    def disagreements(self) -> list[UnitResult]:
        return [r for r in self.results if not r.agrees]

    @property
    def exit_code(self) -> int:
        """0, or 3 when onnxruntime disagrees (parity or any result)."""
        return 3 if (not self.parity.passed or self.disagreements) else 0


def default_out_dir(model_path: str | Path) -> Path:
    """``./onnx-am-report/<model stem>/``."""
    return Path("onnx-am-report") / Path(model_path).stem


def analyze(
    model_path: str | Path,
    options: AnalyzeOptions | None = None,
    out_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    executor: ChunkExecutor | None = None,
    *,
    deadline: Deadline | None = None,
) -> AnalyzeReport:
    """Audit a model and write the report directory.

    Args:
        model_path: the ``.onnx`` file.
        options: settings (defaults: :class:`AnalyzeOptions`).
        out_dir: the report directory (default :func:`default_out_dir`).
        progress: called with :class:`AnalyzeProgress` as work proceeds (the ``"plan"``
            event carries the :class:`~onnx_am.audit.planning.BudgetPlan`); it may raise
            (e.g. ``KeyboardInterrupt``) to stop: while optimizing that happens between
            steps, and the running chunk is checkpointed first.
        executor: where the chunks run (default: here, one after another, checkpointed); e.g.
            a :class:`~onnx_am.audit.ray_executor.RayExecutor` (no checkpoints: a chunk
            stopped midway runs again on resume). The caller closes it.
        deadline: the command's :class:`~onnx_am.engine.deadline.Deadline` (the command line
            starts it before loading torch, so that loading counts too); default: the
            options' ``time_budget``, starting now. Its budget is the one used.

    Returns:
        The :class:`AnalyzeReport`; its ``exit_code`` is 3 when onnxruntime disagrees.

    Raises:
        OnnxAmError: unreadable model, bad settings, targets or methods, a time budget that
            cannot hold one unit (``BudgetError``), or an existing report that may not be
            overwritten or resumed (subclasses say which).
    """
    options = options or AnalyzeOptions()
    notify = progress or (lambda event: None)
    deadline = deadline or Deadline.starting_now(options.budget.time_budget)
    pipeline = AuditPipeline(options, deadline, notify)
    if executor is not None:
        executor.prepare()  # e.g. Ray workers, started before the plan counts the time left
    audit = prepare_audit(pipeline, model_path, out_dir or default_out_dir(model_path))
    if executor is None:  # the default: here, chunk by chunk, checkpointed
        tic = time.perf_counter()
        audit.run.optimize(notify, audit.plan.pace(deadline))
        audit.timings["optimize"] = time.perf_counter() - tic
    else:  # workers: no checkpoints (issue 13; see run_audits)
        run_audits([audit], executor, notify, deadline)
    return finish_audit(audit, notify)


@dataclass
class Audit:
    """One model being audited (see :func:`prepare_audit`).

    Attributes:
        key: names the model among those of one run.
        run: the chunks still to do, and (its ``writer``) the results so far.
        work: what an executor needs to run the model's chunks.
        parity: torch vs onnxruntime on random inputs.
        timings: seconds per phase so far.
        started: when the audit started (``time.perf_counter``).
        plan: the run fitted to its share of the deadline.
        tokens: the token searches run after the chunks (a model cut at an embedding
            lookup or one-hot, at the steps the budget left), else ``None``.
        deadline: the command's deadline (the token searches stop at it).
    """

    key: str
    run: ChunkedRun
    work: ModelWork
    parity: ParityResult
    timings: dict[str, float]
    started: float
    plan: BudgetPlan
    tokens: TokenPlan | None = None
    deadline: Deadline | None = None


def prepare_audit(
    pipeline: AuditPipeline,
    model_path: str | Path,
    out_dir: str | Path,
    key: str | None = None,
    share: BudgetShare = WHOLE,
) -> Audit:
    """Everything before the chunks: import, options, the report (resumed if asked), parity,
    the rectifier rewrite, timing and fitting to the deadline (``share``: this model's part
    of it), the results of a resumed report; ``report.json`` gets the plan.

    Args:
        pipeline: the options, the deadline and the progress callback of the command.
        key: names the model among those of one run (default: the report directory).

    Raises:
        OnnxAmError: as :func:`analyze`.
    """
    options, notify = pipeline.options, pipeline.notify
    started = time.perf_counter()
    timings: dict[str, float] = {}
    loaded = pipeline.load(model_path)
    imported, defaults, asked = loaded.imported, loaded.defaults, loaded.asked
    timings["import"] = time.perf_counter() - started

    model = model_summary(model_path, imported)
    report = ReportDir.open(out_dir, options.output.force, options.output.resume)
    resumed = _resumed_work(report.previous, asked)
    if resumed is None:  # a fresh run: the settings as asked (a budget cut is checked below)
        report.check_resumable(model["sha256"], _settings(options, asked, asked, imported))
    else:  # other settings are refused before any time goes to timing
        kept = fitted(asked, spread(list(asked.targets), resumed.units), resumed)
        report.check_resumable(model["sha256"], _settings(options, kept, asked, imported))
    notify(AnalyzeProgress("plan", notes=tuple(defaults.notes)))  # every check passed

    notify(AnalyzeProgress("parity"))
    tic = time.perf_counter()
    domain = asked.config.domain
    parity = _parity(imported, domain)
    timings["parity"] = time.perf_counter() - tic
    rewrite = rewrite_for(imported, asked)
    tic = time.perf_counter()
    budget_plan, plan = pipeline.fit(loaded, rewrite, resumed, share)
    token_steps = budget_plan.token_steps or plan.config.ascent.steps  # tokens (issue 22)
    tokens = loaded.tokens and loaded.tokens.with_steps(token_steps)
    timings["timing"] = time.perf_counter() - tic
    settings = _settings(options, plan, asked, imported)
    report.check_resumable(model["sha256"], settings)

    doc = {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "model": model,
        "parity": parity.to_dict(),
        "rewrites": rewrite.to_dict() if rewrite is not None else None,
        "defaults": defaults.to_dict(),
        "settings": settings,
        "timings": timings,
    }
    if imported.cut is not None:  # tokens (issue 22)
        doc["cut"] = imported.cut.to_dict()
    display = DisplayDomain(domain.low, domain.high, imported.input.layout)
    writer = ResultWriter(report, plan, display, doc)
    writer.restore(report.done_results(), report.done_baselines())
    run = ChunkedRun(writer, imported, rewrite, options.output.checkpoint_interval)
    budget_plan = replace(budget_plan, units_done=writer.units_done)
    doc["plan"] = budget_plan.to_dict()
    notify(AnalyzeProgress("plan", plan=budget_plan))
    report.write_json(REPORT_FILE, run.document("running"))  # the plan, before any step

    key = key or str(report.root)
    recipe = ChunkRecipe(key, portable_imports(pipeline.imports, imported), plan.with_targets(()))
    work = ModelWork(recipe, imported, rewrite)
    return Audit(key, run, work, parity, timings, started, budget_plan, tokens, pipeline.deadline)


def audit_paces(audits: list[Audit], deadline: Deadline) -> dict[str, Pace | None]:
    """The pace of each audit of a command whose chunks run in the order of ``audits``.

    What is left of ``deadline`` now, less what every audit still does after its steps
    (pictures, pages), is the time of the steps; it is split among the audits in proportion
    to their planned step time, in order: an audit's steps end when its slice and the
    earlier ones are used up, so an audit that runs slower than planned is cut within its
    slice and never takes the next one's.
    """
    if deadline.budget is None:
        return {audit.key: None for audit in audits}
    overhead = sum(audit.plan.overhead for audit in audits)
    planned = sum(audit.plan.step_seconds for audit in audits)
    steps_left = deadline.left() - overhead
    paces, through = {}, 0.0
    for audit in audits:
        through += audit.plan.step_seconds
        after = steps_left * (1.0 - through / planned) if planned > 0 else 0.0
        paces[audit.key] = audit.plan.pace(deadline, overhead - audit.plan.overhead + after)
    return paces


def run_audits(
    audits: list[Audit], executor: ChunkExecutor, notify: ProgressCallback, deadline: Deadline
) -> None:
    """Run the unfinished chunks of every audit on ``executor``, paced by ``deadline``
    (:func:`audit_paces`); each audit's report is written after every chunk of it that
    finishes. Units in progress events count over all audits. No checkpoints here (issue 13
    reconciled with issue 12): a chunk stopped midway runs again from its start on resume."""
    by_key = {audit.key: audit for audit in audits}
    paces = audit_paces(audits, deadline)
    for audit in audits:
        audit.run.start(paces[audit.key])
    tasks = [task for audit in audits for task in audit.run.pending(audit.key)]
    total = sum(len(audit.run.plan.targets) for audit in audits)
    done = total - sum(len(task.targets) for task in tasks)
    tic = time.perf_counter()

    def on_step(task: ChunkTask, step: int, steps: int) -> None:
        notify(AnalyzeProgress("optimize", done, total, step, steps, len(task.targets)))

    works = {a.key: a.work for a in audits}
    for task, found in executor.run(works, tasks, on_step, paces):
        by_key[task.model].run.accept(found)
        done += len(task.targets)
        notify(AnalyzeProgress("optimize", done, total))
    for audit in audits:
        audit.timings["optimize"] = time.perf_counter() - tic


def finish_audit(audit: Audit, notify: ProgressCallback, after: float = 0.0) -> AnalyzeReport:
    """The token searches, plots, ``index.html`` and the complete ``report.json`` of an audit
    whose chunks are all done (``after``: seconds before the deadline kept for what other
    models of the command still do after this one)."""
    total = len(audit.run.plan.targets)
    notify(AnalyzeProgress("render", total, total, plan=audit.plan))
    more = {}
    if audit.tokens is not None:  # tokens (issue 22): searches over ids, checked by onnxruntime
        more["tokens"] = _run_tokens(audit, after)
    writer = audit.run.writer
    doc = audit.run.document("complete", **more)
    results = writer.ordered()
    render_timed(writer.report, doc, results, writer.display, audit.timings, audit.started)
    writer.report.write_json(REPORT_FILE, doc)
    notify(AnalyzeProgress("done", total, total, plan=audit.plan))
    return AnalyzeReport(writer.report.root, doc, results, audit.parity)


def estimate_analysis(
    model_path: str | Path,
    options: AnalyzeOptions | None = None,
    progress: ProgressCallback | None = None,
    *,
    deadline: Deadline | None = None,
) -> BudgetPlan:
    """What :func:`analyze` would do with these options, what it would cut and cost: the model
    is imported and a few steps are timed; nothing is written (``--dry-run``).

    Raises:
        OnnxAmError: as :func:`analyze`, before it writes anything.
    """
    options = options or AnalyzeOptions()
    notify = progress or (lambda event: None)
    deadline = deadline or Deadline.starting_now(options.budget.time_budget)
    pipeline = AuditPipeline(options, deadline, notify)
    loaded = pipeline.load(model_path)
    budget_plan, _ = pipeline.fit(loaded, rewrite_for(loaded.imported, loaded.asked))
    notify(AnalyzeProgress("plan", plan=budget_plan))
    return budget_plan


def _asked_work(asked: RunPlan) -> Work:
    config = asked.config
    return Work(
        len(asked.targets),
        len(asked.runs),
        len(asked.methods),
        config.starts.restarts,
        config.ascent.steps,
        config.racing,
    )


def _resumed_work(previous: dict | None, asked: RunPlan) -> Work | None:
    """The fitted work of the report being resumed (its plan), or None for a fresh run."""
    plan = (previous or {}).get("plan")
    if not isinstance(plan, dict):
        return None
    try:
        work = _asked_work(asked)
        return replace(
            work,
            units=len(plan["targets"]),
            restarts=plan["restarts"],
            steps=plan["steps"],
            token_steps=plan.get("token_steps"),
        )
    except (KeyError, TypeError):
        return None


def model_summary(model_path: str | Path, imported: ImportedModel) -> dict:
    """Path, sha256, producer, opsets, input and outputs of the model."""
    path = Path(model_path)
    original: onnx.ModelProto = imported.original
    producer = " ".join(
        p for p in (original.producer_name, original.producer_version) if p and p != "None"
    )
    return {
        "path": str(path),
        "name": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "producer": producer or None,
        "ir_version": int(original.ir_version),
        "opsets": dict(imported.opsets),
        "input": imported.input.to_dict(),
        "inputs": imported.inputs,
        "outputs": [spec.to_dict() for spec in imported.outputs],
        "metadata": imported.metadata.to_dict(),
        "batch_mode": imported.batch.mode,
        "prepass_notes": list(imported.prepass_notes),
    }


def _settings(
    options: AnalyzeOptions, plan: RunPlan, asked: RunPlan, imported: ImportedModel
) -> dict:
    """Everything that changes results; a resumed report must match it exactly.

    ``targets``, ``steps`` and ``restarts`` are what runs (``plan``, after any budget cut);
    the ``asked_*`` keys are what the options asked for (``asked``).
    """
    config = plan.config
    settings = {
        "targets": [t.name for t in plan.targets],
        "asked_units": len(asked.targets),
        "asked_restarts": asked.config.starts.restarts,
        "asked_steps": asked.config.ascent.steps,
        "methods": list(plan.labels),
        "steps": config.ascent.steps,
        "lr": config.ascent.lr,
        "restarts": config.starts.restarts,
        "seed": config.starts.seed,
        "optimizer": config.ascent.optimizer,
        "normalize_grad": config.ascent.normalize_grad,
        "lr_schedule": config.ascent.lr_schedule,
        "regularizers": [r if isinstance(r, str) else r.label for r in config.regularizers],
        "start": config.starts.start,
        "input": options.imports.input_name,
        "input_shape": list(options.imports.input_shape) if options.imports.input_shape else None,
        "feeds": {name: feed.fingerprint for name, feed in imported.feeds.items()},
        "input_range": [config.domain.low, config.domain.high],
        "mean": list(config.domain.mean) if config.domain.mean else None,
        "std": list(config.domain.std) if config.domain.std else None,
        "device": config.device,
        "parameterization": config.parameterization,
        "chunk_rows": chunks.chunk_rows(config.device),
    }
    if config.starts.start in SCREENING_FROM:  # absent otherwise, so older reports still resume
        settings["screen"] = config.starts.screen
    if config.racing is not None:  # likewise: racing restarts change every result
        settings["racing"] = config.racing.to_dict()
    # Results do not depend on the engine's rows per step (starts are seeded per target and
    # restart; only float rounding of batched kernels may differ, ~1e-7 relative), so the
    # automatic size, which follows the free memory of the machine, is left out: a report
    # started elsewhere can be resumed here. A size given on purpose is compared.
    if options.budget.batch_size is not None:
        settings["batch_size"] = options.budget.batch_size
    if imported.cut is not None:  # tokens (issue 22); absent otherwise, so older reports resume
        settings["at"] = imported.cut.tensor
        settings["seq_len"] = imported.cut.seq_len
        settings["fix"] = list(options.tokens.fix)
        settings["token_methods"] = list(options.tokens.token_methods)
    return settings


def _run_tokens(audit: Audit, after: float = 0.0) -> dict:
    """The token searches of every target, beside the best embedding-space result of each;
    they stop at the deadline less what follows them (the report's ``tokens.cut``)."""
    tic = time.perf_counter()
    targets = audit.run.plan.targets
    deadline = audit.deadline and audit.plan.token_deadline(audit.deadline, after)
    found = search_tokens(audit.work.imported, audit.tokens, targets, deadline)
    best: dict[str, float] = {}
    for result in audit.run.writer.ordered():
        name = result.target.name
        best[name] = max(best.get(name, float("-inf")), result.activation)
    entries = [{**r.to_dict(), "embedding_am": best.get(r.target)} for r in found]
    audit.timings["tokens"] = time.perf_counter() - tic
    cut = token_cut(audit.tokens, targets, found)
    text = {"cut_text": token_cut_text(cut)} if cut else {}
    return {"plan": audit.tokens.to_dict(), "results": entries, "cut": cut, **text}


def _parity(imported: ImportedModel, domain: InputDomain) -> ParityResult:
    low, high = domain.bounds(imported.input)
    return check_parity(imported, low=float(low.min()), high=float(high.max()))


__all__ = [
    "AnalyzeOptions",
    "AnalyzeProgress",
    "AnalyzeReport",
    "DEFAULT_INPUT_RANGE",
    "DEFAULT_LR",
    "DEFAULT_MAX_UNITS",
    "DEFAULT_METHODS",
    "DEFAULT_RESTARTS",
    "DEFAULT_SEED",
    "DEFAULT_STEP_RULE",
    "DEFAULT_STEPS",
    "STEP_RULES",
    "analyze",
    "default_out_dir",
    "estimate_analysis",
    "model_summary",
    "plan_targets",
]
