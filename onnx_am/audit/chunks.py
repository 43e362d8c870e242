"""The optimization of ``analyze``, chunk by chunk, each chunk written as it finishes.

A chunk is a fixed group of target units, optimized with every method of the
:class:`~onnx_am.engine.plan.RunPlan` in one :func:`~onnx_am.engine.maximizer.maximize_plan` call,
wherever an executor runs it (:mod:`onnx_am.audit.executor`); :class:`ChunkedRun` says which
chunks are still to do and runs them here, checkpointed (:func:`checkpoint_key` names each
chunk's file), handing each one that comes back to its
:class:`~onnx_am.audit.writer.ResultWriter`.
The engine seeds every start from ``(seed, target, restart)``, and the grouping into chunks
depends only on the plan, so a chunk's results do not depend on what ran before it: a resumed
report ends exactly like an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from onnx_am.audit.executor import ChunkTask
from onnx_am.audit.progress import AnalyzeProgress, ProgressCallback, step_reporter
from onnx_am.audit.writer import ResultWriter
from onnx_am.engine import memory
from onnx_am.engine.checkpoint import CHECKPOINT_FILE, CHECKPOINT_INTERVAL, Checkpointer
from onnx_am.engine.maximizer import maximize_plan
from onnx_am.engine.pace import Pace
from onnx_am.engine.plan import RunPlan
from onnx_am.engine.results import MaximizeReport
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


def checkpoint_key(settings: dict, chunk: list[Target]) -> str:
    """What a chunk's checkpoint belongs to: the run's settings and the chunk's targets."""
    base = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256("|".join([base, *(t.name for t in chunk)]).encode()).hexdigest()


class ChunkedRun:
    """Which chunks of a plan are still to do, and their running here, one after the other.

    Args:
        writer: the results so far; each finished chunk goes to it.
        imported: the model.
        rewrite: the rectifier rewrite shared by every chunk (``None`` when not needed).
        interval: seconds between checkpoints of a running chunk.

    Attributes:
        pace: the time budget's pace of the chunks (set by :meth:`start`; ``None``: none).
    """

    def __init__(
        self,
        writer: ResultWriter,
        imported: ImportedModel,
        rewrite: RewriteResult | None,
        interval: float = CHECKPOINT_INTERVAL,
    ):
        self.writer, self.imported, self.rewrite = writer, imported, rewrite
        self.plan: RunPlan = writer.plan
        self.interval = interval
        self.pace: Pace | None = None

    def start(self, pace: Pace | None) -> None:
        """The chunks start now, paced by ``pace`` (wherever they run)."""
        self.pace = pace

    def optimize(self, notify: ProgressCallback, pace: Pace | None = None) -> None:
        """Run every chunk not finished yet, here; the writer writes ``report.json`` after
        each.

        With a ``pace`` (the time budget's deadline) a chunk runs the steps that still fit,
        and chunks that would not fit even :data:`~onnx_am.engine.pace.MIN_STEPS` steps are
        not started; the report's ``pace`` object says what that cut.
        """
        self.start(pace)
        targets = self.plan.targets
        per_unit = self._rows_per_unit()
        chunks = self._chunks()
        done = sum(len(chunk) for chunk in chunks if self.writer.finished(chunk))
        settings = self.writer.doc.get("settings", {})
        todo = [chunk for chunk in chunks if not self.writer.finished(chunk)]
        for position, chunk in enumerate(todo):
            if pace is not None:
                rows_after = per_unit * sum(len(c) for c in todo[position + 1 :])
                if not pace.admit(per_unit * len(chunk), rows_after, len(chunk)):
                    continue
            on_step = step_reporter(notify, done, len(targets), len(chunk))
            on_step(0, 1, {})
            path = self.writer.report.path(CHECKPOINT_FILE)
            checkpoint = Checkpointer(path, checkpoint_key(settings, chunk), self.interval)
            found = maximize_plan(
                self.imported,
                self.plan.with_targets(chunk),
                rewrite=self.rewrite,
                progress=on_step,
                checkpoint=checkpoint,
                pace=pace,
            )
            self.accept(found)
            done += len(chunk)
            checkpoint.clear()  # its results are in report.json now
            notify(AnalyzeProgress("optimize", done, len(targets)))

    def pending(self, key: str) -> list[ChunkTask]:
        """The chunks not finished yet, as tasks of the model ``key``, in plan order."""
        return [
            ChunkTask(key, index, tuple(chunk))
            for index, chunk in enumerate(self._chunks())
            if not self.writer.finished(chunk)
        ]

    def accept(self, found: MaximizeReport) -> None:
        """A finished chunk (run here or elsewhere): to the writer."""
        self.writer.accept(found, self.pace)

    def document(self, status: str, **more) -> dict:
        """``report.json`` as it stands, with what the pace cut."""
        return self.writer.document(status, self.pace, **more)

    def _rows_per_unit(self) -> int:
        return len(self.plan.runs) * self.plan.config.starts.restarts

    def _chunks(self) -> list[list[Target]]:
        """The plan's targets in their fixed chunks (the unit of resume)."""
        rows = chunk_rows(self.plan.config.device)
        return plan_chunks(self.plan.targets, self._rows_per_unit(), rows)
