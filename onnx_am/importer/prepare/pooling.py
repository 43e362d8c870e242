"""Split AveragePools with asymmetric pads: torch pools pad symmetrically only."""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from onnx_am.importer.input_spec import InputSpec
from onnx_am.importer.prepare.util import attributes, infer_shapes, set_attribute


def split_asymmetric_average_pools(
    model: onnx.ModelProto, spec: InputSpec
) -> tuple[onnx.ModelProto, list[str]]:
    """Rewrite AveragePool with asymmetric pads as Pad -> AveragePool (-> Mul).

    torch pools pad symmetrically only. The pad is made explicit with zeros; when padding is
    not counted (``count_include_pad=0``, TensorFlow's SAME) a constant per-position factor
    ``kernel area / valid count`` restores the average over valid inputs only.
    """
    targets = {n.name for n in model.graph.node if _is_asymmetric_pool(n)}
    if not targets:
        return model, []
    shapes = infer_shapes(model, spec)
    new_nodes, changed = [], 0
    for node in model.graph.node:
        size = shapes.get(node.input[0]) if node.name in targets else None
        if size is None or not _fits(size, attributes(node)):
            new_nodes.append(node)  # left as it is: the converter reports the node
            continue
        new_nodes.extend(_split_pool(model, node, size))
        changed += 1
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return model, [
        f"split {changed} asymmetric AveragePool(s) into Pad + AveragePool"
    ] if changed else []


def _is_asymmetric_pool(node: onnx.NodeProto) -> bool:
    if node.op_type != "AveragePool":
        return False
    attrs = attributes(node)
    pads = list(attrs.get("pads", []))
    return not attrs.get("ceil_mode", 0) and pads[: len(pads) // 2] != pads[len(pads) // 2 :]


def _fits(size: list[int], attrs: dict) -> bool:
    """The pool's rank matches its input, and every window fits the padded input."""
    pads, kernel = list(attrs["pads"]), list(attrs.get("kernel_shape", []))
    rank = len(pads) // 2
    if len(size) - 2 != rank or len(kernel) != rank:
        return False
    padded = [size[2 + d] + pads[d] + pads[rank + d] for d in range(rank)]
    return all(0 < k <= p for k, p in zip(kernel, padded, strict=True))


def _split_pool(
    model: onnx.ModelProto, node: onnx.NodeProto, size: list[int]
) -> list[onnx.NodeProto]:
    attrs = attributes(node)
    pads, name, out = list(attrs["pads"]), node.name, node.output[0]
    rank = len(pads) // 2
    full = [0, 0, *pads[:rank], 0, 0, *pads[rank:]]
    model.graph.initializer.append(
        numpy_helper.from_array(np.array(full, np.int64), f"{name}/pads")
    )
    pad = onnx.helper.make_node(
        "Pad", [node.input[0], f"{name}/pads"], [f"{out}/padded"], f"{name}/pad"
    )
    include = bool(attrs.get("count_include_pad", 0))
    pool = onnx.NodeProto()
    pool.CopyFrom(node)
    del pool.input[:]
    pool.input.append(f"{out}/padded")
    set_attribute(pool, "pads", None)
    set_attribute(pool, "count_include_pad", 1)
    if include:
        return [pad, pool]
    pool.name, pool.output[0] = f"{name}/sum", f"{out}/unscaled"
    scale = _valid_fraction(size[2:], attrs, pads)
    model.graph.initializer.append(numpy_helper.from_array(scale, f"{name}/scale"))
    mul = onnx.helper.make_node("Mul", [f"{out}/unscaled", f"{name}/scale"], [out], name)
    return [pad, pool, mul]


def _valid_fraction(size: list[int], attrs: dict, pads: list[int]) -> np.ndarray:
    """``1 / (fraction of each window that lies inside the unpadded input)``, as [1,1,*out]."""
    rank = len(size)
    ones = torch.ones((1, 1, *size), dtype=torch.float64)
    torch_pads = []
    for d in reversed(range(rank)):
        torch_pads += [pads[d], pads[rank + d]]
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
    strides = attrs.get("strides", [1] * rank)
    fraction = pool(F.pad(ones, torch_pads), list(attrs["kernel_shape"]), list(strides))
    return (1.0 / fraction).numpy().astype(np.float32)
