"""Racing restarts: stages, halving, the exact budget, screened corners, determinism."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from onnx import helper

from onnx_am import AMConfig, import_onnx, maximize
from onnx_am.audit.budget import CostModel, Work
from onnx_am.engine import racing_state
from onnx_am.engine.racing import (
    RacingSettings,
    Stage,
    corner_starts,
    ends_race,
    group_budget,
    horizon,
    keep_ranked,
    lr_hold,
    race_stages,
    screen_charge,
)
from onnx_am.errors import SettingsError

#: analyze's default methods: standard and the annealed decoupled gradient, best of the two.
METHODS = ["standard", "decoupled(anneal(0.3))", "best(anneal(0.3))"]
DIM = 8
#: ``relu(w . x - 3.5)`` with alternating signs: in the box -1..1 it is positive only on the
#: corners (and their neighbourhood) that agree with ``w`` in at least 6 of 8 places, and
#: largest, 4.5, at the corner ``x = w``; the box centre (and every trivial input but a lucky
#: random corner) is dead, where the true gradient is zero.
SIGNS = np.array([1, -1] * (DIM // 2), dtype=np.float32)


@pytest.fixture(scope="module")
def corner_unit(tmp_path_factory):
    from tests.conftest import build_model

    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["z"]),
        helper.make_node("Add", ["z", "b"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["y"]),
    ]
    inits = {"w": SIGNS.reshape(DIM, 1), "b": np.array([-3.5], dtype=np.float32)}
    model = build_model(nodes, [("x", ["N", DIM])], ["y"], inits)
    path = tmp_path_factory.mktemp("race") / "corner.onnx"
    path.write_bytes(model.SerializeToString())
    return import_onnx(path)


@pytest.fixture(scope="module")
def linear_units(tmp_path_factory):
    """Four easy units: ``x @ W`` (every start climbs to its corner)."""
    from tests.conftest import build_model

    weights = np.random.default_rng(0).normal(size=(DIM, 4)).astype(np.float32)
    model = build_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", ["N", DIM])], ["y"], {"w": weights}
    )
    path = tmp_path_factory.mktemp("race") / "linear.onnx"
    path.write_bytes(model.SerializeToString())
    return import_onnx(path), weights


@pytest.fixture(scope="module")
def bowl_unit(tmp_path_factory):
    """``-sum((x - 0.3)^2)``: its maximum is inside the box, above every trivial input."""
    from tests.conftest import build_model

    nodes = [
        helper.make_node("Sub", ["x", "c"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axes"], ["s"], keepdims=1),
        helper.make_node("Neg", ["s"], ["y"]),
    ]
    inits = {"c": np.full(DIM, 0.3, dtype=np.float32), "axes": np.array([1], dtype=np.int64)}
    model = build_model(nodes, [("x", ["N", DIM])], ["y"], inits)
    path = tmp_path_factory.mktemp("race") / "bowl.onnx"
    path.write_bytes(model.SerializeToString())
    return import_onnx(path)


def _config(**settings) -> AMConfig:
    base = {"steps": 32, "restarts": 3, "normalize_grad": True, "crosscheck": False}
    return AMConfig.of(**{**base, **settings})


def test_stage_row_steps_add_up_to_the_budget_exactly():
    for settings in (
        RacingSettings(),
        RacingSettings(candidates=6, rungs=2),
        RacingSettings(candidates=5, keep=0.4, rungs=4),
        RacingSettings(candidates=1, rungs=0),
    ):
        for budget in (1, 2, 3, 7, 31, 96, 757, 768, 1535):
            stages = race_stages(settings, budget)
            assert sum(s.rows * s.steps for s in stages) == budget
            assert all(s.steps >= 1 for s in stages)
            rows = [s.rows for s in stages]
            assert rows == sorted(rows, reverse=True) and rows[0] <= settings.candidates


def test_candidates_halve_each_rung_and_survivors_take_longer_stages():
    stages = race_stages(RacingSettings(candidates=8, keep=0.5, rungs=3), 768)
    assert stages == (Stage(8, 24), Stage(4, 48), Stage(2, 96), Stage(1, 192))
    assert horizon(stages) == 360  # a finalist runs more steps than a plain row's 256


def test_a_small_budget_starts_fewer_candidates_than_its_first_steps_allow():
    settings = RacingSettings(candidates=16, corners=8, rungs=4, first_steps=8)
    long = race_stages(settings, 746)  # 3 x 256 steps, less the screen
    assert long == race_stages(replace(settings, first_steps=1), 746)  # 9 steps: enough
    assert long[0] == Stage(16, 9)
    assert race_stages(replace(settings, first_steps=1), 170)[0] == Stage(16, 2)
    short = race_stages(settings, 170)  # 3 x 64 steps, less the screen
    assert short[0].steps >= 8 and short[0].rows == 5  # 6 would get 7 steps
    assert sum(s.rows * s.steps for s in short) == 170
    assert corner_starts(settings, 8, 16) == 8 and corner_starts(settings, 8, 5) == 3
    assert race_stages(settings, 3)[0].rows == 1  # one candidate always runs


def test_keep_ranked_keeps_the_better_half_ties_to_the_earlier():
    assert keep_ranked([0.1, 3.0, 2.0, 3.0, -1.0, 0.5], 3) == [1, 3, 2]


def test_the_screen_is_paid_from_the_budget_and_dropped_when_it_would_not_fit():
    settings = RacingSettings(screen=64)
    assert screen_charge(settings, runs=2, budget=768) == 11  # ceil(64 / 6)
    assert group_budget(settings, restarts=3, steps=256, runs=2) == 768 - 11
    assert screen_charge(settings, runs=2, budget=40) == 0  # over a quarter of the budget
    assert screen_charge(RacingSettings(corners=0), runs=2, budget=768) == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"candidates": 0},
        {"candidates": 8, "corners": 9},
        {"keep": 1.0},
        {"rungs": -1},
        {"screen": 1},
        {"settle": -1},
        {"lr_schedule": "sine"},
        {"first_steps": 0},
    ],
)
def test_bad_racing_settings_are_refused_in_one_line(bad):
    with pytest.raises(SettingsError, match="racing"):
        AMConfig.of(racing=RacingSettings(**bad)).validate()


def test_the_lr_schedule_starts_at_the_settling_stages():
    stages = race_stages(RacingSettings(candidates=8, rungs=3), 768)  # 24, 48, 96, 192 steps
    assert lr_hold(stages, 0) == 0  # the schedule runs over the whole race
    assert lr_hold(stages, 1) == 24 + 48 + 96
    assert lr_hold(stages, 2) == 24 + 48
    assert lr_hold(stages, 4) == lr_hold(stages, 9) == 0
    with_extra = race_stages(RacingSettings(candidates=8, rungs=2), 771)  # 32, 64, 129, 1
    assert with_extra[-1].extra  # the leftover step counts with the last stage
    assert lr_hold(with_extra, 1) == 32 + 64


def _lr_steps(monkeypatch, imported, racing: RacingSettings, **config):
    """``(step, total, factor)`` of every lr factor a race's steps used."""
    from onnx_am.engine import loop

    used: list[tuple[int, int, float]] = []
    factor = loop.lr_factor

    def recording(kind, step, total, floor, cycles):
        used.append((step, total, factor(kind, step, total, floor, cycles)))
        return used[-1][2]

    monkeypatch.setattr(loop, "lr_factor", recording)
    maximize(imported, ["y:0"], ["standard"], _config(racing=racing, **config))
    return used


def test_settled_races_step_at_the_full_lr_until_their_last_stages(monkeypatch, linear_units):
    imported, _ = linear_units
    stages = race_stages(RacingSettings(corners=0), 3 * 32)
    hold, length = lr_hold(stages, 1), horizon(stages)
    assert 0 < hold < length
    settled = RacingSettings(corners=0, lr_schedule="cosine", settle=1)
    used = _lr_steps(monkeypatch, imported, settled)  # the ascent's schedule is constant
    assert len(used) == length  # one batch: one call per step of the finalist's run
    assert [f for _, _, f in used[: hold + 1]] == [1.0] * (hold + 1)  # held at the full lr
    assert {t for _, t, _ in used} == {length - hold}  # the schedule spans the last stage
    decay = [f for _, _, f in used[hold:]]
    assert decay == sorted(decay, reverse=True) and decay[-1] < 0.1
    whole = RacingSettings(corners=0, lr_schedule="cosine", settle=0)
    whole = _lr_steps(monkeypatch, imported, whole)
    assert {t for _, t, _ in whole} == {length} and whole[1][2] < 1.0  # over the whole race


def test_a_race_without_its_own_lr_schedule_takes_the_ascents(monkeypatch, linear_units):
    imported, _ = linear_units
    plain = RacingSettings(corners=0, lr_schedule=None)
    assert {f for _, _, f in _lr_steps(monkeypatch, imported, plain)} == {1.0}
    cosine = _lr_steps(monkeypatch, imported, plain, lr_schedule="cosine")
    assert cosine[-1][2] < 0.1


def _row_steps(imported, targets, methods, config) -> int:
    done = []
    maximize(imported, targets, methods, config, progress=lambda d, t, info: done.append(info))
    return sum(info["rows"] for info in done)


def test_a_race_takes_exactly_the_plain_runs_row_steps(linear_units):
    imported, _ = linear_units
    targets = [f"y:{u}" for u in range(4)]
    plain = _row_steps(imported, targets, METHODS, _config(batch_size=5))
    assert plain == 4 * 2 * 3 * 32
    no_screen = RacingSettings(corners=0)
    assert _row_steps(imported, targets, METHODS, _config(batch_size=5, racing=no_screen)) == plain
    screened = RacingSettings()
    charge = screen_charge(screened, 2, 3 * 32)
    raced = _row_steps(imported, targets, METHODS, _config(batch_size=5, racing=screened))
    assert raced + 4 * 2 * charge == plain  # the pool's forwards are paid in row-steps


def test_a_corner_only_a_screened_start_finds(corner_unit):
    plain = maximize(corner_unit, ["y:0"], ["standard"], _config())
    assert plain.results[0].activation == 0.0  # dead from the centre: no true gradient
    screened = RacingSettings(screen=64)  # one method at 32 steps pays for 64 corners
    raced = maximize(corner_unit, ["y:0"], ["standard"], _config(racing=screened))
    assert raced.results[0].activation == pytest.approx(4.5, abs=1e-5)
    assert np.allclose(raced.results[0].image, SIGNS)


def test_the_report_keeps_standard_and_decoupled_side_by_side(corner_unit):
    report = maximize(corner_unit, ["y:0"], METHODS, _config(racing=RacingSettings()))
    by_kind = {r.method_kind: r for r in report.results}
    assert set(by_kind) == {"standard", "decoupled", "best"}
    assert by_kind["best"].activation == max(
        by_kind["standard"].activation, by_kind["decoupled"].activation
    )
    first = race_stages(RacingSettings(), group_budget(RacingSettings(), 3, 32, 2))[0]
    assert len(by_kind["standard"].restart_activations) == first.rows  # one per candidate


def test_units_at_a_trivial_value_get_new_starts(corner_unit, bowl_unit, monkeypatch):
    restarted = []
    original = racing_state.RaceState.restart
    monkeypatch.setattr(
        racing_state.RaceState,
        "restart",
        lambda self, row, x: (restarted.append(row), original(self, row, x)),
    )
    no_corners = RacingSettings(candidates=8, corners=0, rungs=3, first_steps=1)
    maximize(bowl_unit, ["y:0"], ["standard"], _config(racing=no_corners))
    assert restarted == []  # the unit beats the trivial inputs: survivors take the rows
    maximize(corner_unit, ["y:0"], ["standard"], _config(racing=no_corners))
    assert len(restarted) == 3  # 8 -> 4 (2 renewed), 4 -> 2 (1 renewed), 2 -> 1


def test_same_seed_same_numbers(linear_units, corner_unit):
    config = _config(racing=RacingSettings(), seed=3)
    for imported, targets in ((linear_units[0], ["y:0", "y:3"]), (corner_unit, ["y:0"])):
        first = maximize(imported, targets, METHODS, config)
        again = maximize(
            imported, targets, METHODS, _config(racing=RacingSettings(), seed=3, batch_size=3)
        )
        for a, b in zip(first.results, again.results, strict=True):
            assert a.activation == b.activation
            assert np.array_equal(a.image, b.image)
            assert a.trace == b.trace


def test_the_budget_prices_the_race_stage_by_stage():
    cost = CostModel(step_fixed=1.0, step_per_row=0.5, batch_size=64, chunk_rows=96)
    plain = Work(units=2, runs=2, plans=3, restarts=3, steps=256)
    raced = Work(units=2, runs=2, plans=3, restarts=3, steps=256, racing=RacingSettings())
    stages = raced.stages()
    expected = sum(
        (s.steps + (i == len(stages) - 1)) * cost.step(2 * 2 * s.rows) for i, s in enumerate(stages)
    )
    assert cost.estimate(raced) == pytest.approx(expected)
    assert cost.estimate(plain) == pytest.approx(257 * cost.step(12))
    assert sum(s.rows * s.steps for s in stages) == 768 - screen_charge(RacingSettings(), 2, 768)


def test_analyze_races_with_the_flag_and_says_so(corner_unit, tmp_path):
    from click.testing import CliRunner
    from onnx_am_cli.main import cli

    model = tmp_path / "corner.onnx"
    model.write_bytes(corner_unit.original.SerializeToString())
    out = tmp_path / "report"
    args = ["analyze", str(model), "--racing", "--steps", "32", "--time-budget", "none"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    first = race_stages(RacingSettings(), group_budget(RacingSettings(), 3, 32, 2))[0]
    assert f"racing restarts: per unit and run, candidates x steps {first.rows} x" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["racing"] == RacingSettings().to_dict()
    charge = screen_charge(RacingSettings(), 2, 3 * 32)
    assert sum(s["candidates"] * s["steps"] for s in report["plan"]["racing"]) == 3 * 32 - charge
    assert max(r["activation"] for r in report["results"]) == pytest.approx(4.5, abs=1e-5)


@pytest.mark.parametrize(
    "settings", [RacingSettings(), RacingSettings(candidates=5, corners=2, rungs=4)]
)
def test_the_budget_counts_exactly_the_steps_and_rows_a_race_runs(linear_units, settings):
    """Priced at 1 s per engine step, then at 1 s per row-step: the estimate is the race's
    engine steps and row-steps as its progress counts them, plus the finalists' last
    forwards (the screened pool is priced in row-steps, so it is not among the steps)."""
    imported, _ = linear_units
    targets = [f"y:{u}" for u in range(3)]
    steps = []
    config = _config(batch_size=5, racing=settings, steps=40)
    maximize(imported, targets, METHODS, config, progress=lambda d, t, i: steps.append(i["rows"]))
    work = Work(units=3, runs=2, plans=3, restarts=3, steps=40, racing=settings)
    stages = work.stages()
    last = [i for i in range(len(stages)) if ends_race(stages, i)]
    finalists = sum(3 * 2 * stages[i].rows for i in last)
    per_step = CostModel(step_fixed=1.0, step_per_row=0.0, batch_size=5, chunk_rows=96)
    per_row = CostModel(step_fixed=0.0, step_per_row=1.0, batch_size=5, chunk_rows=96)
    assert per_step.estimate(work) == len(steps) + sum(
        -(-3 * 2 * stages[i].rows // 5) for i in last
    )
    assert per_row.estimate(work) == sum(steps) + finalists
