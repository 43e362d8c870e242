"""Map ONNX tensor names to the torch graph, and read any of them from a batch.

onnx2torch names each torch module after its ONNX node and, with ``attach_onnx_mapping``,
records the node's ONNX input and output tensor names. That is enough to find the torch
value behind every ONNX tensor name that Netron shows.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import onnx
from torch import fx

from onnx_am.errors import TargetError
from onnx_am.importer.module_names import torch_module_names


@dataclass(frozen=True)
class TensorLocation:
    """Where an ONNX tensor is produced in the torch graph.

    Attributes:
        node: name of the fx node (a placeholder for graph inputs, else a call_module node).
        index: output index when the node returns several values, else ``None``.
        onnx_node: name of the ONNX node that produces the tensor (``""`` for graph inputs).
    """

    node: str
    index: int | None
    onnx_node: str


def build_tensor_map(
    module: fx.GraphModule, model: onnx.ModelProto
) -> tuple[dict[str, TensorLocation], dict[str, str]]:
    """Return ``(tensor name -> location, torch module name -> ONNX node name)``.

    Args:
        module: converted with ``attach_onnx_mapping=True``.
        model: the ONNX model it was converted from (node names must be unique).
    """
    onnx_names = {node_name: node.name for node_name, node in torch_module_names(model)}
    tensor_map: dict[str, TensorLocation] = {}
    node_names: dict[str, str] = {}
    placeholders = [node for node in module.graph.nodes if node.op == "placeholder"]
    initializers = {tensor.name for tensor in model.graph.initializer}
    real_inputs = [value.name for value in model.graph.input if value.name not in initializers]
    for placeholder, name in zip(placeholders, real_inputs, strict=False):
        tensor_map[name] = TensorLocation(placeholder.name, None, "")
    for node in module.graph.nodes:
        if node.op != "call_module" or node.target not in onnx_names:
            continue
        submodule = module.get_submodule(node.target)
        outputs = list(submodule.onnx_mapping.outputs)
        node_names[node.target] = onnx_names[node.target]
        for index, tensor in enumerate(outputs):
            if tensor:
                tensor_map[tensor] = TensorLocation(
                    node.name, index if len(outputs) > 1 else None, onnx_names[node.target]
                )
    return tensor_map, node_names


def extract_tensors(
    module: fx.GraphModule, tensor_map: dict[str, TensorLocation], names: list[str]
) -> fx.GraphModule:
    """A new graph module (sharing ``module``'s submodules) that returns the named tensors.

    Only what the named tensors depend on is computed.

    Raises:
        TargetError: a name is not an ONNX tensor of the model.
    """
    unknown = [name for name in names if name not in tensor_map]
    if unknown:
        raise TargetError(f"no tensor named {unknown[0]!r} in the model")
    graph = fx.Graph()
    value_map: dict[fx.Node, fx.Node] = {}
    graph.graph_copy(module.graph, value_map)
    by_name = {node.name: new for node, new in value_map.items()}
    outputs = []
    for name in names:
        location = tensor_map[name]
        value = by_name[location.node]
        if location.index is not None:
            value = graph.call_function(operator.getitem, (value, location.index))
        outputs.append(value)
    graph.output(tuple(outputs))
    extractor = fx.GraphModule(module, graph)
    extractor.graph.eliminate_dead_code()
    extractor.recompile()
    return extractor
