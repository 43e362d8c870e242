"""Graph passes over the imported torch graph: forward/backward-decoupled rectifiers.

``decouple_rectifiers`` rewrites every rectifier that a registered rule recognises (Relu,
LeakyRelu, PRelu, Clip at 0, Max(x, Mul(x, a))) into a module that computes the original
op exactly and, per batch row, can use a decoupled backward slope or the proxy network's
slope, as set through :class:`SlopeControl`.
"""

from __future__ import annotations

from onnx_am.passes import (  # noqa: F401  (register rules)
    clip,
    gelu,
    gelu_subgraph,
    hardsigmoid,
    hardswish,
    leaky_relu,
    max_pattern,
    mish,
    prelu,
    relu,
    silu,
)
from onnx_am.passes.base import (
    RectifierRule,
    RewriteRecord,
    RuleMatch,
    UntouchedRecord,
)
from onnx_am.passes.control import SlopeControl
from onnx_am.passes.decouple import (
    NONLINEAR_OP_TYPES,
    RewriteResult,
    decouple_rectifiers,
    plan_onnx,
    plan_rewrites,
)
from onnx_am.passes.rectifier import DecoupledRectifier
from onnx_am.passes.registry import RULES, register_rule
from onnx_am.passes.smooth import SMOOTH_RULES, DecoupledSmooth

__all__ = [
    "NONLINEAR_OP_TYPES",
    "RULES",
    "SMOOTH_RULES",
    "DecoupledSmooth",
    "DecoupledRectifier",
    "RectifierRule",
    "RewriteRecord",
    "RewriteResult",
    "RuleMatch",
    "SlopeControl",
    "UntouchedRecord",
    "decouple_rectifiers",
    "plan_onnx",
    "plan_rewrites",
    "register_rule",
]
