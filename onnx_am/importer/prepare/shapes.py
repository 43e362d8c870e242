"""Shape annotations recorded by the producer are hints, and old ones can be wrong."""

from __future__ import annotations

import onnx


def drop_recorded_shapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Clear ``graph.value_info``: the shapes of intermediate tensors the producer wrote down.

    onnxruntime ignores them, but onnx's version converter and onnx2torch trust them
    (onnx2torch's GlobalAveragePool reduces over the dims a recorded shape implies). Old
    Caffe2-era files record shapes that do not match what the graph computes; a stale rank-5
    annotation made the converted GlobalAveragePool fail with "Dimension out of range", a
    rank-2 one made the opset upgrade drop Softmax's flattening. Shape inference recomputes
    every shape that is needed from the graph itself.
    """
    count = len(model.graph.value_info)
    if count:
        del model.graph.value_info[:]
    return model, [f"dropped {count} recorded intermediate shape(s)"] if count else []
