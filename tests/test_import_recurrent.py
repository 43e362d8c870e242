"""LSTM / GRU / RNN converters: one-node models against onnxruntime, every output compared.

The converted module is fed the same X, initial states and sequence lengths as onnxruntime
(all graph inputs), float32, ``atol = 1e-5`` (values are bounded by the tanh/sigmoid gates).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx2torch
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

import onnx_am.importer.converters  # noqa: F401  (registers the recurrent converters)
from onnx_am import check_parity, import_onnx

ATOL = 1e-5
T, BATCH, IN, HIDDEN = 5, 3, 4, 6
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent_model(cell: str, opset: int = 14, **options) -> tuple[onnx.ModelProto, dict]:
    """One recurrent node with every optional input the options ask for, plus feeds."""
    rng = np.random.default_rng(len(cell) + 7 * len(options))
    direction = options.pop("direction", "forward")
    layout = options.get("layout", 0)
    with_states = options.pop("states", False)
    with_lens = options.pop("lens", False)
    peepholes = options.pop("peepholes", False)
    dirs = 2 if direction == "bidirectional" else 1
    gates = GATES[cell] * HIDDEN
    inits = {
        "W": rng.standard_normal((dirs, gates, IN)).astype(np.float32) * 0.5,
        "R": rng.standard_normal((dirs, gates, HIDDEN)).astype(np.float32) * 0.5,
        "B": rng.standard_normal((dirs, 2 * gates)).astype(np.float32) * 0.5,
    }
    x_shape = [BATCH, T, IN] if layout else [T, BATCH, IN]
    state_shape = [BATCH, dirs, HIDDEN] if layout else [dirs, BATCH, HIDDEN]
    feeds = {"X": rng.standard_normal(x_shape).astype(np.float32)}
    inputs = [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, x_shape)]
    names = ["X", "W", "R", "B", "", "", "", ""]
    if with_lens:
        names[4] = "lens"
        feeds["lens"] = np.array([T, 2, 4][:BATCH], np.int32)
        inputs.append(helper.make_tensor_value_info("lens", onnx.TensorProto.INT32, [BATCH]))
    if with_states:
        for index, name in ((5, "h0"), (6, "c0")):
            if name == "c0" and cell != "LSTM":
                continue
            names[index] = name
            feeds[name] = rng.standard_normal(state_shape).astype(np.float32)
            inputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, state_shape))
    if peepholes:
        names[7] = "P"
        inits["P"] = rng.standard_normal((dirs, 3 * HIDDEN)).astype(np.float32) * 0.5
    while names and not names[-1]:
        names.pop()
    outputs = ["Y", "Y_h", "Y_c"] if cell == "LSTM" else ["Y", "Y_h"]
    node = helper.make_node(
        cell, names, outputs, name="rec", hidden_size=HIDDEN, direction=direction, **options
    )
    graph = helper.make_graph(
        [node],
        "rec",
        inputs,
        [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return model, feeds


CASES = {
    "LSTM forward": ("LSTM", {}),
    "LSTM reverse states": ("LSTM", {"direction": "reverse", "states": True}),
    "LSTM bidirectional lens": ("LSTM", {"direction": "bidirectional", "lens": True}),
    "LSTM layout1 states lens": ("LSTM", {"layout": 1, "states": True, "lens": True}),
    "LSTM peepholes clip": ("LSTM", {"peepholes": True, "clip": 0.7, "states": True}),
    "LSTM input_forget bidirectional layout1": (
        "LSTM",
        {"input_forget": 1, "direction": "bidirectional", "layout": 1, "states": True},
    ),
    "GRU forward": ("GRU", {}),
    "GRU linear_before_reset bidirectional": (
        "GRU",
        {"linear_before_reset": 1, "direction": "bidirectional", "states": True},
    ),
    "GRU reverse layout1 lens": ("GRU", {"direction": "reverse", "layout": 1, "lens": True}),
    "RNN forward states": ("RNN", {"states": True}),
    "RNN bidirectional relu lens": (
        "RNN",
        {"direction": "bidirectional", "activations": ["Relu", "Relu"], "lens": True},
    ),
    "RNN layout1 leaky alpha": (
        "RNN",
        {"layout": 1, "activations": ["LeakyRelu"], "activation_alpha": [0.3]},
    ),
}


def onnxruntime_outputs(cell: str, options: dict, feeds: dict) -> list[np.ndarray]:
    """onnxruntime's outputs; its CPU kernels refuse ``layout=1``, so a batch-first node is
    checked against the same node at ``layout=0`` with inputs and outputs transposed."""
    layout = options.get("layout", 0)
    if layout:
        options = {**options, "layout": 0}
        feeds = {
            name: value.transpose(1, 0, 2) if value.ndim == 3 else value
            for name, value in feeds.items()
        }
    model, _ = recurrent_model(cell, **dict(options))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, feeds)
    if layout:
        outputs = [outputs[0].transpose(2, 0, 1, 3), *(o.transpose(1, 0, 2) for o in outputs[1:])]
    return outputs


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_recurrent_node_matches_onnxruntime(case: str) -> None:
    cell, options = CASES[case]
    model, feeds = recurrent_model(cell, **dict(options))
    want = onnxruntime_outputs(cell, options, feeds)
    module = onnx2torch.convert(model)
    with torch.no_grad():
        got = module(*(torch.from_numpy(v) for v in feeds.values()))
    assert len(got) == len(want)
    for name, g, w in zip(["Y", "Y_h", "Y_c"], got, want, strict=False):
        assert g.shape == w.shape, (name, g.shape, w.shape)
        np.testing.assert_allclose(g.numpy(), w, atol=ATOL, rtol=0, err_msg=f"{case}: {name}")


@pytest.mark.parametrize("opset", [7, 22])
def test_recurrent_opset_versions(opset: int) -> None:
    model, feeds = recurrent_model("GRU", opset=opset, direction="reverse")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, feeds)[0]
    with torch.no_grad():
        got = onnx2torch.convert(model)(torch.from_numpy(feeds["X"]))[0]
    np.testing.assert_allclose(got.numpy(), want, atol=ATOL, rtol=0)


def lstm_classifier() -> onnx.ModelProto:
    """Batch-first input -> Transpose -> LSTM -> last hidden state -> Gemm -> Relu, the way
    torch exports ``nn.LSTM(batch_first=True)``: what AM runs end to end."""
    model, _ = recurrent_model("LSTM")
    graph = model.graph
    graph.node[0].input[0] = "X_time_first"
    graph.node[0].output[:] = ["", "Y_h"]
    rng = np.random.default_rng(3)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([-1, HIDDEN], np.int64), "flat"),
            numpy_helper.from_array(rng.standard_normal((HIDDEN, 4)).astype(np.float32), "Wf"),
        ]
    )
    graph.node.insert(
        0, helper.make_node("Transpose", ["X"], ["X_time_first"], name="to_time", perm=[1, 0, 2])
    )
    graph.node.extend(
        [
            helper.make_node("Reshape", ["Y_h", "flat"], ["h"], name="flatten"),
            helper.make_node("Gemm", ["h", "Wf"], ["logits"], name="fc"),
            helper.make_node("Relu", ["logits"], ["y"], name="relu"),
        ]
    )
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, ["N", T, IN]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None))
    return model


def test_lstm_model_imports_with_parity_and_leaves_gates_alone() -> None:
    from onnx_am.passes import plan_rewrites

    imported = import_onnx(lstm_classifier())
    assert imported.batch.mode == "dynamic"
    result = check_parity(imported, samples=3)
    assert result.passed and result.max_abs_diff < ATOL, result
    rewritten, untouched = plan_rewrites(imported)
    assert [r.node for r in rewritten] == ["relu"]
    lstm = next(u for u in untouched if u.op_type == "LSTM")
    assert "gates" in lstm.reason
