"""analyze(): end to end on tiny models, report.json schema, images, resume, protection."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch_models import export_random

import onnx_am.audit.chunks as chunks_module
from onnx_am.audit.analyze import AnalyzeOptions, AnalyzeProgress, analyze
from onnx_am.audit.options import plan_methods
from onnx_am.audit.render.images import to_uint8
from onnx_am.audit.summary import summarize
from onnx_am.errors import ReportError, SettingsError
from onnx_am.methods import DEFAULT_BETA

#: whole audits, subprocesses or browsers: `pytest -m "not slow"` skips them
pytestmark = pytest.mark.slow

FAST = dict(steps=6, restarts=1)
#: The labels of analyze's default methods (standard, the annealed decoupled row, their best).
DEFAULT_LABELS = ("standard", "decoupled(anneal(0.3->alpha))", "best(anneal(0.3->alpha))")
RESULT_KEYS = {
    "target",
    "unit",
    "method",
    "backward_slope",
    "activation",
    "activation_onnxruntime",
    "saturation",
    "image",
    "white",
    "gain_over_standard",
    "beats_trivial",
    "agrees",
    "steps_to_95",
    "npy",
    "trace",
}


def export(module: torch.nn.Module, shape: tuple[int, ...], path, seed: int = 0) -> str:
    return export_random(module, shape, path, seed=seed)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> str:
    """1x6x6 grey input, conv -> relu -> linear -> 3 logits."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 3)
    )
    return export(net, (1, 6, 6), tmp_path_factory.mktemp("m") / "tiny_cnn.onnx")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> str:
    """A vector input of 5 features -> relu MLP -> 4 outputs."""
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    return export(net, (5,), tmp_path_factory.mktemp("m") / "tiny_mlp.onnx")


def comparable(doc: dict) -> dict:
    """The report without what legitimately differs between runs (timings, and the plan's
    measured step times and memory)."""
    return {k: v for k, v in doc.items() if k not in ("timings", "plan")}


def test_end_to_end_report_schema_images_and_html(cnn, tmp_path):
    out = tmp_path / "report"
    report = analyze(cnn, AnalyzeOptions.of(**FAST), out)
    doc = json.loads((out / "report.json").read_text())
    assert doc == json.loads(json.dumps(report.doc))
    assert doc["schema_version"] == 1 and doc["status"] == "complete"
    assert {"path", "sha256", "producer", "opsets", "input"} <= set(doc["model"])
    assert doc["model"]["input"]["layout"] == "NCHW"
    assert doc["parity"]["passed"] is True and doc["parity"]["max_abs_diff"] < 1e-4
    assert [r["rewritten"] for r in [doc["rewrites"]]][0][0]["op_type"] == "Relu"
    assert {"settings", "timings", "baselines"} <= set(doc)
    assert [(r["target"], r["method"]) for r in doc["results"]] == [
        (f"logits:{u}", m) for u in range(3) for m in DEFAULT_LABELS
    ]
    by_unit: dict[str, dict[str, float]] = {}
    for entry in doc["results"]:
        by_unit.setdefault(entry["target"], {})[entry["method"]] = entry["activation"]
    for values in by_unit.values():  # best keeps the higher true value of the two it ran
        standard, annealed, best = DEFAULT_LABELS
        assert values[best] == max(values[standard], values[annealed])
    for entry, result in zip(doc["results"], report.results, strict=True):
        assert RESULT_KEYS <= set(entry)
        assert abs(entry["activation"] - entry["activation_onnxruntime"]) < 1e-3
        png, raw = out / entry["image"], np.load(out / entry["npy"])
        assert raw.shape == (1, 6, 6) and (raw == result.image).all()
        assert raw.min() >= -1 and raw.max() <= 1
        pixels = np.asarray(Image.open(png))
        assert pixels.shape == (132, 132)  # 6 x 22, nearest neighbour
        assert (pixels[::22, ::22] == to_uint8(raw[0], -1.0, 1.0)).all()
        if entry["method"] == "standard":
            assert entry["gain_over_standard"] == 0.0
    assert {b["target"] for b in doc["baselines"]} == {"logits:0", "logits:1", "logits:2"}
    html = (out / "index.html").read_text()
    refs = {r for r in re.findall(r'(?:src|href)="([^"]+)"', html) if not r.startswith("#")}
    assert len(refs) >= 8
    for ref in refs:
        assert (out / ref).is_file(), ref
    # the summary in report.json is computed from its own results table
    assert doc["summary"] == summarize(doc["results"])
    [decoupled] = doc["summary"]["methods"]
    assert decoupled["units"] == 3
    assert decoupled["better"] + decoupled["worse"] + decoupled["tie"] == 3
    for entry in doc["results"]:
        if entry["method_kind"] == "best":
            picked = by_unit[entry["target"]][entry["picked"]]
            assert entry["activation"] == picked
        else:
            assert entry["picked"] is None
    assert sorted(p.name for p in out.iterdir()) == ["images", "index.html", "plots", "report.json"]


def test_vector_input_is_plotted_and_sweep_plot_written(mlp, tmp_path):
    options = AnalyzeOptions.of(backward_slopes=(0.1, 1.0), input_range="0..1", **FAST)
    report = analyze(mlp, options, tmp_path / "r")
    methods = [r["method"] for r in report.doc["results"]][:3]
    assert methods == ["standard", "decoupled(0.1)", "decoupled(1)"]
    assert (tmp_path / "r" / "plots" / "beta_sweep.png").is_file()
    png = Image.open(tmp_path / "r" / report.doc["results"][0]["image"])
    assert png.size[0] > 200  # a matplotlib plot, not a 5-pixel strip
    assert all(0 <= r.image.min() and r.image.max() <= 1 for r in report.results)


def test_layer_adds_channels_of_an_intermediate_tensor(cnn, tmp_path):
    from onnx_am import import_onnx

    relu_out = next(
        n.output[0] for n in import_onnx(cnn).original.graph.node if n.op_type == "Relu"
    )
    options = AnalyzeOptions.of(layers=(relu_out,), methods=("standard",), **FAST)
    targets = [r.target.name for r in analyze(cnn, options, tmp_path / "r").results]
    assert targets == ["logits:0", "logits:1", "logits:2"] + [f"{relu_out}:{c}" for c in range(4)]


def test_existing_report_is_protected(cnn, tmp_path):
    out = tmp_path / "r"
    analyze(cnn, AnalyzeOptions.of(methods=("standard",), **FAST), out)
    before = (out / "report.json").read_bytes()
    with pytest.raises(ReportError, match="--force"):
        analyze(cnn, AnalyzeOptions.of(methods=("standard",), **FAST), out)
    assert (out / "report.json").read_bytes() == before
    analyze(cnn, AnalyzeOptions.of(methods=("standard",), force=True, steps=7, restarts=1), out)
    assert json.loads((out / "report.json").read_text())["settings"]["steps"] == 7


class Interrupt:
    """A progress callback that presses Ctrl-C once ``after`` units are finished."""

    def __init__(self, after: int):
        self.after = after

    def __call__(self, event: AnalyzeProgress) -> None:
        if event.phase == "optimize" and event.units_done >= self.after:
            raise KeyboardInterrupt


def test_resume_after_interruption_gives_the_same_report(cnn, tmp_path, monkeypatch):
    runs = 2  # standard and annealed decoupled rows; best shares them
    monkeypatch.setattr(chunks_module, "CHUNK_ROWS", runs)  # one unit per chunk
    options = AnalyzeOptions.of(**FAST)
    whole = analyze(cnn, options, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        analyze(cnn, options, tmp_path / "cut", progress=Interrupt(after=2))
    partial = json.loads((tmp_path / "cut" / "report.json").read_text())
    methods = 3  # the default methods
    assert partial["status"] == "running" and len(partial["results"]) == 2 * methods
    for entry in partial["results"]:
        assert (tmp_path / "cut" / entry["image"]).is_file()
    seen = []
    resumed = analyze(
        cnn, AnalyzeOptions.of(resume=True, **FAST), tmp_path / "cut", progress=seen.append
    )
    assert min(e.units_done for e in seen if e.phase == "optimize") == 2  # did not redo units
    assert comparable(resumed.doc) == comparable(whole.doc)
    for a, b in zip(whole.results, resumed.results, strict=True):
        assert (a.image == b.image).all()


def test_resume_refuses_other_settings(cnn, tmp_path):
    analyze(cnn, AnalyzeOptions.of(methods=("standard",), **FAST), tmp_path / "r")
    with pytest.raises(ReportError, match="steps: 6 -> 9"):
        analyze(
            cnn,
            AnalyzeOptions.of(methods=("standard",), resume=True, steps=9, restarts=1),
            tmp_path / "r",
        )


def test_bare_methods_take_each_slope_and_the_one_default_beta():
    def labels(methods=(), slopes=()):
        return [p.label for p in plan_methods(methods, slopes, DEFAULT_BETA)]

    assert labels() == list(DEFAULT_LABELS)
    annealed = plan_methods((), (), DEFAULT_BETA)[1].runs[0]
    assert annealed.anneal_to_alpha and annealed.beta == DEFAULT_BETA
    assert labels(slopes=(0.1, 0.3)) == ["standard", "decoupled(0.1)", "decoupled(0.3)"]
    assert labels(("proxy", "decoupled(0.5)"), (0.6,)) == ["proxy(0.6)", "decoupled(0.5)"]
    exact = plan_methods(("decoupled",), (0.123456789,), DEFAULT_BETA)
    assert exact[0].label == "decoupled(0.123456789)" and exact[0].runs[0].beta == 0.123456789


def test_step_rule_default_is_normalized_and_raw_is_the_papers_update(cnn, tmp_path):
    normalized = analyze(cnn, AnalyzeOptions.of(methods=("standard",), **FAST), tmp_path / "n")
    raw = analyze(
        cnn, AnalyzeOptions.of(methods=("standard",), step_rule="raw", **FAST), tmp_path / "r"
    )
    assert normalized.doc["settings"]["normalize_grad"] is True
    assert raw.doc["settings"]["normalize_grad"] is False
    assert raw.doc["settings"]["optimizer"] == normalized.doc["settings"]["optimizer"] == "pga"
    traces = [r.trace for r in normalized.results], [r.trace for r in raw.results]
    assert traces[0] != traces[1]  # the same starts, other steps
    with pytest.raises(SettingsError, match="unknown step rule"):
        analyze(cnn, AnalyzeOptions.of(step_rule="sgd", **FAST), tmp_path / "x")
