"""Running a race (:mod:`onnx_am.engine.racing`): stages of :class:`~onnx_am.engine.loop.BatchRun`
batches over the candidates still in it.

Every candidate is a row ``Row(target, candidate, method)``; the same start serves a unit's
candidate in every gradient method (as the plain run's restarts do). A
:class:`~onnx_am.engine.racing_state.RaceState` holds every candidate's optimized variable,
best value and input, trace and Adam moments, a
:class:`~onnx_am.engine.racing_state.RacePoint` where the race stands.
Each stage runs the active candidates in batches of at most the memory-fitted batch size,
each batch a :class:`BatchRun` resumed from the candidates' state, for the stage's steps, and
writes the state back. Between stages each (unit, method) group keeps its best candidates;
in a unit where none beats the trivial inputs yet, half the places kept go to new starts (the
row keeps its best so far and continues from the new start with fresh optimizer moments).
Schedules (lr, annealed slopes) run over a finalist's steps, so a candidate that stops early
stops early in its schedule; the race's own lr schedule (``lr_schedule``) runs over the last
``settle`` stages only when ``settle`` is set (:func:`~onnx_am.engine.racing.lr_hold`, worked
out from the stages as the pace leaves them). Candidates that stop are not measured again:
their best is over the points their steps measured. The finalists' last points are measured,
as in a plain run.

A race is checkpointed like a plain call (:mod:`onnx_am.engine.checkpoint`): at every stage
boundary, every ``interval`` seconds and when the progress callback stops it between steps;
a restored race continues at the saved step and ends exactly as an uninterrupted one. Paced
(:class:`~onnx_am.engine.pace.Pace`), a race gets its steps like a plain chunk when it starts
(it is then the race of those steps); at each stage boundary the stages left shrink by the
share of them that still fits before the deadline, the halving kept
(:func:`~onnx_am.engine.racing.shrink_stages`), and past the deadline the race stops after its
current step, every candidate keeping its best so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from onnx_am.engine.checkpoint import Checkpointer
from onnx_am.engine.loop import BatchRun, LoopContext, StepCount, _batch_size, on_device
from onnx_am.engine.pace import Pace
from onnx_am.engine.parameterizations import make_parameterization
from onnx_am.engine.racing import (
    RacingSettings,
    Stage,
    corner_starts,
    corners_used,
    ends_race,
    equivalent_steps,
    group_budget,
    horizon,
    keep_ranked,
    lr_hold,
    race_stages,
    screen_charge,
    shrink_stages,
)
from onnx_am.engine.racing_state import RacePoint, RaceState
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


def race_plan(
    config: AMConfig, runs: int, steps: int | None = None
) -> tuple[tuple[Stage, ...], int]:
    """The stages of ``config``'s race (of ``steps``, default the plan's) and the corner
    starts per group."""
    steps = config.ascent.steps if steps is None else steps
    settings, restarts = config.racing, config.starts.restarts
    stages = race_stages(settings, group_budget(settings, restarts, steps, runs))
    return stages, corners_used(settings, runs, restarts * steps)


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
    shape, domain = imported.input.sample_shape, config.domain
    starts = torch.empty((len(targets), candidates, *shape))
    centred = candidates - corners
    for t, target in enumerate(targets):
        for r in range(centred):
            generator = torch.Generator().manual_seed(row_seed(config.starts.seed, target.name, r))
            starts[t, r] = simple_start(
                "random", shape, domain, generator, config.starts.init_scale
            )
    pool = race_pool(imported, config, targets, corners)
    for t in range(len(targets)):
        starts[t, centred:] = pool.corners[pool.order[t, :corners]]
    return starts, pool


def race_pool(
    imported: ImportedModel, config: AMConfig, targets: Sequence[Target], corners: int
) -> Pool:
    """The screened :class:`Pool` of ``config``'s seed (empty without corner starts)."""
    settings: RacingSettings = config.racing
    shape, domain = imported.input.sample_shape, config.domain
    if not corners:
        empty = torch.empty((0, *shape))
        return Pool(empty, torch.empty((len(targets), 0), dtype=torch.long))
    pool = screen_pool(shape, domain, config.starts.seed, 0, settings.screen)
    values = screen_values(imported, domain, targets, pool)
    return Pool(pool, torch.sort(-values, dim=1, stable=True).indices)


def race_rows(
    imported: ImportedModel,
    config: AMConfig,
    targets: Sequence[Target],
    runs: Sequence[GradientMethod],
    baselines: Sequence[TargetBaseline],
    rewrite: RewriteResult | None = None,
    progress: Progress | None = None,
    pace: Pace | None = None,
    checkpoint: Checkpointer | None = None,
) -> tuple[list[Row], RowOutcome]:
    """Race every target's candidates (``config.racing``); the rows and what each reached.

    Args:
        imported: the model.
        config: the settings; ``config.racing`` is not None.
        targets: the units.
        runs: the gradient methods; every unit races ``candidates`` rows of each.
        baselines: the trivial inputs' values, one per target.
        rewrite: a rectifier rewrite to reuse.
        progress: called after every step (it may raise to stop the call, after the state is
            saved to ``checkpoint``).
        pace: a deadline: the race gets the steps that fit when it starts, its stages shrink
            when it runs slower than that, and it stops after the step during which the
            deadline passes.
        checkpoint: saves the race (:meth:`Checkpointer.save_race`) and continues from what
            it restores.

    Returns:
        The rows (``Row(target, candidate, method)``) and per row its best value, input and
        trace.
    """
    schedule = config.racing.lr_schedule or config.ascent.lr_schedule
    race = _Race(
        imported,
        config.replaced(lr_schedule=schedule),
        targets,
        runs,
        rewrite,
        progress,
        pace,
        checkpoint,
    )
    try:
        point, state, pool = race.begin()
        race.run(point, state, baselines, pool)
    finally:
        race.close()
    outcome = RowOutcome([0.0] * len(race.rows), [None] * len(race.rows), [[] for _ in race.rows])
    for i in range(len(race.rows)):
        outcome.value[i] = float(state.best_value[i])
        outcome.image[i] = state.best_x[i].detach().cpu()
        outcome.trace[i] = state.trace[: state.length[i], i].tolist()
    outcome.batch_size = race.size
    return race.rows, outcome


class _Race:
    """The shared graph and settings of one race, its stage loop and its checkpoints."""

    def __init__(self, imported, config, targets, runs, rewrite, progress, pace, checkpoint):
        self.imported, self.config, self.targets = imported, config, list(targets)
        self.runs, self.pace, self.checkpoint = list(runs), pace, checkpoint
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
        )
        self.count = StepCount(0, progress)
        most = len(targets) * config.racing.candidates * len(runs)
        self.size = _batch_size(
            imported, config, extractor, self.control, tuple(runs), torch.float32, most
        )
        self.rows: list[Row] = []
        self.batches = 0

    def close(self) -> None:
        if self.control is not None:
            self.control.set_standard()

    def begin(self) -> tuple[RacePoint, RaceState, Pool]:
        """The race's start, or where its checkpoint left it."""
        config, runs = self.config, len(self.runs)
        saved = None if self.checkpoint is None else self.checkpoint.restore_race(self._layout())
        if saved is not None:
            point = RacePoint.from_dict(saved)
            self.rows = layout_rows(len(self.targets), point.stages[0].rows, runs)
            state = RaceState.from_dict(saved["state"], config.device)
            pool = race_pool(self.imported, config, self.targets, point.corners)
            self.batches, self.count.done = point.batches, point.done
            return point, state, pool
        steps = config.ascent.steps
        if self.pace is not None:  # as a plain chunk: the steps that fit, the race of those
            steps = self.pace.steps_for(self._plain_rows(), steps)
        stages, corners = race_plan(config, runs, steps)
        candidates = stages[0].rows
        corners = corner_starts(config.racing, corners, candidates)
        self.rows = layout_rows(len(self.targets), candidates, runs)
        starts, pool = race_starts(self.imported, config, self.targets, candidates, corners)
        raw = torch.stack([starts[row.target, row.restart] for row in self.rows])
        raw = raw.to(config.device)
        state = RaceState(
            self._variable(raw), raw, horizon(stages), config.ascent.optimizer == "adam"
        )
        charge = screen_charge(config.racing, runs, config.starts.restarts * steps)
        active = {key: list(members) for key, members in self._groups().items()}
        spare = dict.fromkeys(range(len(self.targets)), corners)
        return RacePoint(stages, corners, charge, active, spare), state, pool

    def _layout(self) -> dict:
        """What a race's checkpoint must match besides the caller's key (the plan's race, not
        what a pace made of it)."""
        return {
            "racing": self.config.racing.to_dict(),
            "targets": len(self.targets),
            "restarts": self.config.starts.restarts,
            "chunk": self.size,
            "steps": self.config.ascent.steps,
            "methods": [m.label for m in self.runs],
        }

    def _plain_rows(self) -> int:
        """Rows of the plain chunk the race stands for (what a pace counts)."""
        return len(self.targets) * self.config.starts.restarts * len(self.runs)

    def _variable(self, raw: torch.Tensor) -> torch.Tensor:
        parameterization = self.context.parameterization
        return raw if parameterization is None else parameterization.from_raw(raw)

    def _groups(self) -> dict[tuple[int, int], list[int]]:
        groups: dict[tuple[int, int], list[int]] = {}
        for i, row in enumerate(self.rows):
            groups.setdefault((row.target, row.method), []).append(i)
        return groups

    def run(self, point: RacePoint, state: RaceState, baselines, pool: Pool) -> None:
        """Every stage from ``point`` on; between stages each group keeps its best candidates
        and the pace shrinks what is left; the race is saved at each boundary."""
        self.count.total = self._planned(point.stages)
        while point.stage < len(point.stages):
            if self._stage(point, state):
                return
            point.position += point.stages[point.stage].steps
            point.stage, point.batch = point.stage + 1, 0
            if point.stage == len(point.stages):
                return
            self._promote(point, state, baselines, pool)
            self._fit_pace(point)
            self._save(point, state)

    def _planned(self, stages: Sequence[Stage]) -> int:
        """Progress steps of ``stages``: per stage its batches times its steps."""
        groups = len(self._groups())
        return sum(-(-stage.rows * groups // self.size) * stage.steps for stage in stages)

    def _stage(self, point: RacePoint, state: RaceState) -> bool:
        """Run the active candidates of stage ``point.stage``, batch by batch from
        ``point.batch``; True when the pace's deadline stopped the race. After a stop, the
        batches that were never measured (in the first stage) still take one step, as the
        later batches of a stopped plain chunk do, so that every unit has a result."""
        length = horizon(point.stages)
        # the stages as the pace left them say where the race's lr schedule starts
        context = replace(self.context, lr_hold=lr_hold(point.stages, self.config.racing.settle))
        last = ends_race(point.stages, point.stage)
        members = sorted(
            (i for rows in point.active.values() for i in rows),
            key=lambda i: (self.rows[i].method, i),
        )
        batches = [members[i : i + self.size] for i in range(0, len(members), self.size)]
        stopped = False
        while point.batch < len(batches):
            batch = batches[point.batch]
            if stopped and min(state.length[i] for i in batch) > 0:
                point.batch += 1
                continue  # measured in an earlier stage: its best so far stands
            self.batches += 1
            saved, point.running = point.running, None
            run = BatchRun(
                context,
                state.best_x[torch.tensor(batch, device=state.x.device)],
                [self.targets[self.rows[i].target] for i in batch],
                [self.runs[self.rows[i].method] for i in batch],
                self.batches,
                length,
                saved or state.resume(self.batches, batch, point.position),
            )
            ended = self._drive(run, point, state)
            if ended and not stopped:
                self.pace.stopped_early += 1  # one race, one stop (as one plain chunk)
            stopped = stopped or ended
            if last or ended:
                run.finish()
            state.store(batch, run, point.position, last or ended)
            point.batch += 1
        return stopped

    def _drive(self, run: BatchRun, point: RacePoint, state: RaceState) -> bool:
        """The stage's steps of ``run``; True when the deadline passed (after a step).
        Saves the race every checkpoint interval and when the progress callback raises."""
        first, end = run.position, point.position + point.stages[point.stage].steps
        tic = self.pace.now() if self.pace is not None else 0.0
        while run.position < end:
            if run.position > first and self.pace is not None and self.pace.expired():
                return True
            run.step()
            if self.checkpoint is not None and self.checkpoint.due():
                self._save(point, state, run)
            info = {"batch": run.index, "batches": self.batches, "rows": len(run.methods)}
            try:
                self.count.stepped(info)
            except BaseException:
                if self.checkpoint is not None:  # stopped between steps: keep this state
                    self._save(point, state, run)
                raise
        if self.pace is not None and run.position > first:
            taken = run.position - first  # one forward each (the last one is not timed)
            self.pace.observe(len(run.methods), taken - 1, self.pace.now() - tic)
        return False

    def _save(self, point: RacePoint, state: RaceState, run: BatchRun | None = None) -> None:
        """Checkpoint the race (``run``: the batch running, partway)."""
        if self.checkpoint is None:
            return
        point.done = self.count.done
        point.batches = self.batches - (run is not None)
        point.running = None if run is None else run.snapshot()
        self.checkpoint.save_race(point.to_dict(state))
        point.running = None

    def _fit_pace(self, point: RacePoint) -> None:
        """Shrink the stages left by the share of them that fits before the deadline."""
        if self.pace is None:
            return
        restarts = self.config.starts.restarts
        left = sum(s.rows * s.steps for s in point.stages[point.stage :]) / restarts
        stages = shrink_stages(point.stages, point.stage, self.pace.share(self._plain_rows(), left))
        if stages == point.stages:
            return
        self.count.total -= self._planned(point.stages) - self._planned(stages)
        point.stages = stages
        self.pace.cap_at(equivalent_steps(stages, point.charge, restarts))

    def _promote(self, point: RacePoint, state: RaceState, baselines, pool: Pool) -> None:
        """Each group keeps the next stage's count of its best; in a unit still at a trivial
        value, half the places go to new starts (the unit's next pool corners, else random
        corners)."""
        count, active, spare = point.stages[point.stage].rows, point.active, point.spare
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


__all__ = ["Pool", "RaceState", "race_plan", "race_pool", "race_rows", "race_starts"]
