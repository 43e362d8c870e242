"""Time a few real steps of the engine: what one step of ``n`` rows costs on this machine.

:func:`time_steps` runs the real loop (:func:`onnx_am.engine.loop.optimize_rows`) on real
rows of the real model, at the batch size the engine picks for them, and stops it after a
few steps. The first step of a call is not timed (it warms up allocators and caches) unless
it alone took :data:`LONG_STEP` seconds or more: then it is the measurement (its warm-up is
a small share of it, and a second step of a large model would double the cost of planning).
Nothing it does changes the model, the settings or any result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from onnx_am.engine.loop import optimize_rows
from onnx_am.engine.rows import layout_rows
from onnx_am.engine.starts import make_starts
from onnx_am.objectives import Target

if TYPE_CHECKING:
    from onnx_am.engine.config import AMConfig
    from onnx_am.importer.model import ImportedModel
    from onnx_am.methods import GradientMethod
    from onnx_am.passes.base import RewriteResult


#: A first step at least this long (seconds, set-up included) is measurement enough.
LONG_STEP = 2.0


@dataclass(frozen=True)
class StepTiming:
    """Seconds per step of ``rows`` rows (the engine's batch size for the call)."""

    rows: int
    seconds: float


class _Enough(Exception):
    """Stops the loop once the steps are timed."""


def time_steps(
    imported: ImportedModel,
    config: AMConfig,
    targets: Sequence[Target],
    runs: Sequence[GradientMethod],
    rows: int,
    steps: int = 1,
    rewrite: RewriteResult | None = None,
) -> StepTiming:
    """Time ``steps`` steps (after one untimed step, see :data:`LONG_STEP`) of the first
    ``rows`` rows.

    Args:
        imported: the model.
        config: the settings (its ``batch_size``, ``None`` for automatic, decides the
            batch size; the starts are always ``random``).
        targets: the targets; rows are laid out as the engine does (target-major).
        runs: the gradient methods of the rows.
        rows: how many rows the call has; the engine's batch is at most that.
        steps: timed steps.
        rewrite: the rectifier rewrite, when one exists already.

    Returns:
        The rows of the engine's first batch and the median seconds of its timed steps.
    """
    per_target = config.starts.restarts * len(runs)
    needed = max(1, -(-rows // per_target))
    layout = layout_rows(min(needed, len(targets)), config.starts.restarts, len(runs))[:rows]
    chosen = list(targets[: min(needed, len(targets))])
    made = make_starts(
        "random", imported, config.domain, chosen, config.starts.restarts, config.starts.seed
    )
    starts = {(t, r): made[t, r] for t in range(len(chosen)) for r in range(config.starts.restarts)}
    stamps: list[tuple[float, int]] = []

    def on_step(done: int, total: int, info: dict) -> None:
        if info["batch"] > 0:
            raise _Enough
        if config.device.startswith("cuda"):
            torch.cuda.synchronize(config.device)
        stamps.append((time.perf_counter(), info["rows"]))
        if len(stamps) > steps or stamps[0][0] - started >= LONG_STEP:
            raise _Enough

    started = time.perf_counter()
    try:
        optimize_rows(imported, config, chosen, runs, layout, starts, rewrite, on_step)
    except _Enough:
        pass
    times = sorted(b[0] - a[0] for a, b in zip(stamps, stamps[1:], strict=False))
    if not times:  # a long first step, or config.ascent.steps == 1: time it with the set-up
        return StepTiming(stamps[0][1], stamps[0][0] - started)
    return StepTiming(stamps[0][1], times[len(times) // 2])


__all__ = ["StepTiming", "time_steps"]
