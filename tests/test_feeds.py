"""Inputs other than the optimized one are fed: ``feeds=`` / ``--feed``, default zeros, errors.

The model is built here: a float ``x`` (optimized), a recurrent-style ``state`` whose batch
dim is axis 1, and an int64 scalar ``sr`` that scales the hidden layer, like the
voice-activity models vendors ship.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnx_am import InputSpecError, import_onnx
from onnx_am.domain import InputDomain
from onnx_am.importer.feeds import parse_feed
from onnx_am.objectives import unit
from onnx_am.reference.crosscheck import crosscheck
from onnx_am.reference.parity import check_parity


def state_sr_model(state_shape=(2, "N", 4)) -> onnx.ModelProto:
    """logits = (relu(x @ W + sum(state, 0)) * sr / 16000) @ W2; stateN = h[None]."""
    rng = np.random.default_rng(0)
    inits = {
        "W": rng.normal(size=(4, 4)).astype(np.float32),
        "W2": rng.normal(size=(4, 3)).astype(np.float32),
        "axes": np.array([0], np.int64),
        "k": np.array(16000, np.float32),
    }
    nodes = [
        helper.make_node("ReduceSum", ["state", "axes"], ["s"], keepdims=0, name="sum"),
        helper.make_node("MatMul", ["x", "W"], ["xw"], name="mm"),
        helper.make_node("Add", ["xw", "s"], ["h"], name="add"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Div", ["srf", "k"], ["scale"], name="div"),
        helper.make_node("Mul", ["r", "scale"], ["rs"], name="mul"),
        helper.make_node("MatMul", ["rs", "W2"], ["logits"], name="mm2"),
        helper.make_node("Unsqueeze", ["h", "axes"], ["stateN"], name="unsq"),
    ]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "state_sr",
        [
            value("x", TensorProto.FLOAT, ["N", 4]),
            value("state", TensorProto.FLOAT, list(state_shape)),
            value("sr", TensorProto.INT64, []),
        ],
        [value("logits", TensorProto.FLOAT, ["N", 3]), value("stateN", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _expected_logits(x: np.ndarray, state: np.ndarray, sr: int) -> np.ndarray:
    model = state_sr_model()
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    h = x @ inits["W"] + state.sum(0)
    return (np.maximum(h, 0) * (sr / 16000)) @ inits["W2"]


def test_fed_values_reach_torch_and_onnxruntime() -> None:
    state = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 1, 4)
    imported = import_onnx(state_sr_model(), "x", feeds={"sr": 8000, "state": state})
    x = torch.linspace(-1, 1, 8).reshape(2, 4)
    with torch.no_grad():
        (logits,) = imported.run(x, ["logits"])
    want = _expected_logits(x.numpy(), state, 8000)
    np.testing.assert_allclose(logits.numpy(), want, rtol=1e-5, atol=1e-6)
    parity = check_parity(imported)
    assert parity.passed, parity
    targets = [unit("logits", 0), unit("logits", 2)]
    checks = crosscheck(imported, targets, x, logits[[0, 1], [0, 2]].tolist(), InputDomain())
    assert all(check.agrees for check in checks)
    assert [c.value for c in checks] == pytest.approx([want[0, 0], want[1, 2]], rel=1e-5)


def test_every_input_is_listed_with_its_dtype_and_how_it_is_fed() -> None:
    imported = import_onnx(state_sr_model(), "x", feeds={"sr": "16000"})
    listed = {i["name"]: i for i in imported.inputs}
    assert list(listed) == ["x", "state", "sr"]
    assert listed["x"]["fed"] == "optimized" and listed["x"]["dtype"] == "float32"
    assert listed["state"]["fed"] == "zeros (default)"
    assert listed["state"]["fed_shape"] == [2, 1, 4] and listed["state"]["batch_axis"] == 1
    assert listed["sr"] == {
        "name": "sr", "shape": [], "dtype": "int64", "fed": "16000",
        "fed_shape": [], "batch_axis": None,
    }  # fmt: skip
    assert imported.feeds["sr"].value.dtype == np.int64
    # the torch graph has the optimized input only; the others are initializers
    assert [v.name for v in imported.prepared.graph.input] == ["x"]


def test_scalar_with_shape_and_npy_file(tmp_path: Path) -> None:
    model = state_sr_model(state_shape=(2, "?", 4))
    path = tmp_path / "state.npy"
    np.save(path, np.full((2, 1, 4), 0.25, np.float64))
    from_file = import_onnx(model, "x", feeds={"sr": 16000, "state": str(path)})
    assert from_file.feeds["state"].value.dtype == np.float32
    assert from_file.feeds["state"].source == "file state.npy"
    from_text = import_onnx(model, "x", feeds={"sr": 16000, "state": "0.25:2,1,4"})
    np.testing.assert_array_equal(from_text.feeds["state"].value, from_file.feeds["state"].value)
    assert check_parity(from_text).passed


@pytest.mark.parametrize(
    ("feeds", "fragments"),
    [
        ({}, ["'sr'", "int64", "--feed sr=VALUE"]),
        ({"sr": 0.5}, ["'sr'", "not an integer"]),
        ({"sr": 2**70}, ["does not fit", "int64"]),
        ({"sr": 1, "nope": 1}, ["no input 'nope'", "state (float32)"]),
        ({"sr": 1, "x": 0}, ["'x' is the optimized input"]),
        ({"sr": 1, "state": "0:2,3,4"}, ["shape [2, 3, 4]", "N=1"]),
        ({"sr": 1, "state": "0:2,1"}, ["shape [2, 1]", "declared [2, 'N', 4]"]),
        ({"sr": 1, "state": np.zeros((2, 1, 4), np.complex64)}, ["complex64", "does not fit"]),
        ({"sr": 1, "state": "missing.npy"}, ["not found", "missing.npy"]),
        ({"sr": 1, "state": "zero"}, ["neither a number", ".npy"]),
        ({"sr": 1, "state": [0, 1]}, ["is a list", "number, an array"]),
        ({"sr": 1, "state": "0:2,one,4"}, ["cannot parse the shape"]),
    ],
)
def test_bad_feeds_name_the_input(feeds: dict, fragments: list[str]) -> None:
    with pytest.raises(InputSpecError) as info:
        import_onnx(state_sr_model(), "x", feeds=feeds)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_unresolvable_shape_says_what_to_pass() -> None:
    with pytest.raises(InputSpecError) as info:
        import_onnx(state_sr_model(state_shape=(2, "?", 4)), "x", feeds={"sr": 16000})
    message = str(info.value)
    assert "'state'" in message and "[2, ?, 4]" in message
    assert "--feed state=0:SHAPE" in message and "--feed state=FILE.npy" in message


def test_bad_npy_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy at all")
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for path, fragment in ((garbage, "cannot read"), (pickled, "cannot read")):
        with pytest.raises(InputSpecError, match=fragment):
            import_onnx(state_sr_model(), "x", feeds={"sr": 1, "state": path})


def test_parse_feed_text_forms() -> None:
    assert parse_feed("sr=16000").scalar == 16000
    assert parse_feed("state=0:2x1x128").shape == (2, 1, 128)
    assert parse_feed("flag=true").scalar is True
    assert parse_feed("a:b=x.npy").name == "a:b"
    for text in ("sr", "=1", "sr=", "sr=inf"):
        with pytest.raises(InputSpecError, match="NAME=VALUE|neither a number"):
            parse_feed(text)


def _inspect(*args: str):
    from click.testing import CliRunner
    from onnx_am_cli.main import cli

    return CliRunner().invoke(cli, ["inspect", *args])


@pytest.mark.slow
def test_inspect_lists_inputs_and_takes_feeds(tmp_path: Path) -> None:
    path = tmp_path / "vad.onnx"
    path.write_bytes(state_sr_model().SerializeToString())
    result = _inspect(str(path), "--input", "x", "--feed", "sr=16000")
    assert result.exit_code == 0, result.output
    assert "x  ['N', 4]  float32  layout vector  optimized" in result.stdout
    assert "state  [2, 'N', 4]  float32  fed zeros (default) as [2, 1, 4]" in result.stdout
    assert "sr  []  int64  fed 16000" in result.stdout
    assert "parity:   passed" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--input", "x"], "--feed sr=VALUE"),
        (["--input", "x", "--feed", "sr"], "write NAME=VALUE"),
        (["--input", "x", "--feed", "sr=1", "--feed", "sr=2"], "given twice"),
        (["--input", "x", "--feed", "sr=1", "--feed", "state=s.npy"], "not found"),
        (["--feed", "sr=1"], "choose the one to optimize with --input NAME"),
    ],
)
def test_inspect_bad_feeds_are_one_line_errors(tmp_path: Path, args, fragment) -> None:
    path = tmp_path / "vad.onnx"
    path.write_bytes(state_sr_model().SerializeToString())
    result = _inspect(str(path), *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx-am: error: "), result.stderr
    assert fragment in lines[0]


@pytest.mark.slow
def test_analyze_feeds_the_same_values_everywhere(tmp_path: Path) -> None:
    from onnx_am.audit.analyze import AnalyzeOptions, analyze

    path = tmp_path / "vad.onnx"
    path.write_bytes(state_sr_model().SerializeToString())
    options = AnalyzeOptions.of(
        input_name="x", feeds={"sr": 8000, "state": "0.5"}, steps=4, restarts=1, max_units=2
    )
    report = analyze(path, options, tmp_path / "report")
    assert report.exit_code == 0 and report.parity.passed
    assert report.results and all(r.agrees for r in report.results)
    inputs = {i["name"]: i for i in report.doc["model"]["inputs"]}
    assert inputs["sr"]["fed"] == "8000" and inputs["state"]["fed"] == "0.5"
    assert "sha256:" in report.doc["settings"]["feeds"]["state"]
    # resuming with another value is refused: the feeds are part of the settings
    other = options.replaced(feeds={"sr": 16000}, resume=True)
    with pytest.raises(Exception, match="settings"):
        analyze(path, other, tmp_path / "report")


@pytest.mark.slow
def test_analyze_cli_takes_feeds_and_refuses_bad_ones(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from onnx_am_cli.main import cli

    path = tmp_path / "vad.onnx"
    path.write_bytes(state_sr_model().SerializeToString())
    base = ["analyze", str(path), "--input", "x", "--steps", "2", "--restarts", "1"]
    base += ["--max-units", "1", "--out", str(tmp_path / "r"), "--force"]
    ok = CliRunner().invoke(cli, [*base, "--feed", "sr=16000", "--quiet"])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(cli, [*base, "--feed", "sr=16k"])
    assert bad.exit_code == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "neither a number" in lines[0], bad.stderr
