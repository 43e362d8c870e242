"""The optimization of ``analyze``, chunk by chunk, each chunk written as it finishes.

A chunk is a fixed group of target units, optimized with every method of the
:class:`~onnx_am.engine.plan.RunPlan` in one :func:`~onnx_am.engine.maximizer.maximize_plan` call,
wherever an executor runs it (:mod:`onnx_am.audit.executor`); :class:`ChunkedRun` says which
chunks are still to do and keeps and writes each one that comes back.
The engine seeds every start from ``(seed, target, restart)``, and the grouping into chunks
depends only on the plan, so a chunk's results do not depend on what ran before it: a resumed
report ends exactly like an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from onnx_am.audit.executor import ChunkTask
from onnx_am.audit.progress import AnalyzeProgress, ProgressCallback, step_reporter
from onnx_am.audit.render.images import DisplayDomain
from onnx_am.audit.render.plots import save_picture
from onnx_am.audit.render.site import render_plots, write_page
from onnx_am.audit.report import REPORT_FILE, ReportDir
from onnx_am.audit.summary import summarize
from onnx_am.engine import memory
from onnx_am.engine.checkpoint import CHECKPOINT_FILE, CHECKPOINT_INTERVAL, Checkpointer
from onnx_am.engine.maximizer import maximize_plan
from onnx_am.engine.pace import Pace
from onnx_am.engine.plan import RunPlan
from onnx_am.engine.results import MaximizeReport, TargetBaseline, UnitResult
from onnx_am.importer.model import ImportedModel
from onnx_am.objectives import Target

if TYPE_CHECKING:
    from onnx_am.passes.decouple import RewriteResult

#: Rows (units x methods x restarts) per chunk on the CPU; a chunk is also the unit of
#: resume (and of checkpoints: :mod:`onnx_am.engine.checkpoint`).
CHUNK_ROWS = 64


def chunk_rows(device: str) -> int:
    """Rows per chunk: :data:`CHUNK_ROWS` on the CPU, a GPU's larger batches there."""
    return CHUNK_ROWS if device == "cpu" else max(CHUNK_ROWS, memory.max_batch(device))


def plan_chunks(
    targets: tuple[Target, ...] | list[Target], rows_per_unit: int, rows: int | None = None
) -> list:
    """Fixed groups of targets, about ``rows`` (:data:`CHUNK_ROWS`) rows each."""
    size = max(1, (rows or CHUNK_ROWS) // max(1, rows_per_unit))
    return [list(targets[i : i + size]) for i in range(0, len(targets), size)]


class ChunkedRun:
    """Results gathered so far, and the writing of each finished chunk.

    Args:
        report: the report directory being written.
        imported: the model.
        plan: what to optimize; each chunk runs ``plan.with_targets(chunk)``.
        rewrite: the rectifier rewrite shared by every chunk (``None`` when not needed).
        display: how pictures are drawn.
        doc: the parts of ``report.json`` known before optimizing (model, parity, settings).
        interval: seconds between checkpoints of a running chunk.
    """

    def __init__(
        self,
        report: ReportDir,
        imported: ImportedModel,
        plan: RunPlan,
        rewrite: RewriteResult | None,
        display: DisplayDomain,
        doc: dict,
        interval: float = CHECKPOINT_INTERVAL,
    ):
        self.report, self.imported, self.plan = report, imported, plan
        self.rewrite, self.display, self.doc = rewrite, display, doc
        self.interval = interval
        self.results: dict[tuple[Target, str], UnitResult] = {}
        self.entries: dict[tuple[Target, str], dict] = {}
        self.baselines: dict[str, TargetBaseline] = {}
        self.pace: Pace | None = None

    def restore(self, results: list[UnitResult], baselines: list[TargetBaseline]) -> None:
        """Take the results and baselines of the report being resumed."""
        for result in results:
            self._keep(result, self.report.image_name(result))
        self.baselines.update({b.target: b for b in baselines})

    def optimize(self, notify: ProgressCallback, pace: Pace | None = None) -> None:
        """Run every chunk not finished yet; write ``report.json`` after each.

        With a ``pace`` (the time budget's deadline) a chunk runs the steps that still fit,
        and chunks that would not fit even :data:`~onnx_am.engine.pace.MIN_STEPS` steps are
        not started; the report's ``pace`` object says what that cut.
        """
        self.pace = pace
        targets = self.plan.targets
        per_unit = len(self.plan.runs) * self.plan.config.starts.restarts
        chunks = self._chunks()
        done = sum(len(chunk) for chunk in chunks if self._finished(chunk))
        base = json.dumps(self.doc.get("settings", {}), sort_keys=True, default=str)
        todo = [chunk for chunk in chunks if not self._finished(chunk)]
        for position, chunk in enumerate(todo):
            if pace is not None:
                rows_after = per_unit * sum(len(c) for c in todo[position + 1 :])
                if not pace.admit(per_unit * len(chunk), rows_after, len(chunk)):
                    continue
            on_step = step_reporter(notify, done, len(targets), len(chunk))
            on_step(0, 1, {})
            key = hashlib.sha256("|".join([base, *(t.name for t in chunk)]).encode()).hexdigest()
            checkpoint = Checkpointer(self.report.path(CHECKPOINT_FILE), key, self.interval)
            found = maximize_plan(
                self.imported,
                self.plan.with_targets(chunk),
                rewrite=self.rewrite,
                progress=on_step,
                checkpoint=checkpoint,
                pace=pace,
            )
            for result in found.results:
                self._save(result)
            self.baselines.update({b.target: b for b in found.baselines})
            done += len(chunk)
            self.report.write_json(REPORT_FILE, self.document("running"))
            checkpoint.clear()  # its results are in report.json now
            notify(AnalyzeProgress("optimize", done, len(targets)))

    def pending(self, key: str) -> list[ChunkTask]:
        """The chunks not finished yet, as tasks of the model ``key``, in plan order."""
        return [
            ChunkTask(key, index, tuple(chunk))
            for index, chunk in enumerate(self._chunks())
            if not self._finished(chunk)
        ]

    def accept(self, found: MaximizeReport) -> None:
        """Keep a finished chunk's results and baselines; write ``report.json``."""
        for result in found.results:
            self._save(result)
        self.baselines.update({b.target: b for b in found.baselines})
        self.report.write_json(REPORT_FILE, self.document("running"))

    @property
    def units_done(self) -> int:
        """Units whose every method is in (from the report being resumed)."""
        return sum(1 for t in self.plan.targets if self._finished([t]))

    def finish(self, timings: dict, started: float) -> dict:
        """The complete document; plots, then the page, which shows every timing (render and
        total included, written into ``timings``; ``started`` is the run's start)."""
        doc = self.document("complete")
        results = self.ordered()
        tic = time.perf_counter()
        plots = render_plots(self.report, results, self.display)
        timings["render"] = time.perf_counter() - tic
        timings["total"] = time.perf_counter() - started
        write_page(self.report, doc, plots, results, self.display)
        return doc

    def document(self, status: str) -> dict:
        names = [t.name for t in self.plan.targets]
        entries = [self.entries[key] for key in self._keys()]
        paced = {"pace": self.pace.to_dict()} if self.pace and self.pace.cut_anything else {}
        return {
            **self.doc,
            **paced,
            "status": status,
            "summary": summarize(entries),
            "results": entries,
            "baselines": [self.baselines[n].to_dict() for n in names if n in self.baselines],
        }

    def ordered(self) -> list[UnitResult]:
        return [self.results[key] for key in self._keys()]

    def _keys(self) -> list[tuple[Target, str]]:
        """Result keys in plan order (targets, then methods), whatever order they finished in."""
        return [
            (t, label)
            for t in self.plan.targets
            for label in self.plan.labels
            if (t, label) in self.results
        ]

    def _chunks(self) -> list[list[Target]]:
        """The plan's targets in their fixed chunks (the unit of resume)."""
        config = self.plan.config
        per_unit = len(self.plan.runs) * config.starts.restarts
        return plan_chunks(self.plan.targets, per_unit, chunk_rows(config.device))

    def _finished(self, chunk: list[Target]) -> bool:
        return all((t, label) in self.results for t in chunk for label in self.plan.labels)

    def _save(self, result: UnitResult) -> None:
        name = self.report.image_name(result)
        image = np.asarray(result.image)
        self.report.write_with(str(Path(name).with_suffix(".npy")), lambda tmp: np.save(tmp, image))
        self.report.write_with(name, lambda tmp: save_picture(image, self.display, Path(tmp)))
        self._keep(result, name)

    def _keep(self, result: UnitResult, name: str) -> None:
        key = (result.target, result.method)
        self.results[key] = result
        self.entries[key] = self.report.result_entry(
            result, name if result.image is not None else None
        )
