"""SIGINT, SIGTERM and SIGHUP stop ``analyze`` the same way: between two steps.

While the optimization runs, the first signal only sets a flag; the next progress event
(after the current step, whose state the engine then checkpoints) raises
``KeyboardInterrupt``. In the other phases (import, timing, rendering), and on a second
signal, it raises at once: every file is written atomically, so nothing half-written stays.
The exit code is ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP).
"""

from __future__ import annotations

import signal
from types import FrameType

#: The signals that stop a run.
STOP_SIGNALS = tuple(
    s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None
)


class GracefulStop:
    """Installs the handlers for the duration of a ``with`` block.

    Attributes:
        signum: the signal received (None: none).
        deferring: whether a signal now waits for the end of the step.
    """

    def __init__(self):
        self.signum: int | None = None
        self.deferring = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. some test runners)
                break
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    @property
    def exit_code(self) -> int:
        """``128 + signal`` (130 when no signal was recorded, e.g. a plain KeyboardInterrupt)."""
        return 128 + (self.signum or signal.SIGINT)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGINT).name

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a signal came; called between steps."""
        if self.signum is not None:
            raise KeyboardInterrupt

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signum is None
        self.signum = signum if first else self.signum
        if not (first and self.deferring):
            raise KeyboardInterrupt
