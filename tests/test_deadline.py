"""One deadline per command: every model of a many-model audit plans against what is left of
it, and the pace applies on every executor. Clocks here are counters, never the wall clock."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch_models import export_random

import onnx_am.audit.pipeline as pipeline_module
from onnx_am.audit.analyze import AnalyzeOptions, analyze, audit_paces
from onnx_am.audit.budget import MARGIN, CostModel
from onnx_am.audit.executor import LocalExecutor, PaceLease
from onnx_am.audit.many import analyze_many
from onnx_am.audit.pipeline import BudgetShare
from onnx_am.audit.planning import BudgetPlan, Measured
from onnx_am.engine.deadline import Deadline
from onnx_am.engine.pace import Pace


class Ticking:
    """A clock that moves ``tick`` seconds on every reading (and ``jump`` when told)."""

    def __init__(self, tick: float = 0.0):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> list:
    """Three tiny 1x4x4-image classifiers with 12 logits."""
    folder = tmp_path_factory.mktemp("nets")
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 12)
        )
        paths.append(export_random(net, (1, 4, 4), folder / f"net{seed}.onnx", scale=0.3))
    return paths


def fixed_costs(monkeypatch) -> None:
    """Every model costs the same, known seconds (no timing of real steps): plans are exact."""
    cost = CostModel(
        step_fixed=0.0,
        step_per_row=0.001,
        batch_size=64,
        chunk_rows=64,
        per_call=0.5,
        per_result=0.0,
        render=0.5,
        render_fixed=2.0,
    )

    def measure(imported, config, targets, runs, chunk_rows, rewrite=None, tokens=None):
        return Measured(cost, 64, cost.step(64), 0)

    monkeypatch.setattr(pipeline_module, "measure_costs", measure)


def test_a_deadline_reads_its_own_clock():
    clock = Ticking(tick=1.0)
    deadline = Deadline.starting_now(10.0, clock)  # start: 1
    assert deadline.spent() == 1.0  # read at 2
    assert deadline.left() == 10.0 - 2.0  # read at 3
    assert deadline.earlier_by(4.0).left() == 10.0 - 4.0 - 3.0
    assert not deadline.expired()
    clock.now = 100.0
    assert deadline.expired()
    assert Deadline.starting_now(None, clock).left() is None
    assert not Deadline.starting_now(None, clock).expired()
    assert Deadline.after(5.0, clock).left() == pytest.approx(4.0)


def test_a_share_splits_what_is_left_after_the_earlier_plans():
    assert BudgetShare().kept_for_others(30.0) == 0.0
    assert BudgetShare(models_after=2).kept_for_others(30.0) == pytest.approx(20.0)
    # 30 s left, 12 s planned by the first model: the second gets half of the other 18 s
    assert BudgetShare(models_after=1, committed=12.0).kept_for_others(30.0) == 21.0
    assert BudgetShare(models_after=0, committed=12.0).kept_for_others(30.0) == 12.0
    assert BudgetShare(models_after=3).kept_for_others(None) == 0.0


@pytest.mark.slow
def test_many_models_share_one_budget(nets, tmp_path, monkeypatch):
    """Three models, 60 s: each plans against what is left, the earlier plans kept, and says
    what was spent; together they fit the one budget (each alone would need more than a
    third of it)."""
    fixed_costs(monkeypatch)
    clock = Ticking(tick=0.5)
    deadline = Deadline.starting_now(60.0, clock)
    plans = []

    def progress(event):
        if event.phase == "plan" and event.plan is not None:
            plans.append(event.plan)

    options = AnalyzeOptions.of(steps=16, restarts=1, time_budget=60.0)
    outcome = analyze_many(nets, options, tmp_path / "out", progress, deadline=deadline)
    assert outcome.exit_code == 0 and len(plans) == 3
    spent = [plan.spent for plan in plans]
    assert 0 < spent[0] < spent[1] < spent[2]  # the command's clock, not one per model
    committed = 0.0
    for position, plan in enumerate(plans):
        assert plan.budget == 60.0
        after = len(plans) - position - 1
        left = 60.0 - plan.spent
        assert plan.others == pytest.approx(left - (left - committed) / (after + 1))
        assert plan.estimate <= MARGIN * (60.0 - plan.spent - plan.others)
        assert plan.units < plan.units_asked and plan.cuts  # a third of 60 s holds less
        committed += plan.estimate
    assert plans[-1].spent + committed <= 60.0
    for name in ("net0", "net1", "net2"):
        doc = json.loads((tmp_path / "out" / name / "report.json").read_text())
        assert doc["status"] == "complete" and doc["plan"]["cuts"]
        assert doc["plan"]["kept_for_other_models_seconds"] > 0
    assert "kept for other models" in " ".join(plans[1].lines())


def test_a_later_model_that_finds_no_time_left_gets_an_error_row(nets, tmp_path, monkeypatch):
    """Planning the first model takes (on this clock) all of the budget: the later models
    are refused with the budget's one-line error, unimported; the first is still written."""
    fixed_costs(monkeypatch)
    clock = Ticking(tick=0.0)
    deadline = Deadline.starting_now(60.0, clock)

    def progress(event):
        if event.phase == "plan" and event.plan is not None:
            clock.now += 60.0  # the first model's plan is made; then the time is gone

    options = AnalyzeOptions.of(steps=16, restarts=1, time_budget=60.0)
    outcome = analyze_many(nets, options, tmp_path / "out", progress, deadline=deadline)
    assert list(outcome.reports) == ["net0"]
    assert set(outcome.errors) == {"net1", "net2"}
    assert all("was used up before net" in e for e in outcome.errors.values())
    assert outcome.exit_code == 2


@pytest.mark.slow
@pytest.mark.parametrize("raced", [False, True], ids=["plain", "raced"])
def test_the_pace_applies_on_an_executor(nets, tmp_path, raced):
    """Through an executor (as with --workers), a chunk still running at the deadline stops
    and the chunks after it are not started; the report says so. A race (the default) past
    the deadline shrinks its stages to a step each and the pace states the cut as its steps."""
    clock = Ticking(tick=0.0)
    steps_for = Pace.steps_for

    def stall(self, *args):
        clock.now += 3600.0  # the machine stalls as the first chunk starts
        return steps_for(self, *args)

    options = AnalyzeOptions.of(steps=64, restarts=3, time_budget=300.0)
    options = options if raced else options.replaced(racing=None)
    deadline = Deadline.starting_now(300.0, clock)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Pace, "steps_for", stall)
        report = analyze(nets[0], options, tmp_path / "r", executor=LocalExecutor(),
                         deadline=deadline)  # fmt: skip
    pace = report.doc["pace"]
    assert report.doc["plan"]["chunks"] > 1
    assert pace["units_skipped"] > 0 and report.doc["status"] == "complete"
    if raced:  # one step per stage, far fewer than the plan's 64 (a cap the pace states)
        stages = len(report.doc["plan"]["racing"])
        assert pace["steps_cap"] is not None and pace["steps_cap"] < 64
        # the race of the few steps that fit: at most a step per planned stage (the settings'
        # first_steps may start fewer candidates, so fewer stages), the last point measured
        assert all(2 <= len(r["trace"]) <= stages + 1 for r in report.doc["results"])
    else:
        assert pace["chunks_stopped_at_deadline"] == 1
        assert all(len(r["trace"]) == 2 for r in report.doc["results"])


def test_a_lease_carries_the_pace_to_another_process():
    """What a Ray worker gets: the steps that fit when the chunk was sent, the seconds left
    then (on its own clock from there) and the step time of one of the workers sharing."""
    clock = Ticking(tick=0.0)
    pace = Pace(Deadline(100.0, 0.0, clock), seconds_per_row_step=0.5)
    pace.rows_after = 0
    lease = PaceLease.of(pace, rows=4, planned=64, sharing=2)  # 100 / (4 * 0.5) - 1 = 49
    assert lease.steps_cap == 48 and lease.seconds_left == 100.0
    assert lease.seconds_per_row_step == 1.0
    there = lease.pace()
    assert there.steps_cap == 48 and 99.0 < there.left() <= 100.0
    assert PaceLease.of(Pace(Deadline(1e6, 0.0, clock), 0.5), 4, 64).steps_cap is None
    worker = Pace(Deadline(1.0, 0.0, clock), 0.5, steps_cap=32, stopped_early=1)
    pace.merge(worker)
    assert pace.steps_cap == 32 and pace.stopped_early == 1
    pace.observe(rows=4, steps=9, seconds=8.0, sharing=2)
    assert pace.seconds_per_row_step == pytest.approx(0.1)


def planned(estimate: float, overhead: float):
    return BudgetPlan(
        tensors={}, units=1, units_asked=1, methods=(), runs=(), restarts=1, steps=64, rows=1,
        chunks=1, chunk_rows=64, batch_size=1, seconds_per_step=0.1, estimate=estimate,
        spent=0.0, peak_memory=0, budget=100.0, overhead=overhead,
    )  # fmt: skip


def test_each_audit_steps_in_its_own_slice_of_what_is_left():
    """60 s left, 30 s of them for pictures and pages: the 30 s of steps are split 1:2 as
    planned, so a first model that runs slow cannot take the second one's time."""
    clock = Ticking(tick=0.0)
    clock.now = 40.0
    deadline = Deadline(100.0, 0.0, clock)
    audits = [
        SimpleNamespace(key="a", plan=planned(estimate=15.0, overhead=10.0)),  # 5 s of steps
        SimpleNamespace(key="b", plan=planned(estimate=30.0, overhead=20.0)),  # 10 s
    ]
    paces = audit_paces(audits, deadline)
    assert paces["a"].left() == pytest.approx(10.0)  # a third of the 30 s of steps
    assert paces["b"].left() == pytest.approx(30.0)  # all of them
    assert audit_paces(audits, Deadline(None, 0.0, clock)) == {"a": None, "b": None}


@pytest.mark.slow
def test_a_model_whose_even_part_is_too_small_takes_what_is_left(nets, tmp_path, monkeypatch):
    """A third of 12 s cannot hold one unit (4 s with the fixed costs, at a 0.85 margin):
    the first model takes what is left instead, and the later ones find nothing."""
    fixed_costs(monkeypatch)
    deadline = Deadline.starting_now(12.0, Ticking(tick=0.0))
    plans = []

    def progress(event):
        if event.phase == "plan" and event.plan is not None:
            plans.append(event.plan)

    options = AnalyzeOptions.of(steps=16, restarts=1, time_budget=12.0)
    outcome = analyze_many(nets, options, tmp_path / "out", progress, deadline=deadline)
    assert list(outcome.reports) == ["net0"] and plans[0].others == 0.0
    assert set(outcome.errors) == {"net1", "net2"}


def test_a_model_is_not_even_imported_once_the_deadline_has_passed(nets, tmp_path):
    clock = Ticking(tick=0.0)
    clock.now = 100.0
    deadline = Deadline(60.0, 0.0, clock)
    events = []
    options = AnalyzeOptions.of(steps=16, restarts=1, time_budget=60.0)
    outcome = analyze_many(nets, options, tmp_path / "out", events.append, deadline=deadline)
    assert not outcome.reports and len(outcome.errors) == 3
    assert all("was used up before net" in error for error in outcome.errors.values())
    assert not [e for e in events if e.phase == "import"]
