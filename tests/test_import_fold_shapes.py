"""Shape-aware folding: an If on the *shape* of a tensor computed from the optimized input
(silero-vad's decoder squeezes the time axis when the encoder made one frame) folds once
the input's sample shape is known, and the batch dim stays free."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnx_am import check_parity, import_onnx
from onnx_am.importer.input_spec import InputSpec
from onnx_am.importer.prepare import fold_constants
from onnx_am.importer.prepare.folding import declare_sample_shape

C, K = 3, 5
F32, I64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
R = np.random.default_rng(11)


def _branch(name: str, nodes: list, output: str) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, F32, None)])


def squeeze_if_one_frame() -> onnx.ModelProto:
    """x [N, L] -> pad (pads built with ConstantOfShape) -> Conv (kernel K, stride K) -> Relu
    -> h [N, C, T]; ``If(Shape(h)[-1] == 1)`` squeezes the time axis, else averages it;
    then ``If(Size(Shape(z)) == 2)`` (a rank test, as in torch's LSTMCell export) and a head."""
    squeeze = _branch(
        "one_frame", [helper.make_node("Squeeze", ["h", "last"], ["z1"], name="squeeze")], "z1"
    )
    mean = _branch(
        "frames",
        [helper.make_node("ReduceMean", ["h"], ["z2"], name="mean", axes=[2], keepdims=0)],
        "z2",
    )
    batched = _branch("batched", [helper.make_node("Identity", ["z"], ["b1"], name="same")], "b1")
    unbatched = _branch(
        "unbatched", [helper.make_node("Unsqueeze", ["z", "first"], ["b2"], name="add_batch")],
        "b2",
    )  # fmt: skip
    nodes = [
        helper.make_node("ConstantOfShape", ["two"], ["zeros"], name="fill",
                         value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Concat", ["zeros", "right"], ["pads"], name="pads", axis=0),
        helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad"),
        helper.make_node("Unsqueeze", ["xp", "one_axis"], ["x3"], name="channels"),
        helper.make_node("Conv", ["x3", "W"], ["c"], name="conv", kernel_shape=[K], strides=[K]),
        helper.make_node("Relu", ["c"], ["h"], name="relu"),
        helper.make_node("Shape", ["h"], ["hs"], name="shape"),
        helper.make_node("Gather", ["hs", "last"], ["t"], name="time", axis=0),
        helper.make_node("Equal", ["t", "one"], ["single"], name="is_single"),
        helper.make_node("If", ["single"], ["z"], name="squeeze_time",
                         then_branch=squeeze, else_branch=mean),
        helper.make_node("Shape", ["z"], ["zs"], name="zshape"),
        helper.make_node("Size", ["zs"], ["rank"], name="rank"),
        helper.make_node("Equal", ["rank", "two_scalar"], ["is2"], name="is_batched"),
        helper.make_node("If", ["is2"], ["b"], name="batch_it",
                         then_branch=batched, else_branch=unbatched),
        helper.make_node("Gemm", ["b", "head"], ["logits"], name="head"),
    ]  # fmt: skip
    inits = {
        "two": np.array([2], np.int64),
        "right": np.array([0, 1], np.int64),  # one sample of padding on the right
        "one_axis": np.array([1], np.int64),
        "last": np.array([2], np.int64),
        "first": np.array([0], np.int64),
        "one": np.array([1], np.int64),
        "two_scalar": np.array(2, np.int64),
        "W": R.standard_normal((C, 1, K)).astype(np.float32),
        "head": R.standard_normal((C, 2)).astype(np.float32),
    }
    graph = helper.make_graph(
        nodes, "decoder_like",
        [helper.make_tensor_value_info("x", F32, ["N", "L"])],
        [helper.make_tensor_value_info("logits", F32, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


@pytest.mark.parametrize(
    "length, kept", [(K - 1, "squeeze_time_squeeze"), (3 * K - 1, "squeeze_time_mean")]
)
def test_if_on_an_input_shape_folds_once_the_shape_is_given(length: int, kept: str) -> None:
    imported = import_onnx(squeeze_if_one_frame(), input_name="x", input_shape=[1, length])
    nodes = {node.name: node.op_type for node in imported.prepared.graph.node}
    # Shape nodes whose values folded are left unused (onnxscript's folder keeps them).
    assert not {"If", "Size", "ConstantOfShape"} & set(nodes.values()), nodes
    assert kept in nodes
    note = next(n for n in imported.prepass_notes if "folded constants" in n)
    assert f"x of shape [N, {length}]" in note and "2 If resolved" in note, note
    # The batch dim was left symbolic: batches run as they are, not row by row.
    assert imported.batch.mode == "dynamic"
    result = check_parity(imported, samples=3)
    assert result.passed and result.max_abs_diff < 1e-5, result


def test_without_the_shape_the_if_stays() -> None:
    model = squeeze_if_one_frame()
    folded, _ = fold_constants(model)
    assert "If" in {node.op_type for node in folded.graph.node}


def test_declare_sample_shape_keeps_the_batch_dim() -> None:
    model = squeeze_if_one_frame()
    spec = InputSpec("x", ("N", "L"), "float32", sample_shape=(9,), layout="vector")
    assert declare_sample_shape(model, spec) == ["N", 9]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 9
    wrong_rank = InputSpec("x", ("N", "L"), "float32", sample_shape=(1, 9), layout="other")
    assert declare_sample_shape(model, wrong_rank) is None


def test_only_small_constant_of_shape_folds() -> None:
    """A fill of shape arithmetic size folds; a large one stays a node (onnxscript's default)."""
    nodes = [
        helper.make_node("ConstantOfShape", ["small"], ["pads"], name="fill_small"),
        helper.make_node("ConstantOfShape", ["large"], ["big"], name="fill_large"),
        helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad"),
        helper.make_node("Add", ["xp", "big"], ["y"], name="add"),
    ]
    inits = {"small": np.array([4], np.int64), "large": np.array([64, 64], np.int64)}
    graph = helper.make_graph(
        nodes, "fills",
        [helper.make_tensor_value_info("x", F32, ["N", 64])],
        [helper.make_tensor_value_info("y", F32, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    spec = InputSpec("x", ("N", 64), "float32", sample_shape=(64,), layout="vector")
    folded, _ = fold_constants(model, spec=spec)
    assert [n.name for n in folded.graph.node if n.op_type == "ConstantOfShape"] == ["fill_large"]
