"""check_parity: onnxruntime on the unmodified model vs torch, every output."""

from __future__ import annotations

import numpy as np
from onnx import helper

from onnx_am import check_parity, import_onnx


def _two_outputs(make_model):
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Sigmoid", ["h"], ["p"], name="sig"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
    ]
    w = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32) * 100
    return make_model(nodes, [("x", ["N", 6])], ["p", "r"], {"w": w})


def test_every_output_is_compared(make_model) -> None:
    result = check_parity(import_onnx(_two_outputs(make_model)), samples=3)
    assert [o.name for o in result.outputs] == ["p", "r"]
    assert result.passed and result.samples == 3
    assert result.max_abs_diff == max(o.max_abs_diff for o in result.outputs)
    # scale-aware: outputs reach ~hundreds, so an absolute 1e-4 would be too strict
    assert result.outputs[1].output_scale > 10


def test_a_tampered_torch_graph_fails(make_model) -> None:
    imported = import_onnx(_two_outputs(make_model))
    for parameter in imported.module.buffers():
        parameter.mul_(1.001)
    result = check_parity(imported)
    assert not result.passed and result.max_rel_diff > 1e-4
    assert result.to_dict()["passed"] is False


def test_same_seed_same_result(make_model) -> None:
    imported = import_onnx(_two_outputs(make_model))
    assert (
        check_parity(imported, seed=3).max_abs_diff == check_parity(imported, seed=3).max_abs_diff
    )
