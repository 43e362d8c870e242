"""Extra onnx2torch converters, registered through onnx2torch's converter registry.

onnx2torch stops at about opset 17 and lacks some attributes and ops. Each module here
registers converters for newer op versions or missing cases with ``add_converter``; importing
this package registers them all, once. What cannot be expressed as a converter (``auto_pad``,
weights held by ``Constant`` nodes, opsets below 11) is handled by ONNX pre-passes in
:mod:`onnx_am.importer.prepare`.
"""

from __future__ import annotations

import warnings

from onnx_am.importer.converters import (  # noqa: F401  (imported for their registrations)
    activations,
    clip,
    control_flow,
    dropout,
    newer_versions,
    onehot,
    onnxruntime_math,
    pad,
    pooling,
    quantized,
    quantized_recurrent,
    recurrent,
    reduce,
    reshape,
    resize,
    scatter,
    split,
    transformer_ops,
)
from onnx_am.importer.converters._registry import REGISTERED, has_converter

# onnx2torch's Slice indexes with a list, which torch deprecates loudly on every forward;
# the result is still correct (parity checks it). Silence only that message, only there.
warnings.filterwarnings(
    "ignore",
    message="Using a non-tuple sequence for multidimensional indexing",
    module=r"onnx2torch\.",
)

__all__ = ["REGISTERED", "has_converter"]
