"""The activation-maximization entry point: many (unit, restart, method) rows in batches.

:func:`maximize` parses what it is given into a :class:`~onnx_am.engine.plan.RunPlan` once
(:func:`~onnx_am.engine.plan.parse_run_plan`) and runs it; :func:`maximize_plan` runs a plan:
it makes the rows (:mod:`onnx_am.engine.rows`), runs the loop (:mod:`onnx_am.engine.loop`: one
batched forward and backward per step, each row with its own target and gradient method), assembles
one result per (target, method) (:mod:`onnx_am.engine.assemble`) and cross-checks them with
onnxruntime. Per (unit, method) the best restart is reported; values are always the original
network's, also for proxy rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from onnx_am.engine.assemble import assemble_results, steps_to_95
from onnx_am.engine.baselines import trivial_baselines
from onnx_am.engine.checkpoint import Checkpointer
from onnx_am.engine.config import OPTIMIZERS, AMConfig, Progress
from onnx_am.engine.loop import optimize_rows
from onnx_am.engine.pace import Pace
from onnx_am.engine.plan import RunPlan, parse_run_plan
from onnx_am.engine.racing_run import race_rows
from onnx_am.engine.results import MaximizeReport, UnitResult
from onnx_am.engine.robustness import measure_transformed
from onnx_am.engine.rows import Row, RowOutcome, layout_rows
from onnx_am.engine.starts import make_starts
from onnx_am.importer.model import ImportedModel
from onnx_am.methods import ReportedMethod, expand_methods, method_label
from onnx_am.objectives import Target
from onnx_am.reference.crosscheck import crosscheck
from onnx_am.reference.quantized import effective_tolerance

if TYPE_CHECKING:
    from onnx_am.passes.decouple import RewriteResult


def maximize(
    imported: ImportedModel,
    targets: Sequence[Target | str] | None,
    methods: Sequence[object] | str = ("standard",),
    config: AMConfig | None = None,
    *,
    rewrite: RewriteResult | None = None,
    progress: Progress | None = None,
    checkpoint: Checkpointer | None = None,
) -> MaximizeReport:
    """Maximize every target with every method; report true activations.

    Args:
        imported: the model.
        targets: :class:`Target` objects or strings (``"logits:3"``); ``None`` for every unit
            of the first output (at most 64).
        methods: :class:`GradientMethod` objects or strings: ``"standard"``,
            ``"decoupled(0.3)"``, ``"proxy(0.6)"``, ``"decoupled(anneal(1.0))"``, a sweep
            ``"decoupled(0.1,0.3,1)"``, or ``"best"`` / ``"best(0.3)"`` (standard and
            decoupled together; per unit the higher true value).
        config: settings (default :class:`AMConfig`).
        rewrite: a :class:`RewriteResult` from ``decouple_rectifiers`` to reuse.
        progress: called after every step as ``progress(done, total, info)``; it may raise
            to stop between steps.
        checkpoint: saves the optimization state at least every ``checkpoint.interval``
            seconds and continues from a matching saved state
            (:class:`~onnx_am.engine.checkpoint.Checkpointer`).
        pace: a deadline (:class:`~onnx_am.engine.pace.Pace`): chunks then run the steps that
            still fit before it. None (default): every row runs ``plan.config.ascent.steps``.

    Returns:
        A :class:`MaximizeReport` with one result per (target, method) and the baselines.

    Raises:
        OnnxAmError: bad settings, targets or methods (``SettingsError``, ``TargetError``,
            ``MethodError``, ``InputSpecError``).
    """
    plan = parse_run_plan(imported, targets, methods, config)
    return maximize_plan(imported, plan, rewrite=rewrite, progress=progress, checkpoint=checkpoint)


def maximize_plan(
    imported: ImportedModel,
    plan: RunPlan,
    *,
    rewrite: RewriteResult | None = None,
    progress: Progress | None = None,
    checkpoint: Checkpointer | None = None,
    pace: Pace | None = None,
) -> MaximizeReport:
    """Run a :class:`RunPlan` (made by :func:`~onnx_am.engine.plan.parse_run_plan` or by
    ``analyze``); nothing in it is parsed or checked again.

    Args:
        imported: the model the plan was made for.
        plan: targets, methods and settings.
        rewrite: a :class:`RewriteResult` from ``decouple_rectifiers`` to reuse.
        progress: called after every step as ``progress(done, total, info)``; it may raise
            to stop between steps.
        checkpoint: saves the optimization state at least every ``checkpoint.interval``
            seconds and continues from a matching saved state
            (:class:`~onnx_am.engine.checkpoint.Checkpointer`).

    Returns:
        A :class:`MaximizeReport` with one result per (target, method) and the baselines.
    """
    config, targets, runs = plan.config, list(plan.targets), list(plan.runs)
    started = time.perf_counter()
    rows = layout_rows(len(targets), config.starts.restarts, len(runs))
    timings: dict[str, float] = {}

    tic = time.perf_counter()
    baselines = trivial_baselines(
        imported, targets, config.domain, config.checks.baseline_corners, config.starts.seed
    )
    timings["baselines"] = time.perf_counter() - tic

    tic = time.perf_counter()
    if config.racing is not None:  # a race makes its own starts (onnx_am.engine.racing_run)
        rows, outcome = race_rows(
            imported, config, targets, runs, baselines, rewrite, progress, pace, checkpoint
        )
    else:
        starts = make_starts(
            config.starts.start,
            imported,
            config.domain,
            targets,
            config.starts.restarts,
            config.starts.seed,
            config.starts.init_scale,
            config.starts.screen,
        )
        timings["starts"] = time.perf_counter() - tic
        tic = time.perf_counter()
        outcome = optimize_rows(
            imported, config, targets, runs, rows, starts, rewrite, progress, checkpoint, pace
        )
    timings["optimize"] = time.perf_counter() - tic

    results = assemble_results(targets, plan.methods, runs, rows, outcome, baselines, config.domain)
    measure_transformed(imported, results, config)
    tic = time.perf_counter()
    if config.checks.crosscheck:
        _crosscheck_results(imported, results, config)
    timings["crosscheck"] = time.perf_counter() - tic
    timings["total"] = time.perf_counter() - started
    settings = {
        **config.to_dict(),
        "methods": list(plan.labels),
        "targets": [t.name for t in targets],
        "batch_mode": imported.batch.mode,
        "batch_size": outcome.batch_size,
        "batch_size_auto": config.batch_size is None,
    }
    # A quantized model's cross-check allows one quantization step (reference.quantized).
    tolerance, _ = effective_tolerance(imported.original, config.checks.tolerance)
    forwards = sum(len(trace) for trace in outcome.trace)
    return MaximizeReport(results, baselines, settings, timings, tolerance, forwards)


def _crosscheck_results(
    imported: ImportedModel, results: list[UnitResult], config: AMConfig
) -> None:
    """Recompute every result's value with onnxruntime; fill in what it says, in place."""
    checks = crosscheck(
        imported,
        [r.target for r in results],
        torch.stack([torch.from_numpy(r.image) for r in results]),
        [r.activation for r in results],
        config.domain,
        config.checks.tolerance,
    )
    for result, check in zip(results, checks, strict=True):
        result.activation_onnxruntime, result.agrees = check.value, check.agrees


__all__ = [
    "OPTIMIZERS",
    "AMConfig",
    "ReportedMethod",
    "Progress",
    "Row",
    "RowOutcome",
    "assemble_results",
    "expand_methods",
    "maximize",
    "method_label",
    "parse_run_plan",
    "maximize_plan",
    "RunPlan",
    "steps_to_95",
]
