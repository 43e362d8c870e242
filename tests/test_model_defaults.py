"""Defaults that fit the model: logits before softmax, feature channels for detectors,
producer metadata (image size, class names, pixel range), presets."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from onnx_am import import_onnx
from onnx_am.audit.defaults import default_targets_for, has_rectifiers
from onnx_am.domain import PRESETS, choose_domain
from onnx_am.errors import InputSpecError
from onnx_am.importer.metadata import read_metadata

R = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def _with_metadata(model: onnx.ModelProto, **props: str) -> onnx.ModelProto:
    for key, value in props.items():
        model.metadata_props.add(key=key.replace("__", "."), value=value)
    return model


def _classifier(make_model, head: str = "Softmax", relu: bool = True) -> onnx.ModelProto:
    act = "Relu" if relu else "Tanh"
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node(act, ["h"], ["a"], name="act"),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"], name="fc2", transB=1),
        helper.make_node("Flatten", ["logits"], ["flat"], name="flatten", axis=1),
        helper.make_node(head, ["flat"], ["prob"], name="head"),
    ]
    inits = {"w1": _w(6, 4), "b1": _w(6), "w2": _w(3, 6), "b2": _w(3)}
    return make_model(nodes, [("x", ["N", 4])], ["prob"], inits)


@pytest.mark.parametrize("head", ["Softmax", "LogSoftmax", "Sigmoid"])
def test_probabilities_default_to_their_logits(make_model, head: str) -> None:
    imported = import_onnx(_classifier(make_model, head))
    choice = default_targets_for(imported)
    assert choice.tensor == "flat"
    assert [t.name for t in choice.targets] == ["flat:0", "flat:1", "flat:2"]
    assert "pre-activation logits 'flat'" in choice.reason and "'prob'" in choice.reason


def test_logits_output_is_used_as_is(make_model) -> None:
    model = _classifier(make_model, "Identity")
    choice = default_targets_for(import_onnx(model))
    assert choice.tensor == "prob" and choice.reason == ""


def test_detector_output_defaults_to_the_last_rectifier(make_model) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["boxes"], name="head"),
        helper.make_node("Reshape", ["boxes", "shape"], ["flat"], name="reshape"),
        helper.make_node("Transpose", ["flat"], ["output"], name="transpose", perm=[0, 2, 1]),
    ]
    inits = {"w1": _w(8, 3, 3, 3), "w2": _w(6, 8, 1, 1), "shape": np.array([0, 6, -1])}
    model = make_model(nodes, [("x", ["N", 3, 8, 8])], ["output"], inits)
    choice = default_targets_for(import_onnx(model))
    assert choice.tensor == "r1"
    assert [t.kind for t in choice.targets] == ["channel"] * 8
    assert "not a per-class vector" in choice.reason and "last rectifier, 'r1'" in choice.reason


def test_no_rectifier_is_reported(make_model) -> None:
    assert not has_rectifiers(import_onnx(_classifier(make_model, relu=False)))
    assert has_rectifiers(import_onnx(_classifier(make_model)))


def test_metadata_image_size_class_names_and_range(make_model) -> None:
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r"], ["g"], name="gap", axes=[2, 3]),
        helper.make_node("Flatten", ["g"], ["logits"], name="flat"),
    ]
    model = make_model(nodes, [("images", ["N", 3, "H", "W"])], ["logits"], {"w": _w(2, 3, 3, 3)})
    model = _with_metadata(
        model,
        imgsz="[12, 10]",
        names="{0: 'cat', 1: 'dog'}",
        Image__NominalPixelRange="NominalRange_0_255",
    )
    imported = import_onnx(model)
    assert imported.input.sample_shape == (3, 12, 10)
    assert any("metadata image size [12, 10]" in note for note in imported.prepass_notes)
    assert default_targets_for(imported).labels == {"logits:0": "cat", "logits:1": "dog"}
    domain = choose_domain(metadata=imported.metadata)
    assert (domain.domain.low, domain.domain.high, domain.source) == (0.0, 255.0, "metadata")
    assert "Image.NominalPixelRange=NominalRange_0_255" in domain.description


def test_unreadable_metadata_is_ignored(make_model) -> None:
    model = _with_metadata(
        _classifier(make_model),
        imgsz="__import__('os').system('echo no')",
        names="[" * 100000,
        mean="not numbers",
    )
    metadata = read_metadata(model)
    assert metadata.image_size is None and metadata.class_names is None and metadata.mean is None


def test_presets_and_explicit_values() -> None:
    assumed = choose_domain()
    assert assumed.source == "assumed" and "-1..1 assumed" in assumed.description
    imagenet = choose_domain("imagenet")
    assert imagenet.domain == PRESETS["imagenet"] and imagenet.description == "--preset imagenet"
    mixed = choose_domain("imagenet-255", input_range="0..1")
    assert (mixed.domain.low, mixed.domain.high) == (0.0, 1.0)
    assert mixed.domain.mean == PRESETS["imagenet-255"].mean
    assert choose_domain(input_range="0..255").domain.mean is None
    with pytest.raises(InputSpecError, match="unknown preset 'imagenett'"):
        choose_domain("imagenett")


@pytest.mark.slow
def test_analyze_uses_logits_standard_only_and_says_so(tmp_path, make_model) -> None:
    from click.testing import CliRunner
    from onnx_am_cli.main import cli

    path = tmp_path / "tanh.onnx"
    path.write_bytes(_classifier(make_model, relu=False).SerializeToString())
    args = ["analyze", str(path), "--steps", "2", "--restarts", "1", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "input domain -1..1 assumed" in result.stderr
    assert "pre-activation logits 'flat'" in result.stderr
    assert "no rectifier to decouple" in result.stderr and "standard only" in result.stderr
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["settings"]["methods"] == ["standard"]
    assert doc["settings"]["targets"] == ["flat:0", "flat:1", "flat:2"]
    assert doc["defaults"]["targets"]["tensor"] == "flat" and doc["defaults"]["standard_only"]
    preset = CliRunner().invoke(cli, [*args, "--force", "--preset", "unit", "--method", "standard"])
    assert preset.exit_code == 0, preset.output
    assert "domain" not in preset.stderr and "rectifier" not in preset.stderr
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["settings"]["input_range"] == [0.0, 1.0]
    assert doc["defaults"]["domain"]["description"] == "--preset unit"


def test_logits_only_inside_an_if_branch_are_not_chosen(make_model) -> None:
    """onnxruntime cannot expose a tensor of an If branch: the output itself is the target."""
    from onnx import TensorProto

    value = helper.make_tensor_value_info
    branch = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["z"], name="mm"),
            helper.make_node("Sigmoid", ["z"], ["p"], name="sig"),
        ],
        "then",
        [],
        [value("p", TensorProto.FLOAT, ["N", 2])],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["q"], name="id")],
        "else",
        [],
        [value("q", TensorProto.FLOAT, ["N", 2])],
    )
    nodes = [
        helper.make_node("Equal", ["sr", "k"], ["cond"], name="eq"),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=branch, else_branch=other),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [value("x", TensorProto.FLOAT, ["N", 2]), value("sr", TensorProto.INT64, [])],
        [value("y", TensorProto.FLOAT, ["N", 2])],
        [
            onnx.numpy_helper.from_array(_w(2, 2), "w"),
            onnx.numpy_helper.from_array(np.array(16000, np.int64), "k"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    imported = import_onnx(model, "x", feeds={"sr": 16000})
    assert "z" in imported.tensor_map  # the branch was inlined for torch ...
    choice = default_targets_for(imported)
    assert choice.tensor == "y" and choice.reason == ""  # ... but onnxruntime cannot read z


@pytest.mark.slow
def test_class_names_from_metadata_label_the_page(tmp_path, make_model) -> None:
    from click.testing import CliRunner
    from onnx_am_cli.main import cli

    path = tmp_path / "named.onnx"
    model = _with_metadata(_classifier(make_model), names="{0: 'cat', 1: 'dog', 2: 'axolotl'}")
    path.write_bytes(model.SerializeToString())
    args = ["analyze", str(path), "--steps", "2", "--restarts", "1", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["defaults"]["targets"]["labels"]["flat:2"] == "axolotl"
    page = (tmp_path / "r" / "index.html").read_text()
    assert 'data-label="axolotl"' in page and '<span class="muted">axolotl</span>' in page
