"""From rows to results: per (target, method plan) the best restart of the best run."""

from __future__ import annotations

from collections.abc import Sequence

from onnx_am.domain import InputDomain
from onnx_am.engine.results import TargetBaseline, UnitResult
from onnx_am.engine.rows import Row, RowOutcome
from onnx_am.methods import STANDARD, GradientMethod, ReportedMethod, method_label
from onnx_am.objectives import Target


def assemble_results(
    targets: Sequence[Target],
    plans: Sequence[ReportedMethod],
    runs: Sequence[GradientMethod],
    rows: Sequence[Row],
    outcome: RowOutcome,
    baselines: Sequence[TargetBaseline],
    domain: InputDomain,
) -> list[UnitResult]:
    """One :class:`UnitResult` per (target, plan), in target-major order.

    Args:
        targets: the targets, indexed by :attr:`Row.target`.
        plans: the reported methods.
        runs: the gradient methods, indexed by :attr:`Row.method`.
        rows: every optimized row.
        outcome: what each row reached.
        baselines: one per target.
        domain: the input box (for saturation and white fractions).

    Returns:
        The results.
    """
    by_key = {(row.target, row.method, row.restart): i for i, row in enumerate(rows)}
    labels = [method_label(m) for m in runs]
    restarts = 1 + max(row.restart for row in rows)
    results = []
    for t, target in enumerate(targets):
        standard = None
        if STANDARD.label in labels:
            standard = max(
                outcome.value[by_key[(t, labels.index("standard"), r)]] for r in range(restarts)
            )
        for plan in plans:
            candidates = [
                [by_key[(t, labels.index(method_label(m)), r)] for r in range(restarts)]
                for m in plan.runs
            ]
            results.append(
                _result(target, plan, candidates, outcome, standard, baselines[t], domain)
            )
    return results


def _result(
    target, plan, candidates, outcome, standard, baseline: TargetBaseline, domain
) -> UnitResult:
    """The best restart of the best run of a plan (ties go to the first run, standard)."""
    chosen = max(candidates, key=lambda rows: max(outcome.value[i] for i in rows))
    picked = method_label(plan.runs[candidates.index(chosen)]) if plan.kind == "best" else None
    best = max(chosen, key=lambda i: outcome.value[i])
    all_rows = [i for rows in candidates for i in rows]
    traces = _padded([outcome.trace[i] for i in all_rows])
    trace = [max(values) for values in zip(*traces, strict=True)]
    activation = outcome.value[best]
    image = outcome.image[best]
    return UnitResult(
        target=target,
        method=plan.label,
        method_kind=plan.kind,
        backward_slope=plan.beta,
        activation=activation,
        saturation=float(domain.saturation(image[None])[0]),
        white=float(domain.white(image[None])[0]),
        gain_over_standard=None if standard is None else activation - standard,
        beats_trivial=activation > baseline.best,
        picked=picked,
        best_restart=chosen.index(best),
        restart_activations=[outcome.value[i] for i in chosen],
        trace=trace,
        steps_to_95=steps_to_95(trace, activation),
        image=image.numpy(),
    )


def _padded(traces: list[list[float]]) -> list[list[float]]:
    """Traces of one length: a row whose chunk stopped at a deadline (shorter trace) keeps
    its best value over the steps it did not run."""
    length = max((len(t) for t in traces), default=0)
    return [t + t[-1:] * (length - len(t)) for t in traces]


def steps_to_95(trace: Sequence[float], activation: float) -> int | None:
    """First step whose trace reaches ``activation - 5 % of |activation|`` (95 % if positive);
    ``None`` when it never gets there or the run never left its start value."""
    if not trace or trace[-1] <= trace[0]:
        return None
    goal = activation - 0.05 * abs(activation)
    return next((step for step, value in enumerate(trace) if value >= goal), None)
