"""Batches through models exported for batch 1: rewritten where safe, else row by row."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper
from torch import nn

from onnx_am import check_parity, import_onnx
from onnx_am.importer.batching import decide_batching, rewrite_fixed_batch
from onnx_am.importer.model import _convert
from onnx_am.importer.prepare import prepare_model
from onnx_am.reference.runtime import OnnxRuntimeRunner

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class FixedBatchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).reshape(1, -1))  # batch 1 hard-coded


def _fixed_batch_model() -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(
        FixedBatchNet().eval(),
        (torch.zeros(1, 2, 6, 6),),
        buffer,
        dynamo=False,
        opset_version=13,
        input_names=["x"],
        output_names=["y"],
    )
    return buffer.getvalue()


def _check_batch(imported, batch: int = 4) -> None:
    x = torch.rand(
        (batch, *imported.input.sample_shape), generator=torch.Generator().manual_seed(5)
    )
    with torch.no_grad():
        (got,) = imported.run(x)
    runner = OnnxRuntimeRunner(imported.original, imported.input.name)
    want = runner.run(x.numpy(), imported.output_names)[imported.output_names[0]]
    assert got.shape[0] == batch and want.shape[0] == batch
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


def test_fixed_batch_reshape_is_rewritten() -> None:
    imported = import_onnx(_fixed_batch_model())
    assert imported.input.shape == (1, 2, 6, 6)
    assert imported.batch.mode == "rewritten"
    assert any("batch" in note for note in imported.prepass_notes)
    _check_batch(imported)
    assert check_parity(imported).passed


def test_batching_returns_a_decision_and_leaves_its_inputs_alone() -> None:
    imported = import_onnx(_fixed_batch_model())
    prepared, _ = prepare_model(imported.original, imported.input)  # as import_onnx does
    before = prepared.SerializeToString()
    module = _convert(prepared)
    decision = decide_batching(module, prepared, imported.input.sample_shape)
    assert decision.support.mode == "rewritten" and "Reshape" in decision.note
    assert decision.prepared is not prepared and decision.module is not module
    assert prepared.SerializeToString() == before  # the rewrite works on a copy
    x = torch.rand(3, *imported.input.sample_shape, generator=torch.Generator().manual_seed(1))
    with pytest.raises(RuntimeError):  # the module it was given still needs batch 1
        module(x)
    assert decision.module(x).shape[0] == 3
    # import_onnx built the model from the decision: rewritten graph, its tensor map, the note
    assert imported.prepass_notes[-1] == decision.note
    names = list(imported.tensor_map)
    (hidden,) = imported.run(x, names=[names[len(names) // 2]])
    assert hidden.shape[0] == 3


def test_imported_model_cannot_be_changed_after_import(make_model) -> None:
    imported = import_onnx(
        make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", 5])], ["y"])
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        imported.batch = imported.batch  # type: ignore[misc]


def test_unrewritable_fixed_batch_runs_rowwise(make_model) -> None:
    # The Reshape shape is computed (Concat of constants), so it is not rewritten.
    nodes = [
        helper.make_node("Concat", ["one", "minus_one"], ["shape"], name="shape", axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "w"], ["y"], name="fc"),
    ]
    inits = {
        "one": np.array([1], np.int64),
        "minus_one": np.array([-1], np.int64),
        "w": np.ones((12, 2), np.float32),
    }
    imported = import_onnx(make_model(nodes, [("x", ["N", 3, 4])], ["y"], inits, opset=13))
    assert imported.batch.mode == "rowwise"
    _check_batch(imported, batch=3)


def test_dynamic_model_stays_dynamic(make_model) -> None:
    imported = import_onnx(
        make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", 5])], ["y"])
    )
    assert imported.batch.mode == "dynamic"
    _check_batch(imported, batch=3)


def test_rewrite_leaves_allowzero_and_shared_shapes_alone(make_model) -> None:
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["a"], name="r1", allowzero=1),
        helper.make_node("Reshape", ["a", "t"], ["b"], name="r2"),
        helper.make_node("Reshape", ["b", "t"], ["y"], name="r3"),
    ]
    inits = {"s": np.array([1, -1], np.int64), "t": np.array([1, 4, -1], np.int64)}
    model = make_model(nodes, [("x", [1, 8])], ["y"], inits, opset=14)
    _, count = rewrite_fixed_batch(model)
    assert count == 0


def test_fixed_batch_fixture_is_rewritten() -> None:
    imported = import_onnx(FIXTURES / "fixed_batch1_reshape.onnx")
    assert imported.batch.mode == "rewritten"
    _check_batch(imported)
