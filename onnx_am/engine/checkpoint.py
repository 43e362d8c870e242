"""Checkpoints of a running engine call, so that a killed process loses at most a minute.

One engine call (:func:`onnx_am.engine.loop.optimize_rows`) optimizes its rows in engine
batches, one after the other. A :class:`Checkpointer` keeps, in one file:

- the outcome of every engine batch already finished (best values, inputs, traces);
- the state of the running batch at a step boundary: each row's optimized variable, its best
  input and value so far, the trace so far, the optimizer's state (Adam's moments and step
  count) and the number of steps done.

It writes the file at most every ``interval`` seconds (:data:`CHECKPOINT_INTERVAL` by
default), and whenever the loop is stopped between steps, through a temporary file and
``os.replace``: a kill leaves the previous checkpoint or the new one, never half a file. A
restored batch continues from the saved step with the saved tensors, so it ends exactly as
an uninterrupted one (same seed, same batch size). A race (:mod:`onnx_am.engine.racing_run`)
saves its own state instead (:meth:`Checkpointer.save_race`): every candidate's, at each stage
boundary and, as a plain call, every ``interval`` seconds and when stopped between steps.

The file names what it belongs to: the caller's ``key`` (e.g. a hash of the settings and the
chunk's targets) and the engine's layout (rows, rows per batch, steps, methods). A file that
does not match is ignored and later overwritten.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

#: Seconds between checkpoints of a running batch.
CHECKPOINT_INTERVAL = 60.0
#: File name of the checkpoint inside a report directory.
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class BatchState:
    """One engine batch at a step boundary (``step`` steps done).

    Attributes:
        index: the engine batch within its call.
        step: steps done; the loop continues with step ``step``.
        x: the optimized variable (the raw input, or the parameter).
        best_x: each row's best raw input so far.
        best_value: each row's best true value so far (float64).
        trace: trace entries ``0 .. step - 1``, shape ``[step, rows]`` (float64).
        optimizer: the optimizer's state (``step``, and Adam's ``m`` and ``v``).
    """

    index: int
    step: int
    x: torch.Tensor
    best_x: torch.Tensor
    best_value: torch.Tensor
    trace: torch.Tensor
    optimizer: dict = field(default_factory=dict)

    def to_cpu(self) -> BatchState:
        """A detached copy on the CPU (what the file holds)."""
        return BatchState(
            self.index,
            self.step,
            _cpu(self.x),
            _cpu(self.best_x),
            _cpu(self.best_value),
            _cpu(self.trace),
            {k: _cpu(v) if isinstance(v, torch.Tensor) else v for k, v in self.optimizer.items()},
        )


@dataclass
class Checkpointer:
    """Saves and restores the state of one engine call.

    Attributes:
        path: the checkpoint file.
        key: what the call is (the caller's words); a file with another key is ignored.
        interval: seconds between saves of a running batch; 0 saves after every step.
        clock: the time source (seconds).
    """

    path: Path
    key: str
    interval: float = CHECKPOINT_INTERVAL
    clock: Callable[[], float] = time.monotonic
    layout: dict = field(default_factory=dict)
    finished: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(
        default_factory=dict
    )
    saves: int = 0
    _last: float | None = None

    def restore(self, layout: dict) -> BatchState | None:
        """Load the file if it belongs to this call and this ``layout``.

        Fills :attr:`finished` with the engine batches done, and returns the running batch's
        state (None when there is none, or no matching file).
        """
        data = self._load(layout)
        if data is None:
            return None
        self.finished = {int(k): tuple(v) for k, v in data["finished"].items()}
        current = data.get("current")
        return None if current is None else BatchState(**current)

    def restore_race(self, layout: dict) -> dict | None:
        """The saved state of a race (:mod:`onnx_am.engine.racing_state`) if the file belongs
        to this call and this ``layout``; None otherwise."""
        data = self._load(layout)
        return None if data is None else data.get("race")

    def _load(self, layout: dict) -> dict | None:
        self.layout = layout
        self.finished = {}
        self._last = self.clock()
        if not self.path.is_file():
            return None
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is only lost work
            return None
        if data.get("key") != self.key or data.get("layout") != layout:
            return None
        return data

    def batch_done(self, index: int, value, image, trace) -> None:
        """Remember a finished engine batch (written with the next save)."""
        self.finished[index] = (_cpu(value), _cpu(image), _cpu(trace))

    def due(self) -> bool:
        """Whether :attr:`interval` has passed since the last save (or the start)."""
        if self._last is None:
            self._last = self.clock()
        return self.clock() - self._last >= self.interval

    def save(self, current: BatchState | None) -> None:
        """Write the finished batches and ``current`` atomically."""
        self._write({"current": None if current is None else current.to_cpu().__dict__})

    def save_race(self, race: dict) -> None:
        """Write a race's state (tensors on the CPU, plain values) atomically."""
        self._write({"current": None, "race": race})

    def _write(self, state: dict) -> None:
        data = {
            "key": self.key,
            "layout": self.layout,
            "finished": {str(k): list(v) for k, v in self.finished.items()},
            **state,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".pt")
        os.close(handle)
        try:
            torch.save(data, tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.saves += 1
        self._last = self.clock()

    def clear(self) -> None:
        """Remove the file (its call is finished and its results are written elsewhere)."""
        self.path.unlink(missing_ok=True)
        self.finished = {}


def read_checkpoint(path: Path) -> dict | None:
    """What a checkpoint file holds, for people: ``{"key", "batches_done", "step", "steps",
    ...}`` (for a race: stages done, and the step of its candidates out of a finalist's).

    Returns:
        None when there is no readable file.
    """
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001
        return None
    current, race = data.get("current"), data.get("race")
    if race is not None:  # a race: stages done, and the step of its candidates
        running = race.get("running")
        return {
            "key": data.get("key"),
            "layout": data.get("layout", {}),
            "batches_done": race["stage"],
            "batch": None if running is None else race["batch"],
            "step": race["position"] if running is None else running["step"],
            "steps": race["horizon"],
        }
    return {
        "key": data.get("key"),
        "layout": data.get("layout", {}),
        "batches_done": len(data.get("finished", {})),
        "batch": None if current is None else current["index"],
        "step": None if current is None else current["step"],
        "steps": data.get("layout", {}).get("steps"),
    }


def _cpu(value):
    return value.detach().to("cpu", copy=True) if isinstance(value, torch.Tensor) else value


__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_INTERVAL",
    "BatchState",
    "Checkpointer",
    "read_checkpoint",
]
