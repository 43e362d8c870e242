"""Reshape attributes onnx2torch refuses but that change nothing."""

from __future__ import annotations

import onnx

from onnx_am.importer.prepare.util import constant_arrays


def drop_needless_allowzero(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Clear ``allowzero=1`` on Reshapes whose constant shape has no zero (it changes nothing).

    The dynamo exporter sets ``allowzero=1`` everywhere; onnx2torch refuses it.
    """
    constants = constant_arrays(model)
    changed = 0
    for node in model.graph.node:
        allowzero = next((a for a in node.attribute if a.name == "allowzero"), None)
        if node.op_type != "Reshape" or allowzero is None or allowzero.i == 0:
            continue
        shape = constants.get(node.input[1]) if len(node.input) > 1 else None
        if shape is not None and not (shape == 0).any():
            allowzero.i = 0
            changed += 1
    return model, [
        f"cleared allowzero on {changed} Reshape(s) without zero dims"
    ] if changed else []
