"""Constant folding before conversion: an If on a fed input, with an LSTM in the branch taken,
and shape arithmetic on a fed state, resolved by onnxscript's folder."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnx_am import check_parity, import_onnx
from onnx_am.importer.prepare import fold_constants
from onnx_am.passes import plan_rewrites

T, IN, HIDDEN = 3, 4, 5
F32, I64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
R = np.random.default_rng(4)


def _branch(name: str, nodes: list, output: str) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, F32, None)])


def vad_like() -> onnx.ModelProto:
    """``If(sr == 16000)``: an LSTM on the frames then a Relu head; else a Tanh head."""
    lstm_branch = _branch(
        "sr16k",
        [
            helper.make_node("Transpose", ["x"], ["xt"], name="to_time", perm=[1, 0, 2]),
            helper.make_node(
                "LSTM", ["xt", "W", "R", "B"], ["", "h"], name="lstm", hidden_size=HIDDEN
            ),
            helper.make_node("Reshape", ["h", "flat"], ["hf"], name="flatten"),
            helper.make_node("Gemm", ["hf", "head"], ["logits16"], name="head16"),
            helper.make_node("Relu", ["logits16"], ["out16"], name="relu16"),
        ],
        "out16",
    )
    other_branch = _branch(
        "sr8k",
        [
            helper.make_node("ReduceMean", ["x"], ["m"], name="mean", axes=[1], keepdims=0),
            helper.make_node("Gemm", ["m", "head8"], ["logits8"], name="head8g"),
            helper.make_node("Tanh", ["logits8"], ["out8"], name="tanh8"),
        ],
        "out8",
    )
    nodes = [
        helper.make_node("Equal", ["sr", "k16"], ["is16"], name="is_16k"),
        helper.make_node(
            "If",
            ["is16"],
            ["y"],
            name="by_rate",
            then_branch=lstm_branch,
            else_branch=other_branch,
        ),  # fmt: skip
    ]
    inits = {
        "k16": np.array(16000, np.int64),
        "W": R.standard_normal((1, 4 * HIDDEN, IN)).astype(np.float32) * 0.5,
        "R": R.standard_normal((1, 4 * HIDDEN, HIDDEN)).astype(np.float32) * 0.5,
        "B": R.standard_normal((1, 8 * HIDDEN)).astype(np.float32) * 0.5,
        "flat": np.array([-1, HIDDEN], np.int64),
        "head": R.standard_normal((HIDDEN, 2)).astype(np.float32),
        "head8": R.standard_normal((IN, 2)).astype(np.float32),
    }
    graph = helper.make_graph(
        nodes, "vad",
        [helper.make_tensor_value_info("x", F32, ["N", T, IN]),
         helper.make_tensor_value_info("sr", I64, [])],
        [helper.make_tensor_value_info("y", F32, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


@pytest.mark.parametrize("rate, kept", [(16000, "logits16"), (8000, "logits8")])
def test_if_on_a_fed_input_folds_to_the_branch_taken(rate: int, kept: str) -> None:
    imported = import_onnx(vad_like(), input_name="x", feeds={"sr": rate})
    ops = {node.op_type for node in imported.prepared.graph.node}
    assert "If" not in ops and ("LSTM" in ops) == (rate == 16000)
    assert any("folded constants with onnxscript" in n and "If resolved" in n
               for n in imported.prepass_notes)  # fmt: skip
    # Tensor names inside the branch survive (its output takes the If's name), so targets
    # by ONNX name still apply; node names get the If's name as a prefix.
    assert kept in imported.tensor_map and "y" in imported.tensor_map
    result = check_parity(imported, samples=3)
    assert result.passed and result.max_abs_diff < 1e-5, result
    rewritten, untouched = plan_rewrites(imported)
    assert [r.node for r in rewritten] == (["by_rate_relu16"] if rate == 16000 else [])


def test_if_on_the_optimized_input_is_not_folded_and_runs_row_by_row() -> None:
    model = vad_like()
    graph = model.graph
    graph.node[0].input[:] = ["x_rate", "k16"]
    graph.node.insert(0, helper.make_node("ReduceMax", ["x"], ["x_max"], name="xmax", keepdims=0))
    graph.node.insert(1, helper.make_node("Cast", ["x_max"], ["x_rate"], name="cast", to=I64))
    imported = import_onnx(model, input_name="x", feeds={"sr": 16000})
    assert any(node.op_type == "If" for node in imported.prepared.graph.node)
    assert imported.batch.mode == "rowwise"
    assert any("has a branch" in note for note in imported.prepass_notes)
    assert check_parity(imported, samples=3).passed


def test_shape_arithmetic_on_a_fed_state_becomes_constant() -> None:
    nodes = [
        helper.make_node("Shape", ["state"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "last"], ["n"], name="gather", axis=0),
        helper.make_node("Concat", ["minus1", "n"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["xr"], name="reshape"),
        helper.make_node("ReduceSum", ["state", "axes"], ["st"], name="sum", keepdims=0),
        helper.make_node("Add", ["xr", "st"], ["y"], name="add"),
    ]
    inits = {
        "last": np.array([2], np.int64),
        "minus1": np.array([-1], np.int64),
        "axes": np.array([0, 1], np.int64),
    }
    graph = helper.make_graph(
        nodes, "state",
        [helper.make_tensor_value_info("x", F32, ["N", 2, 4]),
         helper.make_tensor_value_info("state", F32, [2, 1, 8])],
        [helper.make_tensor_value_info("y", F32, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    state = R.standard_normal((2, 1, 8)).astype(np.float32)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    folded, notes = fold_constants(copy, {"state": state})
    # The shape and the state's sum are now constants (Constant nodes, made initializers by
    # the next pre-pass); only the ops on the optimized input remain.
    assert {n.op_type for n in folded.graph.node} == {"Constant", "Reshape", "Add"}, notes
    imported = import_onnx(model, input_name="x", feeds={"state": state})
    assert check_parity(imported, samples=2).passed
