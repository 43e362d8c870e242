"""Pre-pass: inputs held at a fixed value become initializers of the converted graph.

The torch graph then has one input, the optimized one, and nothing downstream (engine,
batching, extractors) needs to know about the others. Constant folding sees the fed values
as constants. onnxruntime keeps running the original model and is fed the same values.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper


def feeds_to_initializers(
    model: onnx.ModelProto, values: Mapping[str, np.ndarray]
) -> tuple[onnx.ModelProto, list[str]]:
    """Replace the graph inputs named in ``values`` by initializers holding those values.

    Args:
        model: modified in place (``prepare_model`` passes a copy).
        values: input name -> the array it is held at.

    Returns:
        The model and one note naming the inputs.
    """
    if not values:
        return model, []
    kept = [value for value in model.graph.input if value.name not in values]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    existing = {tensor.name: tensor for tensor in model.graph.initializer}
    for name, array in values.items():
        tensor = numpy_helper.from_array(np.asarray(array), name)
        if name in existing:
            existing[name].CopyFrom(tensor)
        else:
            model.graph.initializer.append(tensor)
    listing = ", ".join(f"{name} {list(np.shape(array))}" for name, array in values.items())
    return model, [f"held input(s) at their fed values: {listing}"]
