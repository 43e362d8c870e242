"""One-node (or few-node) ONNX models per op version onnx2torch lacks, against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnx_am import check_parity, import_onnx
from onnx_am.importer.converters import REGISTERED

I64 = np.int64
R = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def node(op: str, inputs: list[str], **attrs) -> list:
    return [helper.make_node(op, inputs, ["y"], name=f"{op}_node", **attrs)]


# id -> (nodes, input shape, initializers, opset)
CASES = {
    "ReduceMean-18 axes input": (
        node("ReduceMean", ["x", "axes"], keepdims=1),
        [2, 3, 4, 5],
        {"axes": np.array([2, 3], I64)},
        18,
    ),
    "ReduceMean-18 noop": (
        node("ReduceMean", ["x", "axes"], noop_with_empty_axes=1),
        [2, 3],
        {"axes": np.array([], I64)},
        18,
    ),
    "ReduceMax-18": (
        node("ReduceMax", ["x", "axes"], keepdims=0),
        [2, 3, 4],
        {"axes": np.array([-1], I64)},
        18,
    ),
    "ReduceMax-20": (
        node("ReduceMax", ["x", "axes"], keepdims=1),
        [2, 3, 4],
        {"axes": np.array([1], I64)},
        20,
    ),
    "ReduceL2-18": (node("ReduceL2", ["x", "axes"]), [2, 3, 4], {"axes": np.array([1], I64)}, 18),
    "Split-18 num_outputs uneven": (
        [
            helper.make_node("Split", ["x"], ["a", "b", "c"], name="split", axis=1, num_outputs=3),
            helper.make_node("Concat", ["c", "a"], ["y"], name="cat", axis=1),
        ],
        [2, 7, 3],
        {},
        18,
    ),
    "Split-18 sizes input": (
        [
            helper.make_node("Split", ["x", "sizes"], ["a", "b"], name="split", axis=2),
            helper.make_node("Mul", ["a", "a"], ["y"], name="mul"),
        ],
        [2, 3, 5],
        {"sizes": np.array([2, 3], I64)},
        18,
    ),
    "Pad-18 axes": (
        node("Pad", ["x", "pads", "", "axes"], mode="constant"),
        [1, 2, 4, 4],
        {"pads": np.array([1, 0, 2, 3], I64), "axes": np.array([2, 3], I64)},
        18,
    ),
    "Pad-18 constant value": (
        node("Pad", ["x", "pads", "v"]),
        [1, 2, 3],
        {"pads": np.array([0, 0, 1, 0, 1, 2], I64), "v": np.array(0.5, np.float32)},
        18,
    ),
    "Pad-19 reflect": (
        node("Pad", ["x", "pads"], mode="reflect"),
        [1, 2, 5, 5],
        {"pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], I64)},
        19,
    ),
    "Pad-19 edge": (
        node("Pad", ["x", "pads"], mode="edge"),
        [1, 2, 5, 5],
        {"pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], I64)},
        19,
    ),
    "Pad-19 wrap": (
        node("Pad", ["x", "pads"], mode="wrap"),
        [1, 2, 5, 5],
        {"pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], I64)},
        19,
    ),
    "Pad-13 reflect of the last axis of a 2-D frame (silero-vad)": (
        node("Pad", ["x", "pads"], mode="reflect"),
        [2, 10],
        {"pads": np.array([0, 3, 0, 3], I64)},
        13,
    ),
    "Pad-13 reflect with pads computed from Shape": (
        [
            helper.make_node("Shape", ["x"], ["s"], name="shape"),
            helper.make_node("Mul", ["s", "zero"], ["z"], name="zeros"),
            helper.make_node("Concat", ["z", "z"], ["zz"], name="concat", axis=0),
            helper.make_node("Add", ["zz", "p"], ["pads"], name="add"),
            helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode="reflect"),
        ],
        [2, 10],
        {"zero": np.zeros(2, I64), "p": np.array([0, 3, 0, 2], I64)},
        13,
    ),
    "Pad-11 edge of the last axis of a 3-D tensor": (
        node("Pad", ["x", "pads"], mode="edge"),
        [1, 2, 6],
        {"pads": np.array([0, 0, 2, 0, 0, 1], I64)},
        11,
    ),
    "Pad-13 reflect of 2 axes of a 5-D tensor": (
        node("Pad", ["x", "pads"], mode="reflect"),
        [2, 2, 2, 4, 5],
        {"pads": np.array([0, 0, 0, 1, 2, 0, 0, 0, 2, 1], I64)},
        13,
    ),
    "Pad-2 reflect attribute pads on a 2-D frame": (
        node("Pad", ["x"], mode="reflect", pads=[0, 2, 0, 1]),
        [2, 8],
        {},
        10,
    ),
    "Resize-18 nearest x2": (
        node(
            "Resize",
            ["x", "", "scales"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        [1, 2, 4, 4],
        {"scales": np.array([1, 1, 2, 2], np.float32)},
        18,
    ),
    "Resize-19 linear sizes": (
        node("Resize", ["x", "", "", "sizes"], mode="linear"),
        [1, 2, 4, 4],
        {"sizes": np.array([1, 2, 7, 9], I64)},
        19,
    ),
    "Gelu-20 erf": (node("Gelu", ["x"]), [2, 8], {}, 20),
    "Gelu-20 tanh": (node("Gelu", ["x"], approximate="tanh"), [2, 8], {}, 20),
    "Mish-18": (node("Mish", ["x"]), [2, 8], {}, 18),
    "HardSwish-14": (node("HardSwish", ["x"]), [2, 8], {}, 14),
    "HardSwish-22": (node("HardSwish", ["x"]), [2, 8], {}, 22),
    "HardSigmoid-6 paddle slope": (
        node("HardSigmoid", ["x"], alpha=1 / 6, beta=0.5),
        [2, 8],
        {},
        11,
    ),
    "LeakyRelu-16": (node("LeakyRelu", ["x"], alpha=0.1), [2, 8], {}, 16),
    "ThresholdedRelu-10": (node("ThresholdedRelu", ["x"], alpha=0.3), [2, 8], {}, 13),
    "BatchNormalization-15": (
        node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3),
        [2, 3, 4, 4],
        {"s": _w(3), "b": _w(3), "m": _w(3), "v": np.abs(_w(3)) + 0.5},
        15,
    ),
    "Gemm transB alpha beta": (
        node("Gemm", ["x", "w", "c"], transB=1, alpha=0.5, beta=2.0),
        [2, 6],
        {"w": _w(4, 6), "c": _w(4)},
        13,
    ),
    "Squeeze-13 / Unsqueeze-13": (
        [
            helper.make_node("Unsqueeze", ["x", "ax"], ["u"], name="unsq"),
            helper.make_node("Squeeze", ["u", "ax"], ["y"], name="sq"),
        ],
        [2, 3],
        {"ax": np.array([1], I64)},
        13,
    ),
    "Unsqueeze-21": (node("Unsqueeze", ["x", "ax"]), [2, 3], {"ax": np.array([-1], I64)}, 21),
    "Dropout-7": (node("Dropout", ["x"], ratio=0.3), [2, 8], {}, 7),
    "GlobalMaxPool": (node("GlobalMaxPool", ["x"]), [2, 3, 5, 5], {}, 13),
    "AveragePool-19": (
        node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        [1, 2, 7, 7],
        {},
        19,
    ),
    "Conv-22": (
        node("Conv", ["x", "w", "b"], pads=[1, 1, 1, 1]),
        [1, 2, 5, 5],
        {"w": _w(4, 2, 3, 3), "b": _w(4)},
        22,
    ),
    "Conv SAME_UPPER stride 2": (
        node("Conv", ["x", "w"], auto_pad="SAME_UPPER", strides=[2, 2]),
        [1, 2, 8, 8],
        {"w": _w(3, 2, 3, 3)},
        13,
    ),
    "Conv SAME_LOWER stride 2": (
        node("Conv", ["x", "w"], auto_pad="SAME_LOWER", strides=[2, 2]),
        [1, 2, 8, 8],
        {"w": _w(3, 2, 3, 3)},
        13,
    ),
    "MaxPool SAME_UPPER": (
        node("MaxPool", ["x"], auto_pad="SAME_UPPER", kernel_shape=[2, 2], strides=[2, 2]),
        [1, 2, 7, 7],
        {},
        13,
    ),
    "AveragePool SAME_UPPER exclude pad": (
        node("AveragePool", ["x"], auto_pad="SAME_UPPER", kernel_shape=[3, 3], strides=[2, 2]),
        [1, 2, 8, 8],
        {},
        13,
    ),
    "AveragePool SAME_LOWER include pad": (
        node("AveragePool", ["x"], auto_pad="SAME_LOWER", kernel_shape=[2, 2], count_include_pad=1),
        [1, 2, 5, 5],
        {},
        11,
    ),
    "AveragePool VALID": (
        node("AveragePool", ["x"], auto_pad="VALID", kernel_shape=[2, 2]),
        [1, 2, 5, 5],
        {},
        13,
    ),
    "Reshape-19 / Shape-19 / Flatten-21": (
        [
            helper.make_node("Shape", ["x"], ["s"], name="shape"),
            helper.make_node("Reshape", ["x", "s"], ["r"], name="reshape"),
            helper.make_node("Flatten", ["r"], ["y"], name="flatten", axis=1),
        ],
        [2, 3, 4],
        {},
        21,
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_op_matches_onnxruntime(case: str, make_model) -> None:
    nodes, shape, inits, opset = CASES[case]
    model = make_model(nodes, [("x", shape)], ["y"], inits, opset=opset)
    imported = import_onnx(model)
    result = check_parity(imported, samples=2)
    assert result.passed, (case, result.max_abs_diff)
    assert result.max_abs_diff <= 1e-4 * max(o.output_scale for o in result.outputs) + 1e-6


def test_registered_converters_are_listed() -> None:
    registered = set(REGISTERED)
    for expected in [("ReduceMean", 18), ("Split", 18), ("Pad", 19), ("Gelu", 20), ("Mish", 18)]:
        assert expected in registered


def test_a_second_converter_for_the_same_op_version_fails_loudly() -> None:
    """Two converters of this package for one op version: the second would never run."""
    from onnx_am.importer.converters._registry import register

    def convert(node, graph):  # never called
        raise AssertionError

    register("OnnxAmTestOnlyOp", (1,), domain="onnx_am.test")(convert)
    with pytest.raises(RuntimeError, match="two onnx-am converters for onnx_am.test::"):
        register("OnnxAmTestOnlyOp", (1,), domain="onnx_am.test")(convert)


def test_reshape_allowzero_with_a_computed_shape(make_model):
    # dynamo exports with dynamic axes: Reshape(x, Concat(Shape(x)[:1], [-1, 4]), allowzero=1)
    # (khmersm's character transformer, benchmarks/transformer_models)
    from onnx_am.importer.converters.reshape import OnnxReshapeAllowZero

    nodes = [
        helper.make_node("Shape", ["x"], ["n"], name="shape", start=0, end=1),
        helper.make_node("Concat", ["n", "rest"], ["s"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape", allowzero=1),
    ]
    model = make_model(nodes, [("x", ["N", 3, 4])], ["y"], {"rest": np.array([-1, 4], I64)}, 17)
    imported = import_onnx(model)
    assert any(isinstance(m, OnnxReshapeAllowZero) for m in imported.module.modules())
    result = check_parity(imported, samples=3)
    assert result.passed, result.summary()
