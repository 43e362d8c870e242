"""The plan of an ``analyze`` run: what it will do, what that costs here, what the budget cut.

:func:`measure_costs` times real steps of the real model at the real chunk size
(:func:`onnx_am.engine.probe.time_steps`), one engine call's fixed costs (the trivial
baselines) and the onnxruntime cross-check of a result; :func:`plan_budget` fits the work to
the time budget (:func:`onnx_am.audit.budget.fit_budget`) and returns an :class:`BudgetPlan`,
which ``report.json`` keeps as its ``plan`` object and the command line prints before it
optimizes.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from onnx_am.audit.budget import BudgetCut, CostModel, Work, fit_budget, format_duration, spread
from onnx_am.audit.render.cost import measure_render
from onnx_am.audit.render.images import DisplayDomain
from onnx_am.engine.deadline import Deadline
from onnx_am.engine.pace import Pace
from onnx_am.engine.probe import time_steps
from onnx_am.engine.racing import Stage, race_screen
from onnx_am.engine.starts import screening_forwards
from onnx_am.errors import BudgetError
from onnx_am.objectives import Target
from onnx_am.tokens.run import time_tokens

if TYPE_CHECKING:
    from onnx_am.tokens.run import TokenPlan


@dataclass(frozen=True)
class BudgetPlan:
    """What an ``analyze`` run does and what it is expected to cost.

    Attributes:
        tensors: target tensors and how many of their units are optimized.
        units, units_asked: units optimized, and how many the settings asked for.
        methods: the reported methods; ``runs``: the gradient methods optimized.
        restarts, steps: per unit and run (after any cut).
        rows: optimized inputs in all (units x runs x restarts).
        chunks: engine calls (groups of units, the unit of resume); ``chunk_rows`` rows each.
        batch_size: rows per engine step.
        seconds_per_step: measured seconds of one step of ``batch_size`` rows.
        estimate: expected seconds from the first chunk to the written report.
        spent: seconds of the command spent before optimizing (import, parity check, timing;
            with several models, theirs before this one's too).
        others: seconds of the budget this model left to the other models of the command.
        peak_memory: bytes; the peak measured while timing (host RSS or CUDA allocated).
        budget: the time budget in seconds (None: none).
        cuts: what the budget reduced.
        device: where the engine runs.
        units_done: units already in the report being resumed.
        overhead: expected seconds outside the steps (each engine call's fixed costs, the
            cross-check, pictures and the page): the deadline of the steps is the budget
            less this (:meth:`pace`).
        stages: with racing restarts, per unit and run the race's stages (candidates and
            steps; :mod:`onnx_am.engine.racing`); their row-steps add up to ``restarts x
            steps`` less the screened pool's forwards at a third of a step each.
        token_seconds: expected seconds of the token searches (part of :attr:`overhead`).
        after_tokens: expected seconds after them (pictures, the page): the token searches
            end this long before the deadline (:meth:`token_deadline`).
        token_tail: what the token searches may run past being told to stop (a batched call
            in flight, the stopped unit's results): they are told this much earlier still.
        token_steps: the steps the token searches' cost stands for, when the budget cut them
            below :attr:`steps`; else ``None`` (they run at :attr:`steps`).
    """

    tensors: dict[str, int]
    units: int
    units_asked: int
    methods: tuple[str, ...]
    runs: tuple[str, ...]
    restarts: int
    steps: int
    rows: int
    chunks: int
    chunk_rows: int
    batch_size: int
    seconds_per_step: float
    estimate: float
    spent: float
    peak_memory: int
    budget: float | None
    cuts: tuple[BudgetCut, ...] = ()
    device: str = "cpu"
    units_done: int = 0
    targets: tuple[str, ...] = field(default=(), repr=False)
    overhead: float = 0.0
    others: float = 0.0
    stages: tuple[Stage, ...] = ()
    token_seconds: float = 0.0
    after_tokens: float = 0.0
    token_tail: float = 0.0
    token_steps: int | None = None

    @property
    def step_seconds(self) -> float:
        """The part of :attr:`estimate` that is steps (what a pace can cut)."""
        return max(0.0, self.estimate - self.overhead)

    def pace(self, deadline: Deadline, after: float = 0.0) -> Pace | None:
        """The pace of this run's steps: they end :attr:`overhead` before ``deadline`` (and
        ``after`` seconds more, kept for what other models of the command still do after
        them); None without a budget."""
        if deadline.budget is None:
            return None
        steps_end = deadline.earlier_by(self.overhead + after)
        return Pace(steps_end, self.seconds_per_step / max(1, self.batch_size))

    def token_deadline(self, deadline: Deadline, after: float = 0.0) -> Deadline:
        """When the token searches are told to stop: :attr:`after_tokens` and
        :attr:`token_tail` (and ``after`` seconds more, kept for other models of the command)
        before ``deadline``."""
        return deadline.earlier_by(self.after_tokens + self.token_tail + after)

    def to_dict(self) -> dict:
        """The ``plan`` object of ``report.json``."""
        return {
            "tensors": dict(self.tensors),
            "units": self.units,
            "units_asked": self.units_asked,
            "methods": list(self.methods),
            "runs": list(self.runs),
            "restarts": self.restarts,
            "steps": self.steps,
            "rows": self.rows,
            "chunks": self.chunks,
            "chunk_rows": self.chunk_rows,
            "batch_size": self.batch_size,
            "seconds_per_step": self.seconds_per_step,
            "estimated_seconds": self.estimate,
            "spent_seconds": self.spent,
            "peak_memory_bytes": self.peak_memory,
            "time_budget_seconds": self.budget,
            "cuts": [cut.to_dict() for cut in self.cuts],
            "cut_order": "units (down to 8), restarts, steps (down to 64), units, steps, "
            "token search steps",
            "device": self.device,
            "units_done": self.units_done,
            "overhead_seconds": self.overhead,
            "kept_for_other_models_seconds": self.others,
            "token_search_seconds": self.token_seconds,
            "token_tail_seconds": self.token_tail,
            "token_steps": self.token_steps,
            "targets": list(self.targets),
            "racing": [{"candidates": s.rows, "steps": s.steps} for s in self.stages] or None,
        }

    def cut_text(self) -> str | None:
        """``"units 64 -> 8, restarts 3 -> 1"`` (None when nothing was cut)."""
        if not self.cuts:
            return None
        return ", ".join(cut.describe() for cut in self.cuts)

    def lines(self) -> list[str]:
        """The plan for people, a few short lines."""
        tensors = ", ".join(f"{name} ({count})" for name, count in self.tensors.items())
        budget = "none" if self.budget is None else format_duration(self.budget)
        others = f", {format_duration(self.others)} kept for other models" if self.others else ""
        lines = [
            f"targets: {tensors}",
            f"units {self.units} x methods {len(self.methods)} ({', '.join(self.methods)}); "
            f"rows {self.rows} = units x {len(self.runs)} runs x {self.restarts} restarts; "
            f"{self.steps} steps",
            f"chunks {self.chunks} of <= {self.chunk_rows} rows, {self.batch_size} rows/step at "
            f"{self.seconds_per_step:.3g} s/step on {self.device}; peak memory "
            f"{self.peak_memory / 2**30:.1f} GiB",
            f"estimated time {format_duration(self.estimate)} "
            f"(+{format_duration(self.spent)} spent{others}); time budget {budget}",
        ]
        if self.stages:
            race = ", ".join(f"{s.rows} x {s.steps}" for s in self.stages)
            row_steps = sum(s.rows * s.steps for s in self.stages)
            lines.append(
                f"racing restarts: per unit and run, candidates x steps {race} "
                f"({row_steps} row-steps; {self.restarts} x {self.steps} less the screen)"
            )
        if self.token_seconds:
            lines.append(
                f"token search after the steps: {format_duration(self.token_seconds)} of the "
                "estimate"
            )
        if self.units_done:
            lines.append(f"resuming: {self.units_done} of {self.units} units already done")
        if self.cuts:
            lines.append(f"cut to fit the time budget: {self.cut_text()}")
        return lines


@dataclass(frozen=True)
class Measured:
    """What :func:`measure_costs` found: the cost model and the peak memory."""

    cost: CostModel
    batch_size: int
    seconds_per_step: float
    peak_memory: int

    def describe(self) -> str:
        """``"measured 7.4 s per step of 37 rows, 0.31 s per step of 1 row"``."""
        one = self.cost.step(1)
        return (
            f"measured {self.seconds_per_step:.3g} s per step of {self.batch_size} rows, "
            f"{one:.3g} s per step of 1 row"
        )


def measure_costs(
    imported,
    config,
    targets: Sequence[Target],
    runs: Sequence,
    chunk_rows: int,
    rewrite=None,
    tokens: TokenPlan | None = None,
) -> Measured:
    """Time real steps, at the first chunk's size and at one row; read the peak memory.

    The rest is priced from the step: an engine call's fixed cost (the trivial baselines,
    a no-grad forward of their rows, the candidates of a ``screened`` start, and the
    chunk-size measurement) as a third of a step of that many rows; a result's onnxruntime
    check and images as half a one-row step. The plots and page are timed on a small real
    drawing (:func:`~onnx_am.audit.render.cost.measure_render`).

    Args:
        imported: the model.
        config: the engine settings (restarts, device, batch size).
        targets: the planned targets.
        runs: the gradient methods optimized.
        chunk_rows: rows per analyze chunk.
        rewrite: the rectifier rewrite (shared with the run).
        tokens: the token searches run after the chunks, or ``None``; priced from their
            own calls timed on the first target (:func:`~onnx_am.tokens.run.time_tokens`:
            forwards of 1 and 64 rows, gradients of 1 and 4), not from the engine step.
    """
    per_unit = config.starts.restarts * len(runs)
    first = min(len(targets), max(1, chunk_rows // per_unit)) * per_unit
    if config.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(config.device)
    big = time_steps(imported, config, targets, runs, first, steps=1, rewrite=rewrite)
    peak = _peak_memory(config.device)
    small = big
    if big.rows > 1:
        small = time_steps(imported, config, targets, runs, 1, steps=1, rewrite=rewrite)
    per_row = max(0.0, (big.seconds - small.seconds) / max(1, big.rows - small.rows))
    fixed = max(0.0, big.seconds - per_row * big.rows)
    if big.rows == small.rows:
        per_row, fixed = big.seconds / big.rows, 0.0
    one_row = fixed + per_row
    screened = screening_forwards(config.starts.start, config.starts.restarts, config.starts.screen)
    screened += race_screen(config, len(runs))
    per_call = (fixed + per_row * (3 + config.checks.baseline_corners + len(runs) + screened)) / 3
    per_result = one_row / 2 if config.checks.crosscheck else 0.0
    domain = config.domain
    drawing = measure_render(
        imported.input.sample_shape, DisplayDomain(domain.low, domain.high, imported.input.layout)
    )
    token_step = token_unit = token_tail = 0.0
    if tokens is not None and targets:
        timings, per_target = time_tokens(imported, tokens, targets[0])
        token_step, token_unit = tokens.price(timings, per_target)
        token_tail = tokens.tail(timings)
    cost = CostModel(
        step_fixed=fixed,
        step_per_row=per_row,
        batch_size=big.rows,
        chunk_rows=chunk_rows,
        per_call=per_call,
        per_result=per_result,
        render=drawing.per_result,
        render_fixed=drawing.fixed,
        token_step=token_step,
        token_unit=token_unit,
        token_tail=token_tail,
    )
    return Measured(cost, big.rows, big.seconds, peak)


def plan_budget(
    targets: Sequence[Target],
    methods: Sequence[str],
    runs: Sequence[str],
    config,
    measured: Measured,
    budget: float | None,
    spent: float,
    fixed_work: Work | None = None,
    others: float = 0.0,
) -> tuple[BudgetPlan, list[Target], Work]:
    """Fit the work to the budget; returns the plan, the targets kept and the work.

    Args:
        targets: the planned targets.
        methods: reported methods; ``runs``: optimized gradient methods.
        config: the engine settings as asked (restarts, steps, device).
        measured: from :func:`measure_costs`.
        budget: seconds for the whole run (None: no budget).
        spent: seconds already spent.
        fixed_work: the work of a report being resumed (not fitted again).
        others: seconds of the budget kept for the other models of the command.

    Raises:
        BudgetError: the budget cannot hold one unit.
    """
    asked = Work(
        len(targets),
        len(runs),
        len(methods),
        config.starts.restarts,
        config.ascent.steps,
        config.racing,
    )
    if fixed_work is not None:
        fit_work, seconds = fixed_work, measured.cost.estimate(fixed_work)
        cuts = tuple(
            BudgetCut(what, getattr(asked, what), getattr(fixed_work, what))
            for what in ("units", "restarts", "steps")
            if getattr(asked, what) != getattr(fixed_work, what)
        )
    else:
        try:
            fit = fit_budget(asked, measured.cost, budget, spent, others)
        except BudgetError as exc:
            raise BudgetError(f"{exc} ({measured.describe()})", exc.smallest) from None
        fit_work, seconds, cuts = fit.work, fit.seconds, fit.cuts
    kept = spread(list(targets), fit_work.units)
    tensors: dict[str, int] = {}
    for target in kept:
        tensors[target.tensor] = tensors.get(target.tensor, 0) + 1
    per_unit = fit_work.runs * fit_work.restarts
    units_per_chunk = max(1, measured.cost.chunk_rows // per_unit)
    step_rows = min(measured.batch_size, units_per_chunk * per_unit, fit_work.rows)
    plan = BudgetPlan(
        tensors=tensors,
        units=fit_work.units,
        units_asked=len(targets),
        methods=tuple(methods),
        runs=tuple(runs),
        restarts=fit_work.restarts,
        steps=fit_work.steps,
        rows=fit_work.rows,
        chunks=-(-fit_work.units // units_per_chunk),
        chunk_rows=measured.cost.chunk_rows,
        batch_size=step_rows,
        seconds_per_step=measured.cost.step(step_rows),
        estimate=seconds,
        spent=spent,
        peak_memory=measured.peak_memory,
        budget=budget,
        cuts=cuts,
        device=config.device,
        targets=tuple(t.name for t in kept),
        overhead=measured.cost.overhead(fit_work),
        others=others,
        stages=fit_work.stages() if fit_work.racing is not None else (),
        token_seconds=measured.cost.tokens(fit_work),
        after_tokens=measured.cost.after_tokens(fit_work),
        token_tail=measured.cost.token_tail,
        token_steps=fit_work.token_steps,
    )
    return plan, kept, fit_work


def _peak_memory(device: str) -> int:
    """Peak bytes so far: CUDA memory allocated on ``device``, else the process's max RSS."""
    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


__all__ = ["BudgetPlan", "Measured", "plan_budget", "measure_costs"]
