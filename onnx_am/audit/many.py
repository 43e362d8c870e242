"""``analyze`` of many models in one run: a report per model and an index across them.

Every model is imported, planned and checked first; then the unfinished chunks of all of them
go to one executor together (on Ray: the same workers serve every model), and each model's
report is written after every chunk of it that finishes, as for one model. Last, each report is
rendered and ``index.json`` / ``index.html`` list them (:mod:`onnx_am.audit.overview`). A model
that cannot be audited (unreadable, unsupported operators, targets it lacks) gets a row with
its error in the index; the others go on. ``resume`` continues every model's report (a model
whose report was never started starts fresh).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from onnx_am.audit.analyze import AnalyzeReport, finish_audit, prepare_audit, run_audits
from onnx_am.audit.executor import ChunkExecutor, LocalExecutor
from onnx_am.audit.options import AnalyzeOptions
from onnx_am.audit.overview import INDEX_HTML, INDEX_JSON, ModelRow, overview_doc
from onnx_am.audit.pipeline import AuditPipeline, BudgetShare
from onnx_am.audit.progress import ProgressCallback
from onnx_am.audit.render.overview import render_overview
from onnx_am.audit.report import REPORT_FILE, ReportDir
from onnx_am.engine.deadline import Deadline
from onnx_am.errors import OnnxAmError, ReportError

#: Where the reports go when no folder is given (each model in ``<root>/<stem>/``).
DEFAULT_ROOT = Path("onnx-am-report")


@dataclass
class ManyReport:
    """What :func:`analyze_many` wrote.

    Attributes:
        root: the folder holding the index and a report folder per model.
        reports: the finished reports, by report name.
        errors: why a model could not be audited, by report name.
        index: the content of ``index.json``.
    """

    root: Path
    reports: dict[str, AnalyzeReport] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    index: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """2 when a model could not be audited, else 3 when onnxruntime disagrees, else 0."""
        if self.errors:
            return 2
        return max((r.exit_code for r in self.reports.values()), default=0)


def find_models(sources: Sequence[str | Path]) -> list[Path]:
    """The ``.onnx`` files named, a directory standing for the ``.onnx`` files in it (sorted).

    Raises:
        OnnxAmError: a path that does not exist, or a directory without ``.onnx`` files.
    """
    models: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix == ".onnx" and p.is_file())
            if not found:
                raise OnnxAmError(f"no .onnx files in directory {path}")
            models += found
        elif path.exists():
            models.append(path)
        else:
            raise OnnxAmError(f"model file not found: {path}")
    return list(dict.fromkeys(models))


def report_names(models: Sequence[Path]) -> list[str]:
    """A report folder name per model: its stem, ``-2``, ``-3`` ... appended to repeats."""
    names: list[str] = []
    for model in models:
        name, number = model.stem, 2
        while name in names:
            name, number = f"{model.stem}-{number}", number + 1
        names.append(name)
    return names


def analyze_many(
    sources: Sequence[str | Path],
    options: AnalyzeOptions | None = None,
    root: str | Path | None = None,
    progress: ProgressCallback | None = None,
    executor: ChunkExecutor | None = None,
    *,
    deadline: Deadline | None = None,
) -> ManyReport:
    """Audit several models with the same options and one deadline; a report each, and an
    index.

    The models share the deadline: each is planned against what is left when its turn
    comes, less what the models planned before it will need, split evenly with the models
    still to plan (:class:`~onnx_am.audit.pipeline.BudgetShare`); the plan of each says what
    was spent and what it left to the others. Their chunks then run paced by the same
    deadline.

    Args:
        sources: ``.onnx`` files and directories of them.
        options: settings for every model (default :class:`AnalyzeOptions`).
        root: folder of the index, a report folder per model inside (default
            ``./onnx-am-report``).
        progress: as for :func:`~onnx_am.audit.analyze.analyze`; while optimizing, units
            count over all models.
        executor: where the chunks of all models run (default: here). The caller closes it.
        deadline: the command's deadline (default: the options' ``time_budget`` from now).

    Returns:
        The :class:`ManyReport`.

    Raises:
        OnnxAmError: no models, or the folder holds something that is not ours.
        ReportError: a model's report exists and neither ``force`` nor ``resume`` was given.
    """
    options = options or AnalyzeOptions()
    notify = progress or (lambda event: None)
    deadline = deadline or Deadline.starting_now(options.budget.time_budget)
    models = find_models(sources)
    if not models:
        raise OnnxAmError("no models given")
    root = Path(root or DEFAULT_ROOT)
    index = _IndexDir(root, options.output.force)
    names = report_names(models)
    outcome = ManyReport(root)
    audits = []
    executor = executor or LocalExecutor()
    executor.prepare()  # e.g. Ray workers, started before the plans count the time left
    pipeline = AuditPipeline(options, deadline, notify)
    for position, (model, name) in enumerate(zip(models, names, strict=True)):
        committed = sum(audit.plan.estimate for audit in audits)
        share = BudgetShare(len(models) - position - 1, committed)
        try:
            audits.append(prepare_audit(pipeline, model, root / name, name, share))
        except ReportError:
            raise
        except OnnxAmError as exc:
            outcome.errors[name] = str(exc)
    rows = _rows(models, names, {a.key: a for a in audits}, outcome.errors)
    index.write(rows)
    run_audits(audits, executor, notify, deadline)
    for place, audit in enumerate(audits):  # each keeps the later ones' token search and pages
        later = sum(a.plan.token_seconds + a.plan.after_tokens for a in audits[place + 1 :])
        outcome.reports[audit.key] = finish_audit(audit, notify, later)
    docs = {name: report.doc for name, report in outcome.reports.items()}
    outcome.index = index.write(
        [ModelRow(r.name, r.model, docs.get(r.name), r.error) for r in rows]
    )
    return outcome


def _rows(models, names, audits: dict, errors: dict[str, str]) -> list[ModelRow]:
    """Index rows of the run as it starts: each report as far as it got (resumed results)."""
    rows = []
    for model, name in zip(models, names, strict=True):
        audit = audits.get(name)
        doc = audit.run.document("running") if audit is not None else None
        rows.append(ModelRow(name, str(model), doc, errors.get(name)))
    return rows


class _IndexDir:
    """The folder of a many-model run; refuses to overwrite an index that is not ours."""

    def __init__(self, root: Path, force: bool):
        if (root / REPORT_FILE).exists():
            raise ReportError(
                f"{root} holds a single model's report; choose another --out for many models"
            )
        if (root / INDEX_HTML).exists() and not (root / INDEX_JSON).exists() and not force:
            raise ReportError(
                f"{root / INDEX_HTML} exists and is not an onnx-am index; choose another --out "
                "or pass --force"
            )
        root.mkdir(parents=True, exist_ok=True)
        self.dir = ReportDir(root)

    def write(self, rows: list[ModelRow]) -> dict:
        doc = overview_doc(rows)
        self.dir.write_json(INDEX_JSON, doc)
        self.dir.write_text(INDEX_HTML, render_overview(doc))
        return doc


__all__ = ["DEFAULT_ROOT", "ManyReport", "analyze_many", "find_models", "report_names"]
