"""The time budget: durations, the cost model, and the stated order of cuts."""

from __future__ import annotations

import pytest

from onnx_am.audit.budget import (
    MIN_STEPS,
    BudgetCut,
    CostModel,
    Work,
    fit_budget,
    format_duration,
    parse_duration,
    spread,
)
from onnx_am.errors import BudgetError, OnnxAmError

#: One row-step costs a second, 16 rows per engine step, 64 rows per call, nothing else.
COST = CostModel(step_fixed=0.0, step_per_row=1.0, batch_size=16, chunk_rows=64)
ASKED = Work(units=64, runs=2, plans=3, restarts=3, steps=256)


@pytest.mark.parametrize(
    "text, seconds",
    [("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), (" 1.5m ", 90), ("none", None)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "ten minutes", "0m", "5x", "m"])
def test_bad_durations_name_the_value(text):
    with pytest.raises(OnnxAmError, match=repr(text)):
        parse_duration(text)


def test_format_duration():
    assert [format_duration(s) for s in (45, 870, 7500)] == ["45s", "14m30s", "2h05m"]


def test_estimate_counts_every_step_of_every_row():
    work = Work(units=2, runs=2, plans=3, restarts=1, steps=10)  # 4 rows, one engine step
    assert COST.estimate(work) == 4 * 11  # 10 steps and the final measurement
    priced = CostModel(1.0, 1.0, 16, 64, per_call=5.0, per_result=0.5, render=0.5)
    assert priced.estimate(work) == 5 + 11 * (1 + 4) + 6 * (0.5 + 0.5)


def test_no_budget_or_enough_budget_cuts_nothing():
    assert fit_budget(ASKED, COST, None).cuts == ()
    assert fit_budget(ASKED, COST, 10 * COST.estimate(ASKED)).work == ASKED


def test_units_go_first_then_restarts_then_steps():
    per_unit = COST.estimate(Work(1, 2, 3, 3, 256))  # one unit at full settings
    fit = fit_budget(ASKED, COST, 20.5 * per_unit / 0.85)
    assert fit.cuts == (BudgetCut("units", 64, 20),)
    fit = fit_budget(ASKED, COST, 5 * per_unit / 0.85)  # 8 units do not fit: restarts next
    assert [c.what for c in fit.cuts] == ["units", "restarts"] and fit.work.units == 8
    assert fit.work.restarts == 1 and fit.work.steps == 256
    small = COST.estimate(Work(8, 2, 3, 1, 100)) + 1
    fit = fit_budget(ASKED, COST, small / 0.85)  # then steps
    assert (fit.work.units, fit.work.restarts, fit.work.steps) == (8, 1, 96)
    assert fit.work.runs == 2 and fit.work.plans == 3  # methods are never cut
    assert fit.seconds <= small


def test_below_64_steps_units_go_below_8_then_steps_to_the_minimum():
    fit = fit_budget(ASKED, COST, (COST.estimate(Work(3, 2, 3, 1, 64)) + 1) / 0.85)
    assert (fit.work.units, fit.work.restarts, fit.work.steps) == (3, 1, 64)
    fit = fit_budget(ASKED, COST, (COST.estimate(Work(1, 2, 3, 1, 40)) + 1) / 0.85)
    assert (fit.work.units, fit.work.restarts, fit.work.steps) == (1, 1, 40)


def test_a_budget_too_small_for_one_unit_names_the_smallest_that_can():
    one = COST.estimate(Work(1, 2, 3, 1, MIN_STEPS))  # 34 s
    with pytest.raises(BudgetError, match="smallest budget that can is --time-budget") as info:
        fit_budget(ASKED, COST, 30.0, spent=20.0)
    assert info.value.smallest >= 20.0 + one / 0.85
    assert fit_budget(ASKED, COST, info.value.smallest, spent=20.0).work.units == 1


def test_spread_keeps_first_and_last_in_order():
    assert spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert spread(list(range(3)), 5) == [0, 1, 2]
    assert spread(list("abc"), 1) == ["a"]


def test_the_drawing_reserve_is_timed_once_per_input_shape_and_split_as_stated(monkeypatch):
    import onnx_am.audit.render.cost as render_cost
    from onnx_am.audit.render.images import DisplayDomain

    drawn = []
    monkeypatch.setattr(render_cost, "_measured", {})
    monkeypatch.setattr(render_cost, "plot_convergence", lambda results, path: drawn.append(1))
    monkeypatch.setattr(
        render_cost, "plot_contact_sheet", lambda results, domain, path: drawn.append(results)
    )
    ticks = iter([10.0, 12.0])  # the sample takes 2 s on this clock
    monkeypatch.setattr(render_cost.time, "perf_counter", lambda: next(ticks))
    domain = DisplayDomain(-1.0, 1.0, "NCHW")
    cost = render_cost.measure_render((1, 4, 4), domain)
    assert cost.fixed == pytest.approx(render_cost.RENDER_MARGIN * 2.0)
    assert cost.per_result == pytest.approx(cost.fixed * render_cost.RESULT_SHARE)
    sample = drawn[0]
    assert len(sample) == render_cost.SAMPLE and sample[0].image.shape == (1, 4, 4)
    assert render_cost.measure_render((1, 4, 4), domain) is cost  # not drawn again
    assert len(drawn) == 2
