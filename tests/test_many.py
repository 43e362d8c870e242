"""Many models in one analyze: report names, the index, a model that cannot be audited."""

from __future__ import annotations

import json

import pytest
import torch
from torch_models import export_random

from onnx_am.audit.analyze import AnalyzeOptions
from onnx_am.audit.many import analyze_many, find_models, report_names
from onnx_am.audit.overview import ModelRow, overview_entry
from onnx_am.audit.render.overview import render_overview
from onnx_am.errors import OnnxAmError, ReportError


def test_directories_expand_to_their_models_and_repeated_stems_get_numbers(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for path in ("a/net.onnx", "a/other.onnx", "b/net.onnx", "a/notes.txt"):
        (tmp_path / path).write_bytes(b"x")
    models = find_models([tmp_path / "a", tmp_path / "b" / "net.onnx", tmp_path / "a"])
    assert [p.relative_to(tmp_path).as_posix() for p in models] == [
        "a/net.onnx",
        "a/other.onnx",
        "b/net.onnx",
    ]
    assert report_names(models) == ["net", "other", "net-2"]
    (tmp_path / "c").mkdir()
    with pytest.raises(OnnxAmError, match="no .onnx files"):
        find_models([tmp_path / "c"])


def result(target, method, kind, activation):
    return {"target": target, "method": method, "method_kind": kind, "activation": activation}


def test_index_entry_says_where_decoupled_helped_beyond_float_noise():
    results = [
        result("logits:0", "standard", "standard", 1.0),
        result("logits:0", "decoupled(0.3)", "decoupled", 3.0),
        result("logits:1", "standard", "standard", 2.0),
        result("logits:1", "decoupled(0.3)", "decoupled", 2.0 + 1e-9),  # a tie
        result("logits:2", "standard", "standard", 2.0),
        result("logits:2", "decoupled(0.3)", "decoupled", 1.0),
    ]
    doc = {
        "status": "complete",
        "parity": {"passed": True, "max_abs_diff": 1e-6},
        "settings": {"targets": ["logits:0", "logits:1", "logits:2", "logits:3"]},
        "results": results,
    }
    entry = overview_entry(ModelRow("net", "models/net.onnx", doc))
    assert entry["units"] == 3 and entry["units_planned"] == 4
    assert entry["helped"] == [{"target": "logits:0", "method": "decoupled(0.3)", "gain": 2.0}]
    [method] = entry["methods"]
    assert (method["better"], method["worse"], method["tie"]) == (1, 1, 1)
    failed = overview_entry(ModelRow("bad", "bad.onnx", error="not a valid ONNX model"))
    html = render_overview({"models": [entry, failed]})
    assert 'href="net/index.html"' in html and "not a valid ONNX model" in html
    assert "better on 1 of 3" in html and "<code>logits:0</code> +2" in html


@pytest.mark.slow
def test_a_model_that_cannot_be_audited_gets_a_row_and_the_others_finish(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    good = export_random(net, (3,), tmp_path / "good.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    options = AnalyzeOptions.of(steps=2, restarts=1, methods=("standard",))
    outcome = analyze_many([tmp_path], options, tmp_path / "out")
    assert set(outcome.reports) == {"good"} and set(outcome.errors) == {"broken"}
    assert outcome.exit_code == 2
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [(m["name"], m["error"] is None) for m in index["models"]] == [
        ("broken", False),
        ("good", True),
    ]
    assert (tmp_path / "out" / "good" / "index.html").is_file()
    with pytest.raises(ReportError, match="--resume"):
        analyze_many([good], options, tmp_path / "out")  # the report exists
