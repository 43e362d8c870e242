"""A softmax written as ``exp / sum`` (jax2tf's form, as magika ships it): the default targets
are the logits it normalizes, not its probabilities."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from onnx_am import import_onnx
from onnx_am.audit.defaults import default_targets_for, pre_activation

R = np.random.default_rng(0)


def _head(make_model, max_shift: bool, axis: int = 1, divide: str = "e"):
    """``x @ W -> [exp(z - max z) or exp(z)] / ReduceSum(.., axis)``, the sum brought back
    through Reshape + Expand and the max clamped by a ``Max`` with a constant (as jax2tf)."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"], name="dense")]
    shifted = "logits"
    if max_shift:
        nodes += [
            helper.make_node("ReduceMax", ["logits"], ["m"], axes=[axis], keepdims=0),
            helper.make_node("Max", ["floor", "m"], ["m_clamped"]),
            helper.make_node("Reshape", ["m_clamped", "column"], ["m_col"]),
            helper.make_node("Expand", ["m_col", "ones"], ["m_wide"]),
            helper.make_node("Sub", ["logits", "m_wide"], ["shifted"]),
        ]
        shifted = "shifted"
    nodes += [
        helper.make_node("Exp", [shifted], ["e"]),
        helper.make_node("ReduceSum", ["e", "sum_axes"], ["s"], keepdims=0),
        helper.make_node("Reshape", ["s", "column"], ["s_col"]),
        helper.make_node("Expand", ["s_col", "ones"], ["s_wide"]),
        helper.make_node("Div", [divide, "s_wide"], ["probs"]),
    ]
    inits = {
        "w": R.standard_normal((4, 5)).astype(np.float32),
        "floor": np.array(-np.inf, np.float32),
        "column": np.array([-1, 1], np.int64),
        "ones": np.array([1, 1], np.int64),
        "sum_axes": np.array([axis], np.int64),
    }
    return make_model(nodes, [("x", ["N", 4])], ["probs"], inits)


@pytest.mark.parametrize("max_shift", [False, True])
def test_exp_over_sum_targets_the_logits(make_model, max_shift):
    model = _head(make_model, max_shift)
    x = R.standard_normal((3, 4)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"x": x})[0]
    assert np.allclose(probs.sum(1), 1.0, atol=1e-6)  # the graph is a softmax
    imported = import_onnx(model)
    assert pre_activation(imported, "probs") == ("logits", "exp/sum")
    choice = default_targets_for(imported)
    assert choice.tensor == "logits"
    assert [t.name for t in choice.targets] == [f"logits:{k}" for k in range(5)]
    assert "softmax (written as exp / sum)" in choice.reason


def test_a_division_that_is_not_a_softmax_is_left_alone(make_model):
    """``logits / sum(exp(logits))``: the numerator is not the summed exponential."""
    model = _head(make_model, False, divide="logits")
    imported = import_onnx(model)
    assert pre_activation(imported, "probs") is None
    assert default_targets_for(imported).tensor == "probs"
