"""Timing a step for the plan: the engine's set-up is not a step, and short steps are timed
until they add up to a measurement (clocks are fakes here: nothing races the wall clock)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from onnx_am import AMConfig, import_onnx
from onnx_am.engine import probe
from onnx_am.engine.probe import LONG_STEP, MAX_TIMED_STEPS, TIMED_SECONDS, time_steps
from onnx_am.methods import parse_method
from onnx_am.objectives import Target


def test_a_long_first_step_is_measurement_enough():
    assert probe._timed_enough([10.0 + LONG_STEP], 10.0, steps=1)
    assert not probe._timed_enough([10.0 + LONG_STEP / 2], 10.0, steps=1)


def test_short_steps_are_timed_until_they_add_up():
    step = TIMED_SECONDS / 4
    stamps = [1.0 + step * k for k in range(6)]  # the first one untimed
    assert not probe._timed_enough(stamps[:4], 0.9, steps=1)  # 3 timed: 0.75 of the span
    assert probe._timed_enough(stamps[:5], 0.9, steps=1)  # 4 timed: the span
    tiny = [1.0 + 1e-6 * k for k in range(MAX_TIMED_STEPS + 2)]
    assert not probe._timed_enough(tiny[:MAX_TIMED_STEPS], 0.9, steps=1)
    assert probe._timed_enough(tiny[: MAX_TIMED_STEPS + 1], 0.9, steps=1)


def test_at_least_the_steps_asked_are_timed():
    assert not probe._timed_enough([1.0, 2.0], 0.9, steps=2)
    assert probe._timed_enough([1.0, 2.0, 3.0], 0.9, steps=2)


@pytest.fixture(scope="module")
def digits():
    return import_onnx(Path(__file__).parents[1] / "models" / "digits_relu.onnx")


def test_the_set_up_is_not_charged_as_a_step(digits, monkeypatch):
    """Steps of 10 ms after a set-up that ended at 100 s (set-ups of 2 s and more were seen
    on a loaded machine): one step is 10 ms. The old probe timed the first step from the
    call's start, so a set-up over LONG_STEP was returned as the step's cost."""
    ticks = itertools.chain([100.0], (100.0 + 0.01 * k for k in itertools.count(1)))
    monkeypatch.setattr(probe, "clock", lambda: next(ticks))
    config = AMConfig.of(steps=64, restarts=1)
    targets = [Target(digits.output_names[0], i) for i in range(2)]
    timing = time_steps(digits, config, targets, [parse_method("standard")], rows=2)
    assert timing.rows == 2
    assert timing.seconds == pytest.approx(0.01)


def test_every_batch_reports_when_its_steps_begin(digits):
    from onnx_am.engine.loop import optimize_rows
    from onnx_am.engine.rows import layout_rows
    from onnx_am.engine.starts import make_starts

    config = AMConfig.of(steps=3, restarts=1, batch_size=1)
    targets = [Target(digits.output_names[0], i) for i in range(2)]
    made = make_starts("random", digits, config.domain, targets, 1, 0)
    starts = {(t, 0): made[t, 0] for t in range(2)}
    events = []
    optimize_rows(
        digits,
        config,
        targets,
        [parse_method("standard")],
        layout_rows(2, 1, 1),
        starts,
        progress=lambda done, total, info: events.append(("step", info["batch"])),
        began=lambda batch: events.append(("began", batch)),
    )
    assert events == [("began", 0), *[("step", 0)] * 3, ("began", 1), *[("step", 1)] * 3]
