"""Requirements on an audit, for CI: ``--require "white <= 0.2"``.

A requirement compares one field of the audit's summary with a number. The fields are read
from ``report.json`` (its results, parity and summary), so a gate can be checked again on a
written report. Shares are fractions of results in ``[0, 1]``; counts are numbers of units.

========================  ======================================================================
field                     meaning
========================  ======================================================================
``units``                 units in the report (count)
``results``               results in the report (count)
``parity``                1 when the import's parity check with onnxruntime passed, else 0
``agrees``                share of results whose value onnxruntime reproduced
``beats_trivial``         share of results that beat every trivial input
``white``                 share of results that are white (see :mod:`onnx_am.audit.summary`)
``saturated``             share of results that are saturated
``KIND.<share>``          the four shares above over the results of one method kind
                          (``standard``, ``decoupled``, ``proxy``, ``best``)
``KIND.better`` ...       for ``decoupled`` / ``proxy``: units better, ``worse``, ``tie`` than
                          standard AM, ``rescued`` (standard trivial, the method not),
                          ``white_cleared`` and ``white_caused`` (counts, summed over the
                          methods of that kind)
========================  ======================================================================

Requirements are parsed once, where the user gives them (:func:`parse_requirement`), into
:class:`Requirement` values; :func:`check_requirements` evaluates them on a report.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from onnx_am.audit.summary import is_saturated, is_white, summarize
from onnx_am.errors import SettingsError

#: Exit code of ``analyze`` when the audit was written but violates a ``--require``.
REQUIREMENT_EXIT_CODE = 4

_SHARES = ("agrees", "beats_trivial", "white", "saturated")
_COUNTS = ("better", "worse", "tie", "rescued", "white_cleared", "white_caused")
_KINDS = ("standard", "decoupled", "proxy", "best")
_COMPARED_KINDS = ("decoupled", "proxy")

#: Every field a requirement may name.
FIELDS: tuple[str, ...] = (
    ("units", "results", "parity", *_SHARES)
    + tuple(f"{kind}.{share}" for kind in _KINDS for share in _SHARES)
    + tuple(f"{kind}.{count}" for kind in _COMPARED_KINDS for count in _COUNTS)
)

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_PATTERN = re.compile(r"^\s*([A-Za-z_.]+)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")


class RequirementError(SettingsError):
    """A ``--require`` expression that does not parse or names an unknown field."""


@dataclass(frozen=True)
class Requirement:
    """``field op value``, e.g. ``white <= 0.2``."""

    field: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.value:g}"

    def holds(self, actual: float) -> bool:
        """Whether ``actual`` satisfies the requirement."""
        return _OPERATORS[self.op](actual, self.value)


@dataclass(frozen=True)
class RequirementCheck:
    """One requirement evaluated on a report: ``actual`` is ``None`` when the report has
    nothing to measure it on (e.g. ``decoupled.white`` without a decoupled result), which
    counts as a failure: a gate that cannot be checked does not pass."""

    requirement: Requirement
    actual: float | None

    @property
    def passed(self) -> bool:
        return self.actual is not None and self.requirement.holds(self.actual)

    def describe(self) -> str:
        """``white <= 0.2 failed: white is 0.5`` (or ``passed``)."""
        req = self.requirement
        if self.actual is None:
            return f"{req} failed: the report has no result to measure {req.field!r} on"
        state = "passed" if self.passed else "failed"
        return f"{req} {state}: {req.field} is {self.actual:.4g}"


def parse_requirement(text: str) -> Requirement:
    """Parse ``"FIELD OP NUMBER"`` (``OP`` one of ``<= >= == != < >``).

    Raises:
        RequirementError: the text does not have that form, the number is not finite, or
            the field is unknown (the message names the nearest fields).
    """
    match = _PATTERN.match(text)
    if match is None:
        raise RequirementError(
            f"--require {text!r} is not of the form FIELD OP NUMBER (e.g. 'white <= 0.2'; "
            f"OP one of {' '.join(_OPERATORS)})"
        )
    field, op, number = match.groups()
    if field not in FIELDS:
        near = difflib.get_close_matches(field, FIELDS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise RequirementError(
            f"--require {text!r}: unknown field {field!r}{hint} (fields: units, results, "
            f"parity, {', '.join(_SHARES)}, KIND.share and decoupled/proxy.{'/'.join(_COUNTS)})"
        )
    try:
        value = float(number)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise RequirementError(f"--require {text!r}: {number!r} is not a finite number")
    return Requirement(field, op, value)


def requirement_fields(doc: dict) -> dict[str, float]:
    """The value of every field that the report ``doc`` (``report.json``) can measure."""
    results = doc.get("results", [])
    fields: dict[str, float] = {
        "units": float(len({r["target"] for r in results})),
        "results": float(len(results)),
    }
    parity = (doc.get("parity") or {}).get("passed")
    if parity is not None:
        fields["parity"] = float(bool(parity))
    fields.update(_shares(results, ""))
    for kind in _KINDS:
        fields.update(_shares([r for r in results if r.get("method_kind") == kind], f"{kind}."))
    summary = doc.get("summary") or summarize(results)
    kinds = {r["method"]: r.get("method_kind") for r in results}
    for method in summary.get("methods", []):
        kind = kinds.get(method["method"])
        if kind not in _COMPARED_KINDS or not method["units"]:
            continue
        for count in _COUNTS:
            value = method.get(count, 0)
            number = len(value) if isinstance(value, list) else float(value)
            fields[f"{kind}.{count}"] = fields.get(f"{kind}.{count}", 0.0) + number
    return fields


def _shares(results: Sequence[dict], prefix: str) -> dict[str, float]:
    if not results:
        return {}
    checked = [r for r in results if r.get("agrees") is not None]
    shares = {
        "beats_trivial": sum(bool(r.get("beats_trivial")) for r in results) / len(results),
        "white": sum(is_white(r) for r in results) / len(results),
        "saturated": sum(is_saturated(r) for r in results) / len(results),
    }
    if checked:
        shares["agrees"] = sum(bool(r["agrees"]) for r in checked) / len(checked)
    return {prefix + name: value for name, value in shares.items()}


def check_requirements(requirements: Sequence[Requirement], doc: dict) -> list[RequirementCheck]:
    """Evaluate each requirement on the report ``doc``, in the order given."""
    fields = requirement_fields(doc)
    return [RequirementCheck(req, fields.get(req.field)) for req in requirements]


__all__ = [
    "FIELDS",
    "REQUIREMENT_EXIT_CODE",
    "Requirement",
    "RequirementCheck",
    "RequirementError",
    "check_requirements",
    "parse_requirement",
    "requirement_fields",
]
