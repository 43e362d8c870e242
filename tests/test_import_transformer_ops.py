"""One-node and few-node graphs of the ops transformer exports use, against onnxruntime.

Each graph is built in memory with ``onnx.helper``, converted with every input kept
(:func:`convert_graph`, so integer and bool inputs are fed too) and compared with
onnxruntime on the same inputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnx_am.importer.converters.activations import OnnxGelu
from onnx_am.importer.graph import convert_graph
from onnx_am.reference.graph_parity import check_graph_parity

F, I64, I32, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL
R = np.random.default_rng(0)
MS = helper.make_opsetid("com.microsoft", 1)


def build(nodes, inputs, outputs, inits=None, opset=17, extra_opsets=()):
    """A model from ``(name, type, shape)`` inputs and outputs and named initializers."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()],
    )
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    return helper.make_model(graph, opset_imports=opsets)


def agree(model, inputs, tolerance=1e-5):
    graph = convert_graph(model)
    result = check_graph_parity(graph, inputs, tolerance)
    assert result.passed, result.summary()
    return graph


def floats(*shape):
    return R.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_onehot_with_negative_and_out_of_range_indices(axis):
    model = build(
        [helper.make_node("OneHot", ["i", "depth", "values"], ["y"], axis=axis)],
        [("i", I64, [2, 5])],
        [("y", F, None)],
        {"depth": np.array(6, np.int64), "values": np.array([-0.5, 2.0], np.float32)},
    )
    agree(model, {"i": np.array([[0, 5, -1, -6, 7], [3, 2, 1, -7, 6]], np.int64)})


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, -1, 2])
def test_trilu(upper, k):
    inits = {} if k is None else {"k": np.array(k, np.int64)}
    model = build(
        [helper.make_node("Trilu", ["x", "k"] if k is not None else ["x"], ["y"], upper=upper)],
        [("x", F, [2, 4, 5])],
        [("y", F, None)],
        inits,
        opset=14,
    )
    agree(model, {"x": floats(2, 4, 5)})


def test_layer_normalization_and_its_decomposed_form():
    scale, bias = floats(8), floats(8)
    fused = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y1"], epsilon=1e-5, axis=-1)
    decomposed = [
        helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]),
        helper.make_node("Sub", ["x", "mu"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["d2"]),
        helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["d", "sd"], ["n"]),
        helper.make_node("Mul", ["n", "g"], ["ng"]),
        helper.make_node("Add", ["ng", "b"], ["y2"]),
    ]
    model = build(
        [fused, *decomposed],
        [("x", F, [2, 3, 8])],
        [("y1", F, None), ("y2", F, None)],
        {"g": scale, "b": bias, "two": np.float32(2), "eps": np.float32(1e-5)},
        opset=17,
    )
    graph = agree(model, {"x": floats(2, 3, 8) * 3})
    with torch.no_grad():
        one, two = graph.run({"x": floats(2, 3, 8)})
    torch.testing.assert_close(one, two, atol=1e-5, rtol=1e-5)


def gelu_erf_nodes(x: str, y: str) -> list:
    """How torch's legacy exporter writes ``nn.GELU()``."""
    return [
        helper.make_node("Div", [x, "sqrt2"], ["g_div"]),
        helper.make_node("Erf", ["g_div"], ["g_erf"]),
        helper.make_node("Add", ["g_erf", "one"], ["g_add"]),
        helper.make_node("Mul", [x, "g_add"], ["g_mul"]),
        helper.make_node("Mul", ["g_mul", "half"], [y]),
    ]


def gelu_tanh_nodes(x: str, y: str) -> list:
    """``nn.GELU(approximate="tanh")`` as the legacy exporter writes it (opset < 20)."""
    return [
        helper.make_node("Pow", [x, "three"], ["t_cube"]),
        helper.make_node("Mul", ["t_cube", "c"], ["t_cc"]),
        helper.make_node("Add", [x, "t_cc"], ["t_inner"]),
        helper.make_node("Mul", ["t_inner", "k"], ["t_u"]),
        helper.make_node("Tanh", ["t_u"], ["t_tanh"]),
        helper.make_node("Add", ["t_tanh", "one"], ["t_add"]),
        helper.make_node("Mul", [x, "t_add"], ["t_mul"]),
        helper.make_node("Mul", ["t_mul", "half"], [y]),
    ]


GELU_CONSTANTS = {
    "sqrt2": np.float32(math.sqrt(2)),
    "one": np.float32(1),
    "half": np.float32(0.5),
    "three": np.float32(3),
    "c": np.float32(0.044715),
    "k": np.float32(math.sqrt(2 / math.pi)),
}


def test_decomposed_gelu_forms_match_torch_gelu():
    model = build(
        [*gelu_erf_nodes("x", "y_erf"), *gelu_tanh_nodes("x", "y_tanh")],
        [("x", F, [4, 16])],
        [("y_erf", F, None), ("y_tanh", F, None)],
        GELU_CONSTANTS,
    )
    x = floats(4, 16) * 3
    graph = agree(model, {"x": x})
    with torch.no_grad():
        erf, tanh = graph.run({"x": x})
    t = torch.from_numpy(x)
    torch.testing.assert_close(erf, torch.nn.functional.gelu(t), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(tanh, torch.nn.functional.gelu(t, approximate="tanh"))


@pytest.mark.parametrize("op", ["Gelu", "FastGelu", "BiasGelu"])
def test_onnxruntime_gelu_ops(op):
    inputs = ["x"] if op == "Gelu" else ["x", "bias"]
    model = build(
        [helper.make_node(op, inputs, ["y"], domain="com.microsoft")],
        [("x", F, [3, 8])],
        [("y", F, None)],
        {"bias": floats(8)},
        extra_opsets=[MS],
    )
    graph = agree(model, {"x": floats(3, 8) * 2})
    assert any(isinstance(m, OnnxGelu) for m in graph.module.modules())


def test_softmax_with_additive_and_bool_masks():
    """BERT's (1 - mask) * -10000 added to the scores, and a Where on a bool mask."""
    nodes = [
        helper.make_node("Cast", ["mask"], ["mask_f"], to=F),
        helper.make_node("Sub", ["one", "mask_f"], ["inv"]),
        helper.make_node("Mul", ["inv", "big"], ["bias"]),
        helper.make_node("Unsqueeze", ["bias", "axes"], ["bias4"]),
        helper.make_node("Add", ["scores", "bias4"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p_add"], axis=-1),
        helper.make_node("Cast", ["mask"], ["mask_b"], to=BOOL),
        helper.make_node("Not", ["mask_b"], ["pad"]),
        helper.make_node("Unsqueeze", ["pad", "axes"], ["pad4"]),
        helper.make_node("Where", ["pad4", "neg_inf", "scores"], ["filled"]),
        helper.make_node("Softmax", ["filled"], ["p_where"], axis=-1),
    ]
    model = build(
        nodes,
        [("scores", F, [2, 2, 5, 5]), ("mask", I64, [2, 5])],
        [("p_add", F, None), ("p_where", F, None)],
        {
            "one": np.float32(1),
            "big": np.float32(-10000),
            "axes": np.array([1, 2], np.int64),
            "neg_inf": np.float32(-np.inf),
        },
    )
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int64)
    agree(model, {"scores": floats(2, 2, 5, 5), "mask": mask})


@pytest.mark.parametrize(("exclusive", "reverse"), [(None, None), (0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum_attributes(exclusive, reverse):
    """A missing ``reverse`` means 0 (onnx2torch's own converter read it as 1)."""
    attrs = {k: v for k, v in [("exclusive", exclusive), ("reverse", reverse)] if v is not None}
    model = build(
        [helper.make_node("CumSum", ["x", "axis"], ["y"], **attrs)],
        [("x", I64, [2, 4])],
        [("y", I64, None)],
        {"axis": np.array(1, np.int64)},
        opset=14,
    )
    agree(model, {"x": np.array([[1, 1, 1, 0], [1, 2, 3, 4]], np.int64)})


def test_position_ids_causal_mask_and_scatter_patterns():
    """Range -> Expand position ids, CumSum of a mask (padding-aware positions), a Trilu
    causal mask used by Where, and ScatterND writing one row: on int inputs."""
    nodes = [
        helper.make_node("Shape", ["ids"], ["shape"]),
        helper.make_node("Gather", ["shape", "one_i"], ["length"], axis=0),
        helper.make_node("Range", ["zero_i", "length", "one_i"], ["positions"]),
        helper.make_node("Unsqueeze", ["positions", "zero_axes"], ["positions2"]),
        helper.make_node("Expand", ["positions2", "shape"], ["pos_ids"]),
        helper.make_node("CumSum", ["mask", "one_i"], ["cum"]),
        helper.make_node("Mul", ["cum", "mask"], ["pad_pos"]),
        helper.make_node("ConstantOfShape", ["square"], ["ones"], value=helper.make_tensor(
            "v", F, [1], [1.0])),
        helper.make_node("Trilu", ["ones"], ["lower"], upper=0),
        helper.make_node("Cast", ["lower"], ["lower_b"], to=BOOL),
        helper.make_node("Where", ["lower_b", "scores", "neg"], ["causal"]),
        helper.make_node("ScatterND", ["scores", "row", "update"], ["scattered"]),
        helper.make_node("Gather", ["table", "ids"], ["embedded"], axis=0),
    ]  # fmt: skip
    model = build(
        nodes,
        [("ids", I64, [2, 4]), ("mask", I64, [2, 4]), ("scores", F, [4, 4])],
        [
            ("pos_ids", I64, None), ("pad_pos", I64, None), ("causal", F, None),
            ("scattered", F, None), ("embedded", F, None),
        ],
        {
            "one_i": np.array(1, np.int64), "zero_i": np.array(0, np.int64),
            "zero_axes": np.array([0], np.int64), "square": np.array([4, 4], np.int64),
            "neg": np.float32(-1e9), "row": np.array([[2]], np.int64),
            "update": floats(1, 4), "table": floats(10, 3),
        },
        opset=14,
    )  # fmt: skip
    inputs = {
        "ids": np.array([[1, 9, 3, 0], [4, 4, 2, 7]], np.int64),
        "mask": np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.int64),
        "scores": floats(4, 4),
    }
    agree(model, inputs)


@pytest.mark.parametrize("stored", ["int8", "float16"])
def test_embedding_gather_behind_dequantize_or_cast(stored):
    table = floats(12, 4)
    if stored == "int8":
        scale = np.float32(np.abs(table).max() / 127)
        q = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
        front = [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["table"])]
        inits = {"q": q, "s": scale, "z": np.int8(0)}
    else:
        front = [helper.make_node("Cast", ["h"], ["table"], to=F)]
        inits = {"h": table.astype(np.float16)}
    model = build(
        [*front, helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)],
        [("ids", I64, [2, 3])],
        [("y", F, None)],
        inits,
    )
    agree(model, {"ids": np.array([[0, 11, 5], [3, 3, 1]], np.int64)})
