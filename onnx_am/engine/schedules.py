"""Step-size schedules: how the learning rate changes over a run's steps.

A fixed step cannot both explore and settle: with the normalized step every update has the
same length, so a run ends circling a sharp optimum at a distance of about ``lr``. A schedule
multiplies ``lr`` by a factor that starts at 1 and ends at ``floor``:

- ``constant``: 1 throughout (the paper's setting);
- ``linear``: straight down to ``floor`` at the last step;
- ``cosine``: half a cosine down to ``floor``;
- ``cosine-restarts``: ``cycles`` cosine decays of equal length, each starting at 1 again
  (warm restarts, SGDR), so a run explores several times and settles at the end.
"""

from __future__ import annotations

import math

from onnx_am.errors import SettingsError

LR_SCHEDULES = ("constant", "linear", "cosine", "cosine-restarts")


def check_lr_schedule(kind: str, floor: float, cycles: int) -> None:
    """Raise :class:`SettingsError` for an unknown schedule or a bad floor / cycle count."""
    if kind not in LR_SCHEDULES:
        raise SettingsError(f"unknown lr schedule {kind!r}; choose from {', '.join(LR_SCHEDULES)}")
    if not 0 < floor <= 1:
        raise SettingsError(f"lr floor must be in (0, 1], got {floor}")
    if cycles < 1:
        raise SettingsError(f"lr schedule cycles must be >= 1, got {cycles}")


def lr_factor(kind: str, step: int, total: int, floor: float = 0.05, cycles: int = 1) -> float:
    """The factor on ``lr`` at ``step`` (0-based) of ``total`` steps; 1 at step 0.

    Args:
        kind: one of :data:`LR_SCHEDULES`.
        step: the step about to be taken.
        total: the run's steps.
        floor: the factor at the end of a decay.
        cycles: decays in a ``cosine-restarts`` run.
    """
    if kind == "constant" or total <= 1:
        return 1.0
    if kind == "cosine-restarts":
        length = max(1, math.ceil(total / cycles))
        step, total = step % length, min(length, total - (step // length) * length)
        if total <= 1:
            return 1.0
    fraction = min(1.0, step / (total - 1))
    if kind == "linear":
        return 1.0 - (1.0 - floor) * fraction
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * fraction))
