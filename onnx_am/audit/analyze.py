"""``analyze``: the zero-config audit of an ONNX model, written to a report directory.

import -> parity with onnxruntime -> plan targets and methods -> maximize chunk by chunk,
writing ``report.json`` after every chunk -> plots and ``index.html``.

A chunk is a fixed group of target units, optimized with every method in one
:func:`onnx_am.engine.maximizer.maximize` call. The engine seeds every start from
``(seed, target, restart)``, and the grouping into chunks depends only on the settings, so a
chunk's results do not depend on what ran before it: a resumed report ends exactly like an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnx_am.audit.render.images import DisplayDomain
from onnx_am.audit.render.plots import save_picture
from onnx_am.audit.render.site import render_plots, write_page
from onnx_am.audit.report import REPORT_FILE, SCHEMA_VERSION, ReportDir
from onnx_am.audit.summary import summarize
from onnx_am.domain import InputDomain
from onnx_am.engine.maximizer import AMConfig, expand_methods, maximize
from onnx_am.engine.parameterizations import check_parameterization
from onnx_am.engine.results import TargetBaseline, UnitResult
from onnx_am.errors import OnnxAmError
from onnx_am.importer.model import ImportedModel, import_onnx
from onnx_am.objectives import Target, default_targets, parse_targets
from onnx_am.reference.parity import ParityResult, check_parity

# Defaults chosen from benchmarks/results/am_quality.md (see README "Results"): standard and
# decoupled(0.3) side by side, and best(0.3), the per-unit higher true value of the two (it
# shares their rows, so it costs nothing more). 256 steps at lr 0.1 converge on the sample
# models; 1024 steps add about 3 points.
DEFAULT_METHODS = ("standard", "decoupled(0.3)", "best(0.3)")
DEFAULT_STEPS = 256
DEFAULT_RESTARTS = 3
#: Step of projected gradient ascent for the -1..1 box; scaled by (high - low) / 2 for other
#: input ranges unless ``lr`` is given.
DEFAULT_LR = 0.1
#: How a step is taken. ``raw`` is the paper's ``x <- clip(x + lr * grad)``; its step scales
#: with the gradient, which for a channel of an early layer is orders of magnitude smaller
#: than for a logit: benchmarks/results/step_rule.md measured raw steps at lr 0.1 failing to
#: beat a trivial input on 16/16 early-channel runs, while ``normalized`` (each row's gradient
#: scaled to unit RMS) reached 0.88-1.00 of the best known and matched or beat raw steps on
#: class logits. ``adam`` is also offered.
STEP_RULES = {
    "normalized": {"optimizer": "pga", "normalize_grad": True},
    "raw": {"optimizer": "pga", "normalize_grad": False},
    "adam": {"optimizer": "adam", "normalize_grad": False},
}
DEFAULT_STEP_RULE = "normalized"
DEFAULT_SEED = 0
DEFAULT_MAX_UNITS = 64
DEFAULT_INPUT_RANGE = "-1..1"
#: Rows (units x methods x restarts) per chunk; a chunk is also the unit of resume.
CHUNK_ROWS = 64


@dataclass(frozen=True)
class AnalyzeOptions:
    """What ``onnx-am analyze`` does; every field has the command's default.

    Attributes:
        targets: target strings (``"logits:3"``, ``"conv3:0-7"``); empty: every unit of the
            first output (up to ``max_units``).
        layers: intermediate tensors whose channels are added as targets.
        methods: gradient methods (``standard``, ``decoupled(0.3)``, ``proxy(0.6)``, ``best``,
            schedules); bare ``decoupled``/``proxy`` take every ``backward_slopes`` value.
        backward_slopes: slopes for bare methods; several make a sweep.
        steps, lr, restarts, seed: the optimization; ``lr=None`` is ``DEFAULT_LR`` scaled
            to the input range (``DEFAULT_LR * (high - low) / 2``).
        input_name, input_shape: which input, and its full shape when symbolic.
        input_range: the raw input box, ``"-1..1"``, ``"0..1"``, ``"0..255"``.
        mean, std: per-channel normalization the model expects (raw units).
        device: ``"cpu"`` or ``"cuda"``.
        batch_size: rows per engine step inside a chunk; ``None`` fits them to the free
            memory (:mod:`onnx_am.engine.memory`). A chunk of :data:`CHUNK_ROWS` stays the unit of
            resume either way.
        step_rule: ``"normalized"`` (default), ``"raw"`` (the paper's update) or ``"adam"``;
            see :data:`STEP_RULES`.
        parameterization: ``"pixel"`` (the paper's raw input), ``"fourier"`` or
            ``"fourier+decorrelated"`` (image inputs; :mod:`onnx_am.engine.parameterizations`).
        max_units: cap on units per tensor.
        force: overwrite an existing report.
        resume: continue an existing report made with the same settings.
    """

    targets: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    backward_slopes: tuple[float, ...] = ()
    steps: int = DEFAULT_STEPS
    lr: float | None = None
    restarts: int = DEFAULT_RESTARTS
    seed: int = DEFAULT_SEED
    input_name: str | None = None
    input_shape: tuple[int, ...] | None = None
    input_range: str = DEFAULT_INPUT_RANGE
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    device: str = "cpu"
    batch_size: int | None = None
    parameterization: str = "pixel"
    step_rule: str = DEFAULT_STEP_RULE
    max_units: int = DEFAULT_MAX_UNITS
    force: bool = False
    resume: bool = False

    def method_strings(self) -> list[str]:
        """The methods to run, with bare ``decoupled``/``proxy`` expanded over the slopes."""
        methods = list(self.methods)
        if not methods:
            methods = ["standard", "decoupled"] if self.backward_slopes else list(DEFAULT_METHODS)
        if not self.backward_slopes:
            return methods
        slopes = ",".join(f"{b:g}" for b in self.backward_slopes)
        return [f"{m}({slopes})" if m.strip() in ("decoupled", "proxy") else m for m in methods]


@dataclass(frozen=True)
class AnalyzeProgress:
    """One progress report: ``phase`` and, while optimizing, how far it got.

    Attributes:
        phase: ``"import"``, ``"parity"``, ``"optimize"``, ``"render"`` or ``"done"``.
        units_done: target units finished (resumed ones included).
        units_total: target units planned.
        steps_done: steps of the current chunk done.
        steps_total: steps of the current chunk.
        chunk_units: target units in the current chunk.
    """

    phase: str
    units_done: int = 0
    units_total: int = 0
    steps_done: int = 0
    steps_total: int = 0
    chunk_units: int = 0

    @property
    def fraction(self) -> float:
        """Share of the optimization done, 0..1."""
        if not self.units_total:
            return 1.0 if self.phase in ("render", "done") else 0.0
        chunk = self.steps_done / self.steps_total if self.steps_total else 0.0
        return min(1.0, (self.units_done + chunk * self.chunk_units) / self.units_total)


ProgressCallback = Callable[[AnalyzeProgress], None]


@dataclass
class AnalyzeReport:
    """What :func:`analyze` wrote.

    Attributes:
        out_dir: the report directory.
        doc: the content of ``report.json``.
        results: every result, images included.
        parity: torch vs onnxruntime on random inputs.
    """

    out_dir: Path
    doc: dict
    results: list[UnitResult]
    parity: ParityResult

    @property
    def disagreements(self) -> list[UnitResult]:
        return [r for r in self.results if not r.agrees]

    @property
    def exit_code(self) -> int:
        """0, or 3 when onnxruntime disagrees (parity or any result)."""
        return 3 if (not self.parity.passed or self.disagreements) else 0


def default_out_dir(model_path: str | Path) -> Path:
    """``./onnx-am-report/<model stem>/``."""
    return Path("onnx-am-report") / Path(model_path).stem


def analyze(
    model_path: str | Path,
    options: AnalyzeOptions | None = None,
    out_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> AnalyzeReport:
    """Audit a model and write the report directory.

    Args:
        model_path: the ``.onnx`` file.
        options: settings (defaults: :class:`AnalyzeOptions`).
        out_dir: the report directory (default :func:`default_out_dir`).
        progress: called with :class:`AnalyzeProgress` as work proceeds; it may raise
            (e.g. ``KeyboardInterrupt``) to stop, keeping what was written.

    Returns:
        The :class:`AnalyzeReport`; its ``exit_code`` is 3 when onnxruntime disagrees.

    Raises:
        OnnxAmError: unreadable model, bad settings or targets, or an existing report that
            may not be overwritten or resumed (subclasses say which).
    """
    options = options or AnalyzeOptions()
    notify = progress or (lambda event: None)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    notify(AnalyzeProgress("import"))
    imported = import_onnx(model_path, options.input_name, options.input_shape)
    domain = _domain(options, imported)
    config = _config(options, domain)
    check_parameterization(config.parameterization, imported.input)
    targets = plan_targets(imported, options)
    methods = options.method_strings()
    expand_methods(methods, config.default_beta)  # fail on bad methods before writing anything
    timings["import"] = time.perf_counter() - started

    settings = _settings(options, config, targets, methods)
    model = model_summary(model_path, imported)
    report = ReportDir.open(out_dir or default_out_dir(model_path), options.force, options.resume)
    report.check_resumable(model["sha256"], settings)

    notify(AnalyzeProgress("parity"))
    tic = time.perf_counter()
    parity = _parity(imported, domain)
    timings["parity"] = time.perf_counter() - tic
    rewrite = _rewrite(imported, methods, config)
    run = _Run(
        report,
        imported,
        config,
        methods,
        rewrite,
        DisplayDomain(domain.low, domain.high, imported.input.layout),
    )
    run.doc = {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "model": model,
        "parity": parity.to_dict(),
        "rewrites": rewrite.to_dict() if rewrite is not None else None,
        "settings": settings,
        "timings": timings,
    }
    run.restore(report.done_results(), report.done_baselines())

    tic = time.perf_counter()
    run.optimize(targets, notify)
    timings["optimize"] = time.perf_counter() - tic
    notify(AnalyzeProgress("render", len(targets), len(targets)))
    doc = run.finish(targets, timings, started)
    report.write_json(REPORT_FILE, doc)
    notify(AnalyzeProgress("done", len(targets), len(targets)))
    return AnalyzeReport(report.root, doc, run.ordered(targets), parity)


def plan_targets(imported: ImportedModel, options: AnalyzeOptions) -> list[Target]:
    """``--target`` strings (or every unit of the first output), plus ``--layer`` channels."""
    if options.targets:
        targets = parse_targets(list(options.targets), imported, cap=options.max_units)
    else:
        targets = default_targets(imported, cap=options.max_units)
    if options.layers:
        targets += parse_targets(list(options.layers), imported, cap=options.max_units)
    return list(dict.fromkeys(targets))


def plan_chunks(targets: list[Target], rows_per_unit: int) -> list[list[Target]]:
    """Fixed groups of targets, about :data:`CHUNK_ROWS` rows each."""
    size = max(1, CHUNK_ROWS // max(1, rows_per_unit))
    return [targets[i : i + size] for i in range(0, len(targets), size)]


def model_summary(model_path: str | Path, imported: ImportedModel) -> dict:
    """Path, sha256, producer, opsets, input and outputs of the model."""
    path = Path(model_path)
    original: onnx.ModelProto = imported.original
    producer = " ".join(
        p for p in (original.producer_name, original.producer_version) if p and p != "None"
    )
    return {
        "path": str(path),
        "name": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "producer": producer or None,
        "ir_version": int(original.ir_version),
        "opsets": dict(imported.opsets),
        "input": imported.input.to_dict(),
        "outputs": [spec.to_dict() for spec in imported.outputs],
        "batch_mode": imported.batch.mode,
        "prepass_notes": list(imported.prepass_notes),
    }


class _Run:
    """Results gathered so far, and the writing of each finished chunk."""

    def __init__(self, report, imported, config, methods, rewrite, display):
        self.report, self.imported, self.config = report, imported, config
        self.methods, self.rewrite, self.display = methods, rewrite, display
        self.results: dict[tuple[str, str], UnitResult] = {}
        self.entries: dict[tuple[str, str], dict] = {}
        self.baselines: dict[str, TargetBaseline] = {}
        self.doc: dict = {}
        self.plans = expand_methods(methods, config.default_beta)
        self.labels = [plan.label for plan in self.plans]

    def restore(self, results: list[UnitResult], baselines: list[TargetBaseline]) -> None:
        for result in results:
            self._keep(result, self.report.image_name(result))
        self.baselines.update({b.target: b for b in baselines})

    def optimize(self, targets: list[Target], notify: ProgressCallback) -> None:
        runs = len({m.label for plan in self.plans for m in plan.runs})
        labels = self.labels
        chunks = plan_chunks(targets, runs * self.config.restarts)
        done = sum(len(chunk) for chunk in chunks if self._finished(chunk, labels))
        for chunk in chunks:
            if self._finished(chunk, labels):
                continue
            on_step = _step_reporter(notify, done, len(targets), len(chunk))
            on_step(0, 1, {})
            found = maximize(
                self.imported,
                chunk,
                self.methods,
                self.config,
                rewrite=self.rewrite,
                progress=on_step,
            )
            for result in found.results:
                self._save(result)
            self.baselines.update({b.target: b for b in found.baselines})
            done += len(chunk)
            self.report.write_json(REPORT_FILE, self.document(targets, "running"))
            notify(AnalyzeProgress("optimize", done, len(targets)))

    def finish(self, targets: list[Target], timings: dict, started: float) -> dict:
        """Plots, then the page, which shows every timing (render and total included)."""
        doc = self.document(targets, "complete")
        results = self.ordered(targets)
        tic = time.perf_counter()
        plots = render_plots(self.report, results, self.display)
        timings["render"] = time.perf_counter() - tic
        timings["total"] = time.perf_counter() - started
        write_page(self.report, doc, plots, results, self.display)
        return doc

    def document(self, targets: list[Target], status: str) -> dict:
        names = [t.name for t in targets]
        entries = [self.entries[key] for key in self._keys(targets)]
        return {
            **self.doc,
            "status": status,
            "summary": summarize(entries),
            "results": entries,
            "baselines": [self.baselines[n].to_dict() for n in names if n in self.baselines],
        }

    def ordered(self, targets: list[Target]) -> list[UnitResult]:
        return [self.results[key] for key in self._keys(targets)]

    def _keys(self, targets: list[Target]) -> list[tuple[str, str]]:
        """Result keys in plan order (targets, then methods), whatever order they finished in."""
        return [
            (t.name, label)
            for t in targets
            for label in self.labels
            if (t.name, label) in self.results
        ]

    def _finished(self, chunk: list[Target], labels: list[str]) -> bool:
        return all((t.name, label) in self.results for t in chunk for label in labels)

    def _save(self, result: UnitResult) -> None:
        name = self.report.image_name(result)
        image = np.asarray(result.image)
        self.report.write_with(str(Path(name).with_suffix(".npy")), lambda tmp: np.save(tmp, image))
        self.report.write_with(name, lambda tmp: save_picture(image, self.display, Path(tmp)))
        self._keep(result, name)

    def _keep(self, result: UnitResult, name: str) -> None:
        key = (result.target, result.method)
        self.results[key] = result
        self.entries[key] = self.report.result_entry(
            result, name if result.image is not None else None
        )


def _step_reporter(notify: ProgressCallback, done: int, total: int, size: int):
    """The engine's ``progress(step, steps, info)`` as :class:`AnalyzeProgress` events."""

    def on_step(step: int, steps: int, info: dict) -> None:
        notify(AnalyzeProgress("optimize", done, total, step, steps, size))

    return on_step


def _domain(options: AnalyzeOptions, imported: ImportedModel) -> InputDomain:
    from onnx_am.domain import parse_domain

    domain = parse_domain(options.input_range, options.mean, options.std)
    domain.check(imported.input)
    return domain


def _config(options: AnalyzeOptions, domain: InputDomain) -> AMConfig:
    config = AMConfig(
        steps=options.steps,
        lr=options.lr if options.lr is not None else DEFAULT_LR * (domain.high - domain.low) / 2,
        restarts=options.restarts,
        seed=options.seed,
        domain=domain,
        device=options.device,
        batch_size=options.batch_size,
        parameterization=options.parameterization,
        **_step_rule(options.step_rule),
    )
    config.validate()
    return config


def _step_rule(name: str) -> dict:
    if name not in STEP_RULES:
        raise OnnxAmError(f"unknown step rule {name!r}; choose from {', '.join(STEP_RULES)}")
    return STEP_RULES[name]


def _settings(
    options: AnalyzeOptions, config: AMConfig, targets: list[Target], methods: list[str]
) -> dict:
    """Everything that changes results; a resumed report must match it exactly."""
    settings = {
        "targets": [t.name for t in targets],
        "methods": methods,
        "steps": config.steps,
        "lr": config.lr,
        "restarts": config.restarts,
        "seed": config.seed,
        "optimizer": config.optimizer,
        "normalize_grad": config.normalize_grad,
        "start": config.start,
        "input": options.input_name,
        "input_shape": list(options.input_shape) if options.input_shape else None,
        "input_range": [config.domain.low, config.domain.high],
        "mean": list(config.domain.mean) if config.domain.mean else None,
        "std": list(config.domain.std) if config.domain.std else None,
        "device": config.device,
        "parameterization": config.parameterization,
        "chunk_rows": CHUNK_ROWS,
    }
    # Results do not depend on the engine's rows per step (starts are seeded per target and
    # restart; only float rounding of batched kernels may differ, ~1e-7 relative), so the
    # automatic size, which follows the free memory of the machine, is left out: a report
    # started elsewhere can be resumed here. A size given on purpose is compared.
    if options.batch_size is not None:
        settings["batch_size"] = options.batch_size
    return settings


def _parity(imported: ImportedModel, domain: InputDomain) -> ParityResult:
    low, high = domain.bounds(imported.input)
    return check_parity(imported, low=float(low.min()), high=float(high.max()))


def _rewrite(imported: ImportedModel, methods: list[str], config: AMConfig):
    plans = expand_methods(methods, config.default_beta)
    if all(m.kind == "standard" for plan in plans for m in plan.runs):
        return None
    from onnx_am.passes import decouple_rectifiers

    return decouple_rectifiers(imported)


__all__ = [
    "AnalyzeOptions",
    "AnalyzeProgress",
    "AnalyzeReport",
    "DEFAULT_LR",
    "DEFAULT_METHODS",
    "DEFAULT_RESTARTS",
    "DEFAULT_STEPS",
    "analyze",
    "default_out_dir",
    "plan_targets",
]
