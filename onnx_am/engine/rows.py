"""What the engine optimizes: the rows (target, restart, gradient method) of a run.

The reported methods are :class:`~onnx_am.methods.ReportedMethod` objects, each naming the
gradient methods whose rows feed it. Every (target, restart, gradient method) is one
:class:`Row`, one optimized input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Row:
    """One optimized input: indices into the targets, restarts and gradient methods."""

    target: int
    restart: int
    method: int


def layout_rows(targets: int, restarts: int, runs: int) -> list[Row]:
    """Every (target, restart, run), target-major: the order rows are batched in."""
    return [Row(t, r, m) for t in range(targets) for r in range(restarts) for m in range(runs)]


@dataclass
class RowOutcome:
    """Per row: best true value, the raw input that gave it, and the per-step trace; and
    the rows per chunk the loop used."""

    value: list[float]
    image: list[torch.Tensor]
    trace: list[list[float]]
    batch_size: int | None = None
