"""Gradient methods for rectifiers: how the backward pass treats the negative side.

Following Linse, Barth and Martinetz (IJCNN 2024, arXiv 2410.16958), a rectifier keeps its
forward slope ``alpha`` (0 for ReLU) and may use another slope ``beta`` in the backward pass:

- ``standard``: the true gradient (``beta = alpha``), the baseline;
- ``decoupled``: forward with ``alpha``; backward with ``beta`` wherever the input was <= 0;
- ``proxy``: the gradient of a copy of the network whose rectifiers use ``beta`` in both
  passes (ProxyGrad); the objective value still comes from the original network.

``beta`` may follow a schedule (a function of the step) and may be overridden per ONNX op
type or per ONNX node name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from onnx_am.errors import PassError

METHOD_KINDS = ("standard", "decoupled", "proxy")

#: ``schedule(step, total_steps) -> beta``; step counts from 0.
Schedule = Callable[[int, int], float]


def linear_anneal(start: float, end: float) -> Schedule:
    """Beta goes linearly from ``start`` at step 0 to ``end`` at the last step."""

    def schedule(step: int, total: int) -> float:
        fraction = step / max(total - 1, 1)
        return start + (end - start) * fraction

    schedule.label = f"anneal({start:g}->{end:g})"  # type: ignore[attr-defined]
    return schedule


def cosine_anneal(start: float, end: float) -> Schedule:
    """Beta follows half a cosine from ``start`` to ``end``."""

    def schedule(step: int, total: int) -> float:
        fraction = step / max(total - 1, 1)
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * fraction))

    schedule.label = f"cosine({start:g}->{end:g})"  # type: ignore[attr-defined]
    return schedule


@dataclass(frozen=True)
class GradientMethod:
    """How rectifier gradients are computed for one optimization row.

    Attributes:
        kind: ``"standard"``, ``"decoupled"`` or ``"proxy"``.
        beta: the backward (decoupled) or proxy slope; ignored for ``standard``.
        schedule: optional ``(step, total) -> beta``; overrides ``beta`` step by step.
            A schedule that ends at the forward slope is written with ``end=None`` in
            :func:`parse_method` (``anneal(1.0)``); modules then fall back to their alpha.
        per_op: ONNX op type -> beta, overriding ``beta`` for those ops.
        per_node: ONNX node name -> beta, overriding everything else for that node.
    """

    kind: str = "standard"
    beta: float | None = None
    schedule: Schedule | None = field(default=None, compare=False)
    per_op: Mapping[str, float] = field(default_factory=dict)
    per_node: Mapping[str, float] = field(default_factory=dict)
    anneal_to_alpha: bool = False

    def __post_init__(self):
        if self.kind not in METHOD_KINDS:
            raise PassError(
                f"unknown gradient method {self.kind!r}; choose from {', '.join(METHOD_KINDS)}"
            )
        if self.kind != "standard" and self.beta is None and self.schedule is None:
            raise PassError(f"method {self.kind!r} needs a backward slope beta")

    @property
    def label(self) -> str:
        if self.kind == "standard":
            return "standard"
        if self.anneal_to_alpha:
            return f"{self.kind}(anneal({self.beta:g}->alpha))"
        if self.schedule is not None:
            return f"{self.kind}({getattr(self.schedule, 'label', 'schedule')})"
        return f"{self.kind}({self.beta:g})"

    def beta_for(
        self, node: str, op_type: str, alpha: float, step: int = 0, total: int = 1
    ) -> float | None:
        """The slope for one rectifier node at one step; ``None`` means its own ``alpha``.

        With ``anneal_to_alpha`` the scheduled beta is blended towards ``alpha``:
        ``alpha + (beta_start - alpha) * (1 - step / (total - 1))``.
        """
        if self.kind == "standard":
            return None
        if node in self.per_node:
            return float(self.per_node[node])
        if op_type in self.per_op:
            return float(self.per_op[op_type])
        if self.anneal_to_alpha:
            fraction = step / max(total - 1, 1)
            return alpha + (float(self.beta) - alpha) * (1 - fraction)
        if self.schedule is not None:
            return float(self.schedule(step, total))
        return float(self.beta)


STANDARD = GradientMethod("standard")

_METHOD_RE = re.compile(r"^(standard|decoupled|proxy)(?:\((.*)\))?$")


def parse_method(text: str, beta: float | None = None) -> GradientMethod:
    """Parse ``standard``, ``decoupled(0.3)``, ``proxy(0.6)``, ``decoupled(anneal(1.0))``
    (anneal from 1.0 to each node's forward slope) or ``decoupled(anneal(1.0,0.1))``.

    Args:
        text: the method string.
        beta: default slope when ``text`` names none (``decoupled``).
    """
    match = _METHOD_RE.match(text.strip().replace(" ", ""))
    if not match:
        raise PassError(
            f"cannot parse gradient method {text!r}; e.g. standard, decoupled(0.3), proxy(0.6)"
        )
    kind, argument = match.group(1), match.group(2)
    if kind == "standard":
        return STANDARD
    if not argument:
        return GradientMethod(kind, beta)
    anneal = re.match(r"^(anneal|cosine)\(([^,]+)(?:,([^,]+))?\)$", argument)
    try:
        if anneal:
            start = float(anneal.group(2))
            if anneal.group(3) is None:
                if anneal.group(1) != "anneal":
                    raise PassError(f"cosine schedule needs an end slope: {text!r}")
                return GradientMethod(kind, start, anneal_to_alpha=True)
            factory = linear_anneal if anneal.group(1) == "anneal" else cosine_anneal
            return GradientMethod(kind, start, schedule=factory(start, float(anneal.group(3))))
        return GradientMethod(kind, float(argument))
    except ValueError as exc:
        raise PassError(f"cannot parse slope in gradient method {text!r}") from exc
