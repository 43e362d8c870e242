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
    try:
        upgraded = version_converter.convert_version(model, UPGRADE_TO)
    except Exception:  # noqa: BLE001 - onnx raises assorted errors; conversion reports the ops
        return model, [f"could not upgrade opset {old} to {UPGRADE_TO}; converting as is"]
    return upgraded, [f"upgraded opset {old} to {UPGRADE_TO}"]
