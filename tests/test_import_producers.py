"""One test per row of README's "Supported models" table: producer patterns vs onnxruntime.

Committed fixtures (``tests/fixtures``) come from the real producers; the in-memory models
here reproduce each producer's characteristic graph so every row is exercised even where
the producer (TensorFlow, Paddle) is not installed.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn

from onnx_am import check_parity, import_onnx

FIXTURES = Path(__file__).resolve().parent / "fixtures"
R = np.random.default_rng(1)


def _w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (R.standard_normal(shape) * scale).astype(np.float32)


def _assert_parity(imported, samples: int = 3) -> None:
    result = check_parity(imported, samples=samples)
    scale = max(o.output_scale for o in result.outputs)
    assert result.passed and result.max_abs_diff <= 1e-4 * scale + 1e-6, result


class SmallCnn(nn.Module):
    def __init__(self, act: nn.Module | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)  # weights only; the test's inputs use their own generator
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.act = act or nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.head = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.bn1(self.conv1(x))))
        x = nn.functional.gelu(self.conv2(x))
        return self.head(torch.flatten(x, 1))


def _legacy_export(module: nn.Module, opset: int, dynamic: bool = True) -> bytes:
    buffer = io.BytesIO()
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    torch.onnx.export(
        module.eval(),
        (torch.zeros(1, 3, 16, 16),),
        buffer,
        dynamo=False,
        opset_version=opset,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes=axes,
    )
    return buffer.getvalue()


@pytest.mark.parametrize("opset", [11, 17])
def test_torch_legacy_exporter(opset: int) -> None:
    imported = import_onnx(_legacy_export(SmallCnn(), opset))
    assert imported.input.name == "input" and imported.input.layout == "NCHW"
    assert imported.input.shape == ("batch", 3, 16, 16)
    assert imported.batch.mode == "dynamic"
    _assert_parity(imported)


def test_torch_legacy_relu6_is_clip() -> None:
    imported = import_onnx(_legacy_export(SmallCnn(nn.ReLU6()), 13))
    assert any(n.op_type == "Clip" for n in imported.original.graph.node)
    _assert_parity(imported)


@pytest.fixture(scope="module")
def dynamo_models(tmp_path_factory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("dynamo")
    paths = {}
    for opset in (18, 20):
        path = folder / f"small_cnn_opset{opset}.onnx"
        torch.onnx.export(
            SmallCnn().eval(),
            (torch.zeros(1, 3, 16, 16),),
            str(path),
            dynamo=True,
            opset_version=opset,
            external_data=True,
            input_names=["input"],
        )
        paths[opset] = path
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("opset", [18, 20])
def test_torch_dynamo_exporter_with_external_data(opset: int, dynamo_models) -> None:
    path = dynamo_models[opset]
    assert path.with_name(path.name + ".data").is_file()
    imported = import_onnx(path)
    assert imported.opsets["ai.onnx"] == opset
    assert not any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in imported.original.graph.initializer
    )
    _assert_parity(imported)


def tf2onnx_like(opset: int) -> onnx.ModelProto:
    """NHWC input -> Transpose, SAME_UPPER conv/pools, BatchNorm, Dense as MatMul + Add."""
    nodes = [
        helper.make_node(
            "Transpose", ["input"], ["nchw"], name="model/transpose", perm=[0, 3, 1, 2]
        ),
        helper.make_node(
            "Conv",
            ["nchw", "k1", "b1"],
            ["c1"],
            name="model/conv1/BiasAdd",
            auto_pad="SAME_UPPER",
            strides=[2, 2],
            kernel_shape=[3, 3],
        ),
        helper.make_node(
            "BatchNormalization",
            ["c1", "g", "be", "mu", "var"],
            ["bn"],
            name="model/bn/FusedBatchNormV3",
            epsilon=1e-3,
        ),
        helper.make_node("Relu", ["bn"], ["r1"], name="model/relu1/Relu"),
        helper.make_node(
            "MaxPool",
            ["r1"],
            ["p1"],
            name="model/pool/MaxPool",
            auto_pad="SAME_UPPER",
            kernel_shape=[3, 3],
            strides=[2, 2],
        ),
        helper.make_node(
            "AveragePool",
            ["p1"],
            ["p2"],
            name="model/avg/AvgPool",
            auto_pad="SAME_UPPER",
            kernel_shape=[2, 2],
            strides=[1, 1],
        ),
        helper.make_node("Transpose", ["p2"], ["nhwc"], name="model/back", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["nhwc", "flat"], ["f"], name="model/flatten/Reshape"),
        helper.make_node("MatMul", ["f", "wd"], ["m"], name="model/dense/MatMul"),
        helper.make_node("Add", ["m", "bd"], ["logits"], name="model/dense/BiasAdd"),
    ]
    inits = {
        "k1": _w(6, 3, 3, 3),
        "b1": _w(6),
        "g": _w(6) + 1,
        "be": _w(6),
        "mu": _w(6),
        "var": np.abs(_w(6)) + 0.5,
        "flat": np.array([-1, 6 * 3 * 3], np.int64),
        "wd": _w(54, 4),
        "bd": _w(4),
    }
    graph = helper.make_graph(
        nodes,
        "tf2onnx",
        [helper.make_tensor_value_info("input", 1, ["unk__1", 11, 11, 3])],
        [helper.make_tensor_value_info("logits", 1, ["unk__1", 4])],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    model.producer_name = "tf2onnx"
    return model


@pytest.mark.parametrize("opset", [13, 18])
def test_tf2onnx_keras_pattern(opset: int) -> None:
    imported = import_onnx(tf2onnx_like(opset))
    assert imported.input.layout == "NHWC" and imported.input.sample_shape == (11, 11, 3)
    assert any("auto_pad" in note for note in imported.prepass_notes)
    _assert_parity(imported)


def test_tf2onnx_fixture_with_unknown_spatial_size() -> None:
    imported = import_onnx(FIXTURES / "tf2onnx_cnn.onnx", input_shape=(1, 13, 10, 3))
    assert imported.input.layout == "NHWC"
    _assert_parity(imported)


def paddle_like(opset: int) -> onnx.ModelProto:
    """MobileNetV3 block: Conv -> HardSwish -> SE (GAP, Conv, Relu, Conv, HardSigmoid, Mul)."""
    if opset >= 14:
        swish = [helper.make_node("HardSwish", ["c1"], ["hs"], name="hardswish_0")]
    else:  # older Paddle exports spell hard-swish as x * HardSigmoid(x, 1/6, 0.5)
        swish = [
            helper.make_node(
                "HardSigmoid", ["c1"], ["hsig"], name="hs_gate", alpha=1 / 6, beta=0.5
            ),
            helper.make_node("Mul", ["c1", "hsig"], ["hs"], name="hardswish_0"),
        ]
    nodes = [
        helper.make_node(
            "Conv", ["x", "w1", "b1"], ["c1"], name="conv2d_0", pads=[1, 1, 1, 1], strides=[2, 2]
        ),
        *swish,
        helper.make_node("GlobalAveragePool", ["hs"], ["gap"], name="pool2d_0"),
        helper.make_node("Conv", ["gap", "w2", "b2"], ["se1"], name="conv2d_1"),
        helper.make_node("Relu", ["se1"], ["se1r"], name="relu_0"),
        helper.make_node("Conv", ["se1r", "w3", "b3"], ["se2"], name="conv2d_2"),
        helper.make_node(
            "HardSigmoid", ["se2"], ["gate"], name="hardsigmoid_0", alpha=0.2, beta=0.5
        ),
        helper.make_node("Mul", ["hs", "gate"], ["scaled"], name="elementwise_mul_0"),
        helper.make_node("GlobalAveragePool", ["scaled"], ["g2"], name="pool2d_1"),
        helper.make_node("Flatten", ["g2"], ["fl"], name="flatten_0", axis=1),
        helper.make_node("Gemm", ["fl", "wf", "bf"], ["out"], name="linear_0"),
    ]
    inits = {
        "w1": _w(8, 3, 3, 3),
        "b1": _w(8),
        "w2": _w(2, 8, 1, 1),
        "b2": _w(2),
        "w3": _w(8, 2, 1, 1),
        "b3": _w(8),
        "wf": _w(8, 5),
        "bf": _w(5),
    }
    graph = helper.make_graph(
        nodes,
        "paddle",
        [helper.make_tensor_value_info("x", 1, [-1, 3, 16, 16])],
        [helper.make_tensor_value_info("out", 1, [-1, 5])],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)
    model.producer_name = "PaddlePaddle"
    return model


@pytest.mark.parametrize("opset", [11, 14])
def test_paddle_mobilenetv3_pattern(opset: int) -> None:
    _assert_parity(import_onnx(paddle_like(opset)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["paddle_mobilenetv3_like.onnx", "paddle_mobilenetv3_like_opset14.onnx"]
)
def test_paddle_fixtures(name: str) -> None:
    imported = import_onnx(FIXTURES / name)
    assert imported.input.layout == "NCHW"
    _assert_parity(imported)


def _constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node(
        "Constant",
        [],
        [name],
        name=f"const_{name}",
        value=onnx.numpy_helper.from_array(value, name),
    )


def zoo_like(opset: int) -> onnx.ModelProto:
    """Old model-zoo graph: weights in Constant nodes, Dropout, Reshape, Gemm, Softmax."""
    nodes = [
        _constant("w1", _w(4, 1, 3, 3)),
        _constant("b1", _w(4)),
        _constant("wf", _w(5, 4 * 3 * 3)),
        _constant("bf", _w(5)),
        helper.make_node(
            "Conv", ["data", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Dropout", ["p1"], ["d1"], ratio=0.5),
        helper.make_node("Flatten", ["d1"], ["f1"], axis=1),
        helper.make_node("Gemm", ["f1", "wf", "bf"], ["g1"], transB=1),
        helper.make_node("Softmax", ["g1"], ["prob"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "zoo",
        [helper.make_tensor_value_info("data", 1, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("prob", 1, [1, 5])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=3)


@pytest.mark.parametrize("opset", [7, 8, 9])
def test_model_zoo_constants_and_dropout(opset: int) -> None:
    imported = import_onnx(zoo_like(opset))
    assert any("upgraded opset" in note for note in imported.prepass_notes)
    assert any("Constant" in note for note in imported.prepass_notes)
    assert all(n.name for n in imported.prepared.graph.node)
    _assert_parity(imported)


def mtcnn_like() -> onnx.ModelProto:
    """MTCNN P-Net-like: Conv -> PRelu (per channel) -> MaxPool -> Conv -> PRelu -> heads."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("PRelu", ["c1", "a1"], ["r1"], name="prelu1"),
        helper.make_node(
            "MaxPool",
            ["r1"],
            ["p1"],
            name="pool1",
            kernel_shape=[2, 2],
            strides=[2, 2],
            ceil_mode=1,
        ),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("PRelu", ["c2", "a2"], ["r2"], name="prelu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["cls"], name="conv4-1"),
        helper.make_node("Softmax", ["cls"], ["prob"], name="prob1", axis=1),
        helper.make_node("Conv", ["r2", "w4", "b4"], ["box"], name="conv4-2"),
    ]
    inits = {
        "w1": _w(4, 3, 3, 3),
        "b1": _w(4),
        "a1": np.abs(_w(4, 1, 1)),
        "w2": _w(6, 4, 3, 3),
        "b2": _w(6),
        "a2": np.abs(_w(6, 1, 1)),
        "w3": _w(2, 6, 1, 1),
        "b3": _w(2),
        "w4": _w(4, 6, 1, 1),
        "b4": _w(4),
    }
    graph = helper.make_graph(
        nodes,
        "pnet",
        [helper.make_tensor_value_info("x", 1, ["N", 3, 13, 13])],
        [
            helper.make_tensor_value_info("prob", 1, None),
            helper.make_tensor_value_info("box", 1, None),
        ],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)


def test_mtcnn_prelu_two_outputs() -> None:
    imported = import_onnx(mtcnn_like())
    assert imported.output_names == ["prob", "box"]
    result = check_parity(imported)
    assert result.passed and len(result.outputs) == 4  # 2 outputs, at batch 1 and 4


def mobilenetv2_like(opset: int) -> onnx.ModelProto:
    """Depthwise-separable block with ReLU6 as Clip (attributes < 11, inputs >= 11)."""

    def relu6(src: str, dst: str, name: str) -> onnx.NodeProto:
        if opset < 11:
            return helper.make_node("Clip", [src], [dst], name=name, min=0.0, max=6.0)
        return helper.make_node("Clip", [src, "zero", "six"], [dst], name=name)

    nodes = [
        helper.make_node(
            "Conv", ["x", "w1", "b1"], ["c1"], name="expand", pads=[1, 1, 1, 1], strides=[2, 2]
        ),
        relu6("c1", "r1", "expand_relu6"),
        helper.make_node(
            "Conv", ["r1", "wd", "bd"], ["c2"], name="depthwise", pads=[1, 1, 1, 1], group=8
        ),
        relu6("c2", "r2", "depthwise_relu6"),
        helper.make_node("Conv", ["r2", "wp", "bp"], ["c3"], name="project"),
        helper.make_node("GlobalAveragePool", ["c3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["out"], name="flatten"),
    ]
    inits = {
        "w1": _w(8, 3, 3, 3, scale=2.0),
        "b1": _w(8),
        "wd": _w(8, 1, 3, 3, scale=2.0),
        "bd": _w(8),
        "wp": _w(4, 8, 1, 1),
        "bp": _w(4),
    }
    if opset >= 11:
        inits |= {"zero": np.array(0, np.float32), "six": np.array(6, np.float32)}
    graph = helper.make_graph(
        nodes,
        "mbv2",
        [helper.make_tensor_value_info("x", 1, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("out", 1, [1, 4])],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=6)


@pytest.mark.parametrize("opset", [9, 12])
def test_mobilenetv2_clip_relu6(opset: int) -> None:
    imported = import_onnx(mobilenetv2_like(opset))
    result = check_parity(imported, samples=3, low=-3.0, high=3.0)
    assert result.passed, result


class SharedZeroBiases(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        with torch.no_grad():
            self.a.bias.zero_()
            self.b.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def test_torch_legacy_deduplicated_weights_behind_identity() -> None:
    # The legacy exporter shares equal initializers through Identity nodes (ResNet's zero
    # biases after BatchNorm folding); Conv needs them as initializers.
    data = _legacy_export_module(SharedZeroBiases(), (1, 3, 8, 8))
    original = onnx.load_from_string(data)
    assert any(n.op_type == "Identity" for n in original.graph.node)
    imported = import_onnx(data)
    assert any("Identity" in note for note in imported.prepass_notes)
    _assert_parity(imported)


def _legacy_export_module(module: nn.Module, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(module.eval(), (torch.zeros(shape),), buffer, dynamo=False, opset_version=17)
    return buffer.getvalue()
