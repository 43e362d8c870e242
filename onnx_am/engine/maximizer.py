"""The activation-maximization entry point: many (unit, restart, method) rows in batches.

:func:`maximize` resolves targets and methods, makes the rows (:mod:`onnx_am.engine.rows`), runs
the loop (:mod:`onnx_am.engine.loop`: one batched forward and backward per step, each row with its
own target and gradient method), assembles one result per (target, method)
(:mod:`onnx_am.engine.assemble`) and cross-checks them with onnxruntime. Settings are an
:class:`~onnx_am.engine.config.AMConfig`. Per (unit, method) the best restart is reported; values
are always the original network's, also for proxy rows.

The names of those modules are importable from here too, as before the split.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from onnx_am.engine.assemble import assemble_results, steps_to_95
from onnx_am.engine.baselines import trivial_baselines
from onnx_am.engine.config import OPTIMIZERS, AMConfig, Progress
from onnx_am.engine.loop import optimize_rows
from onnx_am.engine.results import MaximizeReport, UnitResult
from onnx_am.engine.rows import (
    MethodPlan,
    Row,
    RowOutcome,
    distinct_runs,
    expand_methods,
    layout_rows,
    method_label,
)
from onnx_am.engine.starts import make_starts
from onnx_am.importer.model import ImportedModel
from onnx_am.objectives import Target, resolve_targets
from onnx_am.reference.crosscheck import crosscheck

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
        progress: called after every step as ``progress(done, total, info)``.

    Returns:
        A :class:`MaximizeReport` with one result per (target, method) and the baselines.

    Raises:
        OnnxAmError: bad settings, targets or methods (subclasses say which).
    """
    config = config or AMConfig()
    config.validate()
    config.domain.check(imported.input)
    started = time.perf_counter()
    target_list = resolve_targets(imported, targets)
    plans = expand_methods(methods, config.default_beta)
    runs = distinct_runs(plans)
    rows = layout_rows(len(target_list), config.restarts, len(runs))
    timings: dict[str, float] = {}

    tic = time.perf_counter()
    baselines = trivial_baselines(
        imported, target_list, config.domain, config.baseline_corners, config.seed
    )
    timings["baselines"] = time.perf_counter() - tic

    tic = time.perf_counter()
    starts = make_starts(
        config.start,
        imported,
        config.domain,
        target_list,
        config.restarts,
        config.seed,
        config.init_scale,
    )
    timings["starts"] = time.perf_counter() - tic

    tic = time.perf_counter()
    outcome = optimize_rows(imported, config, target_list, runs, rows, starts, rewrite, progress)
    timings["optimize"] = time.perf_counter() - tic

    results = assemble_results(target_list, plans, runs, rows, outcome, baselines, config.domain)
    tic = time.perf_counter()
    if config.crosscheck:
        _crosscheck_results(imported, target_list, results, config)
    timings["crosscheck"] = time.perf_counter() - tic
    timings["total"] = time.perf_counter() - started
    settings = {
        **config.to_dict(),
        "methods": [plan.label for plan in plans],
        "targets": [t.name for t in target_list],
        "batch_mode": imported.batch.mode,
        "batch_size": outcome.batch_size,
        "batch_size_auto": config.batch_size is None,
    }
    return MaximizeReport(results, baselines, settings, timings, config.tolerance)


def _crosscheck_results(
    imported: ImportedModel, targets: list[Target], results: list[UnitResult], config: AMConfig
) -> None:
    """Recompute every result's value with onnxruntime; fill in what it says, in place."""
    by_name = {t.name: t for t in reversed(targets)}  # the first target of a name, as before
    checks = crosscheck(
        imported,
        [by_name[r.target] for r in results],
        torch.stack([torch.from_numpy(r.image) for r in results]),
        [r.activation for r in results],
        config.domain,
        config.tolerance,
    )
    for result, check in zip(results, checks, strict=True):
        result.activation_onnxruntime, result.agrees = check.value, check.agrees


__all__ = [
    "OPTIMIZERS",
    "AMConfig",
    "MethodPlan",
    "Progress",
    "Row",
    "RowOutcome",
    "assemble_results",
    "expand_methods",
    "maximize",
    "method_label",
    "steps_to_95",
]
