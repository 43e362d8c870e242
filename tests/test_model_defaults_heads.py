"""Zero-config targets on multi-output and sequence models: the classification head first,
per-class units of ``[N, T, C]`` scores averaged over time."""

from __future__ import annotations

import numpy as np
import torch
from onnx import helper

from onnx_am import import_onnx, parse_targets
from onnx_am.audit.defaults import default_targets_for
from onnx_am.objectives import row_values

R = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def test_face_model_targets_its_score_head_not_the_box_regression(make_model):
    """Outputs: boxes (regression, first), score (a Sigmoid), landmarks (regression)."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h"], name="trunk", transB=1),
        helper.make_node("Relu", ["h"], ["feat"], name="relu"),
        helper.make_node("Gemm", ["feat", "wb"], ["boxes"], name="box_head", transB=1),
        helper.make_node("Gemm", ["feat", "ws"], ["score_logit"], name="score_head", transB=1),
        helper.make_node("Sigmoid", ["score_logit"], ["score"], name="score"),
        helper.make_node("Gemm", ["feat", "wl"], ["landmarks"], name="lm_head", transB=1),
    ]
    inits = {"w1": _w(8, 4), "wb": _w(4, 8), "ws": _w(2, 8), "wl": _w(10, 8)}
    model = make_model(nodes, [("x", ["N", 4])], ["boxes", "score", "landmarks"], inits)
    choice = default_targets_for(import_onnx(model))
    assert choice.tensor == "score_logit"
    assert [t.name for t in choice.targets] == ["score_logit:0", "score_logit:1"]
    assert "output 'score' chosen over the first output 'boxes'" in choice.reason
    assert "sigmoid (a classification head)" in choice.reason


def test_first_output_without_any_head_is_kept(make_model):
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["a"], name="a", transB=1),
        helper.make_node("Gemm", ["x", "w2"], ["b"], name="b", transB=1),
    ]
    model = make_model(nodes, [("x", ["N", 4])], ["a", "b"], {"w1": _w(3, 4), "w2": _w(2, 4)})
    choice = default_targets_for(import_onnx(model))
    assert choice.tensor == "a" and choice.reason == ""


def _sequence(make_model, steps: int, classes: int, axis: int = -1, opset: int = 17):
    """``softmax(reshape(x @ W, [N, steps, classes]))``: a decoder's per-step classes."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["flat"], name="proj"),
        helper.make_node("Reshape", ["flat", "shape"], ["logits"], name="steps"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=axis),
    ]
    inits = {"w": _w(4, steps * classes), "shape": np.array([0, steps, classes], np.int64)}
    return make_model(nodes, [("x", ["N", 4])], ["probs"], inits, opset)


def test_sequence_of_class_scores_gives_per_class_units_over_time(make_model):
    imported = import_onnx(_sequence(make_model, steps=5, classes=6))
    choice = default_targets_for(imported)
    assert choice.tensor == "logits"
    assert [t.name for t in choice.targets] == [f"logits:{k}@last" for k in range(6)]
    assert "averaged over the 5 step(s) of axis 1" in choice.reason
    x = torch.rand(3, 4)
    (logits,) = imported.run(x, ["logits"])
    values = row_values(choice.targets[:3], {"logits": logits})
    torch.testing.assert_close(values, logits.mean(1)[torch.arange(3), torch.arange(3)])
    assert parse_targets(["logits:2@last"], imported) == [choice.targets[2]]


def test_decoder_step_of_one_step_gets_one_unit_per_class(make_model):
    imported = import_onnx(_sequence(make_model, steps=1, classes=32))
    choice = default_targets_for(imported)
    assert len(choice.targets) == 32 and choice.targets[31].name == "logits:31@last"


def test_softmax_over_another_axis_is_not_taken_for_classes(make_model):
    imported = import_onnx(_sequence(make_model, steps=5, classes=6, axis=1))
    choice = default_targets_for(imported)
    assert all(t.kind != "class" for t in choice.targets)
    assert "is not a per-class vector" in choice.reason


def test_class_target_round_trips_through_a_result():
    from onnx_am.engine.results import UnitResult
    from onnx_am.objectives import last_axis

    target = last_axis("logits", 3)
    result = UnitResult(target, "standard", "standard", None, 1.0)
    assert UnitResult.from_dict(result.to_dict()).target == target
