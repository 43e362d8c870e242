"""What the engine optimizes: method plans, and the rows (target, restart, method) they make.

A user asks for methods (``"best"``, a sweep ``"decoupled(0.1,0.3)"``, objects); each becomes
a :class:`MethodPlan` that names the gradient methods whose rows feed it. Every (target,
restart, gradient method) is one :class:`Row`, one optimized input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from onnx_am.errors import PassError
from onnx_am.methods import STANDARD, GradientMethod, parse_method


@dataclass(frozen=True)
class MethodPlan:
    """One reported method: its label and kind, and the gradient methods whose rows feed it.

    ``best`` runs two (standard and decoupled) and keeps per unit the higher true value.
    """

    label: str
    kind: str
    beta: float | None
    runs: tuple[GradientMethod, ...]


def expand_methods(
    methods: Sequence[object] | str | GradientMethod, default_beta: float = 0.3
) -> list[MethodPlan]:
    """Turn method objects and strings (sweeps and ``best`` included) into plans.

    Args:
        methods: one method or several (objects or strings).
        default_beta: beta of a bare ``decoupled``/``proxy`` and of ``best``.

    Returns:
        The plans, without duplicate labels, in the order asked.

    Raises:
        PassError: an unparsable method or an empty list.
    """
    if isinstance(methods, str | GradientMethod):
        methods = [methods]
    plans: list[MethodPlan] = []
    for method in methods:
        plans.extend(_plans_for(method, default_beta))
    if not plans:
        raise PassError("no gradient method given; e.g. standard, decoupled(0.3), best")
    return list({plan.label: plan for plan in plans}.values())


def method_label(method: GradientMethod) -> str:
    """The method's label plus its per-op / per-node overrides: ``decoupled(0.3)[Relu=0.1]``."""
    overrides = {**method.per_op, **method.per_node}
    if not overrides:
        return method.label
    return method.label + "[" + ",".join(f"{k}={v:g}" for k, v in sorted(overrides.items())) + "]"


def distinct_runs(plans: Sequence[MethodPlan]) -> list[GradientMethod]:
    """The gradient methods the plans need, each once (by label), in order."""
    return list({method_label(m): m for plan in plans for m in plan.runs}.values())


def _plans_for(method: object, default_beta: float) -> list[MethodPlan]:
    if isinstance(method, GradientMethod):
        beta = None if method.schedule is not None or method.anneal_to_alpha else method.beta
        return [MethodPlan(method_label(method), method.kind, beta, (method,))]
    text = str(method).strip().replace(" ", "")
    if text == "best" or text.startswith("best("):
        beta = float(text[5:-1]) if text.startswith("best(") else default_beta
        decoupled = GradientMethod("decoupled", beta)
        return [MethodPlan(f"best({beta:g})", "best", beta, (STANDARD, decoupled))]
    head, _, rest = text.partition("(")
    if rest.endswith(")") and "," in rest and "(" not in rest:
        return [
            plan
            for beta in rest[:-1].split(",")
            for plan in _plans_for(f"{head}({beta})", default_beta)
        ]
    return _plans_for(parse_method(text, beta=default_beta), default_beta)


@dataclass(frozen=True)
class Row:
    """One optimized input: indices into the targets, restarts and gradient methods."""

    target: int
    restart: int
    method: int


def layout_rows(targets: int, restarts: int, runs: int) -> list[Row]:
    """Every (target, restart, run), target-major: the order rows are batched in."""
    return [Row(t, r, m) for t in range(targets) for r in range(restarts) for m in range(runs)]


@dataclass
class RowOutcome:
    """Per row: best true value, the raw input that gave it, and the per-step trace; and
    the rows per chunk the loop used."""

    value: list[float]
    image: list[torch.Tensor]
    trace: list[list[float]]
    batch_size: int | None = None
