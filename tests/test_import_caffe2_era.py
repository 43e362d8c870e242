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


def squeezenet_like(opset: int, pool: str) -> onnx.ModelProto:
    """The old zoo's SqueezeNet shape: conv/relu, MaxPool, a fire module (squeeze, two
    expands, Concat on axis 1), ``Dropout`` listing its mask output as Caffe2 wrote it, conv,
    then GlobalAveragePool or AveragePool(13) and Softmax, weights listed as inputs (IR 3)."""
    inits: dict[str, np.ndarray] = {}
    nodes = []

    def conv(source: str, name: str, cin: int, cout: int, kernel: int, stride=1, pad=0) -> str:
        inits[f"{name}_w"] = (R.standard_normal((cout, cin, kernel, kernel)) * 0.3).astype("f")
        inits[f"{name}_b"] = (R.standard_normal(cout) * 0.3).astype(np.float32)
        nodes.append(
            helper.make_node(
                "Conv", [source, f"{name}_w", f"{name}_b"], [name], kernel_shape=[kernel] * 2,
                strides=[stride] * 2, pads=[pad] * 4,
            )
        )  # fmt: skip
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"]))
        return f"{name}_relu"

    stem = conv("data_0", "conv1", 3, 8, 3, stride=2)
    nodes.append(
        helper.make_node("MaxPool", [stem], ["pool1"], kernel_shape=[3, 3], strides=[2, 2])
    )
    squeeze = conv("pool1", "fire2_squeeze", 8, 4, 1)
    left, right = conv(squeeze, "fire2_e1", 4, 8, 1), conv(squeeze, "fire2_e3", 4, 8, 3, pad=1)
    nodes.append(helper.make_node("Concat", [left, right], ["fire2"], axis=1))
    nodes.append(helper.make_node("Dropout", ["fire2"], ["drop", "_mask"], ratio=0.5))
    head = conv("drop", "conv10", 16, 10, 1)
    if pool == "global":
        nodes.append(helper.make_node("GlobalAveragePool", [head], ["pool10"]))
    else:
        nodes.append(helper.make_node("AveragePool", [head], ["pool10"], kernel_shape=[13, 13]))
    nodes.append(helper.make_node("Softmax", ["pool10"], ["softmaxout_1"]))
    inputs = [helper.make_tensor_value_info("data_0", 1, [1, 3, 64, 64])]
    inputs += [helper.make_tensor_value_info(k, 1, list(v.shape)) for k, v in inits.items()]
    graph = helper.make_graph(
        nodes,
        "squeezenet_like",
        inputs,
        [helper.make_tensor_value_info("softmaxout_1", 1, [1, 10, 1, 1])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=3)


@pytest.mark.parametrize("opset", [8, 9])
@pytest.mark.parametrize("pool", ["global", "average13"])
def test_opset8_squeezenet_with_dropout_mask(opset: int, pool: str) -> None:
    # Dropout's listed mask made the graph take "output 1" by indexing the tensor (its
    # second row): "Dimension out of range (expected to be in range of [-3, 2], but got 3)".
    imported = import_onnx(squeezenet_like(opset, pool))
    result = check_parity(imported, samples=2)
    assert result.passed, result.summary()
    assert imported.batch.mode == "dynamic"
