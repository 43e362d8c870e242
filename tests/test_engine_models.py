"""Tiny ONNX models built in memory for the engine tests (no tests in this module)."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one intra-op thread (two threads contend on a busy
    2-core machine: a 6x6 conv took 12 ms instead of 0.03 ms). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _model(nodes, inputs, outputs, initializers, opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def convex_relu_net(d: int = 8, h: int = 6, seed: int = 0):
    """``y = sum_j v_j relu(w_j . x + b_j)`` with ``v >= 0``: convex, maximal at a corner.

    The hidden units are all inactive at the lower corner ``x = -1`` (and near it), so the
    true gradient there is zero.

    Returns:
        ``(model, W [d, h], b [h], v [h])``.
    """
    rng = np.random.default_rng(seed)
    u = rng.choice([-1.0, 1.0], size=d)
    w = (u[:, None] + 0.4 * rng.standard_normal((d, h))).astype(np.float32)
    b = (w.sum(0) - 1.0).astype(np.float32)  # pre-activation -1 at x = -1
    v = rng.uniform(0.5, 1.5, size=h).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"], name="fc1"),
        helper.make_node("Add", ["xw", "b"], ["pre"], name="bias1"),
        helper.make_node("Relu", ["pre"], ["hidden"], name="relu1"),
        helper.make_node("MatMul", ["hidden", "V"], ["y"], name="fc2"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(v[:, None], "V"),
        ],
    )
    return model, w, b, v


def corner_maximum(w: np.ndarray, b: np.ndarray, v: np.ndarray) -> float:
    """The global maximum of :func:`convex_relu_net` over ``[-1, 1]^d``, by enumeration."""
    corners = np.array(list(itertools.product([-1.0, 1.0], repeat=w.shape[0])))
    values = np.maximum(corners @ w.astype(np.float64) + b, 0) @ v
    return float(values.max())


def tiny_cnn(nhwc: bool = False, channels: int = 3, size: int = 6, seed: int = 0):
    """Conv(4) -> Relu -> Conv(5) -> LeakyRelu -> GlobalAveragePool -> Flatten -> Gemm(3).

    Tensors: ``conv1``, ``relu1``, ``conv2``, ``act2``, ``pool``, ``flat``, ``logits``.
    With ``nhwc`` the input is ``[N, H, W, C]`` and a Transpose makes it NCHW, as tf2onnx does.
    """
    rng = np.random.default_rng(seed)
    k1 = (rng.standard_normal((4, channels, 3, 3)) * 0.5).astype(np.float32)
    k2 = (rng.standard_normal((5, 4, 3, 3)) * 0.5).astype(np.float32)
    fc = (rng.standard_normal((3, 5))).astype(np.float32)
    nodes = []
    source = "input"
    if nhwc:
        perm = [0, 3, 1, 2]
        nodes.append(helper.make_node("Transpose", ["input"], ["nchw"], name="to_nchw", perm=perm))
        source = "nchw"
    nodes += [
        helper.make_node("Conv", [source, "k1", "c1"], ["conv1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("Conv", ["relu1", "k2", "c2"], ["conv2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["conv2"], ["act2"], name="act2", alpha=0.01),
        helper.make_node("GlobalAveragePool", ["act2"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], name="fc", transB=1),
    ]
    shape = ["N", size, size, channels] if nhwc else ["N", channels, size, size]
    return _model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [
            numpy_helper.from_array(k1, "k1"),
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) * 0.1, "c1"),
            numpy_helper.from_array(k2, "k2"),
            numpy_helper.from_array(rng.standard_normal(5).astype(np.float32) * 0.1, "c2"),
            numpy_helper.from_array(fc, "fc"),
            numpy_helper.from_array(np.zeros(3, np.float32), "fcb"),
        ],
    )
