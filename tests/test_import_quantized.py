"""Quantized models import as float graphs that compute what onnxruntime computes.

A small CNN is quantized by onnxruntime.quantization here (static QDQ with a tiny
calibration reader, static QOperator for QLinearConv, dynamic for ConvInteger/MatMulInteger)
and compared with onnxruntime running the unmodified quantized file. The tolerance is the
one the quantization implies (one 8-bit step, 2^-8 relative, see onnx_am.reference.quantized);
on these models the values are in fact identical. Rounding is straight-through backward.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnx2torch
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    quantize_dynamic,
    quantize_static,
)
from torch import nn

import onnx_am.importer.converters  # noqa: F401  (registers the quantized converters)
from onnx_am import check_parity, import_onnx


class _Reader(CalibrationDataReader):
    """Four random images, enough to calibrate the ranges."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.batches = iter(
            [{"x": rng.uniform(-1, 1, (1, 1, 8, 8)).astype(np.float32)} for _ in range(4)]
        )

    def get_next(self):
        return next(self.batches, None)


@pytest.fixture(scope="module")
def float_cnn(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(24, 5),
    ).eval()
    buffer = io.BytesIO()
    torch.onnx.export(
        net, torch.zeros(1, 1, 8, 8), buffer, input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=13, dynamo=False,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("quant") / "cnn.onnx"
    path.write_bytes(buffer.getvalue())
    return path


def _quantized(float_cnn: Path, kind: str) -> Path:
    out = float_cnn.with_name(f"cnn_{kind}.onnx")
    if not out.exists():
        if kind == "dynamic":
            quantize_dynamic(str(float_cnn), str(out))
        else:
            quant_format = QuantFormat.QDQ if kind == "qdq" else QuantFormat.QOperator
            quantize_static(
                str(float_cnn), str(out), _Reader(), quant_format=quant_format,
                op_types_to_quantize=None if kind == "qdq" else ["Conv"],
            )  # fmt: skip
    return out


EXPECTED_OPS = {
    "qdq": {"QuantizeLinear", "DequantizeLinear"},
    "qoperator": {"QLinearConv"},
    "dynamic": {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"},
}


@pytest.mark.parametrize("kind", list(EXPECTED_OPS))
def test_quantized_cnn_matches_onnxruntime_on_the_quantized_file(float_cnn, kind) -> None:
    path = _quantized(float_cnn, kind)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert EXPECTED_OPS[kind] <= ops, ops
    imported = import_onnx(path)
    result = check_parity(imported, samples=4)
    assert result.tolerance == 2**-8 and "8-bit quantization" in result.tolerance_note
    assert result.passed, result
    # Same rounding and exact integer sums: identical on these models.
    assert result.max_abs_diff <= 1e-6, result.max_abs_diff
    if kind == "dynamic":
        # The range of DynamicQuantizeLinear is that of the whole batch: rows are coupled.
        assert imported.batch.mode == "rowwise"
    if kind == "qdq":
        assert any("dequantized" in note for note in imported.prepass_notes)


def test_quantized_cnn_gradient_passes_through_rounding(float_cnn) -> None:
    imported = import_onnx(_quantized(float_cnn, "qdq"))
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x.requires_grad_(True)
    (out,) = imported.run(x)
    out[:, 3].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def _qdq_pair(zero_type: int, zero: int, scale: float) -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(np.array(scale, np.float32), "s"),
        helper.make_tensor("z", zero_type, [], [zero]),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq"),
    ]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", 1, ["N", 6])],
        [helper.make_tensor_value_info("y", 1, None)], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize(
    "zero_type, zero", [(onnx.TensorProto.UINT8, 128), (onnx.TensorProto.INT8, -3)]
)
def test_quantize_dequantize_values_and_straight_through_gradient(zero_type, zero) -> None:
    scale = 0.05
    model = _qdq_pair(zero_type, zero, scale)
    low, high = (0, 255) if zero_type == onnx.TensorProto.UINT8 else (-128, 127)
    # Inside the range, on ties (x = (k + 0.5) * scale rounds half to even), and saturated.
    x = np.array(
        [[0.0, 0.025, 0.075, -0.6, (high - zero + 5) * scale, (low - zero - 5) * scale]],
        np.float32,
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    module = onnx2torch.convert(model)
    xt = torch.from_numpy(x).requires_grad_(True)
    got = module(xt)
    np.testing.assert_array_equal(got.detach().numpy(), want)
    got.sum().backward()
    # Straight-through: d dequant(quant(x)) / dx = 1 inside the range, 0 where saturated.
    np.testing.assert_array_equal(xt.grad.numpy(), [[1, 1, 1, 1, 0, 0]])


def test_dynamic_quantize_linear_outputs_and_gradient() -> None:
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"], name="dql")
    graph = helper.make_graph(
        [node], "dql", [helper.make_tensor_value_info("x", 1, [3, 5])],
        [helper.make_tensor_value_info(n, t, None) for n, t in (("y", 2), ("s", 1), ("z", 2))],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=8)
    x = np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})
    xt = torch.from_numpy(x).requires_grad_(True)
    got = onnx2torch.convert(model)(xt)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.detach().numpy(), w.astype(np.float32), atol=1e-7, rtol=0)
    got[0].sum().backward()
    # The quantized value has slope 1 / scale; scale and zero point are held constant.
    np.testing.assert_allclose(xt.grad.numpy(), np.full((3, 5), 1 / want[1]), rtol=1e-6)


def _one_node(op, inputs, inits, x_shape, x_type, opset=10, **attrs) -> onnx.ModelProto:
    y_type = onnx.TensorProto.INT32 if op.endswith("Integer") else onnx.TensorProto.UINT8
    graph = helper.make_graph(
        [helper.make_node(op, inputs, ["y"], name="n", **attrs)], "one",
        [helper.make_tensor_value_info("x", x_type, x_shape)],
        [helper.make_tensor_value_info("y", y_type, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


R = np.random.default_rng(5)
U8 = onnx.TensorProto.UINT8
ONE_NODE = {
    "MatMulInteger per-column zero point": (
        "MatMulInteger", ["x", "b", "az", "bz"],
        {"b": R.integers(-128, 127, (6, 4), dtype=np.int8), "az": np.array(7, np.uint8),
         "bz": np.array([1, -2, 0, 3], np.int8)},
        [3, 6], {},
    ),
    "ConvInteger asymmetric pads": (
        "ConvInteger", ["x", "w", "xz"],
        {"w": R.integers(0, 255, (3, 2, 3, 3), dtype=np.uint8), "xz": np.array(100, np.uint8)},
        [1, 2, 6, 6], {"pads": [1, 0, 0, 1], "strides": [1, 2]},
    ),
    "QLinearConv per-channel weights and bias": (
        "QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
        {"xs": np.array(0.02, np.float32), "xz": np.array(120, np.uint8),
         "w": R.integers(-100, 100, (4, 2, 3, 3), dtype=np.int8),
         "ws": np.array([0.01, 0.02, 0.005, 0.03], np.float32), "wz": np.zeros(4, np.int8),
         "ys": np.array(0.1, np.float32), "yz": np.array(128, np.uint8),
         "b": R.integers(-500, 500, 4, dtype=np.int32)},
        [1, 2, 5, 5], {"pads": [1, 1, 1, 1]},
    ),
    "QLinearMatMul": (
        "QLinearMatMul", ["x", "as", "az", "b", "bs", "bz", "ys", "yz"],
        {"as": np.array(0.03, np.float32), "az": np.array(128, np.uint8),
         "b": R.integers(0, 255, (6, 4), dtype=np.uint8), "bs": np.array(0.01, np.float32),
         "bz": np.array(130, np.uint8), "ys": np.array(0.2, np.float32),
         "yz": np.array(120, np.uint8)},
        [3, 6], {},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ONE_NODE))
def test_integer_op_matches_onnxruntime(case: str) -> None:
    op, inputs, inits, shape, attrs = ONE_NODE[case]
    model = _one_node(op, inputs, inits, shape, U8, **attrs)
    x = np.random.default_rng(9).integers(0, 255, shape, dtype=np.uint8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    got = onnx2torch.convert(model)(torch.from_numpy(x.astype(np.float32)))
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.detach().numpy(), want.astype(np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["qdq", "dynamic"])
def test_small_analysis_of_a_quantized_model_agrees_with_onnxruntime(float_cnn, kind) -> None:
    from onnx_am.engine.config import AMConfig
    from onnx_am.engine.maximizer import maximize

    imported = import_onnx(_quantized(float_cnn, kind))
    report = maximize(
        imported, ["y:0", "y:3"], ["standard", "decoupled(0.3)"], AMConfig.of(steps=4)
    )
    assert report.tolerance == 2**-8
    assert all(r.agrees for r in report.results), [
        (r.activation, r.activation_onnxruntime) for r in report.results
    ]
