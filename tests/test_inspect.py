"""``onnx-am inspect`` and :func:`onnx_am.audit.inspection.inspect_model`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper
from onnx_am_cli.main import cli

from onnx_am import import_onnx
from onnx_am.audit.inspection import inspect_model, onnx_rectifiers

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODELS = Path(__file__).resolve().parents[1] / "models"
REQUIRED_KEYS = {
    "inputs", "outputs", "opsets", "rectifiers", "unsupported_ops", "parity", "batch",
    "producer", "node_counts", "other_nonlinearities", "rewrites",
}  # fmt: skip


def _mixed_rectifiers(make_model) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="fc1", transB=1),
        helper.make_node("LeakyRelu", ["h1"], ["a1"], name="leaky", alpha=0.2),
        helper.make_node("PRelu", ["a1", "slope"], ["a2"], name="prelu"),
        helper.make_node("Clip", ["a2", "zero", "six"], ["a3"], name="relu6"),
        helper.make_node("Tanh", ["a3"], ["a4"], name="tanh"),
        helper.make_node("Relu", ["a4"], ["y"], name="relu"),
    ]
    inits = {
        "w1": np.ones((4, 3), np.float32), "b1": np.zeros(4, np.float32),
        "slope": np.full(4, 0.25, np.float32), "zero": np.array(0, np.float32),
        "six": np.array(6, np.float32),
    }  # fmt: skip
    return make_model(nodes, [("x", ["N", 3])], ["y"], inits, opset=13)


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["inspect", *args])


def test_json_has_the_documented_keys(tmp_path: Path, make_model) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(_mixed_rectifiers(make_model).SerializeToString())
    result = _invoke(str(path), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert REQUIRED_KEYS <= set(report)
    by_node = {r["node"]: r for r in report["rectifiers"]}
    assert by_node["leaky"]["alpha"] == pytest.approx(0.2)
    assert by_node["leaky"]["output"] == "a1" and by_node["leaky"]["op_type"] == "LeakyRelu"
    assert by_node["relu"]["alpha"] == 0.0
    assert {"prelu", "relu6"} <= set(by_node)
    assert set(report["rewrites"]) == set(by_node)
    assert "tanh" in {o["node"] for o in report["other_nonlinearities"]}
    assert report["parity"]["passed"] is True and report["parity"]["max_abs_diff"] < 1e-5
    assert report["inputs"][0]["layout"] == "vector"
    assert report["batch"]["mode"] == "dynamic"
    assert report["node_counts"]["Gemm"] == 1
    assert report["unsupported_ops"] == []


def test_graph_only_detection_matches(make_model) -> None:
    rectifiers, others = onnx_rectifiers(_mixed_rectifiers(make_model))
    assert [r["node"] for r in rectifiers] == ["leaky", "prelu", "relu6", "relu"]
    assert rectifiers[1]["alpha"] == [0.25] * 4
    assert [o["node"] for o in others] == ["tanh"]


def test_text_summary(tmp_path: Path, make_model) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(_mixed_rectifiers(make_model).SerializeToString())
    result = _invoke(str(path))
    assert result.exit_code == 0
    for fragment in [
        "inputs:",
        "x  ['N', 3]",
        "rectifiers: 4",
        "leaky  LeakyRelu  alpha=0.2",
        "batch:    dynamic",
        "parity:   passed",
    ]:
        assert fragment in result.stdout, fragment


def test_parity_failure_exits_3(tmp_path: Path, make_model) -> None:
    # onnx2torch resizes 'nearest' with floor rounding only; round_prefer_ceil differs.
    node = helper.make_node(
        "Resize", ["x", "", "s"], ["y"], name="rz", mode="nearest", nearest_mode="round_prefer_ceil"
    )
    model = make_model(
        [node], [("x", ["N", 2, 4, 4])], ["y"], {"s": np.array([1, 1, 1.5, 1.5], np.float32)}
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    result = _invoke(str(path), "--json")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["parity"]["passed"] is False
    assert "disagree" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_no_parity_flag(tmp_path: Path, make_model) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(_mixed_rectifiers(make_model).SerializeToString())
    result = _invoke(str(path), "--json", "--no-parity")
    assert result.exit_code == 0 and json.loads(result.stdout)["parity"] is None


def test_fixed_batch_fixture_reports_rewritten() -> None:
    result = _invoke(str(FIXTURES / "fixed_batch1_reshape.onnx"), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["batch"]["mode"] == "rewritten"


def test_tf2onnx_fixture_inspect_with_shape() -> None:
    result = _invoke(str(FIXTURES / "tf2onnx_cnn.onnx"), "--json", "--input-shape", "1x16x16x3")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["inputs"][0]["layout"] == "NHWC" and report["producer"]["name"] == "tf2onnx"
    assert len(report["rectifiers"]) == 3


@pytest.mark.parametrize(
    ("name", "alpha"), [("digits_leaky02.onnx", 0.2), ("digits_leaky001.onnx", 0.01)]
)
def test_digits_models_leaky_alpha(name: str, alpha: float) -> None:
    report = inspect_model(import_onnx(MODELS / name), parity=False)
    assert report.rectifiers and all(r["alpha"] == pytest.approx(alpha) for r in report.rectifiers)
