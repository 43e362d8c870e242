"""Gradient methods for rectifiers: how the backward pass treats the negative side.

Following Linse, Barth and Martinetz (IJCNN 2024, arXiv 2410.16958), a rectifier keeps its
forward slope ``alpha`` (0 for ReLU) and may use another slope ``beta`` in the backward pass:

- ``standard``: the true gradient (``beta = alpha``), the baseline;
- ``decoupled``: forward with ``alpha``; backward with ``beta`` wherever the input was <= 0;
- ``proxy``: the gradient of a copy of the network whose rectifiers use ``beta`` in both
  passes (ProxyGrad); the objective value still comes from the original network.

``beta`` may follow a schedule (a function of the step) and may be overridden per ONNX op
type or per ONNX node name.

What is reported is a :class:`ReportedMethod`: one gradient method, ``best`` (standard and
decoupled rows, per unit the higher true value) or ``portfolio`` (standard, decoupled and
annealed rows, per unit the highest). :func:`expand_methods` is the one place that
turns what a user typed (strings, sweeps, objects, a list of backward slopes) into plans.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from onnx_am.errors import MethodError

METHOD_KINDS = ("standard", "decoupled", "proxy")
#: Beta of a bare ``decoupled``/``proxy`` and of ``best``: the only place this default lives.
DEFAULT_BETA = 0.3

#: ``schedule(step, total_steps) -> beta``; step counts from 0.
Schedule = Callable[[int, int], float]


def format_slope(beta: float) -> str:
    """``beta`` as short as ``:g`` writes it when that reads back exactly, else in full
    (``0.3`` -> ``"0.3"``, ``1.0`` -> ``"1"``, ``0.123456789`` -> ``"0.123456789"``)."""
    short = f"{beta:g}"
    return short if float(short) == beta else repr(float(beta))


def linear_anneal(start: float, end: float) -> Schedule:
    """Beta goes linearly from ``start`` at step 0 to ``end`` at the last step."""

    def schedule(step: int, total: int) -> float:
        fraction = step / max(total - 1, 1)
        return start + (end - start) * fraction

    schedule.label = f"anneal({format_slope(start)}->{format_slope(end)})"  # type: ignore[attr-defined]
    return schedule


def cosine_anneal(start: float, end: float) -> Schedule:
    """Beta follows half a cosine from ``start`` to ``end``."""

    def schedule(step: int, total: int) -> float:
        fraction = step / max(total - 1, 1)
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * fraction))

    schedule.label = f"cosine({format_slope(start)}->{format_slope(end)})"  # type: ignore[attr-defined]
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
            raise MethodError(
                f"unknown gradient method {self.kind!r}; choose from {', '.join(METHOD_KINDS)}"
            )
        if self.kind != "standard" and self.beta is None and self.schedule is None:
            raise MethodError(f"method {self.kind!r} needs a backward slope beta")

    @property
    def label(self) -> str:
        if self.kind == "standard":
            return "standard"
        if self.anneal_to_alpha:
            return f"{self.kind}(anneal({self.beta:g}->alpha))"
        if self.schedule is not None:
            return f"{self.kind}({getattr(self.schedule, 'label', 'schedule')})"
        return f"{self.kind}({format_slope(self.beta)})"

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

#: The argument of ``best(anneal(beta))``, after ``best(``.
_ANNEALED_RE = re.compile(r"^anneal\(([^,()]+)\)\)$")

_METHOD_RE = re.compile(r"^(standard|decoupled|proxy)(?:\((.*)\))?$")


def parse_method(text: str, beta: float | None = None) -> GradientMethod:
    """Parse ``standard``, ``decoupled(0.3)``, ``proxy(0.6)``, ``decoupled(anneal(1.0))``
    (anneal from 1.0 to each node's forward slope) or ``decoupled(anneal(1.0,0.1))``.

    Args:
        text: the method string.
        beta: default slope when ``text`` names none (``decoupled``).

    Raises:
        MethodError: an unknown kind or an unparsable slope.
    """
    match = _METHOD_RE.match(text.strip().replace(" ", ""))
    if not match:
        raise MethodError(
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
                    raise MethodError(f"cosine schedule needs an end slope: {text!r}")
                return GradientMethod(kind, start, anneal_to_alpha=True)
            factory = linear_anneal if anneal.group(1) == "anneal" else cosine_anneal
            return GradientMethod(kind, start, schedule=factory(start, float(anneal.group(3))))
        return GradientMethod(kind, float(argument))
    except ValueError as exc:
        raise MethodError(f"cannot parse slope in gradient method {text!r}") from exc


@dataclass(frozen=True)
class ReportedMethod:
    """One reported method: its label and kind, and the gradient methods whose rows feed it.

    ``best`` runs two (standard and decoupled) and keeps per unit the higher true value.
    """

    label: str
    kind: str
    beta: float | None
    runs: tuple[GradientMethod, ...]


def best_method(beta: float = DEFAULT_BETA, *, annealed: bool = False) -> ReportedMethod:
    """``best(beta)``: standard and ``decoupled(beta)`` rows, per unit the higher true value.

    ``annealed``: ``best(anneal(beta))``, whose decoupled row is ``decoupled(anneal(beta))``:
    its backward slope falls linearly from ``beta`` to each rectifier's forward slope over
    the run, so it explores behind inactive units early and ends on the true gradient.
    """
    decoupled = GradientMethod("decoupled", beta, anneal_to_alpha=annealed)
    label = "best" + decoupled.label.removeprefix("decoupled")
    return ReportedMethod(label, "best", None if annealed else beta, (STANDARD, decoupled))


#: Start slope of the portfolio's annealed row: ``decoupled(anneal(1.0))`` goes from 1.0 (the
#: identity's slope, a gradient through every unit) to each rectifier's own forward slope.
PORTFOLIO_ANNEAL_START = 1.0


def portfolio_method(beta: float = DEFAULT_BETA) -> ReportedMethod:
    """``portfolio(beta)``: standard, ``decoupled(beta)`` and ``decoupled(anneal(1.0))`` rows,
    per unit the highest true value. The three rows explore differently (the true gradient;
    a fixed backward slope that reaches behind inactive units; a slope that starts at 1 and
    ends at the true gradient), so their best is robust where no single one is."""
    runs = (
        STANDARD,
        GradientMethod("decoupled", beta),
        GradientMethod("decoupled", PORTFOLIO_ANNEAL_START, anneal_to_alpha=True),
    )
    return ReportedMethod(f"portfolio({format_slope(beta)})", "best", beta, runs)


def expand_methods(
    methods: Sequence[object] | str | GradientMethod,
    default_beta: float = DEFAULT_BETA,
    slopes: Sequence[float] = (),
) -> list[ReportedMethod]:
    """Turn method objects and strings (sweeps and ``best`` included) into plans, once.

    Args:
        methods: one method or several: :class:`GradientMethod` or :class:`ReportedMethod`
            objects, or strings (``"standard"``, ``"decoupled(0.3)"``, a sweep
            ``"decoupled(0.1,0.3)"``, ``"best"``, ``"best(0.3)"``, schedules).
        default_beta: beta of a bare ``decoupled``/``proxy`` and of ``best``.
        slopes: backward slopes for a bare ``decoupled``/``proxy``: one method per slope,
            built from the floats as given (no formatting, so no rounding).

    Returns:
        The plans, without duplicate labels, in the order asked.

    Raises:
        MethodError: an unparsable method or an empty list.
    """
    if isinstance(methods, str | GradientMethod | ReportedMethod):
        methods = [methods]
    plans: list[ReportedMethod] = []
    for method in methods:
        plans.extend(_plans_for(method, default_beta, tuple(slopes)))
    if not plans:
        raise MethodError("no gradient method given; e.g. standard, decoupled(0.3), best")
    return list({plan.label: plan for plan in plans}.values())


def method_label(method: GradientMethod) -> str:
    """The method's label plus its per-op / per-node overrides: ``decoupled(0.3)[Relu=0.1]``."""
    overrides = {**method.per_op, **method.per_node}
    if not overrides:
        return method.label
    listed = ",".join(f"{k}={format_slope(v)}" for k, v in sorted(overrides.items()))
    return f"{method.label}[{listed}]"


def distinct_runs(plans: Sequence[ReportedMethod]) -> list[GradientMethod]:
    """The gradient methods the plans need, each once (by label), in order."""
    return list({method_label(m): m for plan in plans for m in plan.runs}.values())


def _plans_for(
    method: object, default_beta: float, slopes: tuple[float, ...]
) -> list[ReportedMethod]:
    if isinstance(method, ReportedMethod):
        return [method]
    if isinstance(method, GradientMethod):
        beta = None if method.schedule is not None or method.anneal_to_alpha else method.beta
        return [ReportedMethod(method_label(method), method.kind, beta, (method,))]
    if not isinstance(method, str):
        raise MethodError(f"a method is a string or GradientMethod, got {method!r}")
    text = method.strip().replace(" ", "")
    if text in ("decoupled", "proxy") and slopes:
        return [_plans_for(GradientMethod(text, b), default_beta, ())[0] for b in slopes]
    if text == "best":
        return [best_method(default_beta)]
    if text == "portfolio":
        return [portfolio_method(default_beta)]
    head, _, rest = text.partition("(")
    if rest.endswith(")") and "," in rest and "(" not in rest:
        pieces = rest[:-1].split(",")
        return [plan for b in pieces for plan in _plans_for(f"{head}({b})", default_beta, ())]
    if head == "best" and (annealed := _ANNEALED_RE.match(rest)):
        return [best_method(_slope(annealed.group(1), text), annealed=True)]
    if head == "best" and rest.endswith(")"):
        return [best_method(_slope(rest[:-1], text))]
    if head == "portfolio" and rest.endswith(")"):
        return [portfolio_method(_slope(rest[:-1], text))]
    return _plans_for(parse_method(text, beta=default_beta), default_beta, ())


def _slope(text: str, method: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise MethodError(f"cannot parse slope in gradient method {method!r}") from None
