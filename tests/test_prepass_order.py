"""The ONNX pre-passes run in a fixed order in which every pass's requirements are ensured by
an earlier one, and each pass ensures what it states where the model shows it."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnx_am.errors import PassError
from onnx_am.importer.input_spec import InputSpec
from onnx_am.importer.prepare import prepare_model
from onnx_am.importer.prepare.order import (
    CHECKS,
    FEEDS_HELD,
    NAMED_NODES,
    PREPASSES,
    PrepareInputs,
    check_order,
)

FIXTURES = Path(__file__).parent / "fixtures"
SPEC = InputSpec("x", (1, 1, 4, 4), TensorProto.FLOAT)


def _every_kind_of_inputs() -> list[PrepareInputs]:
    specs = (None, SPEC)
    feeds = ({}, {"s": np.zeros(1, np.float32)})
    axes = ({}, {"s": 0})
    return [PrepareInputs(*combo) for combo in itertools.product(specs, feeds, axes)]


def test_the_fixed_order_meets_every_requirement_for_every_kind_of_input():
    names = [p.name for p in PREPASSES]
    assert len(set(names)) == len(names)
    for inputs in _every_kind_of_inputs():
        running = check_order(PREPASSES, inputs)
        assert ("explicit_auto_pad" in [p.name for p in running]) == (inputs.spec is not None)
    everything = check_order(PREPASSES, PrepareInputs(SPEC, {"s": 0}, {"s": 0}))
    assert [p.name for p in everything] == names  # all run, in the stated order


def test_every_requirement_is_some_pass_guarantee():
    ensured = set().union(*(p.ensures for p in PREPASSES))
    assert set().union(*(p.requires for p in PREPASSES)) <= ensured
    assert set(CHECKS) <= ensured


@pytest.mark.parametrize("moved", ["refuse_huge_constants", "split_asymmetric_average_pools"])
def test_a_pass_moved_before_what_it_needs_is_refused(moved):
    passes = list(PREPASSES)
    prepass = next(p for p in passes if p.name == moved)
    passes.remove(prepass)
    with pytest.raises(PassError, match=moved):
        check_order([prepass, *passes], PrepareInputs(SPEC))


def test_a_conditional_pass_cannot_ensure_what_an_unconditional_one_needs():
    passes = [
        replace(p, runs=lambda i: i.spec is not None) if p.name == "name_nodes" else p
        for p in PREPASSES
    ]
    check_order(passes, PrepareInputs(SPEC))
    with pytest.raises(PassError, match=f"refuse_huge_constants.*{NAMED_NODES}"):
        check_order(passes, PrepareInputs())


def _messy_model() -> onnx.ModelProto:
    """Unnamed and duplicate node names, an 'ai.onnx' domain, a recorded shape, a fed input."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], domain="ai.onnx"),
        helper.make_node("Mul", ["a", "s"], ["b"], name="dup"),
        helper.make_node("Relu", ["b"], ["y"], name="dup"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        value_info=[helper.make_tensor_value_info("a", TensorProto.FLOAT, [7])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_each_pass_ensures_what_it_states_on_a_messy_model():
    model = _messy_model()
    inputs = PrepareInputs(SPEC, {"s": np.ones(1, np.float32)})
    assert not any(check(model, inputs) for check in CHECKS.values())  # all false before
    prepared, _ = prepare_model(model, SPEC, inputs.feeds, verify=True)
    assert all(check(prepared, inputs) for check in CHECKS.values())


def test_a_pass_that_breaks_its_promise_is_caught_with_verify(monkeypatch):
    import onnx_am.importer.prepare as prepare

    broken = [
        replace(p, apply=lambda m, i: (m, [])) if FEEDS_HELD in p.ensures else p for p in PREPASSES
    ]
    monkeypatch.setattr(prepare, "PREPASSES", tuple(broken))
    with pytest.raises(PassError, match="feeds_to_initializers"):
        prepare_model(_messy_model(), SPEC, {"s": np.ones(1, np.float32)}, verify=True)


@pytest.mark.parametrize(
    "name",
    [
        "zoo_opset8_constants.onnx",
        "torch_legacy_opset11.onnx",
        "tf2onnx_cnn.onnx",
        "paddle_mobilenetv3_like.onnx",
    ],
)
def test_the_fixture_models_keep_every_checked_promise(name):
    model = onnx.load(str(FIXTURES / name))
    prepare_model(model, verify=True)
