"""Upgrade old opsets, which onnx2torch covers less well."""

from __future__ import annotations

import onnx
from onnx import version_converter

from onnx_am.importer.prepare.util import default_opset

#: Models below this default-domain opset are upgraded first (onnx2torch covers 11+ best).
MIN_OPSET = 11

UPGRADE_TO = 13


def upgrade_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Upgrade models older than opset 11 to opset 13 with onnx's version converter."""
    old = default_opset(model)
    if old == 0 or old >= MIN_OPSET:
        return model, []
    if model.ir_version < 4 and _initializers_not_inputs(model):
        # IR 3 required initializers to be listed as inputs; many files did not, and
        # onnxruntime accepts them. IR 4 allows it, and the version converter needs it.
        model.ir_version = 4
    try:
        upgraded = version_converter.convert_version(model, UPGRADE_TO)
    except Exception:  # noqa: BLE001 - onnx raises assorted errors; conversion reports the ops
        return model, [f"could not upgrade opset {old} to {UPGRADE_TO}; converting as is"]
    return upgraded, [f"upgraded opset {old} to {UPGRADE_TO}"]


def _initializers_not_inputs(model: onnx.ModelProto) -> bool:
    inputs = {value.name for value in model.graph.input}
    return any(tensor.name not in inputs for tensor in model.graph.initializer)
