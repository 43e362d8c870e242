"""Newer opset versions of ops whose semantics did not change for float tensors.

Opsets 18-22 re-declared many ops only to add types (bfloat16, float8, int4, strings). These
map to onnx2torch's converter of the last version it knows. Ops that did gain behaviour get
their own module (reduce, split, pad, resize, pooling).
"""

from __future__ import annotations

from onnx_am.importer.converters._registry import register_alias

#: op type -> (newer versions, version whose converter handles them)
TYPE_ONLY_BUMPS: dict[str, tuple[tuple[int, ...], int]] = {
    "Acos": ((22,), 7),
    "Asin": ((22,), 7),
    "Atan": ((22,), 7),
    "Cos": ((22,), 7),
    "Sin": ((22,), 7),
    "Tan": ((22,), 7),
    "Cast": ((19, 21), 13),
    "Constant": ((19, 21), 13),
    "ConstantOfShape": ((20, 21), 9),
    "Conv": ((22,), 11),
    "ConvTranspose": ((22,), 11),
    "Dropout": ((22,), 13),
    "Elu": ((22,), 6),
    "Equal": ((19,), 13),
    "EyeLike": ((22,), 9),
    "Flatten": ((21,), 13),
    "GlobalAveragePool": ((22,), 1),
    "GreaterOrEqual": ((16,), 12),
    "HardSigmoid": ((22,), 6),
    "HardSwish": ((22,), 14),
    "Identity": ((19, 21), 16),
    "InstanceNormalization": ((22,), 6),
    "IsInf": ((20,), 10),
    "IsNaN": ((20,), 13),
    "LessOrEqual": ((16,), 12),
    "MaxPool": ((22,), 12),
    "Reshape": ((19, 21), 14),
    "Round": ((22,), 11),
    "Selu": ((22,), 6),
    "Shape": ((19, 21), 15),
    "Softplus": ((22,), 1),
    "Softsign": ((22,), 1),
    "Transpose": ((21,), 13),
    "Unsqueeze": ((21,), 13),
}

for _op, (_versions, _target) in TYPE_ONLY_BUMPS.items():
    register_alias(_op, _versions, _target)

# Dropout before opset 10 differs only in attributes that do not matter in inference
# (``is_test``, ``consumed_inputs``); in eval mode it is the identity.
register_alias("Dropout", (1, 6, 7), 10)
