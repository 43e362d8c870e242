"""onnxruntime's ``com.microsoft`` ``DynamicQuantizeLSTM`` and its CPU sigmoid / tanh.

One-node models built here are compared with onnxruntime (one intra-op thread, so its batch
is quantized as one chunk). On the x86-64 machine with FMA these tests were written on the
outputs are bit-identical; ``ATOL`` leaves room for one float32 ulp elsewhere. The backward
is checked against hand-written float64 formulas: rounding passes straight through, so the
gradient is that of the same LSTM with the dequantized weights, at the quantized forward's
gate values.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx2torch
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

import onnx_am.importer.converters  # noqa: F401  (registers the converters)
from onnx_am import check_parity, import_onnx
from onnx_am.importer.converters.onnxruntime_math import (
    OnnxruntimeSigmoid,
    OnnxruntimeTanh,
    onnxruntime_sigmoid,
    onnxruntime_tanh,
)
from onnx_am.importer.converters.quantized_recurrent import (
    QuantizedWeight,
    dynamic_quantized_matmul,
)
from onnx_am.importer.module_names import legal_module_names

ATOL = 1e-5


def lstm_model(
    steps: int, batch: int, inputs: int, hidden: int, direction: str = "forward", **options
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One DynamicQuantizeLSTM node (unnamed: its module name needs the domain's dots
    replaced) with int8 or uint8 weights, per-tensor or per-column scales, optional states."""
    rng = np.random.default_rng(steps + 10 * hidden)
    dirs = 2 if direction == "bidirectional" else 1
    gates = 4 * hidden
    signed = options.pop("signed", True)
    per_column = options.pop("per_column", False)
    states = options.pop("states", False)
    lengths = options.pop("lengths", None)
    scale_shape = (dirs, gates) if per_column else (dirs,)
    if signed:
        w = rng.integers(-127, 128, (dirs, inputs, gates), dtype=np.int8)
        r = rng.integers(-127, 128, (dirs, hidden, gates), dtype=np.int8)
        wz = rz = np.zeros(scale_shape, np.int8)
    else:
        w = rng.integers(0, 256, (dirs, inputs, gates), dtype=np.uint8)
        r = rng.integers(0, 256, (dirs, hidden, gates), dtype=np.uint8)
        wz = rz = np.full(scale_shape, 128, np.uint8)  # one zero point per direction
    inits = {
        "W": w, "R": r, "B": rng.normal(0, 0.5, (dirs, 2 * gates)).astype(np.float32),
        "ws": (rng.uniform(0.5, 1.5, scale_shape) / (8 * np.sqrt(inputs))).astype(np.float32),
        "wz": wz,
        "rs": (rng.uniform(0.5, 1.5, scale_shape) / (8 * np.sqrt(hidden))).astype(np.float32),
        "rz": rz,
    }  # fmt: skip
    feeds = {"X": rng.normal(0, 1.5, (steps, batch, inputs)).astype(np.float32)}
    names = ["X", "W", "R", "B", "", "", "", "", "ws", "wz", "rs", "rz"]
    graph_inputs = [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, feeds["X"].shape)]
    if lengths is not None:
        names[4] = "lens"
        feeds["lens"] = np.array(lengths, np.int32)
        graph_inputs.append(helper.make_tensor_value_info("lens", onnx.TensorProto.INT32, [batch]))
    if states:
        for index, name in ((5, "h0"), (6, "c0")):
            names[index] = name
            feeds[name] = rng.normal(0, 0.5, (dirs, batch, hidden)).astype(np.float32)
            graph_inputs.append(
                helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, feeds[name].shape)
            )
    node = helper.make_node(
        "DynamicQuantizeLSTM", names, ["Y", "Y_h", "Y_c"], domain="com.microsoft",
        hidden_size=hidden, direction=direction, **options,
    )  # fmt: skip
    graph = helper.make_graph(
        [node], "dqlstm", graph_inputs,
        [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in node.output],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 14), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8), feeds


def onnxruntime_run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def convert(model: onnx.ModelProto) -> nn.Module:
    with legal_module_names():
        return onnx2torch.convert(model)


CASES = {
    # ddddocr common_old.onnx: X [16, 1, 512], bidirectional, hidden 512, int8 per tensor
    "bidirectional, common_old's shapes": ((16, 1, 512, 512, "bidirectional"), {}),
    "forward, uint8, per-column scales, states": (
        (5, 1, 7, 6, "forward"), {"signed": False, "per_column": True, "states": True}
    ),
    "bidirectional, sequence shorter than X": ((6, 1, 5, 4, "bidirectional"), {"lengths": [4]}),
    "reverse, batch 3, clip, input_forget": (
        (4, 3, 5, 6, "reverse"), {"clip": 2.5, "input_forget": 1, "states": True}
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_dynamic_quantize_lstm_matches_onnxruntime(case: str) -> None:
    shape, options = CASES[case]
    model, feeds = lstm_model(*shape, **dict(options))
    want = onnxruntime_run(model, feeds)
    with torch.no_grad():
        got = convert(model)(*(torch.from_numpy(v) for v in feeds.values()))
    for name, g, w in zip(["Y", "Y_h", "Y_c"], got, want, strict=True):
        assert g.shape == w.shape, (name, g.shape, w.shape)
        np.testing.assert_allclose(g.numpy(), w, atol=ATOL, rtol=0, err_msg=f"{case}: {name}")


def test_dynamic_quantize_lstm_imports_and_passes_parity() -> None:
    """Batch first around the node (``[N, T, in]`` in, ``[N, T, dirs, H]`` out), as a person's
    model would be; a batch quantized as one range makes rows depend on each other, so the
    importer runs rows one at a time, as onnxruntime's parity runs do."""
    model, _ = lstm_model(6, 1, 8, 4, "bidirectional")
    graph = model.graph
    graph.node[0].input[0] = "X_tbi"
    graph.node[0].output[0] = "Y_tdbh"
    graph.node.insert(0, helper.make_node("Transpose", ["X"], ["X_tbi"], perm=[1, 0, 2]))
    graph.node.append(helper.make_node("Transpose", ["Y_tdbh"], ["Y"], perm=[2, 0, 1, 3]))
    graph.input[0].CopyFrom(helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, ["N", 6, 8]))
    del graph.output[1:]
    imported = import_onnx(model)
    assert imported.batch.mode == "rowwise"
    result = check_parity(imported, samples=2)
    assert result.passed, result.summary()
    assert result.max_abs_diff <= ATOL
    assert result.tolerance == 2**-8  # the 8-bit quantization's, stated in the report


def test_quantized_matmul_gradient_is_straight_through() -> None:
    """d/da of ``sum(G * (a @ W))`` quantized is ``G @ dequantized(W)^T`` (float64)."""
    rng = np.random.default_rng(3)
    w = rng.integers(0, 256, (5, 4)).astype(np.uint8)
    zero, scale = 120, np.float32([0.02, 0.01, 0.03, 0.005])
    weight = QuantizedWeight.of_direction(
        torch.from_numpy(w)[None], torch.from_numpy(scale)[None], torch.tensor([[zero] * 4]), 0
    )
    a = torch.tensor(rng.normal(size=(3, 5)), dtype=torch.float32, requires_grad=True)
    g = rng.normal(size=(3, 4))
    (dynamic_quantized_matmul(a, weight) * torch.from_numpy(g)).sum().backward()
    dequantized = (w.astype(np.float64) - zero) * scale.astype(np.float64)
    np.testing.assert_allclose(a.grad.numpy(), g @ dequantized.T, rtol=1e-5, atol=1e-7)


def test_dynamic_quantize_lstm_gradient_is_that_of_the_dequantized_cell() -> None:
    """One step from zero states: ``Y = o * tanh(i * g)`` with the gates of the quantized
    forward; the gradient to X is the true cell's through the dequantized W."""
    steps, inputs, hidden = 1, 6, 3
    model, feeds = lstm_model(steps, 1, inputs, hidden)
    module = convert(model)
    x = torch.from_numpy(feeds["X"]).requires_grad_(True)
    y = module(x)[0]
    grad_y = np.random.default_rng(4).normal(size=y.shape)
    (y * torch.from_numpy(grad_y)).sum().backward()

    params = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w_deq = params["W"][0].astype(np.float64) * params["ws"][0]
    weight = QuantizedWeight.of_direction(
        torch.from_numpy(params["W"]), torch.from_numpy(params["ws"]), None, 0
    )
    bias = params["B"][0, : 4 * hidden] + params["B"][0, 4 * hidden :]
    with torch.no_grad():
        pre = (dynamic_quantized_matmul(x[0], weight) + torch.from_numpy(bias)).double().numpy()
    p_i, p_o, _, p_g = np.split(pre, 4, axis=-1)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    i, o, g = sig(p_i), sig(p_o), np.tanh(p_g)
    c = i * g
    d_c = grad_y[0, 0] * o * (1 - np.tanh(c) ** 2)
    grad_pre = np.concatenate(
        [
            d_c * g * i * (1 - i),
            grad_y[0, 0] * np.tanh(c) * o * (1 - o),
            0 * c,
            d_c * i * (1 - g**2),
        ],
        axis=-1,
    )
    np.testing.assert_allclose(x.grad.numpy()[0], grad_pre @ w_deq.T, rtol=1e-4, atol=1e-7)


def _activation_model(op: str, rounding: bool) -> onnx.ModelProto:
    nodes = [helper.make_node(op, ["x"], ["y"], name="act")]
    outputs = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)]
    if rounding:
        nodes.append(helper.make_node("DynamicQuantizeLinear", ["y"], ["q", "s", "z"], name="q"))
        outputs = [helper.make_tensor_value_info("q", onnx.TensorProto.UINT8, None)]
    graph = helper.make_graph(
        nodes, "act", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None])], outputs
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
def test_onnxruntime_activation_is_bit_identical_and_differentiates_truly(op: str) -> None:
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0, 4, 100_000), [0, -30, 30, 1e-30]]).astype(np.float32)
    session = ort.InferenceSession(
        _activation_model(op, rounding=False).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    want = session.run(None, {"x": x})[0]
    exact = onnxruntime_sigmoid if op == "Sigmoid" else onnxruntime_tanh
    xt = torch.from_numpy(x).requires_grad_(True)
    got = exact(xt)
    assert int((got.detach().numpy() != want).sum()) == 0
    got.sum().backward()
    x64 = x.astype(np.float64)
    true = 1 / (1 + np.exp(-x64)) if op == "Sigmoid" else np.tanh(x64)
    slope = true * (1 - true) if op == "Sigmoid" else 1 - true**2
    np.testing.assert_allclose(xt.grad.numpy(), slope, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize(
    ("op", "exact"), [("Sigmoid", OnnxruntimeSigmoid), ("Tanh", OnnxruntimeTanh)]
)
def test_graphs_that_round_get_onnxruntimes_activations(op: str, exact: type) -> None:
    rounding = onnx2torch.convert(_activation_model(op, rounding=True))
    plain = onnx2torch.convert(_activation_model(op, rounding=False))
    assert any(isinstance(m, exact) for m in rounding.modules())
    assert not any(isinstance(m, exact) for m in plain.modules())


def test_legal_module_names_are_restored() -> None:
    from onnx2torch.onnx_graph import OnnxGraph

    before = OnnxGraph.generate_node_name
    with legal_module_names():
        node = helper.make_node("X", [], [], domain="com.microsoft", name="a.b")
        assert OnnxGraph.generate_node_name(node) == "com/microsoft/a/b"
    assert OnnxGraph.generate_node_name is before
