"""Click parameter types shared by the commands: one grammar for each kind of value.

``SHAPE``: a tensor shape in the grammar of :func:`onnx_am.importer.input_spec.parse_shape`
(``1,3,32,32``, ``1x3x32x32`` or ``1 3 32 32``; positive ints), used by every command's
``--input-shape``. ``FLOATS``: a comma-separated list of finite numbers (``0.1,0.3``).
``REQUIREMENT``: a ``--require`` expression (``white <= 0.2``, :mod:`onnx_am.audit.gate`).
``PROBE_LIMIT``: ``auto``, a duration (``90s``, ``10m``) or ``none``, for ``--probe-timeout``.
"""

from __future__ import annotations

import math

import click

from onnx_am.audit.budget import parse_duration
from onnx_am.audit.gate import Requirement, parse_requirement
from onnx_am.errors import OnnxAmError
from onnx_am.importer.input_spec import parse_shape
from onnx_am.importer.limits import ProbeLimit


class ShapeType(click.ParamType):
    """A shape -> ``tuple[int, ...]``."""

    name = "shape"

    def convert(self, value, param, ctx) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        shape = parse_shape(str(value))
        if shape is None:
            self.fail(f"{value!r} is not a shape like 1,3,32,32 or 1x3x32x32", param, ctx)
        return shape


class FloatsType(click.ParamType):
    """Finite numbers separated by commas -> ``tuple[float, ...]``."""

    name = "floats"

    def convert(self, value, param, ctx) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",") if p.strip()]
        try:
            numbers = tuple(float(p) for p in parts)
        except ValueError:
            numbers = ()
        if not numbers or not all(math.isfinite(n) for n in numbers):
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)
        return numbers


class RequirementType(click.ParamType):
    """``FIELD OP NUMBER`` -> :class:`onnx_am.audit.gate.Requirement`."""

    name = "expr"

    def convert(self, value, param, ctx) -> Requirement:
        if isinstance(value, Requirement):
            return value
        try:
            return parse_requirement(str(value))
        except OnnxAmError as exc:
            self.fail(str(exc), param, ctx)


class ProbeLimitType(click.ParamType):
    """``auto`` | a duration | ``none`` -> :class:`~onnx_am.importer.limits.ProbeLimit`."""

    name = "probe-limit"

    def convert(self, value, param, ctx) -> ProbeLimit:
        if isinstance(value, ProbeLimit):
            return value
        if str(value).strip().lower() == "auto":
            return ProbeLimit()
        try:
            seconds = parse_duration(str(value))
        except OnnxAmError:
            self.fail(f"{value!r} is not auto, a duration like 90s or 10m, or none", param, ctx)
        return ProbeLimit(off=True) if seconds is None else ProbeLimit(seconds=seconds)


SHAPE = ShapeType()
FLOATS = FloatsType()
REQUIREMENT = RequirementType()


PROBE_LIMIT = ProbeLimitType()
#: The ``--probe-timeout`` help of every command.
PROBE_HELP = (
    "How long each import probe and the parity check may run: auto (from the model's "
    "estimated work, at least 20 s), a duration (90s, 10m) or none."
)
