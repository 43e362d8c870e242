"""check_parity: onnxruntime on the unmodified model vs torch, every output."""

from __future__ import annotations

import numpy as np
from onnx import helper

from onnx_am import check_parity, import_onnx
from onnx_am.reference.runtime import OnnxRuntimeRunner


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


def test_the_seed_chooses_the_inputs_both_runtimes_see(make_model, monkeypatch) -> None:
    """Same seed, same inputs; another seed, other inputs; all inside ``[low, high]``."""
    imported = import_onnx(_two_outputs(make_model))
    fed: list[np.ndarray] = []
    run = OnnxRuntimeRunner.run

    def recording(self, x, names):
        fed.append(np.array(x, copy=True))
        return run(self, x, names)

    monkeypatch.setattr(OnnxRuntimeRunner, "run", recording)
    for seed in (3, 3, 4):
        assert check_parity(imported, seed=seed, samples=5, low=-0.5, high=2.0).passed
    first, again, other = fed
    assert first.shape == (5, 6)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.min() >= -0.5 and first.max() <= 2.0 and first.max() > 1.0
