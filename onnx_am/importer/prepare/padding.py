"""Make ``auto_pad`` explicit: onnx2torch does not support SAME padding."""

from __future__ import annotations

import onnx

from onnx_am.importer.input_spec import InputSpec
from onnx_am.importer.prepare.util import attributes, infer_shapes, set_attribute

#: Ops whose ``auto_pad`` this module makes explicit.
AUTO_PAD_OPS = ("Conv", "MaxPool", "AveragePool", "LpPool")


def same_pads(size: list[int], kernel, strides, dilations, mode: bytes | str) -> list[int]:
    """ONNX ``pads`` (begins then ends) equivalent to ``auto_pad`` SAME_UPPER/SAME_LOWER."""
    begins, ends = [], []
    for i, n in enumerate(size):
        out = -(-n // strides[i])
        total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - n, 0)
        small, large = total // 2, total - total // 2
        upper = mode in (b"SAME_UPPER", "SAME_UPPER")
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends


def explicit_auto_pad(model: onnx.ModelProto, spec: InputSpec) -> tuple[onnx.ModelProto, list[str]]:
    """Replace ``auto_pad`` SAME_UPPER/SAME_LOWER/VALID by explicit ``pads``.

    tf2onnx and Keras exports use ``auto_pad``; onnx2torch does not support SAME. The pads
    depend on the input's spatial size, which is fixed for activation maximization.
    """
    todo = [
        n
        for n in model.graph.node
        if n.op_type in AUTO_PAD_OPS and attributes(n).get("auto_pad", b"NOTSET") != b"NOTSET"
    ]
    if not todo:
        return model, []
    shapes = infer_shapes(model, spec)
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    changed = 0
    for node in todo:
        attrs = attributes(node)
        size = shapes.get(node.input[0])
        kernel = (
            attrs.get("kernel_shape")
            or weights.get(node.input[1] if len(node.input) > 1 else "", [])[2:]
        )
        rank = len(kernel)
        strides = attrs.get("strides", [1] * rank)
        dilations = attrs.get("dilations", [1] * rank)
        if (
            size is None
            or not kernel
            or not len(size) - 2 == len(strides) == len(dilations) == rank
        ):
            continue  # left as it is: the converter reports the node
        if attrs["auto_pad"] == b"VALID":
            pads = [0] * 2 * rank
        else:
            pads = same_pads(size[2:], kernel, strides, dilations, attrs["auto_pad"])
        set_attribute(node, "auto_pad", None)
        set_attribute(node, "pads", pads)
        changed += 1
    return model, [f"made auto_pad explicit on {changed} node(s)"] if changed else []
