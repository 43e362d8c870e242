"""The optimization loop: batches of rows, one batched forward and backward per step.

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

Given a :class:`~onnx_am.engine.pace.Pace`, each batch runs the steps that still fit before
its deadline (fewer when the machine got slower than planned: its schedules then run over
the shorter horizon), and a batch still running at the deadline stops after its step; its
trace is then shorter.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch

from onnx_am.engine import memory
from onnx_am.engine.checkpoint import BatchState, Checkpointer
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


@dataclass(frozen=True)
class LoopContext:
    """What every batch of a call reads and none changes: the graph, its slope control, the
    settings and the pace (a :class:`BatchRun` owns what changes within a batch, a
    :class:`StepCount` the call's progress counts)."""

    imported: ImportedModel
    config: AMConfig
    extractor: torch.nn.Module
    names: list[str]
    control: object | None
    regularizers: list[Regularizer]
    parameterization: FourierParameterization | None = None
    pace: Pace | None = None
    #: steps taken at the full lr before the lr schedule starts (a race's early stages, see
    #: :func:`onnx_am.engine.racing.lr_hold`); the schedule runs over the steps after them.
    lr_hold: int = 0


@dataclass
class StepCount:
    """The steps of one engine call, as its progress callback sees them; it owns the counts.

    Attributes:
        total: the call's steps: every batch's plan, less what the pace cut.
        progress: called with ``(done, total, info)`` after every step.
        done: steps taken (or restored from a checkpoint).
        began: called with a batch's index when its steps begin, after its set-up (starts,
            baselines): what a step costs is timed from there (:mod:`onnx_am.engine.probe`).
    """

    total: int
    progress: Progress | None = None
    done: int = 0
    began: Callable[[int], None] | None = None

    def begin(self, batch: int) -> None:
        """Batch ``batch`` is set up and about to take its first step."""
        if self.began is not None:
            self.began(batch)

    def given(self, planned: int, steps: int) -> None:
        """A batch planned for ``planned`` steps is given ``steps`` (fewer when paced), or
        stopped after ``steps``."""
        self.total -= planned - steps

    def skip(self, steps: int) -> None:
        """``steps`` were taken before (a finished batch or a checkpoint restored)."""
        self.done += steps

    def stepped(self, info: dict) -> None:
        """One step was taken: count it and tell the callback (which may raise to stop)."""
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, info)


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
    began: Callable[[int], None] | None = None,
) -> RowOutcome:
    """Optimize every row, batch by batch (:func:`_batch_size` rows, each a :class:`BatchRun`);
    slopes restored at the end. (An engine batch is rows per step; ``analyze``'s chunks, the
    unit of resume, are engine calls.)

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
        checkpoint: saves finished and running batches (:mod:`onnx_am.engine.checkpoint`) and
            continues from what it restores.
        pace: the run's deadline (None: every batch runs ``config.ascent.steps``).
        began: called with a batch's index when its steps begin, after its set-up.

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
        size = _batch_size(imported, config, extractor, control, tuple(runs), dtype, len(rows))
        batches = [
            _by_method(rows, range(i, min(i + size, len(rows)))) for i in range(0, len(rows), size)
        ]
        outcome.batch_size = size
        context = LoopContext(
            imported,
            config,
            extractor,
            names,
            control,
            regularizers,
            parameterization=parameterization,
            pace=pace,
        )
        count = StepCount(len(batches) * config.ascent.steps, progress, began=began)
        resumed = None
        if checkpoint is not None:
            resumed = checkpoint.restore(_layout(config, runs, rows, size))
        for index, positions in enumerate(batches):
            batch_rows = [rows[p] for p in positions]
            x0 = torch.stack([starts[row.target, row.restart] for row in batch_rows])
            row_targets = [targets[row.target] for row in batch_rows]
            row_methods = tuple(runs[row.method] for row in batch_rows)
            if checkpoint is not None and index in checkpoint.finished:
                value, image, trace = checkpoint.finished[index]
                count.skip(config.ascent.steps)
            else:
                state = resumed if resumed is not None and resumed.index == index else None
                rows_left = sum(len(b) for b in batches[index:])
                steps = (
                    config.ascent.steps
                    if pace is None
                    else pace.steps_for(rows_left, config.ascent.steps)
                )
                count.given(config.ascent.steps, steps)
                run = BatchRun(context, x0, row_targets, row_methods, index, steps, state)
                tic = pace.now() if pace is not None else 0.0
                _drive(run, count, len(batches), checkpoint)
                if pace is not None:
                    pace.observe(len(x0), run.position, pace.now() - tic)
                    count.given(steps, run.position)
                value, image, trace = run.result()
                if checkpoint is not None:
                    checkpoint.batch_done(index, value, image, trace)
            for k, p in enumerate(positions):
                outcome.value[p] = float(value[k])
                outcome.image[p] = image[k].cpu()
                outcome.trace[p] = trace[:, k].tolist()
    finally:
        if control is not None:
            control.set_standard()
    return outcome


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
    """The positions of one batch's rows, grouped by gradient method (stable).

    Each method's rows are then contiguous, so a rectifier computes each group with one
    fused kernel (:mod:`onnx_am.passes.spans`); rows are independent, so results are the same.
    """
    return sorted(positions, key=lambda p: rows[p].method)


def _batch_size(imported: ImportedModel, config: AMConfig, extractor, control, runs, dtype, rows):
    """Rows per batch: 1 for rowwise models, else ``config.batch_size`` or, when that is
    None, what fits in memory (:func:`onnx_am.engine.memory.choose_batch_size`, at most ``rows``),
    measured on one row of each gradient method, as batches mix them."""
    if imported.batch.mode == "rowwise":
        return 1
    if config.batch_size is not None:
        return config.batch_size
    context = None if control is None else partial(control.rows, runs, 0, config.ascent.steps)
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


def _layout(config: AMConfig, runs, rows, size: int) -> dict:
    """What a checkpoint of this call must match besides the caller's key."""
    return {
        "rows": [[r.target, r.restart, r.method] for r in rows],
        "chunk": size,
        "steps": config.ascent.steps,
        "methods": [m.label for m in runs],
    }


class BatchRun:
    """One batch of rows being optimized; it owns what changes while it runs.

    Args:
        context: the graph, slope control and settings every batch shares.
        x0: the start inputs, one row each.
        targets, methods: each row's target and gradient method.
        index: the batch's place in the call (for checkpoints and progress).
        steps: the steps this batch runs (the plan's, or fewer when paced: schedules then run
            over this shorter horizon).
        resume: a saved state to continue from.

    Attributes:
        x: the optimized variable (the raw input, or a parameter of it).
        best_value, best_x: per row the best true value so far and its raw input.
        trace: per step the best value so far (``steps + 1`` entries when it ends).
        optimizer: the update's state (Adam moments).
        position: the point being looked at: after ``t`` steps, ``x`` is ``x_t``.
    """

    def __init__(
        self,
        context: LoopContext,
        x0: torch.Tensor,
        targets,
        methods,
        index: int,
        steps: int,
        resume: BatchState | None = None,
    ):
        device = context.config.device
        self.context, self.index, self.steps = context, index, steps
        self.methods = tuple(methods)  # the slope control reuses its row layout per value
        self.objective = RowObjective(targets, device)
        true_rows, self.true_objective = _true_rows(context, targets, self.methods, steps)
        self.true_index = torch.tensor(true_rows, dtype=torch.long, device=device)
        self.every_row = len(true_rows) == len(self.methods)
        self.some_rows = bool(true_rows)
        x = x0.to(device)
        if context.parameterization is not None:
            x = context.parameterization.from_raw(x)  # x is optimized, the image is raw
        self.x = x
        self.best_value = torch.full(
            (len(self.methods),), float("-inf"), dtype=torch.float64, device=device
        )
        self.best_x = (x if context.parameterization is None else _raw(context, x)).clone()
        self.trace = torch.empty((steps + 1, len(self.methods)), dtype=torch.float64, device=device)
        self.optimizer: dict = {"step": 0}
        self.position = 0
        if resume is not None:
            self._restore(resume, device)

    def _restore(self, resume: BatchState, device: str) -> None:
        self.position = resume.step
        self.x = resume.x.to(device)
        self.best_x = resume.best_x.to(device)
        self.best_value = resume.best_value.to(device)
        self.trace[: self.position] = resume.trace.to(device)
        self.optimizer = {
            k: v.to(device) if torch.is_tensor(v) else v for k, v in resume.optimizer.items()
        }

    @property
    def done(self) -> bool:
        """Whether every step has been taken (the last point is still to be measured)."""
        return self.position >= self.steps

    def step(self) -> None:
        """Measure the current point with the gradient forward, then take one step."""
        context, step = self.context, self.position
        value, grad, image = _value_and_grad(
            context, self.x, self.objective, self.methods, step, self.steps
        )
        if self.every_row:  # the same values as through the index, without the copies
            value = _true_values(context, image, self.objective)
        elif self.some_rows:
            index = self.true_index
            value[index] = _true_values(context, image[index], self.true_objective)
        self._record(value, image)
        self.x = _update(context, self.x, grad, self.optimizer, step, self.steps)
        self.position += 1

    def finish(self) -> None:
        """Measure the current point, the last: the trace ends here (early when stopped)."""
        image = _raw(self.context, self.x)
        self._record(_true_values(self.context, image, self.objective), image)
        self.trace = self.trace[: self.position + 1]

    def _record(self, value: torch.Tensor, image: torch.Tensor) -> None:
        value = torch.nan_to_num(value, nan=float("-inf"))
        better = value > self.best_value
        self.best_value = torch.where(better, value, self.best_value)
        shape = better.view(-1, *[1] * (image.dim() - 1))
        self.best_x = torch.where(shape, image, self.best_x)
        self.trace[self.position] = self.best_value

    def snapshot(self) -> BatchState:
        """The state to continue from (for a checkpoint)."""
        return BatchState(
            self.index,
            self.position,
            self.x,
            self.best_x,
            self.best_value,
            self.trace[: self.position],
            self.optimizer,
        )

    def result(self):
        """Best values, best raw inputs and the trace."""
        return self.best_value.cpu(), self.best_x.detach(), self.trace.cpu()


def _drive(run: BatchRun, count: StepCount, batches: int, checkpoint: Checkpointer | None) -> None:
    """Step ``run`` to its end, or until the pace's deadline passes (then its current point
    is its last); checkpoint every ``checkpoint.interval`` seconds and when the progress
    callback raises (``count`` calls it after every step)."""
    pace, first = run.context.pace, run.position
    count.skip(first)
    count.begin(run.index)
    while not run.done:
        if run.position > first and pace is not None and pace.expired():
            pace.stopped_early += 1  # the deadline passed: measure this input and stop
            break
        run.step()
        if checkpoint is not None and checkpoint.due():
            checkpoint.save(run.snapshot())
        # no values in ``info``: reading one from the device would sync every step
        info = {"batch": run.index, "batches": batches, "rows": len(run.methods)}
        try:
            count.stepped(info)
        except BaseException:
            if checkpoint is not None:  # stopped between steps: keep this state
                checkpoint.save(run.snapshot())
            raise
    run.finish()


def _true_rows(context: LoopContext, targets, methods, steps: int):
    """Rows whose gradient forward is not the true one (all with a transform; else proxy rows
    whose forward slopes differ from the original ones somewhere: for the others the
    gradient's forward already gives the true value, so no second forward is run)."""
    objective = RowObjective(targets, context.config.device)
    need_all = any(type(r).transform is not Regularizer.transform for r in context.regularizers)
    if need_all:
        return list(range(len(methods))), objective
    control = context.control
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


def _value_and_grad(
    context: LoopContext, x, objective: RowObjective, methods, step: int, steps: int
):
    """Values of the gradient forward (true unless proxy/transform), d objective / d x, and
    the raw input they belong to (``x`` itself with ``"pixel"``)."""
    config, spec = context.config, context.imported.input
    x = x.detach().requires_grad_(True)
    raw = x if context.parameterization is None else context.parameterization.to_raw(x)
    fed = config.domain.to_model(raw, spec)
    if context.regularizers:
        generator = torch.Generator().manual_seed(row_seed(config.starts.seed, "transform", step))
        for regularizer in context.regularizers:
            fed = regularizer.transform(fed, spec, generator)
    objective_of = _objective(context, raw, objective)
    if context.control is None:
        values, objective = objective_of(fed)
        (grad,) = torch.autograd.grad(objective, x)
    else:
        with context.control.rows(methods, step, steps):
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


def _update(context: LoopContext, x, grad, state, step_index: int, steps: int) -> torch.Tensor:
    config, hold = context.config, context.lr_hold
    lr = config.ascent.lr * lr_factor(
        config.ascent.lr_schedule,
        max(0, step_index - hold),
        steps - hold,
        config.ascent.lr_floor,
        config.ascent.lr_cycles,
    )
    grad = grad.to(x.dtype)
    if config.ascent.optimizer == "adam":
        step = _adam_step(grad, state)
    else:
        step = grad
        if config.ascent.normalize_grad:
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
