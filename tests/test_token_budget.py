"""The token searches inside the plan and the time budget: priced with the rest of the run,
cut with it, and stopped at the command's deadline with the best ids found so far. Every
clock here is a counter (no test waits for or measures real time)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from onnx_am import import_onnx, unit
from onnx_am.audit.analyze import analyze
from onnx_am.audit.budget import CostModel, Work, fit_budget
from onnx_am.audit.options import AnalyzeOptions
from onnx_am.audit.planning import BudgetPlan
from onnx_am.engine.deadline import Deadline
from onnx_am.errors import BudgetError
from onnx_am.tokens import run as run_module
from onnx_am.tokens.run import (
    ALTERNATIVE_ROWS,
    COST_PER_STEP,
    plan_tokens,
    scorer,
    search_tokens,
    token_cut,
)
from onnx_am.tokens.timing import TokenTimings, time_token_calls

MODELS = Path(__file__).resolve().parent.parent / "models"
FAMILY = {r["name"]: r for r in json.loads((MODELS / "token_family.json").read_text())}


def summed_lookup():
    """ids [batch, seq] -> Gather(E [10, 4]) -> MatMul(W [4, 1]) -> ReduceSum over seq."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(10, 4)).astype(np.float32), "E"),
        numpy_helper.from_array(rng.normal(size=(4, 1)).astype(np.float32), "W"),
        numpy_helper.from_array(np.array([1]), "axis1"),
    ]
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["emb"], axis=0),
        helper.make_node("MatMul", ["emb", "W"], ["scores"]),
        helper.make_node("ReduceSum", ["scores", "axis1"], ["pooled"], keepdims=0),
        helper.make_node("Identity", ["pooled"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "summed",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


class Counter:
    """A clock that advances by one per reading."""

    def __init__(self, start: float = 0.0):
        self.time = start

    def __call__(self) -> float:
        self.time += 1.0
        return self.time


@pytest.fixture(scope="module")
def pair_model():
    record = FAMILY["pair_sum_v16"]
    return record, import_onnx(MODELS / record["file"], at="auto")


def test_price_counts_every_search_per_step_and_unit(pair_model):
    _, imported = pair_model
    plan = plan_tokens(imported, methods=("greedy", "relaxed"), steps=8, fix=("0=1",))
    free = plan.space.length - 1
    rows = TokenTimings(0.0, 1.0, 0.0, 0.0)  # a forward row costs 1 s, nothing else
    per_step, per_unit = plan.price(rows)
    # greedy: 64 less 0.8 one-row gradients (3 each); relaxed: 64 less 4 gradients of 4 rows
    # (12 each); the reference: gradients only
    assert per_step == pytest.approx((64 - 2.4) + (64 - 48))
    assert per_unit == pytest.approx(2 * (3 * free + 2))  # alternatives, first ids, onnxruntime
    calls_step, calls_unit = plan.price(TokenTimings(1.0, 0.0, 0.0, 0.0))  # 1 s a forward
    assert calls_step == pytest.approx(64 / 40 + 64 / 16)
    assert calls_unit == pytest.approx(2 * (1 + 2))
    grads_step, grads_unit = plan.price(TokenTimings(0.0, 0.0, 1.0, 0.0), per_target=5.0)
    assert grads_step == pytest.approx(64 / 80 + 64 / 16 + 16 / 12)
    assert grads_unit == pytest.approx(5.0 + 2 * 1)  # building the scorer, alternatives' gradient
    ranked, _ = plan.price(TokenTimings(0.0, 0.0, 0.0, 0.0, rank=1.0))
    assert ranked == pytest.approx(64 / 80)  # greedy ranks the swaps after each gradient
    assert plan.with_steps(3).budget == 3 * COST_PER_STEP and plan.with_steps(3).steps == 3


class Tick:
    """A clock that only a fake cost advances: ``spend`` seconds on ``now``."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


def charged(score, clock: Tick, fixed: float, per_row: float):
    """``score`` that spends ``fixed + per_row x rows`` on ``clock`` per call."""

    def charged_score(x):
        clock.spend(fixed + per_row * x.shape[0])
        return score(x)

    return charged_score


def test_the_calls_are_timed_as_a_line_through_one_and_many_rows(pair_model):
    _, imported = pair_model
    plan = plan_tokens(imported, steps=1)
    clock = Tick()
    score = charged(scorer(imported, unit("logits", 0)), clock, 0.5, 0.01)
    timings = time_token_calls(score, plan.space, clock)
    assert timings.forward_fixed == pytest.approx(0.5) and timings.forward_row == pytest.approx(
        0.01
    )
    # a gradient's forward is charged, its backward is free here
    assert timings.gradient_fixed == pytest.approx(0.5)
    assert timings.gradient_row == pytest.approx(0.01)
    assert timings.rank == 0.0  # ranking calls no scorer: nothing spent on this clock


def test_token_searches_end_before_what_follows_them_needs_the_time(pair_model, monkeypatch):
    """Every scorer call spends fake seconds (a 128-row check: 2.3 s); the searches are told
    to stop at the plan's token deadline, and the last of their work (the call in flight, the
    stopped unit's results) still ends before the time kept for what follows them. Without
    the tail margin they end past it (the overrun the margin is for)."""
    _, imported = pair_model
    plan = plan_tokens(imported, methods=("greedy",), steps=64)
    targets = [unit("logits", 0), unit("logits", 1)]

    def run(margin: bool) -> tuple[float, float, list]:
        clock = Tick()
        real = run_module.scorer
        monkeypatch.setattr(
            run_module, "scorer", lambda imp, t: charged(real(imp, t), clock, 1.0, 0.01)
        )
        timings = time_token_calls(charged(real(imported, targets[0]), clock, 1.0, 0.01),
                                   plan.space, clock)  # fmt: skip
        clock.now = 0.0
        after = 7.0  # pictures and the page
        budget_plan = BudgetPlan(
            tensors={}, units=2, units_asked=2, methods=("standard",), runs=("standard",),
            restarts=1, steps=64, rows=2, chunks=1, chunk_rows=64, batch_size=2,
            seconds_per_step=0.0, estimate=0.0, spent=0.0, peak_memory=0, budget=60.0,
            after_tokens=after, token_tail=plan.tail(timings) if margin else 0.0,
        )  # fmt: skip
        deadline = Deadline(budget=60.0, start=0.0, clock=clock)
        results = search_tokens(imported, plan, targets, budget_plan.token_deadline(deadline))
        monkeypatch.setattr(run_module, "scorer", real)
        return clock.now, 60.0 - after, results

    ended, limit, results = run(margin=True)
    assert any(r.stopped for r in results)
    assert ended <= limit
    ended, limit, _ = run(margin=False)
    assert ended > limit


def test_the_budget_cuts_a_run_whose_token_search_does_not_fit():
    base = dict(step_fixed=0.0, step_per_row=0.01, batch_size=8, chunk_rows=64)
    work = Work(units=16, runs=1, plans=1, restarts=1, steps=256)
    plain = CostModel(**base)
    assert fit_budget(work, plain, 100.0).cuts == ()
    tokens = CostModel(**base, token_step=0.05, token_unit=1.0)
    assert tokens.tokens(work) == pytest.approx(16 * (1.0 + 0.05 * 256))
    assert tokens.overhead(work) == pytest.approx(tokens.tokens(work) + plain.overhead(work))
    fit = fit_budget(work, tokens, 100.0)
    assert fit.cuts, "the token search's 221 s must not fit 100 s uncut"
    assert fit.seconds <= 0.85 * 100.0
    assert tokens.tokens(fit.work) < tokens.tokens(work)


def test_searches_stop_at_the_deadline_keeping_their_best_ids(pair_model):
    record, imported = pair_model
    plan = plan_tokens(imported, methods=("greedy", "beam"), steps=64)
    targets = [unit("logits", 0), unit("logits", 1)]
    deadline = Deadline(budget=40.0, start=0.0, clock=Counter())
    results = search_tokens(imported, plan, targets, deadline)
    assert results and results[0].stopped
    assert all(r.cost < plan.budget for r in results if r.stopped)
    session = ort.InferenceSession(str(MODELS / record["file"]), providers=["CPUExecutionProvider"])
    for result in results:  # the best so far, recomputed by onnxruntime on its ids
        ids = np.array([result.ids], np.int64)
        logits = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        index = int(result.target.split(":")[1])
        assert result.value == pytest.approx(float(logits[0, index]), rel=1e-6, abs=1e-6)
        assert result.agrees
    cut = token_cut(plan, targets, results)
    assert cut["searches_stopped_at_deadline"] >= 1
    assert cut["searches_stopped_at_deadline"] + cut["searches_not_started"] >= 1
    assert len(results) + cut["searches_not_started"] == 4


def test_without_a_deadline_nothing_is_cut(pair_model):
    _, imported = pair_model
    plan = plan_tokens(imported, steps=2)
    targets = [unit("logits", 0)]
    results = search_tokens(imported, plan, targets, Deadline(None, 0.0, Counter()))
    assert not results[0].stopped and token_cut(plan, targets, results) is None


def test_analyze_prices_the_token_search_and_states_its_cut(tmp_path):
    """The whole command on a counter clock frozen until the token searches start: the plan
    holds their price, and a deadline 10 readings into them (inside the first search, which
    reads the clock about 27 times) stops them, said in the report."""
    record = FAMILY["pair_sum_v16"]
    now = {"time": 0.0, "ticking": False}

    def clock() -> float:
        if now["ticking"]:
            now["time"] += 1.0
        return now["time"]

    budget = 10_000.0

    def notify(event) -> None:
        if event.phase == "render" and not now["ticking"]:
            # 10 readings before the token searches' deadline (the deadline less what follows)
            now["time"] = budget - event.plan.after_tokens - event.plan.token_tail - 10
            now["ticking"] = True

    options = AnalyzeOptions.of(steps=16, max_units=2, time_budget=budget)
    report = analyze(
        MODELS / record["file"],
        options,
        tmp_path / "r",
        notify,
        deadline=Deadline(budget, 0.0, clock),
    )
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["plan"]["token_search_seconds"] > 0
    tokens = doc["tokens"]
    assert tokens["cut"] is not None and "deadline" in tokens["cut_text"]
    assert tokens["cut"]["searches_stopped_at_deadline"] >= 1
    assert all(entry["agrees"] for entry in tokens["results"])
    assert report.doc["tokens"]["cut"] == tokens["cut"]


def test_alternatives_of_a_long_sequence_are_capped_and_checked(tmp_path):
    """A sequence longer than the cap gets alternatives at the positions of largest predicted
    gain only, every one checked (the value of the sequence with that swap)."""
    imported = import_onnx(summed_lookup(), at="auto", seq_len=100)
    plan = plan_tokens(imported, steps=1)
    per_step, per_unit = plan.price(TokenTimings(0.0, 1.0, 0.0, 0.0))
    assert per_unit == 2 + ALTERNATIVE_ROWS  # capped, not 3 x 100 rows
    (result,) = search_tokens(imported, plan, [unit("logits", 0)])
    assert len(result.alternatives) == ALTERNATIVE_ROWS // 3
    extractor = imported.extractor(["logits"])
    first = result.alternatives[0]
    ids = list(result.ids)
    ids[first["position"]] = first["alternatives"][0]["id"]
    x = plan.space.embed(torch.tensor([ids]))
    value = float(imported.batch.call(extractor, x)[0][0, 0])
    assert first["alternatives"][0]["value"] == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_the_token_search_steps_are_cut_last_when_one_unit_does_not_fit():
    base = dict(step_fixed=0.0, step_per_row=0.01, batch_size=8, chunk_rows=64)
    cost = CostModel(**base, token_step=1.0, token_unit=0.5)
    work = Work(units=4, runs=1, plans=1, restarts=1, steps=256)
    # one unit at 16 steps: 17 x 0.01 s of steps + 0.5 + 16 x 1.0 s of token search
    fit = fit_budget(work, cost, 10.0)
    assert fit.work.units == 1 and fit.work.steps == 16
    assert fit.work.token_steps is not None and 1 <= fit.work.token_steps < 16
    assert fit.cuts[-1].what == "token_steps" and fit.cuts[-1].after == fit.work.token_steps
    assert fit.seconds <= 0.85 * 10.0
    assert cost.tokens(fit.work) == pytest.approx(0.5 + fit.work.token_steps)
    with pytest.raises(BudgetError, match=r"token search at 1 step"):
        fit_budget(work, cost, 1.0)
