"""Running a race (:mod:`onnx_am.engine.racing`): stages of :class:`~onnx_am.engine.loop.BatchRun`
batches over the candidates still in it.

Every candidate is a row ``Row(target, candidate, method)``; the same start serves a unit's
candidate in every gradient method (as the plain run's restarts do). A :class:`RaceState`
holds every candidate's optimized variable, best value and input, trace and Adam moments.
Each stage runs the active candidates in batches of at most the memory-fitted batch size,
each batch a :class:`BatchRun` resumed from the candidates' state, for the stage's steps, and
writes the state back. Between stages each (unit, method) group keeps its best candidates;
in a unit where none beats the trivial inputs yet, half the places kept go to new starts (the
row keeps its best so far and continues from the new start with fresh optimizer moments).
Schedules (lr, annealed slopes) run over a finalist's steps, so a candidate that stops early
stops early in its schedule; the race's own lr schedule (``lr_schedule``) runs over the last
``settle`` stages only when ``settle`` is set.
Candidates that stop are not measured again: their best is over the points their steps
measured. The finalists' last points are measured, as in a plain run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from onnx_am.engine.checkpoint import BatchState
from onnx_am.engine.loop import BatchRun, LoopContext, StepCount, _batch_size, on_device
from onnx_am.engine.pace import Pace
from onnx_am.engine.parameterizations import make_parameterization
from onnx_am.engine.racing import (
    RacingSettings,
    Stage,
    corner_starts,
    corners_used,
    ends_race,
    group_budget,
    horizon,
    keep_ranked,
    lr_hold,
    race_stages,
)
from onnx_am.engine.regularizers import parse_regularizer
from onnx_am.engine.rows import Row, RowOutcome, layout_rows
from onnx_am.engine.starts import row_seed, screen_pool, screen_values, simple_start
from onnx_am.methods import GradientMethod
from onnx_am.objectives import Target

if TYPE_CHECKING:
    from onnx_am.engine.config import AMConfig, Progress
    from onnx_am.engine.results import TargetBaseline
    from onnx_am.importer.model import ImportedModel
    from onnx_am.passes.decouple import RewriteResult


def race_plan(config: AMConfig, runs: int) -> tuple[tuple[Stage, ...], int]:
    """The stages of ``config``'s race and the corner starts per group."""
    settings, budget = config.racing, config.starts.restarts * config.ascent.steps
    stages = race_stages(
        settings, group_budget(settings, config.starts.restarts, config.ascent.steps, runs)
    )
    return stages, corners_used(settings, runs, budget)


@dataclass(frozen=True)
class Pool:
    """The screened corners ``[screen, *sample]`` and, per target, their order from the
    highest value down (``[targets, screen]``; both empty without corner starts)."""

    corners: torch.Tensor
    order: torch.Tensor


def race_starts(
    imported: ImportedModel,
    config: AMConfig,
    targets: Sequence[Target],
    candidates: int,
    corners: int,
) -> tuple[torch.Tensor, Pool]:
    """Start inputs ``[targets, candidates, *sample]`` and the screened :class:`Pool`.

    Candidate ``r < candidates - corners`` starts where the default's restart ``r`` does
    (box centre plus noise, seeded by the unit and ``r``); the others at the unit's best
    corners of one pool (seeded by ``seed`` alone, so a unit's starts do not depend on the
    other units).
    """
    settings: RacingSettings = config.racing
    shape, domain = imported.input.sample_shape, config.domain
    starts = torch.empty((len(targets), candidates, *shape))
    centred = candidates - corners
    for t, target in enumerate(targets):
        for r in range(centred):
            generator = torch.Generator().manual_seed(row_seed(config.starts.seed, target.name, r))
            starts[t, r] = simple_start(
                "random", shape, domain, generator, config.starts.init_scale
            )
    if not corners:
        empty = torch.empty((0, *shape))
        return starts, Pool(empty, torch.empty((len(targets), 0), dtype=torch.long))
    pool = screen_pool(shape, domain, config.starts.seed, 0, settings.screen)
    values = screen_values(imported, domain, targets, pool)
    order = torch.sort(-values, dim=1, stable=True).indices
    for t in range(len(targets)):
        starts[t, centred:] = pool[order[t, :corners]]
    return starts, Pool(pool, order)


class RaceState:
    """Every candidate's state between stages (rows in :func:`layout_rows` order)."""

    def __init__(self, x: torch.Tensor, raw: torch.Tensor, length: int, adam: bool):
        rows = len(x)
        self.x, self.best_x = x, raw.clone()
        self.best_value = torch.full((rows,), float("-inf"), dtype=torch.float64, device=x.device)
        self.trace = torch.full((length + 1, rows), float("-inf"), dtype=torch.float64)
        self.length = [0] * rows
        self.moments = (torch.zeros_like(x), torch.zeros_like(x)) if adam else None

    def resume(self, index: int, rows: list[int], position: int) -> BatchState:
        """The state of ``rows`` for a :class:`BatchRun` at ``position``."""
        at = torch.tensor(rows, device=self.x.device)
        optimizer: dict = {"step": position}
        if self.moments is not None:
            optimizer |= {"m": self.moments[0][at], "v": self.moments[1][at]}
        trace = self.trace[:position, rows].to(self.x.device)
        return BatchState(
            index, position, self.x[at], self.best_x[at], self.best_value[at], trace, optimizer
        )

    def store(self, rows: list[int], run: BatchRun, position: int, finished: bool) -> None:
        """Write ``run``'s state back for ``rows`` (it started at ``position``; ``finished``:
        its last point was measured)."""
        at = torch.tensor(rows, device=self.x.device)
        self.x[at] = run.x.detach()
        self.best_x[at] = run.best_x
        self.best_value[at] = run.best_value
        end = run.position + int(finished)
        self.trace[position:end, rows] = run.trace[position:end].cpu()
        for row in rows:
            self.length[row] = end
        if self.moments is not None and "m" in run.optimizer:
            self.moments[0][at], self.moments[1][at] = run.optimizer["m"], run.optimizer["v"]

    def restart(self, row: int, x: torch.Tensor) -> None:
        """Row ``row`` continues from ``x`` with fresh moments; its best so far stays."""
        self.x[row] = x.to(self.x.device)
        if self.moments is not None:
            self.moments[0][row] = 0
            self.moments[1][row] = 0


def race_rows(
    imported: ImportedModel,
    config: AMConfig,
    targets: Sequence[Target],
    runs: Sequence[GradientMethod],
    baselines: Sequence[TargetBaseline],
    rewrite: RewriteResult | None = None,
    progress: Progress | None = None,
    pace: Pace | None = None,
) -> tuple[list[Row], RowOutcome]:
    """Race every target's candidates (``config.racing``); the rows and what each reached.

    Args:
        imported: the model.
        config: the settings; ``config.racing`` is not None.
        targets: the units.
        runs: the gradient methods; every unit races ``candidates`` rows of each.
        baselines: the trivial inputs' values, one per target.
        rewrite: a rectifier rewrite to reuse.
        progress: called after every step (it may raise to stop the call).
        pace: a deadline: the race stops after the step during which it passes.

    Returns:
        The rows (``Row(target, candidate, method)``) and per row its best value, input and
        trace.
    """
    stages, corners = race_plan(config, len(runs))
    candidates = stages[0].rows
    corners = corner_starts(config.racing, corners, candidates)
    rows = layout_rows(len(targets), candidates, len(runs))
    starts, pool = race_starts(imported, config, targets, candidates, corners)
    hold = lr_hold(stages, config.racing.settle)
    schedule = config.racing.lr_schedule or config.ascent.lr_schedule
    race = _Race(
        imported,
        config.replaced(lr_schedule=schedule),
        targets,
        runs,
        rows,
        rewrite,
        progress,
        pace,
        hold,
    )
    try:
        state = race.state(starts, horizon(stages))
        race.run(state, stages, baselines, pool, corners)
    finally:
        race.close()
    outcome = RowOutcome([0.0] * len(rows), [None] * len(rows), [[] for _ in rows])
    for i in range(len(rows)):
        outcome.value[i] = float(state.best_value[i])
        outcome.image[i] = state.best_x[i].detach().cpu()
        outcome.trace[i] = state.trace[: state.length[i], i].tolist()
    outcome.batch_size = race.size
    return rows, outcome


class _Race:
    """The shared graph and settings of one race, and its stage loop."""

    def __init__(self, imported, config, targets, runs, rows, rewrite, progress, pace, hold):
        self.imported, self.config, self.targets = imported, config, list(targets)
        self.runs, self.rows, self.pace = list(runs), rows, pace
        needs_rewrite = any(m.kind != "standard" for m in runs)
        if needs_rewrite and rewrite is None:
            from onnx_am.passes import decouple_rectifiers

            rewrite = decouple_rectifiers(imported)
        module = rewrite.module if needs_rewrite else imported.module
        control = rewrite.control if needs_rewrite else None
        module, self.control = on_device(module, control, config.device)
        names = list(dict.fromkeys(t.tensor for t in targets))
        regularizers = [
            parse_regularizer(r) if isinstance(r, str) else r for r in config.regularizers
        ]
        extractor = imported.extractor(names, module=module)
        self.context = LoopContext(
            imported,
            config,
            extractor,
            names,
            self.control,
            regularizers,
            parameterization=make_parameterization(
                config.parameterization, imported.input, config.domain
            ),
            pace=pace,
            lr_hold=hold,
        )
        self.count = StepCount(0, progress)
        self.size = _batch_size(
            imported, config, extractor, self.control, tuple(runs), torch.float32, len(rows)
        )
        self.batches = 0

    def close(self) -> None:
        if self.control is not None:
            self.control.set_standard()

    def state(self, starts: torch.Tensor, length: int) -> RaceState:
        raw = torch.stack([starts[row.target, row.restart] for row in self.rows])
        raw = raw.to(self.config.device)
        return RaceState(self._variable(raw), raw, length, self.config.ascent.optimizer == "adam")

    def _variable(self, raw: torch.Tensor) -> torch.Tensor:
        parameterization = self.context.parameterization
        return raw if parameterization is None else parameterization.from_raw(raw)

    def run(self, state: RaceState, stages, baselines, pool: Pool, corners: int) -> None:
        """Every stage in turn; between stages each group keeps its best candidates."""
        length = horizon(stages)
        groups = self._groups()
        active = {key: list(members) for key, members in groups.items()}
        spare = dict.fromkeys(range(len(self.targets)), corners)
        self.count.total = sum(
            -(-stage.rows * len(groups) // self.size) * stage.steps for stage in stages
        )
        position = 0
        for index, stage in enumerate(stages):
            if index:
                self._promote(state, active, stage.rows, baselines, pool, spare)
            last = ends_race(stages, index)
            stopped = self._stage(state, active, stage.steps, position, length, last)
            position += stage.steps
            if stopped:
                return

    def _groups(self) -> dict[tuple[int, int], list[int]]:
        groups: dict[tuple[int, int], list[int]] = {}
        for i, row in enumerate(self.rows):
            groups.setdefault((row.target, row.method), []).append(i)
        return groups

    def _stage(self, state, active, steps: int, position: int, length: int, last: bool) -> bool:
        """Run the active candidates ``steps`` steps from ``position``, batch by batch;
        True when the pace's deadline stopped the race."""
        members = sorted(
            (i for rows in active.values() for i in rows), key=lambda i: (self.rows[i].method, i)
        )
        for start in range(0, len(members), self.size):
            batch = members[start : start + self.size]
            self.batches += 1
            run = BatchRun(
                self.context,
                state.best_x[torch.tensor(batch, device=state.x.device)],
                [self.targets[self.rows[i].target] for i in batch],
                [self.runs[self.rows[i].method] for i in batch],
                self.batches,
                length,
                state.resume(self.batches, batch, position),
            )
            stopped = self._drive(run, steps)
            if last or stopped:
                run.finish()
            state.store(batch, run, position, last or stopped)
            if stopped:
                return True
        return False

    def _drive(self, run: BatchRun, steps: int) -> bool:
        """``steps`` steps of ``run``; True when the deadline passed (after a step)."""
        first = run.position
        while run.position < first + steps:
            if run.position > first and self.pace is not None and self.pace.expired():
                self.pace.stopped_early += 1
                return True
            run.step()
            self.count.stepped(
                {"batch": run.index, "batches": self.batches, "rows": len(run.methods)}
            )
        return False

    def _promote(self, state, active, count: int, baselines, pool: Pool, spare) -> None:
        """Each group keeps its ``count`` best; in a unit still at a trivial value, half the
        places go to new starts (the unit's next pool corners, else random corners)."""
        values = state.best_value.tolist()
        trivial = {
            t: all(
                values[i] <= baselines[t].best
                for (target, _), rows in active.items()
                if target == t
                for i in rows
            )
            for t in range(len(self.targets))
        }
        fresh_per_unit: dict[int, int] = {}
        for (t, m), rows in active.items():
            order = [rows[k] for k in keep_ranked([values[i] for i in rows], len(rows))]
            if not trivial[t]:
                active[t, m] = order[:count]
                continue
            kept = -(-count // 2)
            renewed = order[kept:count]
            for j, row in enumerate(renewed):
                start = self._new_start(t, pool, spare[t] + j)
                state.restart(row, self._variable(start[None])[0])
            fresh_per_unit[t] = len(renewed)
            active[t, m] = order[:count]
        for t, used in fresh_per_unit.items():
            spare[t] += used

    def _new_start(self, t: int, pool: Pool, index: int) -> torch.Tensor:
        """Unit ``t``'s ``index``-th ranked pool corner, else a seeded random corner."""
        if index < pool.order.shape[1]:
            return pool.corners[pool.order[t, index]].to(self.config.device)
        target = self.targets[t].name
        seed = row_seed(self.config.starts.seed, f"race|{target}", index)
        generator = torch.Generator().manual_seed(seed)
        shape = self.imported.input.sample_shape
        return simple_start("random_corner", shape, self.config.domain, generator).to(
            self.config.device
        )


__all__ = ["Pool", "RaceState", "race_plan", "race_rows", "race_starts"]
