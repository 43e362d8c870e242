"""Run the activation-maximization experiments of ``am_quality.py`` and collect flat records.

One record per (model, regime, start, seed, target unit, method): the true-forward maximum,
the onnxruntime value, saturation, white fraction, whether it beat the best trivial input,
and the best-so-far trace. Each engine call batches every (unit, method) row of one
(model, regime, start, seed), so a call costs one batched forward/backward per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from onnx_am import import_onnx
from onnx_am.engine.maximizer import AMConfig, maximize
from onnx_am.importer.model import ImportedModel
from onnx_am.methods import parse_method

RECTIFIER_OPS = ("Relu", "LeakyRelu", "PRelu")


@dataclass
class Record:
    """One (unit, method) result of one engine call, plus where it came from."""

    section: str
    model: str
    regime: str
    lr: float
    steps: int
    start: str
    seed: int
    target: str
    unit_kind: str
    method: str
    activation: float
    activation_ort: float | None
    agrees: bool
    saturation: float
    white: float
    beats_trivial: bool
    trivial_best: float
    trace: np.ndarray = field(repr=False)

    def summary(self) -> dict:
        """JSON-able fields (the trace is left out; it is large)."""
        return {k: v for k, v in self.__dict__.items() if k != "trace"}


@dataclass
class Call:
    """One engine call: a model, its targets, the methods, and the optimization settings."""

    section: str
    model: str
    regime: str
    targets: list[str]
    unit_kinds: dict[str, str]
    methods: list[str]
    steps: int
    lr: float
    seed: int
    start: str = "random"


def method_key(text: str) -> str:
    """The label the engine reports for a requested method string (``best`` stays ``best``)."""
    return "best" if text == "best" else parse_method(text).label


def last_conv_rectifier(imported: ImportedModel) -> tuple[str, int]:
    """The last 4-D rectifier output tensor of the graph and its channel count."""
    candidates = [
        name
        for name, loc in imported.tensor_map.items()
        if loc.onnx_node and _op_type(imported, loc.onnx_node) in RECTIFIER_OPS
    ]
    if not candidates:
        raise ValueError("model has no rectifier outputs")
    probe = torch.zeros((1, *imported.input.sample_shape))
    values = imported.run(probe, names=candidates)
    four_d = [(n, v.shape[1]) for n, v in zip(candidates, values, strict=True) if v.dim() == 4]
    if not four_d:
        raise ValueError("model has no 4-D rectifier outputs")
    return four_d[-1]


def _op_type(imported: ImportedModel, node_name: str) -> str:
    for node in imported.prepared.graph.node:
        if node.name == node_name:
            return node.op_type
    return ""


def unit_targets(
    imported: ImportedModel, n_classes: int, n_channels: int
) -> tuple[list[str], dict[str, str]]:
    """Class units of the first output and evenly spaced channels of the last conv rectifier.

    Returns:
        ``(targets, target -> "class" | "channel")``.
    """
    output = imported.output_names[0]
    targets = [f"{output}:{i}" for i in range(n_classes)]
    kinds = dict.fromkeys(targets, "class")
    if n_channels:
        tensor, n_total = last_conv_rectifier(imported)
        picks = np.unique(np.linspace(0, n_total - 1, min(n_channels, n_total)).round().astype(int))
        channels = [f"{tensor}:{c}" for c in picks]
        targets += channels
        kinds.update(dict.fromkeys(channels, "channel"))
    return targets, kinds


def run_call(
    imported: ImportedModel, call: Call, crosscheck: bool = True, batch_size: int = 256
) -> list[Record]:
    """Run one batched engine call and turn its results into records."""
    config = AMConfig.of(
        steps=call.steps,
        lr=call.lr,
        seed=call.seed,
        start=call.start,
        restarts=1,
        crosscheck=crosscheck,
        batch_size=batch_size,
    )
    report = maximize(imported, call.targets, call.methods, config=config)
    trivial = {b.target: b.best for b in report.baselines}
    records = []
    for r in report.results:
        name = r.target.name
        method = "best" if r.method_kind == "best" else r.method
        records.append(
            Record(
                section=call.section,
                model=call.model,
                regime=call.regime,
                lr=call.lr,
                steps=call.steps,
                start=call.start,
                seed=call.seed,
                target=name,
                unit_kind=call.unit_kinds.get(name, _kind_of(name, call.unit_kinds)),
                method=method,
                activation=float(r.activation),
                activation_ort=r.activation_onnxruntime,
                agrees=bool(r.agrees),
                saturation=float(r.saturation),
                white=float(r.white),
                beats_trivial=bool(r.beats_trivial),
                trivial_best=float(trivial.get(name, float("nan"))),
                trace=np.asarray(r.trace, dtype=np.float64),
            )
        )
    return records


def _kind_of(target: str, kinds: dict[str, str]) -> str:
    """Match the engine's canonical target string to ours by tensor and unit."""
    for name, kind in kinds.items():
        if name.rsplit(":", 1) == target.split("@")[0].rsplit(":", 1):
            return kind
    return "other"


def run_calls(
    calls: Sequence[Call],
    load: Callable[[str], ImportedModel],
    log: Callable[[str], None] = print,
    batch_size: int = 256,
) -> tuple[list[Record], list[dict]]:
    """Run every call; returns the records and one timing line per call."""
    records: list[Record] = []
    timings = []
    for i, call in enumerate(calls, 1):
        start = time.perf_counter()
        records += run_call(load(call.model), call, batch_size=batch_size)
        seconds = time.perf_counter() - start
        runs = {method_key(m) for m in call.methods}
        if "best" in runs:  # standard and decoupled(0.3), shared with those methods' rows
            runs = (runs - {"best"}) | {"standard", "decoupled(0.3)"}
        rows = len(call.targets) * len(runs)
        timings.append(
            {
                "section": call.section,
                "model": call.model,
                "regime": call.regime,
                "start": call.start,
                "seed": call.seed,
                "rows": rows,
                "steps": call.steps,
                "seconds": round(seconds, 2),
            }
        )
        log(
            f"  [{i}/{len(calls)}] {call.section:5s} {call.model:17s} lr {call.lr:<6g} "
            f"{call.start:6s} seed {call.seed}: {rows} rows x {call.steps} steps, {seconds:.1f} s"
        )
    return records, timings


class ModelCache:
    """Import each model once."""

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = paths
        self.models: dict[str, ImportedModel] = {}

    def __call__(self, name: str) -> ImportedModel:
        if name not in self.models:
            self.models[name] = import_onnx(self.paths[name])
        return self.models[name]
