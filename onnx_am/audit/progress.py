"""Progress of ``analyze``: one event type, and the engine's step callback turned into it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onnx_am.audit.planning import BudgetPlan


@dataclass(frozen=True)
class AnalyzeProgress:
    """One progress report: ``phase`` and, while optimizing, how far it got.

    Attributes:
        phase: ``"import"``, ``"plan"`` (the defaults chosen, with ``notes``), ``"parity"``,
            ``"timing"``, ``"plan"`` again (with the fitted ``plan``), ``"optimize"``,
            ``"render"`` or ``"done"``.
        units_done: target units finished (resumed ones included).
        units_total: target units planned.
        steps_done: steps of the current chunk done.
        steps_total: steps of the current chunk.
        chunk_units: target units in the current chunk.
        notes: with ``"plan"``: the choices made for the model that a person should know
            (the input domain assumed, why the default targets are not the first output).
        plan: the :class:`~onnx_am.audit.planning.BudgetPlan` (phase ``"plan"`` and later).
    """

    phase: str
    units_done: int = 0
    units_total: int = 0
    steps_done: int = 0
    steps_total: int = 0
    chunk_units: int = 0
    notes: tuple[str, ...] = ()
    plan: BudgetPlan | None = None

    @property
    def fraction(self) -> float:
        """Share of the optimization done, 0..1."""
        if not self.units_total:
            return 1.0 if self.phase in ("render", "done") else 0.0
        chunk = self.steps_done / self.steps_total if self.steps_total else 0.0
        return min(1.0, (self.units_done + chunk * self.chunk_units) / self.units_total)


ProgressCallback = Callable[[AnalyzeProgress], None]


def step_reporter(notify: ProgressCallback, done: int, total: int, size: int):
    """The engine's ``progress(step, steps, info)`` as :class:`AnalyzeProgress` events of a
    chunk of ``size`` units, after ``done`` of ``total`` units."""

    def on_step(step: int, steps: int, info: dict) -> None:
        notify(AnalyzeProgress("optimize", done, total, step, steps, size))

    return on_step
