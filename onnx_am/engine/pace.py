"""Keeping a run inside its time deadline while it runs.

The plan of ``analyze`` fits the work to the time budget from a few steps timed before it
starts; a machine that becomes slower afterwards (other jobs, thermal limits, a shared GPU)
would still overrun it. A :class:`Pace` watches the real step times and, before each engine
chunk starts, gives it the steps that still fit before the deadline:

- the planned steps while the rest of the run fits;
- otherwise fewer (a multiple of :data:`STEP_QUANTUM`, never below :data:`MIN_STEPS`), and
  never more than an earlier chunk was given, so units optimized after the slow-down are
  compared at the same number of steps;
- a chunk still running when the deadline has passed stops after its current step;
- a race (``--racing``) is given its steps like a plain chunk when it starts, and at each
  stage boundary its remaining stages shrink by the :meth:`Pace.share` of them that still
  fits (the halving kept); the cut counts as the race's plain-equivalent steps.

Results stay true values of the inputs found (each is measured on the original network and
cross-checked as usual); only how long they were searched changes, and :meth:`Pace.to_dict`
says by how much. A paced run depends on the machine's speed, so it is not reproducible step
for step: ``--time-budget none`` is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onnx_am.engine.deadline import Deadline

#: The fewest steps a paced chunk runs (as the budget's own floor).
MIN_STEPS = 16
#: Paced step counts are multiples of this.
STEP_QUANTUM = 8


@dataclass
class Pace:
    """The deadline of a run and what it cost so far.

    Args:
        deadline: by when the last step must end (the command's
            :class:`~onnx_am.engine.deadline.Deadline` less what must still happen after the
            steps); its clock is the pace's clock.
        seconds_per_row_step: expected seconds of one row's step (from the plan's timing;
            replaced by what each chunk measures).
        rows_after: rows of the run's later engine calls (set by the caller before each).

    Attributes:
        steps_cap: the fewest steps a chunk was given (None: every chunk got its plan).
        stopped_early: chunks stopped after their current step because the deadline passed.
        units_skipped: units the caller did not start because not even :data:`MIN_STEPS`
            steps fitted.
    """

    deadline: Deadline
    seconds_per_row_step: float
    rows_after: int = 0
    steps_cap: int | None = None
    stopped_early: int = 0
    units_skipped: int = 0
    planned_seconds_per_row_step: float = field(init=False)

    def __post_init__(self):
        self.planned_seconds_per_row_step = self.seconds_per_row_step

    def now(self) -> float:
        """The deadline's clock (chunks are timed with it, so a test clock paces them too)."""
        return self.deadline.now()

    def left(self) -> float:
        """Seconds until the deadline (negative once it passed; infinite without a budget)."""
        left = self.deadline.left()
        return float("inf") if left is None else left

    def expired(self) -> bool:
        return self.left() <= 0.0

    def steps_for(self, rows_left: int, planned: int) -> int:
        """Steps for the next chunk, when ``rows_left`` rows (this chunk's included, not
        :attr:`rows_after`) still wait for ``planned`` steps each."""
        allowed = planned if self.steps_cap is None else min(planned, self.steps_cap)
        rows = max(1, rows_left + self.rows_after)
        # a chunk of s steps runs s + 1 forwards (the last one measures the final input)
        fits = self.left() / (rows * self.seconds_per_row_step) - 1.0
        if fits >= allowed:
            return allowed
        steps = max(MIN_STEPS, int(fits // STEP_QUANTUM) * STEP_QUANTUM)
        steps = min(steps, allowed)
        if steps < planned:
            self.steps_cap = steps
        return steps

    def share(self, rows_left: int, planned: float) -> float:
        """The share (0..1) of ``planned`` more steps that fits before the deadline, when
        ``rows_left`` rows (and :attr:`rows_after`) each still take them: 1.0 when all fit.
        A race asks this at each stage boundary and shrinks its remaining stages by it
        (:func:`onnx_am.engine.racing.shrink_stages`); no quantum or floor, as it is within
        one chunk."""
        if planned <= 0:
            return 1.0
        rows = max(1, rows_left + self.rows_after)
        fits = self.left() / (rows * self.seconds_per_row_step) - 1.0
        return 1.0 if fits >= planned else max(0.0, fits) / planned

    def cap_at(self, steps: int) -> None:
        """A chunk was cut to ``steps`` steps while it ran (a race's remaining stages, in
        plain steps: :func:`onnx_am.engine.racing.equivalent_steps`); later chunks get no
        more."""
        self.steps_cap = steps if self.steps_cap is None else min(self.steps_cap, steps)

    def admit(self, rows: int, rows_after: int, units: int) -> bool:
        """Whether a chunk of ``rows`` rows (``units`` units) starts, with ``rows_after`` rows
        of later chunks still waiting; a chunk refused counts its units as skipped."""
        self.rows_after = rows_after
        if self.room_for(rows):
            return True
        self.units_skipped += units
        return False

    def room_for(self, rows: int) -> bool:
        """Whether ``rows`` rows at :data:`MIN_STEPS` steps end before the deadline."""
        return self.left() >= rows * (MIN_STEPS + 1) * self.seconds_per_row_step

    def observe(self, rows: int, steps: int, seconds: float, sharing: int = 1) -> None:
        """A chunk of ``rows`` rows ran ``steps`` steps in ``seconds``, while ``sharing``
        chunks ran at once (workers in parallel: each row-step then costs the run a share)."""
        if rows > 0 and seconds > 0:
            self.seconds_per_row_step = seconds / (rows * (steps + 1) * max(1, sharing))

    def merge(self, other: Pace) -> None:
        """Count what a pace elsewhere (a worker's, for one chunk) cut."""
        self.stopped_early += other.stopped_early
        if other.steps_cap is not None:
            self.steps_cap = min(self.steps_cap or other.steps_cap, other.steps_cap)

    @property
    def cut_anything(self) -> bool:
        return self.steps_cap is not None or self.stopped_early > 0 or self.units_skipped > 0

    def to_dict(self) -> dict:
        """The ``pace`` object of ``report.json``."""
        return {
            "steps_cap": self.steps_cap,
            "chunks_stopped_at_deadline": self.stopped_early,
            "units_skipped": self.units_skipped,
            "planned_seconds_per_row_step": self.planned_seconds_per_row_step,
            "measured_seconds_per_row_step": self.seconds_per_row_step,
        }


def pace_text(pace: dict) -> str:
    """What a pace cut, for people, from :meth:`Pace.to_dict` (the report's ``pace``)."""
    planned = pace["planned_seconds_per_row_step"]
    measured = pace["measured_seconds_per_row_step"]
    parts = []
    if pace.get("steps_cap") is not None:
        parts.append(f"later chunks ran {pace['steps_cap']} steps")
    if pace.get("chunks_stopped_at_deadline"):
        parts.append(f"{pace['chunks_stopped_at_deadline']} chunk(s) stopped at the deadline")
    if pace.get("units_skipped"):
        parts.append(f"{pace['units_skipped']} unit(s) not started")
    slower = f" ({measured / planned:.1f}x the time per step that was timed)" if planned else ""
    return f"the run got slower than planned{slower}, so to end within the time budget " + (
        "; ".join(parts) or "nothing was cut"
    )
