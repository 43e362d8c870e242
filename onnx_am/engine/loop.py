"""The optimization loop: chunks of rows, one batched forward and backward per step.

Every row has its own target unit and gradient method. One step is one batched forward and
backward through the rectifier-rewritten graph (:func:`onnx_am.passes.decouple_rectifiers`),
where the slope control gives each row its method's backward (or proxy) slopes, followed by
an update of the raw input:

- ``pga`` (default, as in the paper): ``x <- clip(x + lr * grad)`` with the raw gradient
  (``normalize_grad`` scales each row's gradient to unit RMS first);
- ``adam``: Adam ascent, elementwise, then the same clip.

With a parameterization other than ``"pixel"`` (:mod:`onnx_am.engine.parameterizations`, off by
default) the loop optimizes the parameter instead: the start image is turned into a
parameter, each step maps the parameter to a raw input (always inside the box, so there is
nothing to project), and the ascent step, ``pga`` or ``adam``, moves the parameter.

The value recorded is always the original network's true forward of the raw input: for
standard and decoupled rows the gradient forward already is that; for proxy rows (whose
forward is the proxy network's) and when a regularizer transforms the input, a separate
no-grad forward with standard slopes measures it. Each row keeps its best raw input so far.
Trace entry ``t`` is the best value among the points ``x_0 .. x_t`` (``steps + 1`` entries;
entry 0 is the start).

Given a :class:`~onnx_am.engine.pace.Pace`, each chunk runs the steps that still fit before
its deadline (fewer when the machine got slower than planned: its schedules then run over
the shorter horizon), and a chunk still running at the deadline stops after its step; its
trace is then shorter.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import torch

from onnx_am.engine import memory
from onnx_am.engine.checkpoint import Checkpointer, ChunkState
from onnx_am.engine.pace import Pace
from onnx_am.engine.parameterizations import FourierParameterization, make_parameterization
from onnx_am.engine.regularizers import Regularizer, parse_regularizer
from onnx_am.engine.rows import Row, RowOutcome
from onnx_am.engine.schedules import lr_factor
from onnx_am.engine.starts import row_seed
from onnx_am.importer.model import ImportedModel
from onnx_am.methods import GradientMethod
from onnx_am.objectives import RowObjective, Target

if TYPE_CHECKING:
    from onnx_am.engine.config import AMConfig, Progress
    from onnx_am.passes.decouple import RewriteResult


@dataclass
class LoopContext:
    """What every chunk needs: the graph, its slope control and the settings."""

    imported: ImportedModel
    config: AMConfig
    extractor: torch.nn.Module
    names: list[str]
    control: object | None
    regularizers: list[Regularizer]
    progress: Progress | None
    total_steps: int
    done_steps: int = 0
    parameterization: FourierParameterization | None = None
    pace: Pace | None = None


def optimize_rows(
    imported: ImportedModel,
    config: AMConfig,
    targets: Sequence[Target],
    runs: Sequence[GradientMethod],
    rows: Sequence[Row],
    starts: dict,
    rewrite: RewriteResult | None = None,
    progress: Progress | None = None,
    checkpoint: Checkpointer | None = None,
    pace: Pace | None = None,
) -> RowOutcome:
    """Optimize every row, chunk by chunk (:func:`_chunk_size` rows); slopes restored at the end.

    Args:
        imported: the model.
        config: the settings.
        targets: indexed by :attr:`Row.target`.
        runs: gradient methods, indexed by :attr:`Row.method`.
        rows: the rows, in batching order.
        starts: ``(target, restart) -> raw start input``.
        rewrite: a rectifier rewrite to reuse (made when a row needs one and this is None).
        progress: called after every step; it may raise (e.g. ``KeyboardInterrupt``) to stop
            between steps, after the state is saved to ``checkpoint``.
        checkpoint: saves finished and running chunks (:mod:`onnx_am.engine.checkpoint`) and
            continues from what it restores.
        pace: the run's deadline (None: every chunk runs ``config.steps``).

    Returns:
        Per row its best true value, input and trace.
    """
    names = list(dict.fromkeys(t.tensor for t in targets))
    parameterization = make_parameterization(config.parameterization, imported.input, config.domain)
    needs_rewrite = any(m.kind != "standard" for m in runs)
    if needs_rewrite and rewrite is None:
        from onnx_am.passes import decouple_rectifiers

        rewrite = decouple_rectifiers(imported)
    module = rewrite.module if needs_rewrite else imported.module
    control = rewrite.control if needs_rewrite else None
    regularizers = [parse_regularizer(r) if isinstance(r, str) else r for r in config.regularizers]
    outcome = RowOutcome([0.0] * len(rows), [None] * len(rows), [[] for _ in rows])
    module, control = on_device(module, control, config.device)
    try:
        extractor = imported.extractor(names, module=module)
        dtype = starts[rows[0].target, rows[0].restart].dtype if rows else torch.float32
        chunk = _chunk_size(imported, config, extractor, control, tuple(runs), dtype, len(rows))
        chunks = [
            _by_method(rows, range(i, min(i + chunk, len(rows))))
            for i in range(0, len(rows), chunk)
        ]
        outcome.batch_size = chunk
        context = LoopContext(
            imported,
            config,
            extractor,
            names,
            control,
            regularizers,
            progress,
            total_steps=len(chunks) * config.steps,
            parameterization=parameterization,
            pace=pace,
        )
        resumed = None
        if checkpoint is not None:
            resumed = checkpoint.restore(_layout(config, runs, rows, chunk))
        for index, positions in enumerate(chunks):
            chunk_rows = [rows[p] for p in positions]
            x0 = torch.stack([starts[row.target, row.restart] for row in chunk_rows])
            row_targets = [targets[row.target] for row in chunk_rows]
            row_methods = tuple(runs[row.method] for row in chunk_rows)
            if checkpoint is not None and index in checkpoint.finished:
                value, image, trace = checkpoint.finished[index]
                context.done_steps += config.steps
            else:
                state = resumed if resumed is not None and resumed.index == index else None
                rows_left = sum(len(c) for c in chunks[index:])
                value, image, trace = _paced_chunk(
                    context, rows_left, x0, row_targets, row_methods, index, len(chunks), state,
                    checkpoint,
                )  # fmt: skip
                if checkpoint is not None:
                    checkpoint.chunk_done(index, value, image, trace)
            for k, p in enumerate(positions):
                outcome.value[p] = float(value[k])
                outcome.image[p] = image[k].cpu()
                outcome.trace[p] = trace[:, k].tolist()
    finally:
        if control is not None:
            control.set_standard()
    return outcome


def _paced_chunk(context: LoopContext, rows_left: int, x0, *args):
    """:func:`run_chunk` over the steps the pace allows (all of them without a pace);
    ``rows_left``: rows of this and the later chunks of the call."""
    pace, config = context.pace, context.config
    if pace is None:
        return run_chunk(context, x0, *args)
    steps = pace.steps_for(rows_left, config.steps)
    context.config = replace(config, steps=steps)  # schedules run over the shorter horizon
    context.total_steps -= config.steps - steps
    tic = pace.now()
    try:
        value, image, trace = run_chunk(context, x0, *args)
    finally:
        context.config = config
    ran = trace.shape[0] - 1
    pace.observe(len(x0), ran, pace.now() - tic)
    context.total_steps -= steps - ran
    return value, image, trace


def on_device(module: torch.nn.Module, control, device: str):
    """``module`` and the slope control of its rectifiers, ready to run on ``device``.

    When a parameter or buffer lives elsewhere, both are deep-copied together (so the copied
    control drives the copied rectifiers) and the copy is moved: the caller's module, whose
    submodules ``imported.module`` shares, is never moved or changed.
    """
    target = torch.device(device)
    tensors = [*module.parameters(), *module.buffers()]
    if all(t.device == target for t in tensors):
        return module, control
    module, control = copy.deepcopy((module, control))
    return module.to(target), control


def _by_method(rows: Sequence[Row], positions: range) -> list[int]:
    """The positions of one chunk's rows, grouped by gradient method (stable).

    Each method's rows are then contiguous, so a rectifier computes each group with one
    fused kernel (:mod:`onnx_am.passes.runs`); rows are independent, so results are the same.
    """
    return sorted(positions, key=lambda p: rows[p].method)


def _chunk_size(imported: ImportedModel, config: AMConfig, extractor, control, runs, dtype, rows):
    """Rows per chunk: 1 for rowwise models, else ``config.batch_size`` or, when that is
    None, what fits in memory (:func:`onnx_am.engine.memory.choose_batch_size`, at most ``rows``),
    measured on one row of each gradient method, as chunks mix them."""
    if imported.batch.mode == "rowwise":
        return 1
    if config.batch_size is not None:
        return config.batch_size
    context = None if control is None else partial(control.rows, runs, 0, config.steps)
    shape = imported.input.sample_shape
    return memory.choose_batch_size(
        extractor,
        shape,
        config.device,
        dtype,
        rows=len(runs) if control else 1,
        context=context,
        cap=max(1, min(memory.max_batch(config.device), rows)),
    )


def _layout(config: AMConfig, runs, rows, chunk: int) -> dict:
    """What a checkpoint of this call must match besides the caller's key."""
    return {
        "rows": [[r.target, r.restart, r.method] for r in rows],
        "chunk": chunk,
        "steps": config.steps,
        "methods": [m.label for m in runs],
    }


def run_chunk(
    context: LoopContext,
    x0,
    targets,
    methods,
    index: int,
    chunks: int,
    resume: ChunkState | None = None,
    checkpoint: Checkpointer | None = None,
):
    """Optimize one chunk of rows; return best values, best inputs and the trace.

    ``resume`` continues from a saved state; ``checkpoint`` saves the state every
    ``checkpoint.interval`` seconds and when ``context.progress`` raises.
    """
    config = context.config
    device = config.device
    x = x0.to(device)
    parameterization = context.parameterization
    if parameterization is not None:
        x = parameterization.from_raw(x)  # x is the optimized variable, image the raw input
    state = {"step": 0}
    first = 0
    methods = tuple(methods)  # the slope control reuses its row layout for the same tuple
    objective = RowObjective(targets, device)
    true_rows, true_objective = _true_rows(context, targets, methods, objective)
    true_index = torch.tensor(true_rows, dtype=torch.long, device=device)
    every_row = len(true_rows) == len(methods)
    best_value = torch.full((len(methods),), float("-inf"), dtype=torch.float64, device=device)
    best_x = (x if parameterization is None else _raw(context, x)).clone()
    trace = torch.empty((config.steps + 1, len(methods)), dtype=torch.float64, device=device)
    if resume is not None:
        first = resume.step
        x = resume.x.to(device)
        best_x = resume.best_x.to(device)
        best_value = resume.best_value.to(device)
        trace[:first] = resume.trace.to(device)
        state = {k: v.to(device) if torch.is_tensor(v) else v for k, v in resume.optimizer.items()}
        context.done_steps += first

    def snapshot(done: int) -> ChunkState:
        return ChunkState(index, done, x, best_x, best_value, trace[:done], state)

    pace = context.pace
    for step in range(first, config.steps + 1):
        last = step == config.steps
        if not last and step > first and pace is not None and pace.expired():
            pace.stopped_early += 1  # the deadline passed: measure this input and stop
            trace, last = trace[: step + 1], True
        if not last:
            value, grad, image = _value_and_grad(context, x, objective, methods, step)
            if every_row:  # the same values as through the index, without the copies
                value = _true_values(context, image, objective)
            elif true_rows:
                value[true_index] = _true_values(context, image[true_index], true_objective)
        else:
            image = _raw(context, x)
            value = _true_values(context, image, objective)
        value = torch.nan_to_num(value, nan=float("-inf"))
        better = value > best_value
        best_value = torch.where(better, value, best_value)
        best_x = torch.where(better.view(-1, *[1] * (image.dim() - 1)), image, best_x)
        trace[step] = best_value
        if last:
            break
        x = _update(context, x, grad, state, step)
        context.done_steps += 1
        if checkpoint is not None and checkpoint.due():
            checkpoint.save(snapshot(step + 1))
        if context.progress is not None:
            # no values in ``info``: reading one from the device would sync every step
            info = {"chunk": index, "chunks": chunks, "rows": len(methods)}
            try:
                context.progress(context.done_steps, context.total_steps, info)
            except BaseException:
                if checkpoint is not None:  # stopped between steps: keep this state
                    checkpoint.save(snapshot(step + 1))
                raise
    return best_value.cpu(), best_x.detach(), trace.cpu()


def _true_rows(context: LoopContext, targets, methods, objective: RowObjective):
    """Rows whose gradient forward is not the true one (all with a transform; else proxy rows
    whose forward slopes differ from the original ones somewhere: for the others the
    gradient's forward already gives the true value, so no second forward is run)."""
    need_all = any(type(r).transform is not Regularizer.transform for r in context.regularizers)
    if need_all:
        return list(range(len(methods))), objective
    control, steps = context.control, context.config.steps
    rows = [i for i, m in enumerate(methods) if control and control.changes_forward(m, steps)]
    if len(rows) == len(methods):
        return rows, objective
    return rows, RowObjective([targets[i] for i in rows], context.config.device)


def _forward(context: LoopContext, fed: torch.Tensor, objective: RowObjective) -> torch.Tensor:
    tensors = context.imported.batch.call(context.extractor, fed)
    return objective(dict(zip(context.names, tensors, strict=True)))


def _raw(context: LoopContext, x: torch.Tensor) -> torch.Tensor:
    """The raw input the optimized variable stands for (itself with ``"pixel"``)."""
    if context.parameterization is None:
        return x
    with torch.no_grad():
        return context.parameterization.to_raw(x)


def _value_and_grad(context: LoopContext, x, objective: RowObjective, methods, step: int):
    """Values of the gradient forward (true unless proxy/transform), d objective / d x, and
    the raw input they belong to (``x`` itself with ``"pixel"``)."""
    config, spec = context.config, context.imported.input
    x = x.detach().requires_grad_(True)
    raw = x if context.parameterization is None else context.parameterization.to_raw(x)
    fed = config.domain.to_model(raw, spec)
    if context.regularizers:
        generator = torch.Generator().manual_seed(row_seed(config.seed, "transform", step))
        for regularizer in context.regularizers:
            fed = regularizer.transform(fed, spec, generator)
    objective_of = _objective(context, raw, objective)
    if context.control is None:
        values, objective = objective_of(fed)
        (grad,) = torch.autograd.grad(objective, x)
    else:
        with context.control.rows(methods, step, config.steps):
            values, objective = objective_of(fed)
            (grad,) = torch.autograd.grad(objective, x)
    return values.detach().double(), torch.nan_to_num(grad.detach()), raw.detach()


def _objective(context: LoopContext, x, row_objective: RowObjective):
    def compute(fed):
        values = _forward(context, fed, row_objective)
        objective = values.sum()
        if context.regularizers:
            centred = x - context.config.domain.mid
            for regularizer in context.regularizers:
                penalty = regularizer.penalty(centred, context.imported.input)
                if penalty is not None:
                    objective = objective - penalty.sum()
        return values, objective

    return compute


def _true_values(context: LoopContext, x, objective: RowObjective) -> torch.Tensor:
    """The original network's objective per row (standard slopes, no transforms)."""
    if context.control is not None:
        context.control.set_standard()
    with torch.no_grad():
        fed = context.config.domain.to_model(x, context.imported.input)
        return _forward(context, fed, objective).double()


def _update(context: LoopContext, x, grad, state, step_index: int) -> torch.Tensor:
    config = context.config
    lr = config.lr * lr_factor(
        config.lr_schedule, step_index, config.steps, config.lr_floor, config.lr_cycles
    )
    grad = grad.to(x.dtype)
    if config.optimizer == "adam":
        step = _adam_step(grad, state)
    else:
        step = grad
        if config.normalize_grad:
            rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
            step = grad / rms.view(-1, *[1] * (grad.dim() - 1))
    if context.parameterization is not None:
        return x + lr * step  # its raw input is inside the box by construction
    x = config.domain.project(x + lr * step)
    if not context.regularizers:
        return x  # projecting again would change nothing
    for regularizer in context.regularizers:
        x = regularizer.smooth(x, context.imported.input)
    return config.domain.project(x)


def _adam_step(grad, state, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
    """Elementwise Adam direction (rows stay independent); ``state`` carries the moments."""
    state["step"] += 1
    state["m"] = beta1 * state.get("m", torch.zeros_like(grad)) + (1 - beta1) * grad
    state["v"] = beta2 * state.get("v", torch.zeros_like(grad)) + (1 - beta2) * grad * grad
    m_hat = state["m"] / (1 - beta1 ** state["step"])
    v_hat = state["v"] / (1 - beta2 ** state["step"])
    return m_hat / (v_hat.sqrt() + eps)
