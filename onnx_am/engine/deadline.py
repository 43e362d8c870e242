"""``Deadline``: one time budget, started once, that everything of one command draws from.

A command (``onnx-am analyze``, a call of :func:`onnx_am.analyze` or of
:func:`onnx_am.audit.many.analyze_many`) makes one :class:`Deadline` where it starts and hands
it down: the plan of every model reads what is spent and what is left from it, and the pace
(:class:`~onnx_am.engine.pace.Pace`) of every chunk checks it between steps. Its clock is a
field, so a test can run a whole audit against a clock that advances by a fixed amount per call
instead of racing the wall clock.

A deadline crosses to another process (a Ray worker) as the seconds left
(:meth:`Deadline.left`), from which :meth:`Deadline.after` makes one on that process's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: A clock: seconds, only differences matter (``time.monotonic`` by default).
Clock = Callable[[], float]


@dataclass(frozen=True)
class Deadline:
    """A time budget and when it started.

    Attributes:
        budget: seconds the whole command may take; None: no budget (never expires).
        start: the clock's value when the command started.
        clock: the clock every reading uses.
    """

    budget: float | None
    start: float
    clock: Clock = field(default=time.monotonic, repr=False, compare=False)

    @classmethod
    def starting_now(
        cls, budget: float | None, clock: Clock = time.monotonic, start: float | None = None
    ) -> Deadline:
        """A deadline whose budget starts now (or at ``start``, a reading of ``clock`` taken
        earlier, e.g. before torch was loaded)."""
        return cls(budget, clock() if start is None else start, clock)

    @classmethod
    def after(cls, seconds: float | None, clock: Clock = time.monotonic) -> Deadline:
        """A deadline ``seconds`` from now (None: none), e.g. on a worker, from the seconds
        the driver had left when it sent the work."""
        return cls(seconds, clock(), clock)

    def now(self) -> float:
        """The clock's reading."""
        return self.clock()

    def spent(self) -> float:
        """Seconds since the start."""
        return self.clock() - self.start

    def left(self) -> float | None:
        """Seconds until the deadline (negative once passed); None without a budget."""
        if self.budget is None:
            return None
        return self.start + self.budget - self.clock()

    def expired(self) -> bool:
        left = self.left()
        return left is not None and left <= 0.0

    def earlier_by(self, seconds: float) -> Deadline:
        """The same start and clock, ``seconds`` less budget (e.g. the steps' deadline: the
        budget less what must still happen after them)."""
        if self.budget is None:
            return self
        return Deadline(self.budget - seconds, self.start, self.clock)


__all__ = ["Clock", "Deadline"]
