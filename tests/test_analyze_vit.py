"""A ViT (transformers, torch export) with an image input goes through the image path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from onnx_am_cli.main import cli

MODELS = Path(__file__).resolve().parents[1] / "models" / "transformers"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_optimum.onnx"])
def test_vit_analyze_end_to_end(name, tmp_path):
    out = tmp_path / "report"
    args = ["analyze", str(MODELS / name), "--steps", "8", "--restarts", "1"]
    args += ["--target", "logits:0-1", "--method", "standard", "--out", str(out), "--json"]
    if name == "vit_optimum.onnx":  # optimum leaves channels and image size symbolic
        args += ["--input-shape", "1,3,32,32"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["parity"]["passed"]
    results = report["results"]
    assert [row["target"] for row in results] == ["logits:0", "logits:1"]
    assert all(row["agrees"] and row["beats_trivial"] for row in results)
    assert all(row["trace"][-1] > row["trace"][0] for row in results)
