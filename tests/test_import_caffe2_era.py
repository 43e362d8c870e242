"""Opset-9 Caffe2-era classifiers: ... -> GlobalAveragePool -> Softmax, shapes recorded by
the producer that do not match the graph, initializers not listed as inputs (IR 3)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnx_am import check_parity, import_onnx

R = np.random.default_rng(0)


def caffe2_like(stale: tuple[str, list[int]] | None, weights_as_inputs: bool) -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(R.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(R.standard_normal(4).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Conv", ["data_0", "w", "b"], ["conv"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Dropout", ["relu"], ["drop"], ratio=0.5),
        helper.make_node("GlobalAveragePool", ["drop"], ["pool"]),
        helper.make_node("Softmax", ["pool"], ["softmaxout_1"]),
    ]
    inputs = [helper.make_tensor_value_info("data_0", 1, [1, 3, 8, 8])]
    if weights_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, 1, list(t.dims)) for t in inits]
    graph = helper.make_graph(
        nodes,
        "caffe2",
        inputs,
        [helper.make_tensor_value_info("softmaxout_1", 1, [1, 4, 1, 1])],
        inits,
    )
    if stale is not None:
        graph.value_info.append(helper.make_tensor_value_info(stale[0], 1, stale[1]))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)


@pytest.mark.parametrize(
    "stale",
    [None, ("drop", [1, 4, 8, 8, 1]), ("pool", [1, 4])],
    ids=["no-annotations", "rank5-before-pool", "rank2-pool"],
)
@pytest.mark.parametrize("weights_as_inputs", [True, False], ids=["ir3", "ir3-loose"])
def test_opset9_global_average_pool_softmax(stale, weights_as_inputs: bool) -> None:
    # A stale rank-5 annotation made GlobalAveragePool fail with "Dimension out of range";
    # a rank-2 one made the upgrade drop Softmax-9's flattening (wrong values).
    imported = import_onnx(caffe2_like(stale, weights_as_inputs))
    assert any("upgraded opset 9" in note for note in imported.prepass_notes)
    result = check_parity(imported, samples=2)
    assert result.passed, result.max_abs_diff
