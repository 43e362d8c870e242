"""Opt-in decoupled backward for smooth activations: forward bit-identical, backward
``grad * max(f'(x), beta)``, checked in float64 against hand-written derivatives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from onnx import helper

from onnx_am import import_onnx
from onnx_am.methods import STANDARD, GradientMethod
from onnx_am.passes import RULES, SMOOTH_RULES, decouple_rectifiers, plan_rewrites


def _phi(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


_ERF = np.vectorize(math.erf)

#: rule -> (nodes, opset, reference derivative in numpy float64)
CASES = {
    "silu": (
        [helper.make_node("Sigmoid", ["x"], ["s"], name="sig"),
         helper.make_node("Mul", ["s", "x"], ["y"], name="silu")],
        13, lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x))),
    ),
    "hardswish": (
        [helper.make_node("HardSwish", ["x"], ["y"], name="hswish")],
        14, lambda x: np.where(x < -3, 0.0, np.where(x > 3, 1.0, x / 3 + 0.5)),
    ),
    "hardsigmoid": (
        [helper.make_node("HardSigmoid", ["x"], ["y"], name="hsig", alpha=0.25, beta=0.4)],
        6, lambda x: np.where((0.25 * x + 0.4 > 0) & (0.25 * x + 0.4 < 1), 0.25, 0.0),
    ),
    "gelu": (
        [helper.make_node("Gelu", ["x"], ["y"], name="gelu")],
        20, lambda x: 0.5 * (1 + _ERF(x / math.sqrt(2))) + x * _phi(x),
    ),
    "mish": (
        [helper.make_node("Mish", ["x"], ["y"], name="mish")],
        18, lambda x: np.tanh(np.log1p(np.exp(x)))
        + x * (1 - np.tanh(np.log1p(np.exp(x))) ** 2) * _sigmoid(x),
    ),
}  # fmt: skip

BETA = 0.2
# Away from the kinks of HardSwish (+-3) and HardSigmoid (-1.6, 2.4).
X = np.array(
    [[-6.0, -3.5, -2.4, -1.1, -0.3, 0.0, 0.4, 1.3, 2.9, 5.0],
     [-5.2, -2.9, -1.5, -0.7, -0.1, 0.2, 0.9, 1.9, 3.4, 7.0]]
)  # fmt: skip


def _imported(rule, make_model):
    nodes, opset, _ = CASES[rule]
    return import_onnx(make_model(nodes, [("x", ["N", X.shape[1]])], ["y"], opset=opset))


@pytest.mark.parametrize("rule", list(CASES))
def test_smooth_rule_is_opt_in_and_exact_forward(rule: str, make_model) -> None:
    assert rule in SMOOTH_RULES and not RULES[rule].default
    imported = _imported(rule, make_model)
    assert plan_rewrites(imported)[0] == []  # not applied by default
    rewrite = decouple_rectifiers(imported, rules=[rule])
    assert [r.kind for r in rewrite.rewritten] == [rule]
    x = torch.from_numpy(X).float()
    with torch.no_grad():
        want = imported.module(x)
        rewrite.control.set_rows([GradientMethod("decoupled", BETA)] * 2)
        got = rewrite.module(x)
    assert torch.equal(got, want)  # bit-identical forward


@pytest.mark.parametrize("rule", list(CASES))
def test_smooth_rule_backward_floors_the_derivative(rule: str, make_model) -> None:
    imported = _imported(rule, make_model)
    rewrite = decouple_rectifiers(imported, rules=[rule])
    reference = CASES[rule][2](X)
    upstream = np.random.default_rng(0).uniform(0.5, 1.5, X.shape)
    # Row 0 standard (true derivative), row 1 decoupled (floored at beta).
    rewrite.control.set_rows([STANDARD, GradientMethod("decoupled", BETA)])
    x = torch.from_numpy(X.copy()).requires_grad_(True)  # float64 throughout
    (rewrite.module(x) * torch.from_numpy(upstream)).sum().backward()
    expected = upstream * np.stack([reference[0], np.maximum(reference[1], BETA)])
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12, atol=1e-12)
    # A floor at the rule's alpha (the derivative's minimum) changes nothing.
    assert np.all(reference >= RULES[rule].alpha - 1e-9)
