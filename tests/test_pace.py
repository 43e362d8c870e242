"""The pace: a run that gets slower than planned still ends within its time budget."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from onnx_am_cli.main import cli
from torch_models import export_random

from onnx_am.audit.analyze import AnalyzeOptions, analyze
from onnx_am.engine.config import AMConfig
from onnx_am.engine.deadline import Deadline
from onnx_am.engine.maximizer import maximize_plan
from onnx_am.engine.pace import MIN_STEPS, Pace, pace_text
from onnx_am.engine.plan import parse_run_plan
from onnx_am.importer import import_onnx


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> str:
    """A 1x4x4 image in, 24 logits."""
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 24)
    )
    return export_random(net, (1, 4, 4), tmp_path_factory.mktemp("m") / "wide.onnx", scale=0.3)


def at(seconds: float, now: float = 0.0) -> Deadline:
    """A deadline ``seconds`` after 0 on a clock frozen at ``now``."""
    return Deadline(seconds, 0.0, clock=lambda: now)


def test_steps_fit_the_time_left():
    pace = Pace(deadline=at(100.0), seconds_per_row_step=0.1)
    # 10 rows x (64 + 1) forwards x 0.1 s = 65 s: fits
    assert pace.steps_for(10, 64) == 64 and pace.steps_cap is None
    pace.seconds_per_row_step = 0.25  # 100 s / (10 x 0.25 s) = 40 forwards: 39 steps -> 32
    assert pace.steps_for(10, 64) == 32 and pace.steps_cap == 32
    pace.seconds_per_row_step = 0.01  # faster again: never more than an earlier chunk got
    assert pace.steps_for(10, 64) == 32
    pace.rows_after = 10**6  # later chunks count too; never below the floor
    assert pace.steps_for(10, 64) == MIN_STEPS


def test_room_for_and_observe():
    pace = Pace(deadline=at(10.0), seconds_per_row_step=0.1)
    assert pace.room_for(5)  # 5 x 17 x 0.1 = 8.5 s
    assert not pace.room_for(6)  # 10.2 s
    pace.observe(rows=4, steps=9, seconds=8.0)
    assert pace.seconds_per_row_step == pytest.approx(0.2)
    assert pace.planned_seconds_per_row_step == 0.1


def test_a_capped_chunk_is_a_shorter_run(wide):
    """Cut to 32 steps, a chunk gives exactly what a 32-step run gives: its schedules run
    over the shorter horizon, and the values are the original network's."""
    imported = import_onnx(wide)
    config = AMConfig.of(steps=64, restarts=1, lr_schedule="cosine", crosscheck=True)
    plan = parse_run_plan(
        imported, ["logits:1", "logits:5"], ("standard", "decoupled(0.3)"), config
    )
    pace = Pace(deadline=at(100.0), seconds_per_row_step=100.0 / (4 * 40))  # 39 steps fit
    paced = maximize_plan(imported, plan, pace=pace)
    short = parse_run_plan(
        imported,
        ["logits:1", "logits:5"],
        ("standard", "decoupled(0.3)"),
        AMConfig.of(steps=32, restarts=1, lr_schedule="cosine", crosscheck=True),
    )
    plain = maximize_plan(imported, short)
    assert pace.steps_cap == 32
    for a, b in zip(paced.results, plain.results, strict=True):
        assert len(a.trace) == 33
        assert a.activation == b.activation and a.agrees
        assert torch.equal(torch.as_tensor(a.image), torch.as_tensor(b.image))


def test_a_chunk_stops_at_the_deadline(wide):
    imported = import_onnx(wide)
    plan = parse_run_plan(imported, ["logits:2"], ("standard",), AMConfig.of(steps=64, restarts=2))
    pace = Pace(deadline=at(10.0, now=50.0), seconds_per_row_step=1.0)  # already past
    found = maximize_plan(imported, plan, pace=pace)
    assert pace.stopped_early == 1
    (result,) = found.results
    assert len(result.trace) == 2  # the start and one step
    assert result.activation == max(result.trace) and result.agrees


@pytest.mark.slow
def test_analyze_ends_in_time_and_says_what_it_cut(wide, tmp_path, monkeypatch):
    """The machine stalls for an hour as the first chunk starts: that chunk stops after its
    next step, the later ones are not started, and the report and the page say so. The
    deadline's clock is a counter that the stall moves on, so nothing races the wall clock."""
    now = [0.0]
    steps_for = Pace.steps_for

    def stall_after(self, *args):
        steps = steps_for(self, *args)
        now[0] += 3600.0
        return steps

    monkeypatch.setattr(Pace, "steps_for", stall_after)
    out = tmp_path / "r"
    options = AnalyzeOptions.of(steps=64, restarts=3, time_budget=300.0)
    deadline = Deadline.starting_now(300.0, clock=lambda: now[0])
    report = analyze(wide, options, out, deadline=deadline)
    doc = json.loads((out / "report.json").read_text())
    pace = doc["pace"]
    assert report.exit_code == 0
    assert doc["plan"]["chunks"] == 3 and doc["plan"]["cuts"] == []
    assert pace["chunks_stopped_at_deadline"] == 1 and pace["units_skipped"] > 0
    units = {r["target"] for r in doc["results"]}
    assert 0 < len(units) == len(doc["plan"]["targets"]) - pace["units_skipped"]
    assert all(r["agrees"] and len(r["trace"]) == 2 for r in doc["results"])
    assert doc["status"] == "complete"
    assert "got slower than planned" in pace_text(pace)
    assert "During the run" in (out / "index.html").read_text()


@pytest.mark.slow
def test_the_command_line_says_what_the_pace_cut(wide, tmp_path, monkeypatch):
    """The CLI prints the pace's cuts on stderr (its deadline's clock is the real one; the
    pace is told the run is far slower than planned, so nothing depends on timing)."""
    observe = Pace.observe

    def slow(self, rows, steps, seconds, sharing=1):
        observe(self, rows, steps, seconds + 3600.0, sharing)

    monkeypatch.setattr(Pace, "observe", slow)
    out = tmp_path / "r"
    args = [wide, "--out", str(out), "--steps", "64", "--restarts", "3", "--time-budget", "5m"]
    result = CliRunner().invoke(cli, ["analyze", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "got slower than planned" in result.stderr
