"""The opt-in ``gelu_subgraph`` rule: GELU as the exporters write it (Erf or Tanh ops).

Forward bit-identical; backward ``grad * max(gelu'(x), beta)`` in float64 against a
hand-written derivative; found in every committed transformer export; nothing else matched.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from onnx_am import import_onnx
from onnx_am.importer.graph import convert_graph
from onnx_am.methods import STANDARD, GradientMethod
from onnx_am.passes import RULES, SMOOTH_RULES, decouple_rectifiers, plan_rewrites
from onnx_am.passes.gelu_subgraph import gelu_form

MODELS = Path(__file__).resolve().parents[1] / "models" / "transformers"
F32 = np.float32
CONSTANTS = {
    "sqrt2": F32(math.sqrt(2)),
    "inv_sqrt2": F32(1 / math.sqrt(2)),
    "one": F32(1),
    "half": F32(0.5),
    "three": F32(3),
    "c": F32(0.044715),
    "k": F32(math.sqrt(2 / math.pi)),
    "six": F32(0.6),
}


def mul(a, b, y, name=None):
    return helper.make_node("Mul", [a, b], [y], name=name or f"mul_{y}")


#: form -> (nodes ending in "y", approximate, the Mul the rule should match)
FORMS = {
    "legacy erf": (
        [
            helper.make_node("Div", ["x", "sqrt2"], ["d"], name="div"),
            helper.make_node("Erf", ["d"], ["e"], name="erf"),
            helper.make_node("Add", ["e", "one"], ["a"], name="add"),
            mul("x", "a", "m", "inner"),
            mul("m", "half", "y", "outer"),
        ],
        "none",
        "inner",
    ),
    "dynamo erf": (
        [
            mul("x", "inv_sqrt2", "d", "scale"),
            helper.make_node("Erf", ["d"], ["e"], name="erf"),
            helper.make_node("Add", ["e", "one"], ["a"], name="add"),
            mul("half", "a", "h", "halve"),
            mul("x", "h", "y", "outer"),
        ],
        "none",
        "outer",
    ),
    "tanh (gelu_new)": (
        [
            mul("half", "x", "hx", "half_x"),
            helper.make_node("Pow", ["x", "three"], ["p"], name="pow"),
            mul("c", "p", "cp", "cube"),
            helper.make_node("Add", ["x", "cp"], ["s"], name="sum"),
            mul("k", "s", "u", "scale"),
            helper.make_node("Tanh", ["u"], ["t"], name="tanh"),
            helper.make_node("Add", ["one", "t"], ["a"], name="add"),
            mul("hx", "a", "y", "outer"),
        ],
        "tanh",
        "outer",
    ),
}

BETA = 0.2
X = np.array(
    [[-6.0, -3.5, -2.4, -1.1, -0.3, 0.0, 0.4, 1.3, 2.9, 5.0],
     [-5.2, -2.9, -1.5, -0.7, -0.1, 0.2, 0.9, 1.9, 3.4, 7.0]]
)  # fmt: skip


def gelu_prime(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        k = math.sqrt(2 / math.pi)
        t = np.tanh(k * (x + 0.044715 * x**3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
    erf = np.vectorize(math.erf)
    return 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def imported_form(form: str, make_model):
    nodes = FORMS[form][0]
    return import_onnx(make_model(nodes, [("x", ["N", X.shape[1]])], ["y"], CONSTANTS))


@pytest.mark.parametrize("form", list(FORMS))
def test_rule_matches_one_mul_and_keeps_the_forward(form, make_model):
    assert "gelu_subgraph" in SMOOTH_RULES and not RULES["gelu_subgraph"].default
    imported = imported_form(form, make_model)
    assert plan_rewrites(imported)[0] == []  # opt-in
    rewrite = decouple_rectifiers(imported, rules=["gelu_subgraph"])
    assert [r.node for r in rewrite.rewritten] == [FORMS[form][2]]
    x = torch.from_numpy(X).float()
    with torch.no_grad():
        want = imported.module(x)
        rewrite.control.set_rows([GradientMethod("decoupled", BETA)] * 2)
        got = rewrite.module(x)
    assert torch.equal(got, want)
    reference = torch.nn.functional.gelu(x, approximate=FORMS[form][1])
    torch.testing.assert_close(got, reference, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("form", list(FORMS))
def test_backward_floors_the_gelu_derivative_in_float64(form, make_model):
    imported = imported_form(form, make_model)
    rewrite = decouple_rectifiers(imported, rules=["gelu_subgraph"])
    module = rewrite.module.double()
    reference = gelu_prime(X, FORMS[form][1])
    upstream = np.random.default_rng(0).uniform(0.5, 1.5, X.shape)
    rewrite.control.set_rows([STANDARD, GradientMethod("decoupled", BETA)])
    x = torch.from_numpy(X.copy()).requires_grad_(True)
    (module(x) * torch.from_numpy(upstream)).sum().backward()
    expected = upstream * np.stack([reference[0], np.maximum(reference[1], BETA)])
    # the graph's constants are float32 (sqrt 2, 0.044715): the true derivative of the
    # float64 graph differs from the formula by about 1e-8
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-7, atol=1e-7)
    assert np.all(reference >= rewrite.rewritten[0].alpha - 1e-9)


def _graph(nodes):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in CONSTANTS.items()],
    )
    return graph


@pytest.mark.parametrize(
    "nodes",
    [
        [helper.make_node("Sigmoid", ["x"], ["s"]), mul("x", "s", "y")],  # SiLU
        [helper.make_node("Erf", ["x"], ["e"]), mul("x", "e", "y")],  # x * erf(x)
        [*FORMS["dynamo erf"][0][:4], mul("x", "h", "g"), mul("g", "six", "y")],  # 0.6 gelu
        [mul("x", "x", "y")],
    ],
    ids=["silu", "x erf x", "0.6 gelu", "square"],
)
def test_other_products_are_not_gelu(nodes):
    graph = _graph(nodes)
    final = next(n for n in graph.node if n.output[0] == "y")
    assert gelu_form(final, graph) is None


@pytest.mark.parametrize(
    ("name", "count"),
    [("bert_trigger_legacy.onnx", 2), ("bert_trigger_dynamo.onnx", 2), ("t5enc_legacy.onnx", 2),
     ("minilm_optimum.onnx", 2), ("bytes_sig_legacy.onnx", 1), ("t5enc_qdyn.onnx", 2),
     ("keras_trigger_tf2onnx.onnx", 2)],
)  # fmt: skip
def test_found_in_the_exports(name, count):
    graph = convert_graph(MODELS / name).prepared.graph
    found = [n for n in graph.node if gelu_form(n, graph) is not None]
    erf_or_tanh = sum(n.op_type in ("Erf", "Tanh") for n in graph.node)
    assert len(found) == count <= erf_or_tanh


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_legacy.onnx", "vit_dynamo.onnx"])
def test_vit_rewrite_is_exact_forward_and_changes_the_backward(name):
    imported = import_onnx(MODELS / name)
    rewrite = decouple_rectifiers(imported, rules=["gelu_subgraph"])
    assert len(rewrite.rewritten) == 2
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        want = imported.module(x)
    grads = []
    for method in (STANDARD, GradientMethod("decoupled", 1.0)):
        rewrite.control.set_rows([method] * 2)
        xi = x.clone().requires_grad_(True)
        out = rewrite.module(xi)
        assert torch.equal(out.detach(), want)
        out[:, 0].sum().backward()
        grads.append(xi.grad)
    plain = x.clone().requires_grad_(True)
    imported.module(plain)[:, 0].sum().backward()
    torch.testing.assert_close(grads[0], plain.grad, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(grads[1], grads[0], rtol=1e-3, atol=1e-6)
