"""Every intermediate ONNX tensor read through the torch graph equals onnxruntime's value."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from test_import_producers import SmallCnn, mobilenetv2_like, paddle_like, tf2onnx_like, zoo_like

from onnx_am import TargetError, import_onnx
from onnx_am.reference.runtime import OnnxRuntimeRunner

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _legacy_cnn() -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(
        SmallCnn().eval(),
        (torch.zeros(1, 3, 16, 16),),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        dynamic_axes={"input": {0: "batch"}},
    )
    return buffer.getvalue()


def activation_tensors(model: onnx.ModelProto, input_name: str) -> list[str]:
    """Node outputs that depend on the input (what Netron shows between the layers)."""
    reached, names = {input_name}, []
    for node in model.graph.node:
        if any(name in reached for name in node.input):
            for name in node.output:
                if name:
                    reached.add(name)
                    names.append(name)
    return names


SOURCES = {
    "torch legacy": _legacy_cnn,
    "tf2onnx": lambda: tf2onnx_like(13),
    "paddle": lambda: paddle_like(11),
    "zoo opset 8": lambda: zoo_like(8),
    "mobilenetv2": lambda: mobilenetv2_like(12),
}


@pytest.mark.parametrize("source", list(SOURCES), ids=list(SOURCES))
def test_every_intermediate_tensor_matches_onnxruntime(source: str) -> None:
    imported = import_onnx(SOURCES[source]())
    names = activation_tensors(imported.original, imported.input.name)
    assert len(names) >= 5
    missing = [name for name in names if name not in imported.tensor_map]
    assert not missing
    x = torch.rand((2, *imported.input.sample_shape), generator=torch.Generator().manual_seed(3))
    runner = OnnxRuntimeRunner(imported.original, imported.input.name, names)
    reference = runner.run(x.numpy(), names)
    with torch.no_grad():
        values = imported.run(x * 1.0, names)
    for name, value in zip(names, values, strict=True):
        want = reference[name]
        assert value.shape == want.shape, name
        scale = max(float(np.abs(want).max()), 1.0)
        np.testing.assert_allclose(value.numpy(), want, atol=1e-4 * scale, err_msg=name)


def test_tensor_map_records_producing_node() -> None:
    imported = import_onnx(tf2onnx_like(13))
    location = imported.tensor_map["r1"]
    assert location.onnx_node == "model/relu1/Relu"
    assert imported.tensor_map[imported.input.name].onnx_node == ""
    module_name = next(m for m, n in imported.node_names.items() if n == "model/relu1/Relu")
    assert imported.onnx_node(module_name).op_type == "Relu"


def test_unknown_tensor_name_is_a_target_error() -> None:
    imported = import_onnx(tf2onnx_like(13))
    with pytest.raises(TargetError, match="no_such_tensor"):
        imported.extractor(["no_such_tensor"])
    with pytest.raises(TargetError, match="no_such_tensor"):
        OnnxRuntimeRunner(imported.original, imported.input.name, ["no_such_tensor"])


def test_extractor_computes_only_what_is_needed() -> None:
    imported = import_onnx(tf2onnx_like(13))
    extractor = imported.extractor(["r1"])
    targets = {node.target for node in extractor.graph.nodes if node.op == "call_module"}
    assert all("dense" not in str(t) and "pool" not in str(t) for t in targets)
