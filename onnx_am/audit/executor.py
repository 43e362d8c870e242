"""Where the chunks of an audit run: here, one after another, or on Ray workers.

``analyze`` (the driver) hands an executor the chunks still to do, of one model or of many,
and the pace of each model (:class:`~onnx_am.engine.pace.Pace`, drawn from the command's one
deadline), and gets back each chunk's :class:`~onnx_am.engine.results.MaximizeReport` as it
finishes, in any order; the driver alone writes reports. Every executor paces alike: a chunk
that has no room left before the deadline is not started (its units count as skipped), a
started one runs the steps that still fit and stops at the deadline. A chunk's results
depend only on its model, its targets, the settings (starts are seeded per target and
restart) and the steps its pace gave it, so where it ran does not change them.

:class:`LocalExecutor` runs the chunks in this process, exactly as a plain ``analyze`` always
did; it imports nothing more. :class:`onnx_am.audit.ray_executor.RayExecutor` (the ``[ray]``
extra) runs them on Ray actors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from onnx_am.audit.options import ImportSettings
from onnx_am.engine.deadline import Deadline
from onnx_am.engine.maximizer import maximize_plan
from onnx_am.engine.pace import Pace
from onnx_am.engine.plan import RunPlan
from onnx_am.engine.results import MaximizeReport
from onnx_am.importer.model import ImportedModel
from onnx_am.objectives import Target

if TYPE_CHECKING:
    from onnx_am.passes.decouple import RewriteResult


@dataclass(frozen=True)
class ChunkRecipe:
    """How to run any chunk of one model, in a form that travels to other processes.

    Attributes:
        key: names the model among those of one run (its report's name).
        imports: what the model was imported with; its feeds are the values the other
            inputs were fed, as arrays (or numbers for scalars), so that no worker reads a
            file the driver was given.
        plan: the methods and settings of every chunk (its targets are the chunk's).
    """

    key: str
    imports: ImportSettings
    plan: RunPlan


@dataclass(frozen=True)
class ModelWork:
    """One model of a run as the driver holds it: the recipe and the imported model.

    Attributes:
        recipe: the portable part.
        imported: the driver's import; :class:`LocalExecutor` runs on it, other executors
            send its self-contained ONNX bytes (``imported.original``) to their workers.
        rewrite: the driver's rectifier rewrite (``None`` when not needed).
    """

    recipe: ChunkRecipe
    imported: ImportedModel
    rewrite: RewriteResult | None


@dataclass(frozen=True)
class ChunkTask:
    """One chunk to run: a model (by key), the chunk's place in its plan, its targets."""

    model: str
    index: int
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class PaceLease:
    """The pace of one chunk sent to another process: the steps it may run, the seconds the
    driver had left when it sent it, and the seconds of a row's step expected there."""

    steps_cap: int | None
    seconds_left: float
    seconds_per_row_step: float

    @classmethod
    def of(cls, pace: Pace, rows: int, planned: int, sharing: int = 1) -> PaceLease:
        """The lease of a chunk of ``rows`` rows (``pace.rows_after`` set) that planned
        ``planned`` steps; ``sharing`` chunks run at once."""
        steps = pace.steps_for(rows, planned)
        cap = steps if steps < planned else None
        return cls(cap, pace.left(), pace.seconds_per_row_step * max(1, sharing))

    def pace(self) -> Pace:
        """A pace on this process's clock."""
        deadline = Deadline.after(self.seconds_left)
        return Pace(deadline, self.seconds_per_row_step, steps_cap=self.steps_cap)


def rows_after(tasks: Sequence[ChunkTask], position: int, plans: Mapping[str, RunPlan]) -> int:
    """Rows of the tasks after ``position`` of the same model as ``tasks[position]``."""
    model = tasks[position].model
    later = [t for t in tasks[position + 1 :] if t.model == model]
    return plans[model].rows_per_unit * sum(len(t.targets) for t in later)


def portable_imports(imports: ImportSettings, imported: ImportedModel) -> ImportSettings:
    """``imports`` with the feeds ``imported`` was given, as values (files already read)."""
    return replace(imports, feeds=portable_feeds(imported))


def portable_feeds(imported: ImportedModel) -> dict[str, object]:
    """The values ``imported``'s other inputs were fed, given again the same way from memory:
    arrays, and Python numbers for scalars (files already read)."""
    return {
        name: feed.value.item() if feed.value.ndim == 0 else feed.value
        for name, feed in imported.feeds.items()
    }


#: ``on_step(task, step, steps)``: how far the engine got with a chunk (where known).
StepCallback = Callable[[ChunkTask, int, int], None]


#: The pace of each model of a run, by key (None, or a key missing: not paced).
Paces = Mapping[str, "Pace | None"]


class ChunkExecutor(Protocol):
    """Runs chunk tasks and yields each finished one once, with its results, in any order;
    a task that its model's pace refuses (no room before the deadline) is not yielded."""

    def run(
        self,
        works: Mapping[str, ModelWork],
        tasks: Sequence[ChunkTask],
        on_step: StepCallback | None = None,
        paces: Paces | None = None,
    ) -> Iterator[tuple[ChunkTask, MaximizeReport]]: ...

    def prepare(self) -> None:
        """Get ready to run (e.g. start workers); called before any model is planned, so that
        the time it takes counts against the deadline like the rest."""

    def close(self) -> None: ...


def run_chunk(
    imported: ImportedModel,
    rewrite: RewriteResult | None,
    recipe: ChunkRecipe,
    targets: Sequence[Target],
    progress: Callable[[int, int, dict], None] | None = None,
    pace: Pace | None = None,
) -> MaximizeReport:
    """The one engine call of a chunk, wherever it runs."""
    plan = recipe.plan.with_targets(targets)
    return maximize_plan(imported, plan, rewrite=rewrite, progress=progress, pace=pace)


class LocalExecutor:
    """Runs the chunks one after another in this process, in the order given."""

    def run(
        self,
        works: Mapping[str, ModelWork],
        tasks: Sequence[ChunkTask],
        on_step: StepCallback | None = None,
        paces: Paces | None = None,
    ) -> Iterator[tuple[ChunkTask, MaximizeReport]]:
        plans = {key: work.recipe.plan for key, work in works.items()}
        for position, task in enumerate(tasks):
            work = works[task.model]
            pace = (paces or {}).get(task.model)
            rows = work.recipe.plan.rows_per_unit * len(task.targets)
            if pace is not None:
                if not pace.admit(rows, rows_after(tasks, position, plans), len(task.targets)):
                    continue
            progress = None
            if on_step is not None:
                on_step(task, 0, 1)
                progress = _bind(on_step, task)
            found = run_chunk(
                work.imported, work.rewrite, work.recipe, task.targets, progress, pace
            )
            yield task, found

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _bind(on_step: StepCallback, task: ChunkTask) -> Callable[[int, int, dict], None]:
    def progress(step: int, steps: int, info: dict) -> None:
        on_step(task, step, steps)

    return progress


__all__ = [
    "ChunkExecutor",
    "ChunkRecipe",
    "ChunkTask",
    "LocalExecutor",
    "ModelWork",
    "PaceLease",
    "Paces",
    "StepCallback",
    "portable_feeds",
    "portable_imports",
    "rows_after",
    "run_chunk",
]
