"""The onnxruntime optimization level of the reference: basic for graphs with weight-only
quantized MatMuls (onnxruntime's MatMulNBits fusion quantizes activations), full otherwise;
stated in the parity result with the full-optimization deviation as information."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_am import import_onnx
from onnx_am.reference.optimization import reference_level, weight_only_matmuls
from onnx_am.reference.parity import check_parity

MODELS = Path(__file__).resolve().parent.parent / "models" / "transformers"


def dequantized(consumer: str, through: str | None = None) -> onnx.ModelProto:
    """x [1, 4] -> consumer(x, DequantizeLinear(int8 W) [-> through])."""
    weight = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    inits = [
        numpy_helper.from_array(weight, "Wq"),
        numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
        numpy_helper.from_array(np.array(0, np.int8), "zero"),
    ]
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "scale", "zero"], ["W"])]
    source = "W"
    if through:
        nodes.append(helper.make_node(through, ["W"], ["Wt"], perm=[1, 0]))
        source = "Wt"
    if consumer == "Gather":
        inits.append(numpy_helper.from_array(np.array([0, 2]), "ids"))
        nodes.append(helper.make_node("Gather", [source, "ids"], ["g"], axis=0))
        nodes.append(helper.make_node("MatMul", ["x", "g"], ["y"], name="after_gather"))
        inits[-1] = numpy_helper.from_array(np.array([0, 1, 2, 3]), "ids")
    else:
        nodes.append(helper.make_node(consumer, ["x", source], ["y"], name="mm"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_weight_only_matmuls_are_found_through_layout_ops():
    assert weight_only_matmuls(dequantized("MatMul")) == ["mm"]
    assert weight_only_matmuls(dequantized("MatMul", through="Transpose")) == ["mm"]
    assert weight_only_matmuls(dequantized("Gather")) == []  # a quantized table, not a weight
    assert reference_level(dequantized("Gather")).name == "all"
    level = reference_level(dequantized("MatMul"))
    assert level.name == "basic" and "MatMulNBits" in level.reason


def test_int8_weight_only_bert_is_checked_at_basic_and_agrees():
    w8 = onnx.load(str(MODELS / "bert_trigger_w8.onnx"))
    assert len(weight_only_matmuls(w8)) == 12
    assert reference_level(onnx.load(str(MODELS / "bert_trigger_legacy.onnx"))).name == "all"
    imported = import_onnx(MODELS / "bert_trigger_w8.onnx", at="auto")
    low, high = float(imported.cut.box[0]), float(imported.cut.box[1])
    result = check_parity(imported, low=low, high=high)
    assert result.passed, result.summary()
    assert result.onnxruntime_optimization == "basic" and result.optimization_note
    # full optimization deviates (the fused kernel's int8 activations): information only
    assert result.full_optimization_max_abs_diff > 10 * result.max_abs_diff
    doc = result.to_dict()
    assert doc["onnxruntime_optimization"] == "basic"
    assert doc["full_optimization_max_abs_diff"] == result.full_optimization_max_abs_diff


def test_other_models_keep_full_optimization():
    imported = import_onnx(MODELS / "bert_trigger_legacy.onnx", at="auto")
    result = check_parity(imported, low=-0.5, high=0.5)
    assert result.passed and result.onnxruntime_optimization == "all"
    assert result.full_optimization_max_abs_diff is None
