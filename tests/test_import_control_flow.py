"""If and Loop: parity with onnxruntime, float64 gradients, batching, the decoupling pass."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from onnx_am import check_parity, decouple_rectifiers, import_onnx

F32, I64 = np.float32, np.int64
R = np.random.default_rng(0)
W1 = R.standard_normal((4, 3)).astype(F32)
W2 = R.standard_normal((4, 3)).astype(F32)
WH = (R.standard_normal((4, 4)) * 0.5).astype(F32)


def _graph_model(nodes, outputs: list[tuple[str, list | None]], inits: dict, opset=17):
    graph = helper.make_graph(
        nodes,
        "control_flow",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _branch(name: str, nodes, output: str) -> onnx.GraphProto:
    out = helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)
    return helper.make_graph(nodes, name, [], [out])


def _verifier_if(opset: int = 17) -> onnx.ModelProto:
    """The wake-word head: a score per row; at >= 0.5 a second network (with a Relu) runs."""
    then_branch = _branch(
        "verify",
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="verify_mm"),
            helper.make_node("Relu", ["h"], ["r"], name="verify_relu"),
            helper.make_node("Mul", ["r", "score2"], ["yt"], name="verify_scale"),
        ],
        "yt",
    )
    else_branch = _branch(
        "skip",
        [
            helper.make_node("MatMul", ["x", "w2"], ["g"], name="skip_mm"),
            helper.make_node("Tanh", ["g"], ["ye"], name="skip_tanh"),
        ],
        "ye",
    )
    nodes = [
        helper.make_node("ReduceSum", ["x", "axis"], ["s"], name="sum", keepdims=1),
        helper.make_node("Sigmoid", ["s"], ["score2"], name="score"),
        helper.make_node("GreaterOrEqual", ["score2", "half"], ["c2"], name="ge"),
        helper.make_node("Reshape", ["c2", "one"], ["cond"], name="to_one"),
        helper.make_node(
            "If", ["cond"], ["y"], name="verifier", then_branch=then_branch,
            else_branch=else_branch,
        ),
    ]  # fmt: skip
    inits = {
        "axis": np.array([1], I64),
        "half": np.array(0.5, F32),
        "one": np.array([-1], I64),
        "w1": W1,
        "w2": W2,
    }
    return _graph_model(nodes, [("y", ["N", 3])], inits, opset)


def _by_hand(x: np.ndarray) -> np.ndarray:
    score = 1 / (1 + np.exp(-x.sum(1, keepdims=True)))
    return np.where(score >= 0.5, np.maximum(x @ W1, 0) * score, np.tanh(x @ W2))


def _gradcheck(imported, x: np.ndarray) -> None:
    module = copy.deepcopy(imported.module).double()
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: module(v), (t,), atol=1e-6)


def test_if_on_a_computed_score_runs_each_row_down_its_own_branch():
    imported = import_onnx(_verifier_if())
    assert imported.batch.mode == "rowwise"
    assert any("has a branch" in note and "verifier" in note for note in imported.prepass_notes)
    x = np.array([[0.9, 0.2, 0.1, 0.3], [-0.8, -0.1, 0.2, -0.4], [0.1, 0.5, -0.2, 0.4]], F32)
    assert len(set((x.sum(1) >= 0).tolist())) == 2  # both branches in one batch
    (y,) = imported.run(torch.from_numpy(x))
    np.testing.assert_allclose(y.numpy(), _by_hand(x), rtol=1e-5, atol=1e-6)
    for opset in (13, 17):
        result = check_parity(import_onnx(_verifier_if(opset)), samples=6)
        assert result.passed, result.summary()


def test_if_gradient_is_that_of_the_branch_taken_float64():
    imported = import_onnx(_verifier_if())
    then_row = np.array([[0.9, 0.2, 0.1, 0.3]])
    else_row = np.array([[-0.8, -0.1, 0.2, -0.4]])
    for row in (then_row, else_row):
        _gradcheck(imported, row)
    module = copy.deepcopy(imported.module).double()
    x = torch.tensor(else_row, requires_grad=True)
    module(x).sum().backward()
    w2 = torch.tensor(W2, dtype=torch.float64)
    expected = w2 @ (1 - torch.tanh(x.detach() @ w2) ** 2)[0]  # d sum(tanh(x W2)) / dx
    torch.testing.assert_close(x.grad[0], expected)


def test_decoupling_leaves_rectifiers_inside_branches_alone():
    imported = import_onnx(_verifier_if())
    result = decouple_rectifiers(imported)
    assert not result.rewritten  # the only Relu is inside the then-branch
    (record,) = [u for u in result.untouched if u.op_type == "If"]
    assert "bodies keep their true gradient" in record.reason
    row = torch.tensor([[0.9, 0.2, 0.1, 0.3]])
    torch.testing.assert_close(result.module(row), imported.module(row))


def test_if_on_a_constant_condition_one_node_batches_whole():
    for flag, expected in ((True, np.maximum), (False, np.negative)):
        then_branch = _branch("pos", [helper.make_node("Relu", ["x"], ["a"])], "a")
        else_branch = _branch("neg", [helper.make_node("Neg", ["x"], ["b"])], "b")
        node = helper.make_node(
            "If", ["c"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch
        )
        model = _graph_model([node], [("y", ["N", 4])], {"c": np.array(flag)})
        imported = import_onnx(model)
        assert imported.batch.mode == "dynamic"
        assert check_parity(imported, samples=3).passed
        x = np.array([[-1.0, 0.5, 2.0, -0.25]], F32)
        want = expected(x, 0) if flag else expected(x)
        np.testing.assert_allclose(imported.run(torch.from_numpy(x))[0].numpy(), want)


# --- Loop --------------------------------------------------------------------------------


def _loop_body(carried_nodes, outputs: list[str], extra_inputs=()) -> onnx.GraphProto:
    inputs = [
        helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
        helper.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
        *[helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in extra_inputs],
    ]
    outs = [helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, [])]
    outs += [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in outputs]
    return helper.make_graph(carried_nodes, "body", inputs, outs)


def _recurrent_loop(trip: np.ndarray | None, shape_trip: bool = False) -> onnx.ModelProto:
    """``h <- tanh(h @ WH + x)`` for M steps (constant, or the input's width from Shape);
    carries ``h``, scans ``relu(h)``, outputs the last ``h`` and the scan ``[M, N, 4]``."""
    body = _loop_body(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["h_in", "wh"], ["hw"]),
            helper.make_node("Add", ["hw", "x"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["h_out"]),
            helper.make_node("Relu", ["h_out"], ["scan"]),
        ],
        ["h_out", "scan"],
        extra_inputs=["h_in"],
    )
    nodes = []
    if shape_trip:
        nodes += [
            helper.make_node("Shape", ["x"], ["shape"], name="shape"),
            helper.make_node("Gather", ["shape", "last"], ["m"], name="width", axis=0),
        ]
    nodes.append(
        helper.make_node("Loop", ["m", "keep", "x"], ["h_last", "hs"], name="recurrence", body=body)
    )
    inits = {"wh": WH, "keep": np.array(True), "last": np.array(1, I64)}
    if trip is not None:
        inits["m"] = trip
    return _graph_model(nodes, [("h_last", ["N", 4]), ("hs", [None, "N", 4])], inits)


def _recurrence_by_hand(x: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    h, scans = x, []
    for _ in range(steps):
        h = np.tanh(h @ WH + x)
        scans.append(np.maximum(h, 0))
    return h, np.stack(scans)


def test_loop_with_a_constant_trip_count_carries_and_scans():
    imported = import_onnx(_recurrent_loop(np.array(3, I64)))
    assert imported.batch.mode == "dynamic"  # the scan holds its rows along axis 1
    x = R.uniform(-1, 1, (2, 4)).astype(F32)
    h_last, hs = imported.run(torch.from_numpy(x))
    want_h, want_hs = _recurrence_by_hand(x, 3)
    np.testing.assert_allclose(h_last.numpy(), want_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hs.numpy(), want_hs, rtol=1e-5, atol=1e-6)
    assert check_parity(imported, samples=3).passed
    _gradcheck(imported, x.astype(np.float64))
    rewrite = decouple_rectifiers(imported)  # the Relu of the body is left alone
    assert not rewrite.rewritten and [u.op_type for u in rewrite.untouched] == ["Loop"]


def test_loop_with_a_trip_count_from_the_shape():
    imported = import_onnx(_recurrent_loop(None, shape_trip=True))
    assert imported.batch.mode == "dynamic"  # a shape is no decision on values
    result = check_parity(imported, samples=3)
    assert result.passed, result.summary()
    assert [list(o.shapes[0]) for o in result.outputs][-1] == [4, 3, 4]


def test_loop_whose_condition_is_computed_from_the_input():
    """``while max(h) < 2 (at most 6 steps): h <- 1.5 h + 0.2``: rows stop at other steps."""
    body = _loop_body(
        [
            helper.make_node("Mul", ["h_in", "grow"], ["g"]),
            helper.make_node("Add", ["g", "step"], ["h_out"]),
            helper.make_node("ReduceMax", ["h_out"], ["peak"], keepdims=0),
            helper.make_node("Less", ["peak", "two"], ["cond_out"]),
        ],
        ["h_out"],
        extra_inputs=["h_in"],
    )
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["peak0"], name="peak0", keepdims=0),
        helper.make_node("Less", ["peak0", "two"], ["go"], name="go"),
        helper.make_node("Loop", ["m", "go", "x"], ["y"], name="grow_loop", body=body),
    ]
    inits = {
        "m": np.array(6, I64),
        "grow": np.array(1.5, F32),
        "step": np.array(0.2, F32),
        "two": np.array(2.0, F32),
    }
    imported = import_onnx(_graph_model(nodes, [("y", ["N", 4])], inits))
    assert imported.batch.mode == "rowwise"
    assert any("grow_loop" in note for note in imported.prepass_notes)
    result = check_parity(imported, samples=4)
    assert result.passed, result.summary()
    x = np.array([[0.1, 0.2, 0.3, 0.4], [1.9, 0.0, 0.0, 0.0]], F32)
    (y,) = imported.run(torch.from_numpy(x))
    rows = []
    for row in x:
        h = row.copy()
        for _ in range(6):
            h = h * 1.5 + 0.2
            if h.max() >= 2:
                break
        rows.append(h)
    np.testing.assert_allclose(y.numpy(), np.stack(rows), rtol=1e-6)
    _gradcheck(imported, x[:1].astype(np.float64))
