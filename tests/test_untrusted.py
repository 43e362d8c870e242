"""Hostile models found by the fuzzer (fuzz/campaign.py), each rebuilt here in small.

Every one used to escape as a non-onnx-am exception (exit 1), a hang, a blow-up or a
segfault; each must now be refused with one clean ``OnnxAmError`` line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from onnx_am_cli.main import cli

from onnx_am import (
    ExternalDataError,
    ModelLoadError,
    OnnxAmError,
    ResourceLimitError,
    check_parity,
    import_onnx,
)
from onnx_am.errors import one_line


def _conv_model(make_model, **attrs) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs)]
    w = np.ones((2, 1, 3, 3), np.float32)
    return make_model(nodes, [("x", ["N", 1, 8, 8])], ["y"], {"w": w})


def _pool_model(make_model, op="AveragePool", **attrs) -> onnx.ModelProto:
    attrs.setdefault("kernel_shape", [2, 2])
    nodes = [helper.make_node(op, ["x"], ["y"], name="pool", **attrs)]
    return make_model(nodes, [("x", ["N", 1, 8, 8])], ["y"])


def _raw_attribute(node: onnx.NodeProto, name: str, value) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute(name, value)])


def _save(model: onnx.ModelProto | bytes, path: Path) -> Path:
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return path


def _invalid_utf8(model: onnx.ModelProto, marker: str) -> bytes:
    """The serialized model with ``marker`` replaced by invalid UTF-8 of the same length."""
    bad = b"\xff\xfe" + b"_" * (len(marker) - 2)
    return model.SerializeToString().replace(marker.encode(), bad)


# --- attributes the pre-passes and rules read -------------------------------------------------


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("strides", [0, 0], "strides [0, 0]"),
        ("strides", [1, 1, 1], "different spatial ranks"),
        ("pads", [0, 0, 2**31, 2**31], "pads [2147483648"),
        ("pads", [1, 1, 1], "wrong length"),
        ("pads", 3, "is INT; INTS expected"),
        ("pads", 1.5, "is FLOAT; INTS expected"),
        ("kernel_shape", [2, 2, 2, 2], "wrong length"),
        ("dilations", [0, 1], "dilations [0]"),
        ("auto_pad", "SAME_SIDEWAYS", "auto_pad"),
        ("ceil_mode", 7, "ceil_mode"),
    ],
)
def test_window_attributes_are_checked_before_the_prepasses(
    make_model, name, value, fragment
) -> None:
    model = _pool_model(make_model, pads=[0, 0, 1, 1], auto_pad="NOTSET")
    _raw_attribute(model.graph.node[0], name, value)
    with pytest.raises(OnnxAmError, match="'pool'") as info:
        import_onnx(model)
    assert fragment in str(info.value)


def test_same_padding_with_zero_strides_is_refused(make_model) -> None:
    with pytest.raises(ModelLoadError, match="strides"):
        import_onnx(_conv_model(make_model, auto_pad="SAME_UPPER", strides=[0, 1]))


def test_leaky_relu_alpha_as_a_list(make_model) -> None:
    model = make_model(
        [helper.make_node("LeakyRelu", ["x"], ["y"], name="lr")], [("x", ["N", 3])], ["y"]
    )
    _raw_attribute(model.graph.node[0], "alpha", [0.1, 0.2])
    with pytest.raises(ModelLoadError, match="'alpha' of node 'lr'.*FLOATS; FLOAT expected"):
        import_onnx(model)


def test_attribute_without_a_type(make_model) -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", ["N", 3])], ["y"])
    model.graph.node[0].attribute.add(name="odd")
    with pytest.raises(ModelLoadError, match="no valid type"):
        import_onnx(model)


# --- graph structure ------------------------------------------------------------------------


def test_node_without_outputs(make_model) -> None:
    model = make_model(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")],
        [("x", [1, 3])],
        ["y"],
        {"w": np.ones((3, 2), np.float32)},
    )
    del model.graph.node[0].output[:]
    with pytest.raises(ModelLoadError, match="'fc'.*no outputs"):
        import_onnx(model)


def test_empty_input_name_of_a_variadic_op_never_reaches_onnxruntime(make_model) -> None:
    """``Max(x, "")`` segfaults onnxruntime; it must be refused before any session."""
    model = make_model(
        [helper.make_node("Max", ["x", ""], ["y"], name="mx")], [("x", ["N", 3])], ["y"]
    )
    with pytest.raises(ModelLoadError, match="'mx'.*empty name for its required input 1"):
        import_onnx(model)


def test_constant_without_output_or_value(make_model) -> None:
    nodes = [
        helper.make_node("Constant", [], ["c"], name="const"),
        helper.make_node("Add", ["x", "c"], ["y"], name="add"),
    ]
    model = make_model(nodes, [("x", ["N", 3])], ["y"])
    with pytest.raises(ModelLoadError, match="'const'.*exactly one value attribute"):
        import_onnx(model)


def test_shape_inference_error_inside_the_converter_is_mapped(make_model) -> None:
    """A sparse initializer whose dims contradict the graph: onnx's InferenceError."""
    model = make_model(
        [helper.make_node("Add", ["x", "s"], ["y"], name="add")], [("x", [1, 4])], ["y"]
    )
    values = numpy_helper.from_array(np.ones(2, np.float32), "s")
    indices = numpy_helper.from_array(np.array([0, 1], np.int64))
    model.graph.sparse_initializer.append(
        onnx.SparseTensorProto(values=values, indices=indices, dims=[16])
    )
    model.graph.value_info.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, [4]))
    with pytest.raises(OnnxAmError) as info:
        import_onnx(model)
    assert len(str(info.value)) < 400 and "\n" not in str(info.value)


# --- dtypes, dims, raw data -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [0, 100, 1000])
def test_unknown_initializer_dtype(make_model, dtype) -> None:
    model = make_model(
        [helper.make_node("Add", ["x", "w"], ["y"], name="add")],
        [("x", ["N", 2])],
        ["y"],
        {"w": np.ones(2, np.float32)},
    )
    model.graph.initializer[0].data_type = dtype
    with pytest.raises(ModelLoadError, match=f"'w' has unknown dtype {dtype}"):
        import_onnx(model)


def test_unknown_input_dtype(make_model) -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", ["N", 3])], ["y"])
    model.graph.input[0].type.tensor_type.elem_type = 100
    with pytest.raises(ModelLoadError, match="'x' has unknown dtype 100"):
        import_onnx(model)


def test_raw_data_not_a_whole_number_of_values(make_model) -> None:
    model = make_model(
        [helper.make_node("Add", ["x", "w"], ["y"], name="add")],
        [("x", ["N", 2])],
        ["y"],
        {"w": np.ones(2, np.float32)},
    )
    model.graph.initializer[0].raw_data += b"\x00"
    with pytest.raises(ModelLoadError, match="'w'"):
        import_onnx(model)


def test_cast_to_an_unknown_dtype(make_model) -> None:
    nodes = [helper.make_node("Cast", ["x"], ["y"], name="cast", to=100)]
    with pytest.raises(ModelLoadError, match="'cast'.*unknown dtype 100"):
        import_onnx(make_model(nodes, [("x", ["N", 3])], ["y"]))


# --- names --------------------------------------------------------------------------------


def test_nul_in_a_node_name(make_model) -> None:
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"], name="a\0b")], [("x", ["N", 3])], ["y"]
    )
    with pytest.raises(ModelLoadError, match="node name 'a.x00b' contains a NUL"):
        import_onnx(model)


@pytest.mark.parametrize("where", ["op_type", "input", "name"])
def test_invalid_utf8_names(make_model, where) -> None:
    marker = "MARKER_NAME"
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    model = make_model([node], [("x", ["N", 3])], ["y"])
    if where == "op_type":
        model.graph.node[0].op_type = marker
    elif where == "input":
        model.graph.input[0].name = model.graph.node[0].input[0] = marker
    else:
        model.graph.node[0].name = marker
    with pytest.raises(ModelLoadError, match="not valid UTF-8"):
        import_onnx(_invalid_utf8(model, marker))


def test_invalid_utf8_with_json_output(tmp_path, make_model) -> None:
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"], name="MARKER_NAME")], [("x", ["N", 3])], ["y"]
    )
    path = _save(_invalid_utf8(model, "MARKER_NAME"), tmp_path / "m.onnx")
    result = CliRunner().invoke(cli, ["inspect", "--json", str(path)])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["type"] == "ModelLoadError"
    assert len(result.stderr.strip().splitlines()) == 1


# --- external data ------------------------------------------------------------------------------


def _external(make_model, tmp_path: Path, **entries: str) -> Path:
    model = make_model(
        [helper.make_node("Add", ["x", "w"], ["y"], name="add")],
        [("x", ["N", 4])],
        ["y"],
        {"w": np.ones(4, np.float32)},
    )
    tensor = model.graph.initializer[0]
    (tmp_path / "w.bin").write_bytes(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {"location": "w.bin", **entries}.items():
        tensor.external_data.add(key=key, value=value)
    return _save(model, tmp_path / "m.onnx")


@pytest.mark.parametrize(
    "entries, fragment",
    [
        ({"offset": "abc"}, "invalid offset 'abc'"),
        ({"offset": "0x10"}, "invalid offset '0x10'"),
        ({"offset": ""}, "invalid offset ''"),
        ({"offset": "-5"}, "invalid offset"),
        ({"length": "1e15"}, "invalid length '1e15'"),
        ({"length": "-5"}, "invalid length"),
        ({"offset": str(2**63)}, "invalid offset"),
        ({"location": "a\0b"}, "NUL"),
        ({"location": "x" * 5000}, "unusable location"),
        ({"location": "loop"}, "unusable location"),
    ],
)
def test_external_data_entries_are_parsed_strictly(tmp_path, make_model, entries, fragment):
    os.symlink("loop", tmp_path / "loop")
    path = _external(make_model, tmp_path, **entries)
    with pytest.raises(ExternalDataError) as info:
        import_onnx(path)
    assert fragment in str(info.value) and len(str(info.value)) < 300


def test_external_data_is_read_with_offset_and_length(tmp_path, make_model) -> None:
    path = _external(make_model, tmp_path, offset="4", length="16")
    (tmp_path / "w.bin").write_bytes(np.arange(5, dtype=np.float32).tobytes())
    weights = import_onnx(path).original.graph.initializer[0]
    np.testing.assert_array_equal(numpy_helper.to_array(weights), [1, 2, 3, 4])
    assert not weights.external_data and weights.data_location == TensorProto.DEFAULT


# --- resources ------------------------------------------------------------------------------


def test_slice_over_axis_two_to_the_31(make_model) -> None:
    """Reached from the batch probe, this grew memory without bound."""
    consts = {k: np.array(v, np.int64) for k, v in {"s": [0], "e": [1], "a": [2**31]}.items()}
    nodes = [helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="sl")]
    with pytest.raises(ResourceLimitError, match="axes \\[2147483648\\] of node 'sl'"):
        import_onnx(make_model(nodes, [("x", ["N", 3])], ["y"], consts))


def test_pad_of_two_to_the_31(make_model) -> None:
    nodes = [helper.make_node("Pad", ["x", "p"], ["y"], name="pad")]
    consts = {"p": np.array([0, 2**31, 0, 2**31], np.int64)}
    with pytest.raises(ResourceLimitError, match="'pad'"):
        import_onnx(make_model(nodes, [("x", ["N", 3])], ["y"], consts))


def test_inferred_tensor_beyond_the_memory_limit(make_model) -> None:
    """Each repeat is plausible; together they ask for 2^40 elements at batch 1."""
    nodes = [helper.make_node("Tile", ["x", "r"], ["y"], name="tile")]
    consts = {"r": np.array([2**20, 2**20], np.int64)}
    with pytest.raises(ResourceLimitError, match="'y'.*1.1e\\+12 elements.*usable memory"):
        import_onnx(make_model(nodes, [("x", [1, 1])], ["y"], consts))


def _two_weights(make_model, size: int) -> onnx.ModelProto:
    """x [N, size] -> MatMul w1 [size, size] -> MatMul w2: two weights of size^2 floats."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm2"),
    ]
    w = np.eye(size, dtype=np.float32)
    return make_model(nodes, [("x", ["N", size])], ["y"], {"w1": w, "w2": w})


def test_a_large_weight_imports_when_the_whole_model_fits(make_model, monkeypatch) -> None:
    """The old rule (one tensor at most 1/16 of usable memory) refused a 302 MB weight under
    an 8 GiB address-space limit; now only what does not fit in all is refused."""
    from onnx_am.importer import limits

    model = _two_weights(make_model, 512)  # 1 MiB per weight
    monkeypatch.setattr(limits, "usable_memory_bytes", lambda: 3 * 2**20)
    imported = import_onnx(model)
    assert imported.cost.weight_bytes == 2 * 2**20 > 3 * 2**20 / 16
    assert check_parity(imported).passed
    monkeypatch.setattr(limits, "usable_memory_bytes", lambda: int(1.5 * 2**20))
    with pytest.raises(ResourceLimitError) as info:  # each weight fits; both do not
        import_onnx(model)
    assert "needs about 0.00" in str(info.value) and "more memory" in str(info.value)
    monkeypatch.setattr(limits, "usable_memory_bytes", lambda: 2**19)
    with pytest.raises(ResourceLimitError, match="initializer 'w1' would have 2.62e\\+05"):
        import_onnx(model)  # one weight alone is too large: refused at load


def test_the_cost_estimate_counts_what_a_forward_does(make_model) -> None:
    from onnx_am.importer.cost import NODE_FLOPS

    w = np.ones((2, 1, 3, 3), np.float32)
    conv = make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], [("x", ["N", 1, 8, 8])], ["y"],
        {"w": w},
    )  # fmt: skip
    cost = import_onnx(conv).cost
    traffic = 64 + 18 + 72  # x, w, y [1, 2, 6, 6]
    assert cost.flops == NODE_FLOPS + traffic + 2 * 72 * 9 + 18
    assert cost.weight_bytes == 4 * 18 and cost.activation_bytes == 4 * (64 + 72)
    mm = import_onnx(_two_weights(make_model, 8)).cost
    assert mm.flops == 2 * NODE_FLOPS + 2 * (8 + 64 + 8 + 2 * 8 * 8) + 2 * 64


class _Stuck:
    """A forward that does not end by itself: only the alarm gets out of it (the loop ends
    after a minute so that a broken limit fails the test instead of hanging it)."""

    def __call__(self, *args):
        import time

        for _ in range(6000):
            time.sleep(0.01)
        raise AssertionError("the time limit never fired")


def test_a_probe_out_of_time_refuses_and_never_chooses_rowwise(monkeypatch, make_model) -> None:
    """The batch probe treats any failure as "not batchable"; an alarm it swallowed made a
    busy machine run a model rowwise that a quiet one rewrote. It must refuse instead."""
    from onnx_am import ProbeLimit
    from onnx_am.importer import batching

    monkeypatch.setattr(batching, "_outputs", _Stuck())
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    model = make_model(nodes, [("x", ["N", 3])], ["y"])
    with pytest.raises(ResourceLimitError, match="took longer than the --probe-timeout of 0.2 s"):
        import_onnx(model, probe_limit=ProbeLimit(seconds=0.2))


def test_the_derived_limit_follows_the_work_and_names_its_setting(monkeypatch, make_model):
    from onnx_am import ProbeLimit
    from onnx_am.importer import batching, limits
    from onnx_am.importer.cost import ForwardCost

    assert ProbeLimit.derived(ForwardCost()) == limits.PROBE_FLOOR_SECONDS >= 20
    heavy = ForwardCost(flops=8e9)  # a ResNet-50 forward: far more than the floor
    assert ProbeLimit.derived(heavy) > 30 * limits.PROBE_FLOOR_SECONDS
    monkeypatch.setattr(limits, "PROBE_FLOOR_SECONDS", 0.2)
    monkeypatch.setattr(batching, "_outputs", _Stuck())
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    with pytest.raises(ResourceLimitError, match="estimated .* operations.*--probe-timeout"):
        import_onnx(make_model(nodes, [("x", ["N", 3])], ["y"]))


def test_probes_end_with_the_time_budget(make_model, tmp_path) -> None:
    """A budget already spent: the import's probes are not even started, and the refusal
    names --time-budget (the budget counts the probes and the parity check)."""
    from onnx_am.audit.options import ImportSettings
    from onnx_am.audit.pipeline import import_model
    from onnx_am.engine.deadline import Deadline

    path = _save(_two_weights(make_model, 4), tmp_path / "m.onnx")
    spent = Deadline(60.0, start=0.0, clock=lambda: 61.0)  # a clock past the budget
    with pytest.raises(ResourceLimitError, match="--time-budget of 60 s"):
        import_model(path, ImportSettings(), spent)


def test_probe_timeout_none_and_durations_on_the_command_line(tmp_path, make_model) -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", ["N", 3])], ["y"])
    path = _save(model, tmp_path / "m.onnx")
    for value in ("none", "90s", "auto"):
        result = CliRunner().invoke(cli, ["inspect", "--probe-timeout", value, str(path)])
        assert result.exit_code == 0, result.stderr
    assert CliRunner().invoke(cli, ["inspect", "--probe-timeout", "soon", str(path)]).exit_code == 2


def test_nan_weight_imports_and_parity_names_it(make_model) -> None:
    """A NaN weight made batching's tolerance NaN ("atol must be >= 0, but got nan")."""
    w = np.ones((3, 2), np.float32)
    w[0, 0] = np.nan
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    imported = import_onnx(make_model(nodes, [("x", ["N", 3])], ["y"], {"w": w}))
    assert imported.batch.mode == "dynamic"
    result = check_parity(imported)
    assert result.passed and result.outputs[0].nonfinite[0] > 0  # NaN in the same places


# --- errors from the libraries ------------------------------------------------------------------


def test_library_errors_are_mapped_and_own_bugs_are_not() -> None:
    from onnx_am.errors import ImportFailedError
    from onnx_am.importer.guard import foreign_errors

    with pytest.raises(ImportFailedError, match="^step: ValueError: "):
        with foreign_errors(ImportFailedError, "step"):
            np.zeros(3).reshape(7)
    from onnx_am.importer.limits import check_shapes

    with pytest.raises(TypeError):  # raised in onnx-am's own code: a bug stays a bug
        with foreign_errors(ImportFailedError, "step"):
            check_shapes({"t": None})


def test_one_line_summarizes() -> None:
    text = one_line("a\nb " + "x" * 1000)
    assert "\n" not in text and len(text) <= 300 and text.startswith("a b x")


@pytest.mark.slow
def test_onnxruntime_logging_stays_off_stderr(tmp_path, make_model) -> None:
    """A model onnxruntime refuses at load: our one line, not its coloured log line first."""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    model = make_model(nodes, [("x", ["N", 3])], ["y"])
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64  # contradicts Relu
    path = _save(model, tmp_path / "m.onnx")
    done = subprocess.run(
        [sys.executable, "-m", "onnx_am_cli.main", "inspect", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (2, 3), done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx-am: error: "), done.stderr
    assert isinstance(json.loads(done.stdout), dict)


def test_invalid_utf8_producer_name_with_json(tmp_path, make_model) -> None:
    """The report's JSON could not encode a producer name given as bytes."""
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", ["N", 3])], ["y"])
    model.producer_name = "MARKER_NAME"
    path = _save(_invalid_utf8(model, "MARKER_NAME"), tmp_path / "m.onnx")
    result = CliRunner().invoke(cli, ["inspect", "--json", str(path)])
    assert result.exit_code == 2 and "producer name" in result.stderr
    assert json.loads(result.stdout)["error"]["type"] == "ModelLoadError"


def test_string_dtype_with_raw_data(make_model) -> None:
    """A PRelu slope turned into a string tensor broke inspection's slope reading."""
    nodes = [helper.make_node("PRelu", ["x", "s"], ["y"], name="prelu")]
    model = make_model(nodes, [("x", ["N", 3])], ["y"], {"s": np.full(3, 0.1, np.float32)})
    model.graph.initializer[0].data_type = TensorProto.STRING
    with pytest.raises(ModelLoadError, match="'s' is a string tensor with raw data"):
        import_onnx(model)


def test_pads_that_do_not_fit_the_rank_are_bounded_by_themselves(make_model) -> None:
    """Fuzz case 8491 (seed 0): 8 pads of 10^6 on a rank-2 input; shape inference gives up,
    and the converted Pad tried to allocate ~10^25 elements."""
    nodes = [helper.make_node("Pad", ["x", "p"], ["y"], name="pad")]
    consts = {"p": np.full(8, 10**6, np.int64)}
    with pytest.raises(ResourceLimitError, match="output of node 'pad'"):
        import_onnx(make_model(nodes, [("x", ["N", 2])], ["y"], consts))
