"""The torch module name of each ONNX node, as onnx2torch gives it, legal for any domain.

onnx2torch names a node's module ``"{domain}/{node name}"`` with the dots of the node name
replaced, but not those of the domain, and torch refuses a module name with a dot: every
node of a domain such as ``com.microsoft`` (onnxruntime's contrib ops) fails to convert.
:func:`legal_module_names` makes onnx2torch replace them too, for the duration of a
conversion; :func:`torch_module_names` names modules the same way to find them again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import onnx
from onnx2torch.onnx_graph import OnnxGraph


def module_name(node: onnx.NodeProto) -> str:
    """``"{domain}/{name}"`` (op type when unnamed), every dot replaced by ``/``."""
    return f"{node.domain}/{node.name or node.op_type}".replace(".", "/").lstrip("/")


def torch_module_names(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.NodeProto]]:
    """``(torch module name, node)`` for every node, repeated names numbered as onnx2torch
    numbers them."""
    counters: dict[str, int] = {}
    for node in model.graph.node:
        base = module_name(node)
        count = counters.setdefault(base, 0)
        counters[base] += 1
        yield base + (f"_{count}" if count else ""), node


@contextlib.contextmanager
def legal_module_names() -> Iterator[None]:
    """While active, onnx2torch names modules by :func:`module_name`; restored on exit."""
    original = OnnxGraph.__dict__["generate_node_name"]
    OnnxGraph.generate_node_name = staticmethod(module_name)
    try:
        yield
    finally:
        OnnxGraph.generate_node_name = original


__all__ = ["legal_module_names", "module_name", "torch_module_names"]
