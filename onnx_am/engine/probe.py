"""Time a few real steps of the engine: what one step of ``n`` rows costs on this machine.

:func:`time_steps` runs the real loop (:func:`onnx_am.engine.loop.optimize_rows`) on real
rows of the real model, at the batch size the engine picks for them, and stops it after a
few steps. Steps are timed from where the engine's set-up (starts, trivial baselines, the
batch size) ends, so the set-up is never charged as a step. The first step is not timed (it warms up
allocators and caches) unless it alone took :data:`LONG_STEP` seconds or more: then it is the
measurement (its warm-up is a small share of it, and a second step of a large model would
double the cost of planning). Otherwise steps are timed until at least ``steps`` of them span
:data:`TIMED_SECONDS` (at most :data:`MAX_TIMED_STEPS`), and their median is the measurement:
one step of a small model takes milliseconds, and on a loaded machine one such step can take
ten times another.
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


#: A first step at least this long (seconds, set-up excluded) is measurement enough.
LONG_STEP = 2.0

#: Small steps are timed until the timed ones add up to this many seconds ...
TIMED_SECONDS = 0.25

#: ... or this many steps are timed.
MAX_TIMED_STEPS = 9

#: The clock steps are timed with (a module attribute, so a test can give a fake one).
clock = time.perf_counter


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
    """Time steps (after one untimed step, see the module docstring) of the first
    ``rows`` rows.

    Args:
        imported: the model.
        config: the settings (its ``batch_size``, ``None`` for automatic, decides the
            batch size; the starts are always ``random``).
        targets: the targets; rows are laid out as the engine does (target-major).
        runs: the gradient methods of the rows.
        rows: how many rows the call has; the engine's batch is at most that.
        steps: the fewest timed steps (more while they are short, see the module docstring).
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
    began: list[float] = []
    stamps: list[tuple[float, int]] = []

    def on_begin(batch: int) -> None:
        began.append(clock())

    def on_step(done: int, total: int, info: dict) -> None:
        if info["batch"] > 0:
            raise _Enough
        if config.device.startswith("cuda"):
            torch.cuda.synchronize(config.device)
        stamps.append((clock(), info["rows"]))
        if _timed_enough([t for t, _ in stamps], began[0], steps):
            raise _Enough

    try:
        optimize_rows(
            imported, config, chosen, runs, layout, starts, rewrite, on_step, began=on_begin
        )
    except _Enough:
        pass
    times = sorted(b[0] - a[0] for a, b in zip(stamps, stamps[1:], strict=False))
    if not times:  # a long first step, or config.ascent.steps == 1: time it with its warm-up
        return StepTiming(stamps[0][1], stamps[0][0] - began[0])
    return StepTiming(stamps[0][1], times[len(times) // 2])


def _timed_enough(stamps: list[float], began: float, steps: int) -> bool:
    """Whether the steps ending at ``stamps`` (the first one untimed) measure a step."""
    if stamps[0] - began >= LONG_STEP:
        return True
    timed = len(stamps) - 1
    if timed < steps:
        return False
    return stamps[-1] - stamps[0] >= TIMED_SECONDS or timed >= MAX_TIMED_STEPS


__all__ = ["StepTiming", "time_steps"]
