"""A fed recurrent state tied to the batch (``state [2, N, H]`` beside ``x [N, D]``, as in
silero-vad) is broadcast to the batch, so batches run whole; the state output, which holds
its rows along axis 1, is judged along that axis."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx_am import check_parity, import_onnx
from onnx_am.importer.batching import row_axes

D, H = 4, 3
F32 = onnx.TensorProto.FLOAT
R = np.random.default_rng(5)


def lstm_with_state(batch: str | int = "N") -> onnx.ModelProto:
    """x [N, D] -> one LSTM step from (h, c) = state [2, N, H]; outputs y [N, 2], stateN."""
    nodes = [
        helper.make_node("Unsqueeze", ["x", "zero"], ["x1"], name="time"),
        helper.make_node("Slice", ["state", "zero", "one"], ["h0"], name="h0"),
        helper.make_node("Slice", ["state", "one", "two"], ["c0"], name="c0"),
        helper.make_node("LSTM", ["x1", "W", "R", "B", "", "h0", "c0"], ["seq", "h", "c"],
                         name="lstm", hidden_size=H),
        helper.make_node("Concat", ["h", "c"], ["stateN"], name="state_out", axis=0),
        helper.make_node("Squeeze", ["h", "zero"], ["hs"], name="drop_dir"),
        helper.make_node("Relu", ["hs"], ["hr"], name="relu"),
        helper.make_node("Gemm", ["hr", "head"], ["y"], name="head"),
    ]  # fmt: skip
    inits = {
        "zero": np.array([0], np.int64),
        "one": np.array([1], np.int64),
        "two": np.array([2], np.int64),
        "W": R.standard_normal((1, 4 * H, D)).astype(np.float32),
        "R": R.standard_normal((1, 4 * H, H)).astype(np.float32),
        "B": R.standard_normal((1, 8 * H)).astype(np.float32),
        "head": R.standard_normal((H, 2)).astype(np.float32),
    }
    graph = helper.make_graph(
        nodes, "stateful",
        [helper.make_tensor_value_info("x", F32, [batch, D]),
         helper.make_tensor_value_info("state", F32, [2, batch, H])],
        [helper.make_tensor_value_info("y", F32, [batch, 2]),
         helper.make_tensor_value_info("stateN", F32, [2, batch, H])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def test_a_state_tied_to_the_batch_is_broadcast_and_batches_run_whole() -> None:
    state = R.standard_normal((2, 1, H)).astype(np.float32)
    imported = import_onnx(lstm_with_state(), input_name="x", feeds={"state": state})
    assert imported.feeds["state"].batch_axis == 1
    assert any("broadcast to the batch of x: state (axis 1)" in n for n in imported.prepass_notes)
    assert imported.batch.mode == "dynamic", imported.batch
    result = check_parity(imported, samples=3)  # onnxruntime is fed the state once per row
    assert result.passed and result.max_abs_diff < 1e-5, result


def test_a_fixed_batch_state_still_runs_row_by_row() -> None:
    imported = import_onnx(lstm_with_state(batch=1), input_name="x")
    assert not any("broadcast" in n for n in imported.prepass_notes)
    assert imported.batch.mode == "rowwise"
    assert check_parity(imported, samples=2).passed


def test_row_axes_follow_the_declared_batch_dim() -> None:
    model = lstm_with_state()
    assert row_axes(model, "N") == [0, 1]
    assert row_axes(model, None) == [0, 0]
