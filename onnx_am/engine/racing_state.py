"""What a race (:mod:`onnx_am.engine.racing_run`) holds between its steps, and its checkpoint.

:class:`RaceState` holds every candidate's optimized variable, best value and input, trace and
Adam moments, also of the candidates that stopped (their best stays theirs). :class:`RacePoint`
says where the race stands: its stages (as the pace left them), the stage and engine batch
running, the candidates still in it per (unit, method), the new starts each unit used, and the
running batch's own state when it stopped partway. Both turn into plain values and CPU tensors
for :meth:`~onnx_am.engine.checkpoint.Checkpointer.save_race` and back. Nothing random is drawn
while a race runs (starts and new corners are seeded by unit and index), so these are all a
resumed race needs to end exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from onnx_am.engine.checkpoint import BatchState
from onnx_am.engine.loop import BatchRun
from onnx_am.engine.racing import Stage


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

    def to_dict(self, live: list[int]) -> dict:
        """Plain values and CPU tensors (a copy); the optimized variable and the moments only
        of the ``live`` rows (the candidates still racing: those that stopped need only their
        best input, value and trace)."""
        at = torch.tensor(live, dtype=torch.long, device=self.x.device)
        moments = None if self.moments is None else [_cpu(m[at]) for m in self.moments]
        return {
            "live": list(live),
            "x": _cpu(self.x[at]),
            "best_x": _cpu(self.best_x),
            "best_value": _cpu(self.best_value),
            "trace": _cpu(self.trace),
            "length": list(self.length),
            "moments": moments,
        }

    @classmethod
    def from_dict(cls, data: dict, device: str) -> RaceState:
        """The state :meth:`to_dict` gave, on ``device`` (the rows that were not live get a
        zero variable and zero moments: no stage reads them again)."""
        state = cls.__new__(cls)
        at = torch.tensor(data["live"], dtype=torch.long, device=device)
        state.best_x = data["best_x"].to(device)
        state.x = _rows(data["x"], at, len(state.best_x), device)
        state.best_value = data["best_value"].to(device)
        state.trace = data["trace"].clone()
        state.length = list(data["length"])
        moments = data["moments"]
        if moments is None:
            state.moments = None
        else:
            state.moments = tuple(_rows(m, at, len(state.best_x), device) for m in moments)
        return state


@dataclass
class RacePoint:
    """Where a race stands (what changes between its stages besides :class:`RaceState`).

    Attributes:
        stages: the stages, as the pace left them.
        corners: screened corner starts per group (the pool is made again from the seed).
        charge: row-steps per group the pool cost (for the race's equivalent steps).
        active: per (unit, method) the candidates still racing.
        spare: per unit the new starts used so far (the next one is the pool's next corner).
        stage: the stage running (or about to).
        batch: the engine batch of the stage running (or about to); those before it are done.
        position: the steps every candidate of the stage had when it started.
        done: steps counted so far (the progress callback's).
        batches: engine batches started before the one running.
        running: the running batch's state when it stopped partway (None: at its start).
    """

    stages: tuple[Stage, ...]
    corners: int
    charge: int
    active: dict[tuple[int, int], list[int]]
    spare: dict[int, int]
    stage: int = 0
    batch: int = 0
    position: int = 0
    done: int = 0
    batches: int = 0
    running: BatchState | None = None

    def to_dict(self, state: RaceState) -> dict:
        """What :meth:`Checkpointer.save_race` writes: this point and ``state``."""
        return {
            "stages": [[s.rows, s.steps, s.extra] for s in self.stages],
            "corners": self.corners,
            "charge": self.charge,
            "active": [[t, m, list(rows)] for (t, m), rows in self.active.items()],
            "spare": [[t, n] for t, n in self.spare.items()],
            "stage": self.stage,
            "batch": self.batch,
            "position": self.position,
            "horizon": sum(s.steps for s in self.stages),
            "done": self.done,
            "batches": self.batches,
            "running": None if self.running is None else self.running.to_cpu().__dict__,
            "state": state.to_dict(sorted(i for rows in self.active.values() for i in rows)),
        }

    @classmethod
    def from_dict(cls, data: dict) -> RacePoint:
        running = data["running"]
        return cls(
            stages=tuple(Stage(rows, steps, bool(extra)) for rows, steps, extra in data["stages"]),
            corners=data["corners"],
            charge=data["charge"],
            active={(t, m): list(rows) for t, m, rows in data["active"]},
            spare={t: n for t, n in data["spare"]},
            stage=data["stage"],
            batch=data["batch"],
            position=data["position"],
            done=data["done"],
            batches=data["batches"],
            running=None if running is None else BatchState(**running),
        )


def _rows(values: torch.Tensor, at: torch.Tensor, rows: int, device: str) -> torch.Tensor:
    """``values`` of the rows ``at`` of ``rows``, the others zero."""
    full = torch.zeros((rows, *values.shape[1:]), dtype=values.dtype, device=device)
    full[at] = values.to(device)
    return full


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True)


__all__ = ["RacePoint", "RaceState"]
