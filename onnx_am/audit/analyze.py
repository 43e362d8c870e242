"""``analyze``: the zero-config audit of an ONNX model, written to a report directory.

import -> one :class:`~onnx_am.engine.plan.RunPlan` from the options
(:func:`~onnx_am.audit.options.plan_analysis`) -> parity with onnxruntime -> maximize chunk by
chunk (:mod:`onnx_am.audit.chunks`) on an executor (here, or Ray workers:
:mod:`onnx_am.audit.executor`), writing ``report.json`` after every chunk -> plots and
``index.html``. :func:`prepare_audit`, :func:`run_audits` and :func:`finish_audit` are those
three stages; :mod:`onnx_am.audit.many` runs the chunks of several models in one
:func:`run_audits`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from onnx_am.audit import chunks
from onnx_am.audit.chunks import ChunkedRun
from onnx_am.audit.executor import (
    ChunkExecutor,
    ChunkRecipe,
    ChunkTask,
    LocalExecutor,
    ModelWork,
    portable_feeds,
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
    choose_defaults,
    plan_analysis,
    plan_targets,
)
from onnx_am.audit.progress import AnalyzeProgress, ProgressCallback
from onnx_am.audit.render.images import DisplayDomain
from onnx_am.audit.report import REPORT_FILE, SCHEMA_VERSION, ReportDir
from onnx_am.domain import InputDomain
from onnx_am.engine.plan import RunPlan
from onnx_am.engine.results import UnitResult
from onnx_am.importer.model import ImportedModel, import_onnx
from onnx_am.reference.parity import ParityResult, check_parity


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
) -> AnalyzeReport:
    """Audit a model and write the report directory.

    Args:
        model_path: the ``.onnx`` file.
        options: settings (defaults: :class:`AnalyzeOptions`).
        out_dir: the report directory (default :func:`default_out_dir`).
        progress: called with :class:`AnalyzeProgress` as work proceeds; it may raise
            (e.g. ``KeyboardInterrupt``) to stop, keeping what was written.
        executor: where the chunks run (default: here, one after another); e.g. a
            :class:`~onnx_am.audit.ray_executor.RayExecutor`. The caller closes it.

    Returns:
        The :class:`AnalyzeReport`; its ``exit_code`` is 3 when onnxruntime disagrees.

    Raises:
        OnnxAmError: unreadable model, bad settings, targets or methods, or an existing report
            that may not be overwritten or resumed (subclasses say which).
    """
    options = options or AnalyzeOptions()
    notify = progress or (lambda event: None)
    audit = prepare_audit(model_path, options, out_dir or default_out_dir(model_path), notify)
    run_audits([audit], executor or LocalExecutor(), notify)
    return finish_audit(audit, notify)


@dataclass
class Audit:
    """One model being audited (see :func:`prepare_audit`).

    Attributes:
        key: names the model among those of one run.
        run: the results so far and the writing of each finished chunk.
        work: what an executor needs to run the model's chunks.
        parity: torch vs onnxruntime on random inputs.
        timings: seconds per phase so far.
        started: when the audit started (``time.perf_counter``).
    """

    key: str
    run: ChunkedRun
    work: ModelWork
    parity: ParityResult
    timings: dict[str, float]
    started: float


def prepare_audit(
    model_path: str | Path,
    options: AnalyzeOptions,
    out_dir: str | Path,
    notify: ProgressCallback,
    key: str | None = None,
) -> Audit:
    """Everything before the chunks: import, plan, open the report (resumed if asked),
    parity, the rectifier rewrite, the results of a resumed report.

    Args:
        key: names the model among those of one run (default: the report directory).

    Raises:
        OnnxAmError: as :func:`analyze`.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    notify(AnalyzeProgress("import"))
    imported = import_onnx(model_path, options.input_name, options.input_shape, options.feeds)
    defaults = choose_defaults(options, imported)
    plan = plan_analysis(options, imported, defaults)  # every option parsed here, once
    timings["import"] = time.perf_counter() - started

    settings = _settings(options, plan, imported)
    model = model_summary(model_path, imported)
    report = ReportDir.open(out_dir, options.force, options.resume)
    report.check_resumable(model["sha256"], settings)
    notify(AnalyzeProgress("plan", notes=tuple(defaults.notes)))  # every check passed

    notify(AnalyzeProgress("parity"))
    tic = time.perf_counter()
    domain = plan.config.domain
    parity = _parity(imported, domain)
    timings["parity"] = time.perf_counter() - tic
    rewrite = _rewrite(imported, plan)
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
    display = DisplayDomain(domain.low, domain.high, imported.input.layout)
    run = ChunkedRun(report, imported, plan, rewrite, display, doc)
    run.restore(report.done_results(), report.done_baselines())
    key = key or str(report.root)
    recipe = ChunkRecipe(
        key,
        options.input_name,
        options.input_shape,
        portable_feeds(imported),
        plan.with_targets(()),
        plan.needs_rewrite,
    )
    return Audit(key, run, ModelWork(recipe, imported, rewrite), parity, timings, started)


def run_audits(audits: list[Audit], executor: ChunkExecutor, notify: ProgressCallback) -> None:
    """Run the unfinished chunks of every audit on ``executor``; each audit's report is
    written after every chunk of it that finishes. Units in progress events count over all
    audits."""
    by_key = {audit.key: audit for audit in audits}
    tasks = [task for audit in audits for task in audit.run.pending(audit.key)]
    total = sum(len(audit.run.plan.targets) for audit in audits)
    done = total - sum(len(task.targets) for task in tasks)
    tic = time.perf_counter()

    def on_step(task: ChunkTask, step: int, steps: int) -> None:
        notify(AnalyzeProgress("optimize", done, total, step, steps, len(task.targets)))

    for task, found in executor.run({a.key: a.work for a in audits}, tasks, on_step):
        by_key[task.model].run.accept(found)
        done += len(task.targets)
        notify(AnalyzeProgress("optimize", done, total))
    for audit in audits:
        audit.timings["optimize"] = time.perf_counter() - tic


def finish_audit(audit: Audit, notify: ProgressCallback) -> AnalyzeReport:
    """Plots, ``index.html`` and the complete ``report.json`` of an audit whose chunks are
    all done."""
    total = len(audit.run.plan.targets)
    notify(AnalyzeProgress("render", total, total))
    doc = audit.run.finish(audit.timings, audit.started)
    audit.run.report.write_json(REPORT_FILE, doc)
    notify(AnalyzeProgress("done", total, total))
    return AnalyzeReport(audit.run.report.root, doc, audit.run.ordered(), audit.parity)


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


def _settings(options: AnalyzeOptions, plan: RunPlan, imported: ImportedModel) -> dict:
    """Everything that changes results; a resumed report must match it exactly."""
    config = plan.config
    settings = {
        "targets": [t.name for t in plan.targets],
        "methods": list(plan.labels),
        "steps": config.steps,
        "lr": config.lr,
        "restarts": config.restarts,
        "seed": config.seed,
        "optimizer": config.optimizer,
        "normalize_grad": config.normalize_grad,
        "lr_schedule": config.lr_schedule,
        "regularizers": [r if isinstance(r, str) else r.label for r in config.regularizers],
        "start": config.start,
        "input": options.input_name,
        "input_shape": list(options.input_shape) if options.input_shape else None,
        "feeds": {name: feed.fingerprint for name, feed in imported.feeds.items()},
        "input_range": [config.domain.low, config.domain.high],
        "mean": list(config.domain.mean) if config.domain.mean else None,
        "std": list(config.domain.std) if config.domain.std else None,
        "device": config.device,
        "parameterization": config.parameterization,
        "chunk_rows": chunks.CHUNK_ROWS,
    }
    # Results do not depend on the engine's rows per step (starts are seeded per target and
    # restart; only float rounding of batched kernels may differ, ~1e-7 relative), so the
    # automatic size, which follows the free memory of the machine, is left out: a report
    # started elsewhere can be resumed here. A size given on purpose is compared.
    if options.batch_size is not None:
        settings["batch_size"] = options.batch_size
    return settings


def _parity(imported: ImportedModel, domain: InputDomain) -> ParityResult:
    low, high = domain.bounds(imported.input)
    return check_parity(imported, low=float(low.min()), high=float(high.max()))


def _rewrite(imported: ImportedModel, plan: RunPlan):
    """The rectifier rewrite every chunk shares; ``None`` when every row is standard."""
    if not plan.needs_rewrite:
        return None
    from onnx_am.passes import decouple_rectifiers

    return decouple_rectifiers(imported)


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
    "model_summary",
    "plan_targets",
]
