"""Which nodes the decoupling pass rewrites, which it leaves alone, and what it leaves unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import build_model
from onnx import helper

from onnx_am import import_onnx
from onnx_am.errors import PassError
from onnx_am.methods import parse_method
from onnx_am.passes import (
    RULES,
    DecoupledRectifier,
    RectifierRule,
    RuleMatch,
    decouple_rectifiers,
    plan_rewrites,
    register_rule,
)


def one_op(nodes, initializers=None, shape=("N", 4)):
    return import_onnx(
        build_model(nodes, [("x", list(shape))], ["y"], initializers or {}, opset=13)
    )


def leaky_max(max_inputs, mul_inputs, factor=0.2):
    """``Max`` over ``max_inputs`` where ``s = Mul(*mul_inputs)``; ``a`` holds ``factor``."""
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["z"], name="sig"),
        helper.make_node("Mul", mul_inputs, ["s"], name="mul"),
        helper.make_node("Max", max_inputs, ["y"], name="max"),
    ]
    return one_op(nodes, {"a": np.asarray(factor, np.float32)})


@pytest.mark.parametrize("max_inputs", [["x", "s"], ["s", "x"]])
@pytest.mark.parametrize("mul_inputs", [["x", "a"], ["a", "x"]])
def test_max_pattern_detected_in_any_order(max_inputs, mul_inputs):
    imported = leaky_max(max_inputs, mul_inputs)
    rewritten, untouched = plan_rewrites(imported)
    assert [(r.node, r.kind, r.output) for r in rewritten] == [("max", "max_leaky", "y")]
    assert rewritten[0].alpha == pytest.approx(0.2)
    assert [u.op_type for u in untouched] == ["Sigmoid"]
    result = decouple_rectifiers(imported)
    extractor = imported.extractor(["y"], module=result.module)
    x = torch.linspace(-2, 2, 8).reshape(2, 4).requires_grad_(True)
    result.control.set_rows([parse_method("decoupled(0.6)")] * 2)
    (y,) = extractor(x)
    y.sum().backward()
    assert torch.equal(y, torch.maximum(x, x * torch.tensor(0.2)))
    assert torch.equal(x.grad, torch.where(x > 0, 1.0, 0.6))


@pytest.mark.parametrize(
    ("max_inputs", "mul_inputs", "factor", "why"),
    [
        (["x", "s"], ["z", "a"], 0.2, "Max(x, y) of different tensors"),
        (["x", "s"], ["x", "a"], 1.5, "a > 1"),
        (["x", "s"], ["x", "a"], 0.0, "a == 0"),
        (["x", "s"], ["x", "z"], 0.2, "a not constant"),
        (["x", "s"], ["x", "a"], [0.2, 0.3, 0.2, 0.2], "a not a scalar"),
        (["x", "s", "z"], ["x", "a"], 0.2, "three inputs"),
    ],
)
def test_max_pattern_rejects_lookalikes(max_inputs, mul_inputs, factor, why):
    rewritten, untouched = plan_rewrites(leaky_max(max_inputs, mul_inputs, factor))
    assert rewritten == [], why
    assert [u.op_type for u in untouched] == ["Sigmoid", "Max"], why


@pytest.mark.parametrize(
    ("bounds", "upper"),
    [
        ((0.0,), None),
        ((0.0, 6.0), 6.0),
        ((0.0, 2.5), 2.5),
        ((-3.4e38, 6.0), "untouched"),
        ((-1.0, 1.0), "untouched"),
    ],
)
def test_clip_matches_only_a_floor_at_zero(bounds, upper):
    names = ["" if b is None else f"b{i}" for i, b in enumerate(bounds)]
    inits = {f"b{i}": np.asarray(b, np.float32) for i, b in enumerate(bounds) if b is not None}
    imported = one_op([helper.make_node("Clip", ["x", *names], ["y"], name="clip")], inits)
    result = decouple_rectifiers(imported)
    if upper == "untouched":
        assert result.rewritten == [] and [u.node for u in result.untouched] == ["clip"]
        assert not result.modified
        return
    assert [r.kind for r in result.rewritten] == ["clip"] and result.untouched == []
    assert result.module.get_submodule("clip").upper == upper


def test_prelu_and_leaky_alphas_come_from_the_onnx_node():
    nodes = [
        helper.make_node("LeakyRelu", ["x"], ["l"], name="leaky", alpha=0.25),
        helper.make_node("LeakyRelu", ["l"], ["d"], name="leaky_default"),
        helper.make_node("PRelu", ["d", "slope"], ["y"], name="prelu"),
    ]
    slope = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    rewritten, _ = plan_rewrites(one_op(nodes, {"slope": slope}))
    assert [r.alpha for r in rewritten[:2]] == [0.25, pytest.approx(0.01)]
    assert rewritten[2].alpha == pytest.approx(slope.tolist())


def test_untouched_lists_other_nonlinearities_and_input_independent_rectifiers():
    nodes = [
        helper.make_node("Relu", ["w"], ["w_pos"], name="relu_on_weights"),
        helper.make_node("Add", ["x", "w_pos"], ["t"], name="add"),
        helper.make_node("HardSwish", ["t"], ["u"], name="hswish"),
        helper.make_node("Sigmoid", ["u"], ["v"], name="sig"),
        helper.make_node("Relu", ["v"], ["y"], name="relu"),
    ]
    imported = import_onnx(
        build_model(
            nodes, [("x", ["N", 4])], ["y"], {"w": np.array([-1, 2, -3, 4], np.float32)}, opset=14
        )
    )
    result = decouple_rectifiers(imported)
    assert [r.node for r in result.rewritten] == ["relu"]
    assert [(u.node, u.op_type) for u in result.untouched] == [
        ("relu_on_weights", "Relu"),
        ("hswish", "HardSwish"),
        ("sig", "Sigmoid"),
    ]
    report = json.loads(json.dumps(result.to_dict()))
    assert report["modified"] is True
    assert report["rewritten"] == [
        {"node": "relu", "op_type": "Relu", "kind": "relu", "alpha": 0.0, "output": "y"}
    ]
    assert plan_rewrites(imported) == (result.rewritten, result.untouched)


def test_original_module_is_unchanged_and_still_usable():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("PRelu", ["r", "slope"], ["y"], name="prelu"),
    ]
    imported = one_op(nodes, {"slope": np.array([0.1, 0.2, 0.3, 0.4], np.float32)})
    module = imported.module
    children = {name: child for name, child in module.named_children()}
    code = module.code
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    (before,) = imported.run(x)
    result = decouple_rectifiers(imported)
    result.control.set_rows([parse_method("proxy(0.5)")] * 3)
    imported.run(x, module=result.module)
    assert imported.module is module and module.code == code
    assert dict(module.named_children()) == children
    assert not any(isinstance(m, DecoupledRectifier) for m in module.modules())
    assert torch.equal(imported.run(x)[0], before)
    assert isinstance(result.module.get_submodule("relu"), DecoupledRectifier)
    assert result.module is not module


def test_rules_can_be_selected_and_unknown_rules_fail():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("LeakyRelu", ["r"], ["y"], name="leaky"),
    ]
    imported = one_op(nodes)
    rewritten, untouched = plan_rewrites(imported, rules=["leaky_relu"])
    assert [r.node for r in rewritten] == ["leaky"] and [u.node for u in untouched] == ["relu"]
    with pytest.raises(PassError, match="'swish'"):
        decouple_rectifiers(imported, rules=["swish"])


def test_duplicate_registration_fails_and_a_new_kind_is_one_class():
    with pytest.raises(PassError, match="'relu' is already registered"):

        @register_rule("relu")
        class AnotherRelu(RectifierRule):
            op_type = "Relu"

    class SoftsignAsRectifier(RectifierRule):  # not registered: passed to the pass directly
        name = "softsign_test"
        op_type = "Relu"

        def match(self, node, module, imported):
            return RuleMatch(alpha=0.0) if node.name == "second" else None

        def build(self, node, module, match, *, decouple_upper=False):
            return RULES["relu"].build(node, module, match)

    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="first"),
        helper.make_node("Relu", ["r"], ["y"], name="second"),
    ]
    rewritten, _ = plan_rewrites(one_op(nodes), rules=[SoftsignAsRectifier()])
    assert [(r.node, r.kind) for r in rewritten] == [("second", "softsign_test")]
    assert "relu" in RULES and "softsign_test" not in RULES
