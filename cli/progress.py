"""Progress of ``analyze`` on stderr: a bar on a terminal, a line at a steady interval elsewhere.

The library reports :class:`~onnx_am.audit.analyze.AnalyzeProgress` events; this module only
renders them. On a terminal :class:`ProgressBar` redraws one line in place. Off a terminal
(a pipe, a CI log, ``nohup``) :class:`ProgressLines` prints one line every ``interval``
seconds from a background thread, so a log shows life even while one long step runs: phase,
units done / total, elapsed time, ETA.
"""

from __future__ import annotations

import threading
import time

import click

from onnx_am.audit.analyze import AnalyzeProgress
from onnx_am.audit.budget import format_duration

#: Seconds between progress lines off a terminal.
LINE_INTERVAL = 30.0


def eta_seconds(fraction: float, first: float, since: float, now: float) -> float | None:
    """Seconds left when ``fraction`` of the work is done, ``first`` of it already at ``since``
    (a resumed run starts part-way); None before anything measurable was done."""
    done = fraction - first
    if done <= 0:
        return None
    return (now - since) / done * (1 - fraction)


class ProgressBar:
    """One line on stderr redrawn in place: units, steps of the current chunk, ETA."""

    WIDTH = 30

    def __init__(self):
        self.started = time.monotonic()
        self.first_fraction: float | None = None
        self.shown = 0.0

    def update(self, event: AnalyzeProgress) -> None:
        now = time.monotonic()
        if now - self.shown < 0.1 and event.steps_done not in (0, event.steps_total):
            return
        self.shown = now
        fraction = event.fraction
        if self.first_fraction is None:
            self.first_fraction, self.started = fraction, now
        filled = int(self.WIDTH * fraction)
        steps = f"step {event.steps_done}/{event.steps_total}" if event.steps_total else ""
        eta = eta_seconds(fraction, self.first_fraction, self.started, now)
        line = (
            f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] "
            f"units {event.units_done}/{event.units_total}  "
            f"{steps}  ETA {_clock(eta)}"
        )
        click.echo(line, nl=False, err=True)

    def clear(self) -> None:
        click.echo("\r" + " " * (self.WIDTH + 60) + "\r", nl=False, err=True)


class ProgressLines:
    """Whole lines on stderr, one every ``interval`` seconds.

    Use as a context manager (the timer thread stops on exit) and feed it every event.
    """

    def __init__(
        self, interval: float = LINE_INTERVAL, clock=time.monotonic, started: float | None = None
    ):
        self.interval = interval
        self.clock = clock
        self.started = clock() if started is None else started
        self.event: AnalyzeProgress | None = None
        self.first_fraction: float | None = None
        self.optimize_since: float | None = None
        self.estimate: float | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._tick, name="onnx-am-progress", daemon=True)

    def __enter__(self) -> ProgressLines:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=1)

    def update(self, event: AnalyzeProgress) -> None:
        with self._lock:
            now = self.clock()
            if event.plan is not None:
                self.estimate = event.plan.estimate
            if event.phase == "optimize" and self.first_fraction is None:
                self.first_fraction, self.optimize_since = event.fraction, now
            self.event = event

    def line(self) -> str:
        """The current progress as one line."""
        with self._lock:
            event, now = self.event, self.clock()
            if event is None:
                return f"onnx-am: starting, elapsed {format_duration(now - self.started)}"
            parts = [f"onnx-am: {event.phase}"]
            if event.units_total:
                parts.append(f"units {event.units_done}/{event.units_total}")
                if event.steps_total and event.phase == "optimize":
                    parts.append(f"chunk step {event.steps_done}/{event.steps_total}")
            parts.append(f"elapsed {format_duration(now - self.started)}")
            if event.phase == "optimize":
                parts.append(f"ETA {_clock(self._eta(event, now))}")
            return ", ".join(parts)

    def emit(self) -> None:
        click.echo(self.line(), err=True)

    def _eta(self, event: AnalyzeProgress, now: float) -> float | None:
        eta = None
        if self.first_fraction is not None and self.optimize_since is not None:
            eta = eta_seconds(event.fraction, self.first_fraction, self.optimize_since, now)
        if eta is None and self.estimate is not None and self.optimize_since is not None:
            eta = max(0.0, self.estimate - (now - self.optimize_since))
        return eta

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.emit()


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 60:d}:{seconds % 60:02d}"
