"""The cross-check reads onnxruntime's output by the shape it returned, not the declared one.

Regression: a model whose output is declared ``[batch]`` but returns two scores per row runs
row by row; onnxruntime's rows used to be concatenated to ``[2 * rows]`` and row ``i`` read
element ``i`` (for row 1: the second score of row 0), so a correct result was reported as a
disagreement. Scalar outputs (declared ``[]``) are compared as scalars, one per row.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from onnx_am import AMConfig, check_parity, import_onnx, maximize, parse_targets
from onnx_am.domain import InputDomain
from onnx_am.errors import TargetError
from onnx_am.objectives import row_values
from onnx_am.reference.crosscheck import _row, onnxruntime_values

WEIGHT = np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25], [2.0, 1.0]], np.float32)


def _model(output_shape: list, nodes_tail: list, extra: dict | None = None) -> onnx.ModelProto:
    """``x [batch, 4] @ WEIGHT``, then ``nodes_tail``, output ``y`` declared ``output_shape``."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["scores"], name="matmul"), *nodes_tail]
    inits = {"w": WEIGHT, **(extra or {})}
    graph = helper.make_graph(
        nodes,
        "declared_vs_returned",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch_size", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, output_shape)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _two_scores_per_row() -> onnx.ModelProto:
    """Declared ``[batch_size]``; returns ``[2 * batch]`` (``[2]`` for one row)."""
    flat = helper.make_node("Reshape", ["scores", "flat"], ["y"], name="flatten")
    return _model(["batch_size"], [flat], {"flat": np.array([-1], np.int64)})


def _scalar() -> onnx.ModelProto:
    """Declared ``[]``: the sum of both scores of the (single) row."""
    total = helper.make_node("ReduceSum", ["scores"], ["y"], name="total", keepdims=0)
    return _model([], [total])


def test_units_map_to_the_elements_onnxruntime_returned():
    imported = import_onnx(_two_scores_per_row())
    assert imported.batch.mode == "rowwise"
    targets = parse_targets(["y"], imported)
    assert [t.name for t in targets] == ["y:0", "y:1"]
    images = torch.tensor(np.random.default_rng(0).uniform(-1, 1, (3, 4)), dtype=torch.float32)
    rows = [targets[0], targets[1], targets[0]]
    by_hand = [float((images[i].numpy() @ WEIGHT)[rows[i].unit]) for i in range(3)]
    with torch.no_grad():  # as the engine does: one row per chunk
        in_torch = [
            float(row_values([t], {"y": imported.run(images[i : i + 1], ["y"])[0]})[0])
            for i, t in enumerate(rows)
        ]
    in_onnxruntime = onnxruntime_values(imported, rows, images, InputDomain())
    np.testing.assert_allclose(in_torch, by_hand, rtol=1e-5)
    np.testing.assert_allclose(in_onnxruntime, by_hand, rtol=1e-5)


def test_every_row_reads_its_own_output():
    """The reported bug: row 1's first score was read as row 0's second one."""
    imported = import_onnx(_two_scores_per_row())
    images = torch.tensor(np.random.default_rng(1).uniform(-1, 1, (3, 4)), dtype=torch.float32)
    (first,) = parse_targets(["y:0"], imported)
    in_onnxruntime = onnxruntime_values(imported, [first] * 3, images, InputDomain())
    np.testing.assert_allclose(in_onnxruntime, images.numpy() @ WEIGHT[:, 0], rtol=1e-5)


def test_analyze_of_a_declared_batch_output_agrees():
    imported = import_onnx(_two_scores_per_row())
    report = maximize(imported, ["y:0", "y:1"], config=AMConfig.of(steps=4, restarts=2, seed=0))
    assert report.results and all(r.agrees for r in report.results)


def test_a_tensor_without_one_slice_per_row_is_refused():
    outputs = {"y": np.zeros(6, np.float32)}
    with pytest.raises(TargetError, match=r"returned shape \[6\] for 3 input row"):
        _row(outputs, "y", 0, 3)
    with pytest.raises(TargetError, match="cannot map units"):
        _row({"y": np.float32(1.0)}, "y", 0, 1)


def test_scalar_output_compares_as_scalar_row_by_row():
    imported = import_onnx(_scalar())
    assert imported.batch.mode == "rowwise"
    parity = check_parity(imported, samples=3)
    assert parity.passed, parity.summary()
    assert {tuple(map(tuple, o.shapes)) for o in parity.outputs} == {((1,), (1,)), ((3,), (3,))}
    x = torch.ones(2, 4)
    (y,) = imported.run(x)
    np.testing.assert_allclose(y.numpy(), [WEIGHT.sum()] * 2, rtol=1e-6)
