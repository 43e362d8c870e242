"""Where the chunks of an audit run: here, one after another, or on Ray workers.

``analyze`` (the driver) hands an executor the chunks still to do, of one model or of many,
and gets back each chunk's :class:`~onnx_am.engine.results.MaximizeReport` as it finishes, in
any order; the driver alone writes reports. A chunk's results depend only on its model, its
targets and the settings (starts are seeded per target and restart), so where it ran does not
change them.

:class:`LocalExecutor` runs the chunks in this process, exactly as a plain ``analyze`` always
did; it imports nothing more. :class:`onnx_am.audit.ray_executor.RayExecutor` (the ``[ray]``
extra) runs them on Ray actors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from onnx_am.engine.maximizer import run_plan
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
        input_name, input_shape: what the model was imported with.
        feeds: the values its other inputs were fed, as arrays (or numbers for scalars), so
            that no worker reads a file the driver was given.
        plan: the methods and settings of every chunk (its targets are the chunk's).
        rewrite: whether the chunks need the decoupled-rectifier graph.
    """

    key: str
    input_name: str | None
    input_shape: tuple[int, ...] | None
    feeds: dict[str, object]
    plan: RunPlan
    rewrite: bool


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


def portable_feeds(imported: ImportedModel) -> dict[str, object]:
    """The values ``imported``'s other inputs were fed, given again the same way from memory:
    arrays, and Python numbers for scalars (files already read)."""
    return {
        name: feed.value.item() if feed.value.ndim == 0 else feed.value
        for name, feed in imported.feeds.items()
    }


#: ``on_step(task, step, steps)``: how far the engine got with a chunk (where known).
StepCallback = Callable[[ChunkTask, int, int], None]


class ChunkExecutor(Protocol):
    """Runs chunk tasks and yields each finished one once, with its results, in any order."""

    def run(
        self,
        works: Mapping[str, ModelWork],
        tasks: Sequence[ChunkTask],
        on_step: StepCallback | None = None,
    ) -> Iterator[tuple[ChunkTask, MaximizeReport]]: ...

    def close(self) -> None: ...


def run_chunk(
    imported: ImportedModel,
    rewrite: RewriteResult | None,
    recipe: ChunkRecipe,
    targets: Sequence[Target],
    progress: Callable[[int, int, dict], None] | None = None,
) -> MaximizeReport:
    """The one engine call of a chunk, wherever it runs."""
    return run_plan(imported, recipe.plan.with_targets(targets), rewrite=rewrite, progress=progress)


class LocalExecutor:
    """Runs the chunks one after another in this process, in the order given."""

    def run(
        self,
        works: Mapping[str, ModelWork],
        tasks: Sequence[ChunkTask],
        on_step: StepCallback | None = None,
    ) -> Iterator[tuple[ChunkTask, MaximizeReport]]:
        for task in tasks:
            work = works[task.model]
            progress = None
            if on_step is not None:
                on_step(task, 0, 1)
                progress = _bind(on_step, task)
            yield task, run_chunk(work.imported, work.rewrite, work.recipe, task.targets, progress)

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
    "StepCallback",
    "portable_feeds",
    "run_chunk",
]
