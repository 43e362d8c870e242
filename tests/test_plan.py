"""RunPlan: user input parsed once into typed objects that travel down unchanged; the engine
leaves the caller's module alone."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from click.testing import CliRunner
from onnx_am_cli.main import cli
from torch_models import export_random

import onnx_am
import onnx_am.audit.chunks as chunks_module
from onnx_am.audit.analyze import AnalyzeOptions, analyze
from onnx_am.engine.plan import RunPlan
from onnx_am.errors import MethodError, OnnxAmError
from onnx_am.methods import format_slope


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> str:
    """1x6x6 grey input, conv -> relu -> linear -> 3 logits."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 3)
    )
    return export_random(net, (1, 6, 6), tmp_path_factory.mktemp("m") / "plan_cnn.onnx")


def count_calls(monkeypatch, module: str, name: str) -> list:
    """Replace ``module.name`` wherever an onnx_am module holds it; return the call log."""
    original = getattr(sys.modules[module], name)
    calls = []

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    for loaded in list(sys.modules.values()):
        if getattr(loaded, "__name__", "").startswith("onnx_am"):
            if getattr(loaded, name, None) is original:
                monkeypatch.setattr(loaded, name, counted)
    return calls


def relu_output(path: str) -> str:
    model = onnx_am.import_onnx(path).original
    return next(n.output[0] for n in model.graph.node if n.op_type == "Relu")


@pytest.mark.slow
def test_one_parse_and_one_probe_for_a_run_of_many_chunks(cnn, tmp_path, monkeypatch):
    monkeypatch.setattr(chunks_module, "CHUNK_ROWS", 4)  # 4 runs x 1 restart: a unit a chunk
    expands = count_calls(monkeypatch, "onnx_am.methods", "expand_methods")
    parses = count_calls(monkeypatch, "onnx_am.methods", "parse_method")
    probes = count_calls(monkeypatch, "onnx_am.objectives", "probe_shapes")
    plans = count_calls(monkeypatch, "onnx_am.engine.maximizer", "maximize_plan")
    options = AnalyzeOptions.of(
        targets=("logits",),
        layers=(relu_output(cnn),),
        methods=("decoupled(0.2)", "proxy(0.5)", "best"),
        steps=3,
        restarts=1,
    )
    report = analyze(cnn, options, tmp_path / "r")

    chunk_plans: list[RunPlan] = [args[1] for args in plans]
    assert len(chunk_plans) == 7  # 3 logits + 4 channels, one chunk each
    assert (len(expands), len(parses), len(probes)) == (1, 2, 1)
    first = chunk_plans[0]
    for plan in chunk_plans:  # the same objects, passed down unchanged
        assert plan.methods is first.methods and plan.config is first.config
    planned = [t for plan in chunk_plans for t in plan.targets]
    assert [r.target for r in report.results][::3] == planned
    assert all(r.target is t for r, t in zip(report.results[::3], planned, strict=True))


@pytest.mark.slow
def test_default_targets_take_one_probe_too(cnn, tmp_path, monkeypatch):
    """Zero-config targets (chosen from the model) and --layer channels: one probe forward."""
    probes = count_calls(monkeypatch, "onnx_am.objectives", "probe_shapes")
    options = AnalyzeOptions.of(
        layers=(relu_output(cnn),), methods=("standard",), steps=2, restarts=1
    )
    report = analyze(cnn, options, tmp_path / "r")
    assert len(probes) == 1
    assert {r.target.tensor for r in report.results} == {"logits", relu_output(cnn)}


@pytest.mark.slow
def test_backward_slope_survives_exactly_into_report_json(cnn, tmp_path):
    slope = 0.123456789
    out = tmp_path / "r"
    args = ["analyze", cnn, "--steps", "2", "--restarts", "1", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--backward-slope", "0.123456789,1"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "report.json").read_text())
    decoupled = [r for r in doc["results"] if r["method_kind"] == "decoupled"]
    assert {r["backward_slope"] for r in decoupled} == {slope, 1.0}
    assert {r["method"] for r in decoupled} == {"decoupled(0.123456789)", "decoupled(1)"}
    assert doc["settings"]["methods"] == ["standard", "decoupled(0.123456789)", "decoupled(1)"]


def test_slope_labels_are_short_when_exact_and_full_otherwise():
    assert [format_slope(b) for b in (0.3, 1.0, 0.1, 1e-05)] == ["0.3", "1", "0.1", "1e-05"]
    assert float(format_slope(0.123456789)) == 0.123456789
    assert float(format_slope(1 / 3)) == 1 / 3


def test_maximize_on_another_device_leaves_the_callers_module_alone(cnn, monkeypatch):
    imported = onnx_am.import_onnx(cnn)
    rewrite = onnx_am.decouple_rectifiers(imported)
    own = {id(m) for m in (*imported.module.modules(), *rewrite.module.modules())}

    def tensors() -> dict:
        return {
            (tag, name): t
            for tag, module in (("imported", imported.module), ("rewrite", rewrite.module))
            for name, t in (*module.named_parameters(), *module.named_buffers())
        }

    before = {key: (t, t.data_ptr(), t.device, t.clone()) for key, t in tensors().items()}
    applied = []
    original_apply = torch.nn.Module._apply

    def spy(self, fn, *args, **kwargs):
        applied.append(id(self))
        return original_apply(self, fn, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "_apply", spy)
    config = onnx_am.AMConfig.of(steps=3, device="cpu:0")  # torch copies tensors .to("cpu:0")
    found = onnx_am.maximize(
        imported, ["logits:0"], ["standard", "decoupled(0.3)"], config, rewrite=rewrite
    )

    assert applied and not own & set(applied)  # moved a copy, never the caller's modules
    after = tensors()
    assert after.keys() == before.keys()
    for key, (tensor, pointer, device, values) in before.items():
        assert after[key] is tensor and tensor.data_ptr() == pointer, key
        assert tensor.device == device and torch.equal(tensor, values), key
    assert all(r.agrees for r in found.results)


def test_user_errors_have_their_own_classes(cnn, tmp_path):
    imported = onnx_am.import_onnx(cnn)
    with pytest.raises(onnx_am.MethodError, match="'sideways'"):
        onnx_am.parse_run_plan(imported, ["logits:0"], ["sideways"])
    with pytest.raises(onnx_am.SettingsError, match="steps must be >= 1"):
        onnx_am.parse_run_plan(imported, ["logits:0"], ["standard"], onnx_am.AMConfig.of(steps=0))
    with pytest.raises(onnx_am.TargetError, match="'nowhere'"):
        onnx_am.parse_run_plan(imported, ["nowhere:0"], ["standard"])
    assert issubclass(MethodError, OnnxAmError) and not issubclass(MethodError, onnx_am.PassError)
    result = CliRunner().invoke(
        cli, ["analyze", cnn, "--method", "decoupled(x)", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2 and "decoupled(x)" in result.output
    assert not (tmp_path / "r").exists()  # refused before writing anything
