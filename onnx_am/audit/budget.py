"""A time budget for ``analyze``: what a run costs, and what to cut so that it fits.

The cost of an audit is estimated from a :class:`CostModel` measured on the real model (a few
real steps at the real chunk size, see :func:`onnx_am.engine.probe.time_steps`). When the
estimate does not fit the budget, :func:`fit_budget` reduces the work in this order, each
stage only as far as needed and never touching the gradient methods (so the standard vs
decoupled comparison is always there):

1. units, down to :data:`UNIT_FLOOR` (spread evenly over the planned units);
2. restarts, down to 1;
3. steps, down to :data:`STEP_FLOOR`;
4. units, down to 1;
5. steps, down to :data:`MIN_STEPS`;
6. the token searches' steps (a model cut at a lookup), down to 1.

Every reduction is a :class:`BudgetCut` that the report, the HTML page and the command line show.
A budget that cannot hold one unit at one restart and :data:`MIN_STEPS` steps is a
:class:`~onnx_am.errors.BudgetError` that names the smallest budget that can.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from onnx_am.engine.pace import MIN_STEPS, STEP_QUANTUM  # the fewest steps; steps' multiple
from onnx_am.engine.racing import RacingSettings, Stage, ends_race, group_budget, race_stages
from onnx_am.errors import BudgetError, SettingsError

#: Default time budget of ``analyze`` in seconds: a zero-config audit of a ResNet-50-class
#: model on a 2-core machine returns a report within about 15 minutes.
DEFAULT_TIME_BUDGET = 15 * 60.0
#: Units kept before restarts and steps are cut: enough for a contact sheet worth reading.
UNIT_FLOOR = 8
#: Steps kept before units are cut below :data:`UNIT_FLOOR`.
STEP_FLOOR = 64
#: Share of the time left that the estimate may fill: estimates are from a few steps on a
#: machine whose load changes.
MARGIN = 0.85

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smh])")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """``"90s"``, ``"10m"``, ``"2h"``, ``"1h30m"`` in seconds; ``"none"`` is no budget (None).

    Raises:
        SettingsError: anything else, or a zero duration.
    """
    cleaned = text.strip().lower().replace(" ", "")
    if cleaned in ("none", "off", "unlimited"):
        return None
    parts = _DURATION.findall(cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise SettingsError(
            f"time budget {text!r} is not a duration like 90s, 10m, 2h, 1h30m or none"
        )
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise SettingsError(f"time budget {text!r} must be longer than zero (or none)")
    return seconds


def format_duration(seconds: float) -> str:
    """``"2h05m"``, ``"14m30s"``, ``"45s"``: whole seconds, for people."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@dataclass(frozen=True)
class Work:
    """How much optimization a run does.

    Attributes:
        units: target units.
        runs: gradient methods optimized per unit (rows per unit and restart).
        plans: results per unit (reported methods; ``best`` shares the rows of two runs).
        restarts: starts per unit and run.
        steps: gradient steps per row.
        racing: when set, each unit races candidates at the cost of ``restarts`` rows per
            run (:mod:`onnx_am.engine.racing`); priced stage by stage.
        token_steps: the steps the token searches' cost stands for (``steps x 64``
            forward-pass equivalents per unit and method); ``None``: ``steps``.
    """

    units: int
    runs: int
    plans: int
    restarts: int
    steps: int
    racing: RacingSettings | None = None
    token_steps: int | None = None

    @property
    def rows(self) -> int:
        return self.units * self.runs * self.restarts

    def stages(self) -> tuple[Stage, ...]:
        """Per (unit, run): the race's stages, or one stage of ``restarts`` rows."""
        if self.racing is None:
            return (Stage(self.restarts, self.steps),)
        budget = group_budget(self.racing, self.restarts, self.steps, self.runs)
        return race_stages(self.racing, budget)

    @property
    def searched_steps(self) -> int:
        """The steps of the token searches (:attr:`token_steps`, else :attr:`steps`)."""
        return self.steps if self.token_steps is None else self.token_steps


@dataclass(frozen=True)
class CostModel:
    """Measured costs, in seconds.

    Attributes:
        step_fixed, step_per_row: one engine step of ``n`` rows costs
            ``step_fixed + step_per_row * n``.
        batch_size: rows per engine step (the memory-fitted chunk size).
        chunk_rows: rows per analyze chunk (the unit of resume; one engine call).
        per_call: fixed cost of one engine call (baselines, chunk size measurement,
            onnxruntime session).
        per_result: cost of one result after optimizing (onnxruntime cross-check, images).
        render: cost of the plots and the HTML page, per result (``render_fixed`` on top).
        render_fixed: fixed part of rendering.
        token_step, token_unit: the token searches of a model cut at a lookup (after the
            chunks, before rendering): seconds per unit and step, and per unit
            (:meth:`onnx_am.tokens.run.TokenPlan.price`); 0 for other models.
        token_tail: seconds the token searches may run past being told to stop (a call in
            flight, the stopped unit's results: :meth:`onnx_am.tokens.run.TokenPlan.tail`);
            a margin inside :meth:`tokens`, not added to it.
    """

    step_fixed: float
    step_per_row: float
    batch_size: int
    chunk_rows: int
    per_call: float = 0.0
    per_result: float = 0.0
    render: float = 0.0
    render_fixed: float = 0.0
    token_step: float = 0.0
    token_unit: float = 0.0
    token_tail: float = 0.0

    def step(self, rows: int) -> float:
        """Seconds of one engine step of ``rows`` rows."""
        return self.step_fixed + self.step_per_row * rows

    def estimate(self, work: Work) -> float:
        """Seconds from the first chunk to the written report (optimize, check, render)."""
        units_per_chunk = self._units_per_chunk(work)
        seconds = 0.0
        left = work.units
        while left > 0:
            units = min(units_per_chunk, left)
            left -= units
            seconds += self._chunk(units, work)
        return seconds + self.overhead(work)

    def overhead(self, work: Work) -> float:
        """The part of :meth:`estimate` outside the steps: each engine call's fixed costs,
        then per result the cross-check, the token searches (:meth:`tokens`) and
        pictures and the page (:meth:`after_tokens`)."""
        chunks = -(-work.units // self._units_per_chunk(work))
        checks = work.units * work.plans * self.per_result
        return chunks * self.per_call + checks + self.tokens(work) + self.after_tokens(work)

    def tokens(self, work: Work) -> float:
        """Seconds of the token searches (0 for a model not cut at a lookup)."""
        return work.units * (self.token_unit + self.token_step * work.searched_steps)

    def after_tokens(self, work: Work) -> float:
        """Seconds of what follows the token searches: pictures, plots and the page."""
        return work.units * work.plans * self.render + self.render_fixed

    def _units_per_chunk(self, work: Work) -> int:
        return max(1, self.chunk_rows // max(1, work.runs * work.restarts))

    def _chunk(self, units: int, work: Work) -> float:
        """One engine call of ``units`` units: per stage (one without racing) engine chunks
        of at most ``batch_size`` rows taking the stage's steps; the last stage's rows take
        one forward more (it measures the final input; priced as a step)."""
        stages = work.stages()
        seconds = 0.0
        for index, stage in enumerate(stages):
            rows = units * work.runs * stage.rows
            seconds += self._batches(rows, stage.steps + int(ends_race(stages, index)))
        return seconds

    def _batches(self, rows: int, steps: int) -> float:
        """``rows`` rows in engine chunks of at most ``batch_size`` rows, ``steps`` each."""
        batch = max(1, min(self.batch_size, rows))
        full, rest = divmod(rows, batch)
        seconds = full * steps * self.step(batch)
        if rest:
            seconds += steps * self.step(rest)
        return seconds


@dataclass(frozen=True)
class BudgetCut:
    """One reduction the budget made: ``what`` from ``before`` to ``after``."""

    what: str
    before: int
    after: int

    def to_dict(self) -> dict:
        return {"what": self.what, "from": self.before, "to": self.after}

    def describe(self) -> str:
        return f"{self.what} {self.before} -> {self.after}"


@dataclass(frozen=True)
class Fit:
    """The work that fits, what was cut to get there, and its estimated seconds."""

    work: Work
    cuts: tuple[BudgetCut, ...]
    seconds: float


def fit_budget(
    work: Work, cost: CostModel, budget: float | None, spent: float = 0.0, others: float = 0.0
) -> Fit:
    """Reduce ``work`` in the module's stated order until its estimate fits.

    Args:
        work: what the settings ask for.
        cost: the measured cost model.
        budget: the whole run's budget in seconds; None for no budget.
        spent: seconds already spent (import, parity check, timing).
        others: seconds of the budget kept for the other models of the same command.

    Returns:
        The :class:`Fit` (no cuts when it already fits or there is no budget).

    Raises:
        BudgetError: not even one unit at one restart and :data:`MIN_STEPS` steps fits;
            the message names the smallest budget that would.
    """
    if budget is None:
        return Fit(work, (), cost.estimate(work))
    limit = MARGIN * (budget - spent - others)
    fitted = work
    for what, floor in (
        ("units", min(work.units, UNIT_FLOOR)),
        ("restarts", 1),
        ("steps", min(work.steps, STEP_FLOOR)),
        ("units", 1),
        ("steps", min(work.steps, MIN_STEPS)),
        ("token_steps", 1),
    ):
        if cost.estimate(fitted) <= limit:
            break
        if what == "token_steps":
            if not cost.token_step:
                break
            fitted = replace(fitted, token_steps=fitted.searched_steps)
        fitted = _reduce(fitted, what, floor, cost, limit)
    seconds = cost.estimate(fitted)
    if seconds <= limit:
        return Fit(fitted, _cuts(work, fitted), seconds)
    smallest = _round_up(spent + others + seconds / MARGIN)
    kept = f", {format_duration(others)} are kept for the other models" if others else ""
    raise BudgetError(
        f"time budget {format_duration(budget)} cannot hold even one unit: "
        f"{format_duration(spent)} went to import and timing{kept}, and one unit at 1 "
        f"restart and "
        f"{fitted.steps} steps{_token_part(fitted)} takes about {format_duration(seconds)} "
        "more; the smallest "
        f"budget that can is --time-budget {format_duration(smallest)}",
        smallest=smallest,
    )


def _token_part(work: Work) -> str:
    if work.token_steps is None:
        return ""
    return f" (token search at {work.token_steps} step(s))"


def _reduce(work: Work, what: str, floor: int, cost: CostModel, limit: float) -> Work:
    """The largest value of ``what`` in ``floor .. current`` that fits, else ``floor``."""
    current = getattr(work, what)
    if current <= floor:
        return work
    candidates = range(floor, current + 1)
    if what == "steps":
        candidates = sorted({floor, *range(STEP_QUANTUM, current + 1, STEP_QUANTUM)} - {0})
        candidates = [c for c in candidates if floor <= c <= current]
    best = floor
    lo, hi = 0, len(candidates) - 1
    while lo <= hi:  # estimates grow with every field: binary search
        mid = (lo + hi) // 2
        if cost.estimate(replace(work, **{what: candidates[mid]})) <= limit:
            best, lo = candidates[mid], mid + 1
        else:
            hi = mid - 1
    return replace(work, **{what: best})


def _cuts(before: Work, after: Work) -> tuple[BudgetCut, ...]:
    cuts = tuple(
        BudgetCut(what, getattr(before, what), getattr(after, what))
        for what in ("units", "restarts", "steps")
        if getattr(before, what) != getattr(after, what)
    )
    if after.searched_steps != after.steps:
        cuts += (BudgetCut("token_steps", before.searched_steps, after.searched_steps),)
    return cuts


def _round_up(seconds: float) -> float:
    """Up to a whole minute (whole 10 s below a minute)."""
    return math.ceil(seconds / 60) * 60 if seconds > 60 else math.ceil(seconds / 10) * 10


def spread(items: Sequence, count: int) -> list:
    """``count`` items spread evenly over ``items``, first and last included, in order."""
    if count >= len(items):
        return list(items)
    if count == 1:
        return [items[0]]
    picks = sorted({round(i * (len(items) - 1) / (count - 1)) for i in range(count)})
    return [items[i] for i in picks]


__all__ = [
    "DEFAULT_TIME_BUDGET",
    "MARGIN",
    "MIN_STEPS",
    "STEP_FLOOR",
    "UNIT_FLOOR",
    "CostModel",
    "BudgetCut",
    "Fit",
    "Work",
    "fit_budget",
    "format_duration",
    "parse_duration",
    "spread",
]
