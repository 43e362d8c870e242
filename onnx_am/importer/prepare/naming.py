"""Pre-passes that make nodes addressable: one domain spelling, unique node names."""

from __future__ import annotations

import onnx


def normalize_domains(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Spell the default domain ``""`` everywhere (some producers write ``"ai.onnx"``)."""
    changed = 0
    for node in model.graph.node:
        if node.domain == "ai.onnx":
            node.domain = ""
            changed += 1
    for entry in model.opset_import:
        if entry.domain == "ai.onnx":
            entry.domain = ""
            changed += 1
    return model, [f"renamed domain 'ai.onnx' to '' in {changed} place(s)"] if changed else []


def name_nodes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Give every node a unique name, so that nodes can be addressed by name."""
    seen: set[str] = set()
    renamed = 0
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            base = node.name or f"{node.op_type}_{index}"
            name, suffix = base, 1
            while name in seen:
                name, suffix = f"{base}__{suffix}", suffix + 1
            node.name = name
            renamed += 1
        seen.add(node.name)
    return model, [f"named {renamed} unnamed or duplicate node(s)"] if renamed else []
