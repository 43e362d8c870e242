"""Racing restarts (successive halving): how many candidates a unit starts, and when they stop.

A plain run gives every row (unit, restart, gradient method) all ``steps``. A race spends the
same row-steps differently: each unit starts more candidates than it keeps, per gradient
method ``candidates`` of them (centre starts, as the default's restarts, and the best corners
of one screened pool). The run is cut into stages; after each stage every (unit, method)
group keeps its best ``keep`` share (at least one) and the others stop, so their row-steps go
to the survivors in the later, longer stages. Where every candidate of a unit is still no
better than a trivial input (:mod:`onnx_am.engine.baselines`), half of the places kept go to
new candidates instead (the next corners of the screened pool).

The budget of a group is exactly what the plain run spends on it, ``restarts * steps``
row-steps, less the screened pool's forwards at a third of a step each
(:func:`screen_charge`); :func:`race_stages` splits it into stages whose row-steps add up to
it exactly. Every stage gets an equal share; a last one-step stage takes what does not divide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from onnx_am.engine.schedules import LR_SCHEDULES
from onnx_am.errors import SettingsError


@dataclass(frozen=True)
class RacingSettings:
    """How a race spends a unit's rows (see the module docstring).

    Attributes:
        candidates: starts per unit and gradient method at the first stage.
        corners: of them, screened corners (the best of the pool for the unit); the others
            are the default's centre starts (box middle plus noise).
        keep: share of each group's candidates that goes on at every stage boundary.
        rungs: stage boundaries (halvings); ``rungs + 1`` stages.
        screen: random corners in the pool, evaluated with forward passes only (each counts
            as a third of a row-step against the budget).
        lr_schedule: the raced candidates' lr schedule (:mod:`onnx_am.engine.schedules`);
            None: the ascent's ``lr_schedule``, as a plain run's.
        settle: the lr schedule runs over the race's last ``settle`` stages only, the stages
            before them step at the full lr (0: it runs over the whole race).
        first_steps: the fewest steps of the first stage: a budget too small to give every
            candidate that many starts fewer candidates (and as many fewer corners in
            proportion, see :func:`corner_starts`), so that no candidate is judged on a step
            or two.
    """

    # chosen from benchmarks/results/racing/round5.md (issue 26)
    candidates: int = 16
    corners: int = 8
    keep: float = 0.5
    rungs: int = 4
    screen: int = 128
    lr_schedule: str | None = "cosine"
    settle: int = 1
    first_steps: int = 8

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first bad setting."""
        checks = [
            (self.candidates >= 1, f"racing candidates must be >= 1, got {self.candidates}"),
            (
                0 <= self.corners <= self.candidates,
                f"racing corners must be in 0..candidates ({self.candidates}), got {self.corners}",
            ),
            (0 < self.keep < 1, f"racing keep must be in (0, 1), got {self.keep}"),
            (self.rungs >= 0, f"racing rungs must be >= 0, got {self.rungs}"),
            (
                self.screen >= self.corners and (self.screen >= 1 or self.corners == 0),
                f"racing screen must be >= corners ({self.corners}), got {self.screen}",
            ),
            (
                self.lr_schedule is None or self.lr_schedule in LR_SCHEDULES,
                f"unknown racing lr schedule {self.lr_schedule!r}; choose from "
                f"{', '.join(LR_SCHEDULES)}",
            ),
            (self.settle >= 0, f"racing settle must be >= 0, got {self.settle}"),
            (
                self.first_steps >= 1,
                f"racing first_steps must be >= 1, got {self.first_steps}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Stage:
    """One stage of a race: ``rows`` candidates per group each take ``steps`` steps;
    ``extra``: the one-step stage of the leftover row-steps (the candidates it leaves out
    end with the stage before it)."""

    rows: int
    steps: int
    extra: bool = False


def screen_charge(settings: RacingSettings, runs: int, budget: int) -> int:
    """Row-steps each group pays for the screened pool: ``ceil(screen / (3 * runs))`` (the
    pool's forwards, a third of a step each, shared by the unit's groups); 0 without corners
    or when the charge would take more than a quarter of ``budget`` (the race then has no
    corner starts, see :func:`corners_used`)."""
    if settings.corners == 0:
        return 0
    charge = math.ceil(settings.screen / (3 * max(1, runs)))
    return charge if 4 * charge <= budget else 0


def corners_used(settings: RacingSettings, runs: int, budget: int) -> int:
    """Corner starts a group really gets (none when the budget cannot pay for the pool)."""
    return settings.corners if screen_charge(settings, runs, budget) else 0


def corner_starts(settings: RacingSettings, corners: int, candidates: int) -> int:
    """Corner starts of a race that starts ``candidates`` (fewer than ``settings.candidates``
    when the budget is small): ``corners`` in proportion, rounded up."""
    return -(-corners * candidates // settings.candidates)


def race_screen(config, runs: int) -> int:
    """Forward passes the race of ``config`` (an ``AMConfig``) spends screening its pool per
    engine call (0 without racing or corners)."""
    racing = config.racing
    if racing is None:
        return 0
    return (
        racing.screen
        if corners_used(racing, runs, config.starts.restarts * config.ascent.steps)
        else 0
    )


def race_stages(settings: RacingSettings, budget: int) -> tuple[Stage, ...]:
    """Stages whose row-steps (``sum(rows * steps)``) are exactly ``budget`` per group.

    Candidates fall by ``keep`` at every boundary (never below 1). Each stage gets
    ``budget / stages`` row-steps; the last stage takes the rest that its rows divide, and a
    final one-step stage of fewer rows what is left over. With too small a budget for every
    candidate to take ``first_steps`` steps in the first stage (and a step in every stage),
    the race starts fewer candidates.

    Raises:
        SettingsError: ``budget < 1``.
    """
    if budget < 1:
        raise SettingsError(f"a race needs a budget of at least 1 row-step, got {budget}")
    for first in range(min(settings.candidates, budget), 0, -1):
        counts = [first]
        for _ in range(settings.rungs):
            kept = max(1, math.ceil(counts[-1] * settings.keep))
            if kept < counts[-1]:  # a boundary where nothing stops is no boundary
                counts.append(kept)
        stages = _split(counts, budget)
        if stages is not None and (stages[0].steps >= settings.first_steps or first == 1):
            return stages
    raise AssertionError("one candidate always fits a budget >= 1")  # pragma: no cover


def _split(counts: list[int], budget: int) -> tuple[Stage, ...] | None:
    """Equal shares of ``budget`` per stage; None when a stage would get no step."""
    share = budget / len(counts)
    stages = [Stage(n, int(share // n)) for n in counts[:-1]]
    if any(stage.steps < 1 for stage in stages):
        return None
    left = budget - sum(s.rows * s.steps for s in stages)
    last = counts[-1]
    steps, extra = divmod(left, last)
    if steps < 1:
        return None
    stages.append(Stage(last, steps))
    if extra:
        stages.append(Stage(extra, 1, extra=True))
    return tuple(stages)


def group_budget(settings: RacingSettings, restarts: int, steps: int, runs: int) -> int:
    """Row-steps of one (unit, method) group: the plain run's ``restarts * steps`` less the
    pool's :func:`screen_charge`."""
    budget = restarts * steps
    return budget - screen_charge(settings, runs, budget)


def ends_race(stages: Sequence[Stage], index: int) -> bool:
    """Whether the candidates of stage ``index`` end the race with it (their last point is
    then measured, as a plain run measures its rows' last points)."""
    return index == len(stages) - 1 or (index == len(stages) - 2 and stages[-1].extra)


def horizon(stages: Sequence[Stage]) -> int:
    """Steps of a candidate that runs every stage (the schedules' length)."""
    return sum(stage.steps for stage in stages)


def shrink_stages(stages: Sequence[Stage], index: int, share: float) -> tuple[Stage, ...]:
    """``stages`` with those from ``index`` on cut to ``share`` (0..1) of their steps (each
    keeps at least one): a pace that finds the race slower than planned shrinks what is left
    of it proportionally, and the halving (every stage's candidates) stays as planned."""
    if share >= 1.0:
        return tuple(stages)
    share = max(0.0, share)
    cut = [
        Stage(s.rows, max(1, math.floor(s.steps * share)), s.extra) if i >= index else s
        for i, s in enumerate(stages)
    ]
    return tuple(cut)


def equivalent_steps(stages: Sequence[Stage], charge: int, restarts: int) -> int:
    """The steps of a plain run that spends what ``stages`` spend per group (with the pool's
    ``charge``): ``(row-steps + charge) / restarts``, rounded down; an unshrunk race's is the
    plan's ``steps``. A pace states a race's cut in these steps."""
    return (sum(s.rows * s.steps for s in stages) + charge) // max(1, restarts)


def lr_hold(stages: Sequence[Stage], settle: int) -> int:
    """Steps a finalist takes at the full lr before the last ``settle`` stages (the one-step
    stage of leftovers counts with the stage before it), where its lr schedule starts; 0 when
    ``settle`` is 0 or covers every stage."""
    if settle == 0:
        return 0
    main = [stage for stage in stages if not stage.extra]
    return horizon(main[: max(0, len(main) - settle)])


def keep_ranked(values: Sequence[float], count: int) -> list[int]:
    """Positions of the ``count`` highest ``values`` (ties: the earlier), in rank order."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return order[:count]


__all__ = [
    "RacingSettings",
    "Stage",
    "corner_starts",
    "corners_used",
    "ends_race",
    "equivalent_steps",
    "group_budget",
    "horizon",
    "keep_ranked",
    "lr_hold",
    "race_screen",
    "race_stages",
    "screen_charge",
    "shrink_stages",
]
