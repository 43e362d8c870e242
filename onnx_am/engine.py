"""The activation-maximization loop: many (unit, restart, method) rows in one batch.

Every row has its own target unit and gradient method. One step is one batched forward and
backward through the rectifier-rewritten graph (:func:`onnx_am.passes.decouple_rectifiers`),
where the slope control gives each row its method's backward (or proxy) slopes, followed by
an update of the raw input:

- ``pga`` (default, as in the paper): ``x <- clip(x + lr * grad)`` with the raw gradient
  (``normalize_grad`` scales each row's gradient to unit RMS first);
- ``adam``: Adam ascent, elementwise, then the same clip.

The value recorded is always the original network's true forward: for standard and
decoupled rows the gradient forward already is that; for proxy rows (whose forward is the
proxy network's) and when a regularizer transforms the input, a separate no-grad forward with
standard slopes measures it. Each row keeps its best point so far; per (unit, method) the
best restart is reported. Trace entry ``t`` is the best value over restarts among the points
``x_0 .. x_t`` (``steps + 1`` entries; entry 0 is the start).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from onnx_am.baselines import trivial_baselines
from onnx_am.crosscheck import DEFAULT_TOLERANCE, crosscheck
from onnx_am.domain import InputDomain
from onnx_am.errors import OnnxAmError, PassError
from onnx_am.importer import ImportedModel
from onnx_am.methods import STANDARD, GradientMethod, parse_method
from onnx_am.objectives import RowObjective, Target, resolve_targets
from onnx_am.regularizers import Regularizer, parse_regularizer
from onnx_am.results import MaximizeReport, TargetBaseline, UnitResult
from onnx_am.starts import START_KINDS, make_starts, row_seed

OPTIMIZERS = ("pga", "adam")

#: ``progress(done_steps, total_steps, info)``; ``info`` has ``chunk``, ``chunks``, ``rows``.
Progress = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class AMConfig:
    """Settings of one :func:`maximize` call.

    Attributes:
        steps: gradient steps per row.
        lr: step size (raw-input units per unit gradient for ``pga``).
        optimizer: ``"pga"`` (projected gradient ascent) or ``"adam"``.
        normalize_grad: scale each row's gradient to unit RMS before a ``pga`` step.
        restarts: independent starts per (unit, method); the best is reported.
        seed: seeds starts, random corners and jitter.
        start: one of :data:`onnx_am.starts.START_KINDS`.
        init_scale: noise of the ``random`` start, as a fraction of half the range.
        domain: the raw input box and preprocessing.
        batch_size: rows per chunk (bounds memory); rowwise-only models use 1.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"``).
        crosscheck: recompute every result with onnxruntime.
        tolerance: relative tolerance of the cross-check.
        regularizers: regularizers or strings like ``"tv(0.1)"``; none by default.
        baseline_corners: random corners tried by the trivial baselines.
        default_beta: beta of a bare ``decoupled``/``proxy`` and of ``best``.
    """

    steps: int = 256
    lr: float = 0.05
    optimizer: str = "pga"
    normalize_grad: bool = False
    restarts: int = 1
    seed: int = 0
    start: str = "random"
    init_scale: float = 0.1
    domain: InputDomain = field(default_factory=InputDomain)
    batch_size: int = 64
    device: str = "cpu"
    crosscheck: bool = True
    tolerance: float = DEFAULT_TOLERANCE
    regularizers: tuple[Regularizer | str, ...] = ()
    baseline_corners: int = 16
    default_beta: float = 0.3

    def validate(self) -> None:
        """Raise :class:`OnnxAmError` naming the first bad setting."""
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (
                self.optimizer in OPTIMIZERS,
                f"unknown optimizer {self.optimizer!r}; choose pga or adam",
            ),
            (self.restarts >= 1, f"restarts must be >= 1, got {self.restarts}"),
            (
                self.start in START_KINDS,
                f"unknown start {self.start!r}; choose from {', '.join(START_KINDS)}",
            ),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.tolerance > 0, f"tolerance must be > 0, got {self.tolerance}"),
        ]
        for ok, message in checks:
            if not ok:
                raise OnnxAmError(message)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise OnnxAmError(f"device {self.device!r} asked for but torch sees no CUDA device")
        if not self.device.startswith(("cpu", "cuda")):
            raise OnnxAmError(f"unknown device {self.device!r}; use cpu or cuda")

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k not in ("domain", "regularizers")}
        data["domain"] = self.domain.to_dict()
        data["regularizers"] = [r if isinstance(r, str) else r.label for r in self.regularizers]
        return data


@dataclass
class _Context:
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


def maximize(
    imported: ImportedModel,
    targets: Sequence[Target | str] | None,
    methods: Sequence[object] | str = ("standard",),
    config: AMConfig | None = None,
    *,
    rewrite=None,
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
    runs = list({method_label(m): m for plan in plans for m in plan.runs}.values())
    rows = [
        Row(t, r, m)
        for t in range(len(target_list))
        for r in range(config.restarts)
        for m in range(len(runs))
    ]
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
    outcome = _optimize(imported, config, target_list, runs, rows, starts, rewrite, progress)
    timings["optimize"] = time.perf_counter() - tic

    results = assemble_results(target_list, plans, runs, rows, outcome, baselines, config.domain)
    tic = time.perf_counter()
    if config.crosscheck:
        images = torch.stack([torch.from_numpy(r.image) for r in results])
        checks = crosscheck(
            imported,
            [target_list[_target_index(target_list, r.target)] for r in results],
            images,
            [r.activation for r in results],
            config.domain,
            config.tolerance,
        )
        for result, check in zip(results, checks, strict=True):
            result.activation_onnxruntime, result.agrees = check.value, check.agrees
    timings["crosscheck"] = time.perf_counter() - tic
    timings["total"] = time.perf_counter() - started
    settings = {
        **config.to_dict(),
        "methods": [plan.label for plan in plans],
        "targets": [t.name for t in target_list],
        "batch_mode": imported.batch.mode,
    }
    return MaximizeReport(results, baselines, settings, timings, config.tolerance)


def _target_index(targets: list[Target], name: str) -> int:
    return next(i for i, t in enumerate(targets) if t.name == name)


@dataclass
class RowOutcome:
    """Per row: best true value, the raw input that gave it, and the per-step trace."""

    value: list[float]
    image: list[torch.Tensor]
    trace: list[list[float]]


def _optimize(imported, config, targets, runs, rows, starts, rewrite, progress) -> RowOutcome:
    names = list(dict.fromkeys(t.tensor for t in targets))
    needs_rewrite = any(m.kind != "standard" for m in runs)
    if needs_rewrite and rewrite is None:
        from onnx_am.passes import decouple_rectifiers

        rewrite = decouple_rectifiers(imported)
    module = rewrite.module if needs_rewrite else imported.module
    control = rewrite.control if needs_rewrite else None
    chunk = 1 if imported.batch.mode == "rowwise" else config.batch_size
    chunks = [rows[i : i + chunk] for i in range(0, len(rows), chunk)]
    regularizers = [parse_regularizer(r) if isinstance(r, str) else r for r in config.regularizers]
    outcome = RowOutcome([0.0] * len(rows), [None] * len(rows), [[] for _ in rows])
    moved = config.device != "cpu"
    try:
        if moved:
            module.to(config.device)
        context = _Context(
            imported,
            config,
            imported.extractor(names, module=module),
            names,
            control,
            regularizers,
            progress,
            total_steps=len(chunks) * config.steps,
        )
        offset = 0
        for index, chunk_rows in enumerate(chunks):
            x0 = torch.stack([starts[row.target, row.restart] for row in chunk_rows])
            row_targets = [targets[row.target] for row in chunk_rows]
            row_methods = [runs[row.method] for row in chunk_rows]
            value, image, trace = _run_chunk(
                context, x0, row_targets, row_methods, index, len(chunks)
            )
            for k in range(len(chunk_rows)):
                outcome.value[offset + k] = float(value[k])
                outcome.image[offset + k] = image[k].cpu()
                outcome.trace[offset + k] = trace[:, k].tolist()
            offset += len(chunk_rows)
    finally:
        if control is not None:
            control.set_standard()
        if moved:
            module.to("cpu")
    return outcome


def _run_chunk(context: _Context, x0, targets, methods, index: int, chunks: int):
    """Optimize one chunk of rows; return best values, best inputs and the trace."""
    config = context.config
    device = config.device
    x = x0.to(device)
    state = {"step": 0}
    proxy_rows = [i for i, m in enumerate(methods) if m.kind == "proxy"]
    need_all = any(type(r).transform is not Regularizer.transform for r in context.regularizers)
    true_rows = list(range(len(methods))) if need_all else proxy_rows
    objective = RowObjective(targets, device)
    true_objective = RowObjective([targets[i] for i in true_rows], device)
    true_index = torch.tensor(true_rows, dtype=torch.long, device=device)
    best_value = torch.full((len(methods),), float("-inf"), dtype=torch.float64, device=device)
    best_x = x.clone()
    trace = torch.empty((config.steps + 1, len(methods)), dtype=torch.float64, device=device)
    for step in range(config.steps + 1):
        if step < config.steps:
            value, grad = _value_and_grad(context, x, objective, methods, step)
            if true_rows:
                value[true_index] = _true_values(context, x[true_index], true_objective)
        else:
            value = _true_values(context, x, objective)
        value = torch.nan_to_num(value, nan=float("-inf"))
        better = value > best_value
        best_value = torch.where(better, value, best_value)
        best_x = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x, best_x)
        trace[step] = best_value
        if step < config.steps:
            x = _update(context, x, grad, state)
            context.done_steps += 1
            if context.progress is not None:
                info = {
                    "chunk": index,
                    "chunks": chunks,
                    "rows": len(methods),
                    "best": float(best_value.max()),
                }
                context.progress(context.done_steps, context.total_steps, info)
    return best_value.cpu(), best_x.detach(), trace.cpu()


def _forward(context: _Context, fed: torch.Tensor, objective: RowObjective) -> torch.Tensor:
    tensors = context.imported.batch.call(context.extractor, fed)
    return objective(dict(zip(context.names, tensors, strict=True)))


def _value_and_grad(context: _Context, x, objective: RowObjective, methods, step: int):
    """Values of the gradient forward (true unless proxy/transform) and d objective / d x."""
    config, spec = context.config, context.imported.input
    x = x.detach().requires_grad_(True)
    fed = config.domain.to_model(x, spec)
    if context.regularizers:
        generator = torch.Generator().manual_seed(row_seed(config.seed, "transform", step))
        for regularizer in context.regularizers:
            fed = regularizer.transform(fed, spec, generator)
    objective_of = _objective(context, x, objective)
    if context.control is None:
        values, objective = objective_of(fed)
        (grad,) = torch.autograd.grad(objective, x)
    else:
        with context.control.rows(list(methods), step, config.steps):
            values, objective = objective_of(fed)
            (grad,) = torch.autograd.grad(objective, x)
    return values.detach().double(), torch.nan_to_num(grad.detach())


def _objective(context: _Context, x, row_objective: RowObjective):
    def compute(fed):
        values = _forward(context, fed, row_objective)
        objective = values.sum()
        centred = x - context.config.domain.mid
        for regularizer in context.regularizers:
            penalty = regularizer.penalty(centred, context.imported.input)
            if penalty is not None:
                objective = objective - penalty.sum()
        return values, objective

    return compute


def _true_values(context: _Context, x, objective: RowObjective) -> torch.Tensor:
    """The original network's objective per row (standard slopes, no transforms)."""
    if context.control is not None:
        context.control.set_standard()
    with torch.no_grad():
        fed = context.config.domain.to_model(x, context.imported.input)
        return _forward(context, fed, objective).double()


def _update(context: _Context, x, grad, state) -> torch.Tensor:
    config = context.config
    grad = grad.to(x.dtype)
    if config.optimizer == "adam":
        step = _adam_step(grad, state)
    else:
        step = grad
        if config.normalize_grad:
            rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
            step = grad / rms.view(-1, *[1] * (grad.dim() - 1))
    x = config.domain.project(x + config.lr * step)
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


# --- methods: what the user asked for -> the gradient methods the rows run -----------------


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


# --- rows and results ---------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One optimized input: indices into the targets, restarts and gradient methods."""

    target: int
    restart: int
    method: int


def assemble_results(targets, plans, runs, rows, outcome, baselines, domain) -> list[UnitResult]:
    """One :class:`UnitResult` per (target, plan), in target-major order."""
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
    best = max(chosen, key=lambda i: outcome.value[i])
    all_rows = [i for rows in candidates for i in rows]
    trace = [max(values) for values in zip(*(outcome.trace[i] for i in all_rows), strict=True)]
    activation = outcome.value[best]
    image = outcome.image[best]
    return UnitResult(
        target=target.name,
        tensor=target.tensor,
        unit=target.unit,
        kind=target.kind,
        method=plan.label,
        method_kind=plan.kind,
        backward_slope=plan.beta,
        activation=activation,
        saturation=float(domain.saturation(image[None])[0]),
        white=float(domain.white(image[None])[0]),
        gain_over_standard=None if standard is None else activation - standard,
        beats_trivial=activation > baseline.best,
        best_restart=chosen.index(best),
        restart_activations=[outcome.value[i] for i in chosen],
        trace=trace,
        steps_to_95=steps_to_95(trace, activation),
        image=image.numpy(),
    )


def steps_to_95(trace: Sequence[float], activation: float) -> int | None:
    """First step whose trace reaches ``activation - 5 % of |activation|`` (95 % if positive)."""
    goal = activation - 0.05 * abs(activation)
    return next((step for step, value in enumerate(trace) if value >= goal), None)


__all__ = ["AMConfig", "MethodPlan", "Progress", "expand_methods", "maximize", "steps_to_95"]
