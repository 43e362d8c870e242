"""Racing restarts stopped and resumed, and paced: a resumed race ends exactly as an
uninterrupted one; a pace gives a race its steps, shrinks its stages and stops it at the
deadline. Every clock here is a counter: nothing races the wall clock."""

from __future__ import annotations

import json

import pytest
import torch
from test_engine_models import one_thread, tiny_cnn  # noqa: F401  (fixture)

from onnx_am import import_onnx
from onnx_am.audit.analyze import AnalyzeOptions, AnalyzeProgress, analyze
from onnx_am.audit.kept import what_was_kept
from onnx_am.engine import racing_run
from onnx_am.engine.checkpoint import CHECKPOINT_FILE, Checkpointer, read_checkpoint
from onnx_am.engine.deadline import Deadline
from onnx_am.engine.maximizer import AMConfig, maximize, maximize_plan
from onnx_am.engine.pace import Pace, pace_text
from onnx_am.engine.plan import parse_run_plan
from onnx_am.engine.racing import (
    RacingSettings,
    Stage,
    equivalent_steps,
    group_budget,
    horizon,
    race_stages,
    screen_charge,
    shrink_stages,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TARGETS = ["logits:0-2", "act2:3"]
METHODS = ["standard", "decoupled(0.3)", "best"]
#: 4 candidates (1 screened corner) halved twice: at 24 steps x 2 restarts, stages 4 x 3,
#: 2 x 7, 1 x 20 per (unit, method); 4 units x 2 methods, 5 rows per engine batch.
SMALL = RacingSettings(candidates=4, corners=1, rungs=2, screen=8, first_steps=1)


class Stop(Exception):
    """Raised by the progress callback, as the CLI does after a signal."""


@pytest.fixture(scope="module")
def cnn():
    return import_onnx(tiny_cnn())


def _config(optimizer: str = "pga", **more) -> AMConfig:
    settings = dict(steps=24, restarts=2, batch_size=5, crosscheck=False, racing=SMALL)
    return AMConfig.of(optimizer=optimizer, **{**settings, **more})


def _same(whole, again) -> None:
    """Bit for bit: values, traces, inputs and every candidate's best."""
    for a, b in zip(whole.results, again.results, strict=True):
        assert a.activation == b.activation and a.trace == b.trace
        assert a.restart_activations == b.restart_activations
        assert (a.image == b.image).all()


def stop_at(step: int):
    def progress(done, total, info):
        if done == step:
            raise Stop

    return progress


def test_the_small_race_has_the_stages_the_tests_count_on():
    stages = race_stages(SMALL, group_budget(SMALL, 2, 24, 2))
    assert stages == (Stage(4, 3), Stage(2, 7), Stage(1, 20))


@pytest.mark.parametrize("optimizer", ["pga", "adam"])
def test_a_race_stopped_midway_and_resumed_equals_an_uninterrupted_one(cnn, tmp_path, optimizer):
    config = _config(optimizer)
    whole = maximize(cnn, TARGETS, METHODS, config)
    path = tmp_path / "checkpoint.pt"
    # stage 0: 32 candidates in 7 batches x 3 steps; stage 1: 16 in 4 batches x 7 steps.
    stopped_at = 7 * 3 + 7 + 3  # the second batch of stage 1, 3 steps in
    with pytest.raises(Stop):
        maximize(
            cnn,
            TARGETS,
            METHODS,
            config,
            progress=stop_at(stopped_at),
            checkpoint=Checkpointer(path, "call", interval=3600),
        )
    saved = read_checkpoint(path)
    assert saved["batches_done"] == 1  # stages done
    assert saved["batch"] == 1 and saved["step"] == 3 + 3 and saved["steps"] == 30
    seen = []
    again = maximize(
        cnn,
        TARGETS,
        METHODS,
        config,
        progress=lambda d, t, i: seen.append(d),
        checkpoint=Checkpointer(path, "call", interval=3600),
    )
    assert seen[0] == stopped_at + 1  # nothing was optimized twice
    assert seen[-1] == 7 * 3 + 4 * 7 + 2 * 20  # and every step was taken
    _same(whole, again)


def test_a_race_saves_each_stage_boundary_and_resumes_from_it(cnn, tmp_path):
    """A process killed in the last stage leaves the last boundary's checkpoint (no interval
    passed, no signal came): the race continues from it and ends the same."""
    config = _config("adam")
    path = tmp_path / "checkpoint.pt"
    checkpoint = Checkpointer(path, "call", interval=3600)
    whole = maximize(cnn, TARGETS, METHODS, config, checkpoint=checkpoint)
    assert checkpoint.saves == 2  # one per boundary
    saved = read_checkpoint(path)
    assert saved["batches_done"] == 2 and saved["batch"] is None and saved["step"] == 3 + 7
    seen = []
    again = maximize(
        cnn,
        TARGETS,
        METHODS,
        config,
        progress=lambda d, t, i: seen.append(d),
        checkpoint=Checkpointer(path, "call", interval=3600),
    )
    assert seen[0] == 7 * 3 + 4 * 7 + 1
    _same(whole, again)
    # the checkpoint of another race (here: of 20 steps) is not taken for this one
    fresh = []
    maximize(
        cnn,
        TARGETS,
        METHODS,
        _config("adam", steps=20),
        progress=lambda d, t, i: fresh.append(d),
        checkpoint=Checkpointer(path, "call", interval=3600),
    )
    assert fresh[0] == 1


def test_a_race_saves_every_interval_on_its_clock(cnn, tmp_path):
    ticks = iter(range(10**6))
    checkpoint = Checkpointer(
        tmp_path / "checkpoint.pt", "call", interval=10, clock=lambda: next(ticks)
    )
    maximize(cnn, TARGETS, METHODS, _config(), checkpoint=checkpoint)
    assert checkpoint.saves > 2 + 5  # the boundaries, and one per 10 ticks of its steps


def test_analyze_resumes_a_stopped_race(tmp_path):
    cnn = tmp_path / "cnn.onnx"
    cnn.write_bytes(tiny_cnn().SerializeToString())
    options = AnalyzeOptions.of(steps=12, restarts=1, racing=SMALL, seed=2)
    whole = analyze(cnn, options, tmp_path / "whole")

    stopped = []

    def interrupt(event: AnalyzeProgress) -> None:  # halfway through the race
        if event.phase == "optimize" and event.steps_done > event.steps_total // 2 > 0:
            stopped.append(event.steps_done)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        analyze(cnn, options, tmp_path / "cut", progress=interrupt)
    saved = read_checkpoint(tmp_path / "cut" / CHECKPOINT_FILE)
    kept = what_was_kept(tmp_path / "cut").describe()
    assert f"running chunk at step {saved['step']} of {saved['steps']}" in kept
    seen = []
    resumed = analyze(
        cnn,
        AnalyzeOptions.of(resume=True, steps=12, restarts=1, racing=SMALL, seed=2),
        tmp_path / "cut",
        progress=seen.append,
    )
    steps = [e.steps_done for e in seen if e.phase == "optimize" and e.steps_done]
    assert steps[0] == stopped[0] + 1  # the race went on from its checkpoint
    assert not (tmp_path / "cut" / CHECKPOINT_FILE).exists()

    def results(doc):
        return [{k: v for k, v in r.items() if k != "timings"} for r in doc["results"]]

    assert results(resumed.doc) == results(whole.doc)
    assert json.loads((tmp_path / "cut" / "report.json").read_text())["status"] == "complete"


def test_shrunk_stages_keep_the_halving_and_at_least_a_step():
    stages = (Stage(8, 23), Stage(4, 47), Stage(2, 94), Stage(1, 197), Stage(1, 1, extra=True))
    assert shrink_stages(stages, 2, 1.0) == stages
    assert shrink_stages(stages, 2, 0.5) == (
        Stage(8, 23),
        Stage(4, 47),
        Stage(2, 47),
        Stage(1, 98),
        Stage(1, 1, extra=True),
    )
    assert [s.steps for s in shrink_stages(stages, 1, 0.0)] == [23, 1, 1, 1, 1]


def test_a_races_equivalent_steps_are_the_plans_steps_until_it_is_cut():
    settings = RacingSettings()
    for restarts, steps, runs in ((3, 256, 2), (2, 24, 2), (1, 64, 1), (3, 16, 2)):
        budget = restarts * steps
        stages = race_stages(settings, group_budget(settings, restarts, steps, runs))
        charge = screen_charge(settings, runs, budget)
        assert equivalent_steps(stages, charge, restarts) == steps
        cut = shrink_stages(stages, 1, 0.5)
        assert equivalent_steps(cut, charge, restarts) < steps


def test_the_share_of_the_remaining_steps_that_fits():
    pace = Pace(Deadline(100.0, 0.0, clock=lambda: 0.0), seconds_per_row_step=0.1)
    assert pace.share(10, 64) == 1.0  # 10 x 65 x 0.1 s = 65 s
    pace.seconds_per_row_step = 0.25  # 40 forwards fit: 39 of 78 steps
    assert pace.share(10, 78) == pytest.approx(0.5)
    pace.rows_after = 10  # later chunks share the time left
    assert pace.share(10, 78) == pytest.approx(19 / 78)
    pace.cap_at(40)
    pace.cap_at(50)
    assert pace.steps_cap == 40


def _plan(imported, steps: int, racing=SMALL):
    config = AMConfig.of(steps=steps, restarts=2, batch_size=5, racing=racing)
    return parse_run_plan(imported, TARGETS, METHODS, config)


def test_a_race_given_fewer_steps_is_the_race_of_those_steps(cnn):
    """As a plain chunk: the pace gives the race 16 of its 24 steps when it starts; it then
    runs exactly the race of 16 steps (stages, schedules, values)."""
    rows = 4 * 2 * 2  # units x restarts x methods: the plain chunk the race stands for
    pace = Pace(Deadline(100.0, 0.0, clock=lambda: 0.0), seconds_per_row_step=100 / (rows * 21))
    paced = maximize_plan(cnn, _plan(cnn, 24), pace=pace)
    short = maximize_plan(cnn, _plan(cnn, 16))
    assert pace.steps_cap == 16 and pace.stopped_early == 0
    _same(paced, short)
    assert all(r.agrees for r in paced.results)


def test_a_race_that_gets_slower_shrinks_its_remaining_stages(cnn, monkeypatch):
    """The machine runs at the planned speed for stage 0, then 2x slower: at the boundary
    after that the stage left shrinks by the share that still fits (rows kept), the
    steps taken are those of the shrunk stages, and the pace states the race's cut in plain
    steps."""
    now = [0.0]
    planned = 2.0**-7  # seconds per row-step (powers of 2: the arithmetic below is exact)
    stage0 = 7 * 3  # progress steps of stage 0 (7 batches x 3 steps)

    def clock_of(done, total, info):
        now[0] += info["rows"] * (planned if done <= stage0 else 2 * planned)

    made = []

    def spy(stages, index, share):
        made.append(shrink_stages(stages, index, share))
        return made[-1]

    monkeypatch.setattr(racing_run, "shrink_stages", spy)
    budget = 4.0  # 32 plain steps of the 16 plain rows: the plan (25 forwards) fits
    pace = Pace(Deadline(budget, 0.0, clock=lambda: now[0]), seconds_per_row_step=planned)
    taken = []
    found = maximize_plan(
        cnn,
        _plan(cnn, 24),
        progress=lambda d, t, i: (taken.append(i["rows"]), clock_of(d, t, i)),
        pace=pace,
    )
    cut = made[-1]
    assert [s.rows for s in cut] == [4, 2, 1]  # the halving is kept
    # stage 0 took 0.75 s, stage 1 (slower) 1.75 s; the last stage's 20 steps are 10 plain
    # steps (20 row-steps / 2 restarts) of 16 plain rows, 0.25 s each at the measured speed:
    # the 1.5 s left fit 5 of them (with the final forward), so it runs 10 steps
    assert cut == (Stage(4, 3), Stage(2, 7), Stage(1, 10))
    assert sum(taken) == 8 * sum(s.rows * s.steps for s in cut)  # 8 (unit, method) groups
    charge = screen_charge(SMALL, 2, 48)
    assert pace.steps_cap == equivalent_steps(cut, charge, 2) == (12 + 14 + 10 + 2) // 2
    assert pace.stopped_early == 0
    best = [r for r in found.results if r.method_kind != "best"]
    assert max(len(r.trace) for r in best) == horizon(cut) + 1  # a finalist's whole race
    assert "later chunks ran" in pace_text(pace.to_dict())


@pytest.mark.parametrize("stop_after", [2, 7 * 3 + 2])
def test_a_race_stopped_at_the_deadline_keeps_the_best_so_far(cnn, stop_after):
    """The deadline passes during stage 0 (candidates in later batches still take one step,
    so every unit has a result) or stage 1 (every candidate keeps its best so far)."""
    now = [0.0]

    def progress(done, total, info):
        if done == stop_after:
            now[0] = 1e9

    pace = Pace(Deadline(100.0, 0.0, clock=lambda: now[0]), seconds_per_row_step=1e-6)
    found = maximize_plan(cnn, _plan(cnn, 24), progress=progress, pace=pace)
    assert pace.stopped_early == 1
    assert pace.to_dict()["chunks_stopped_at_deadline"] == 1
    for result in found.results:
        assert result.activation == max(result.trace) > float("-inf")
        assert len(result.trace) < 30
        finite = [v for v in result.restart_activations if v > float("-inf")]
        assert len(finite) == len(result.restart_activations)
        assert torch.isfinite(torch.as_tensor(result.image)).all()
