"""Loading from a path (with external data beside it), bytes, or a ModelProto."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from onnx_am import import_onnx
from onnx_am.importer.loading import load_model


def _model(make_model) -> onnx.ModelProto:
    weights = np.arange(64 * 8, dtype=np.float32).reshape(64, 8) / 100
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    return make_model(nodes, [("x", ["N", 64])], ["y"], {"w": weights})


def test_path_bytes_and_proto_give_the_same_model(tmp_path: Path, make_model) -> None:
    model = _model(make_model)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    from_path, from_bytes, from_proto = (
        load_model(path),
        load_model(path.read_bytes()),
        load_model(model),
    )
    assert from_path == from_bytes == from_proto == model
    assert from_proto is not model


def test_external_data_beside_the_model_is_loaded(tmp_path: Path, make_model) -> None:
    model = _model(make_model)
    weights = onnx.numpy_helper.to_array(model.graph.initializer[0])
    onnx.save_model(
        model,
        tmp_path / "m.onnx",
        save_as_external_data=True,
        location="m.onnx.data",
        size_threshold=0,
    )  # (converts model in place)
    assert (tmp_path / "m.onnx.data").stat().st_size == 64 * 8 * 4
    loaded = load_model(tmp_path / "m.onnx")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(loaded.graph.initializer[0]), weights)
    imported = import_onnx(str(tmp_path / "m.onnx"))
    assert imported.original.graph.initializer[0].data_location == onnx.TensorProto.DEFAULT


def test_external_data_in_a_subfolder_is_allowed(tmp_path: Path, make_model) -> None:
    (tmp_path / "weights").mkdir()
    onnx.save_model(
        _model(make_model),
        tmp_path / "m.onnx",
        save_as_external_data=True,
        location="weights/w.bin",
        size_threshold=0,
    )
    assert load_model(tmp_path / "m.onnx").graph.initializer[0].raw_data


def test_import_never_modifies_the_given_proto(make_model) -> None:
    model = _model(make_model)
    model.graph.node[0].name = ""
    before = model.SerializeToString()
    imported = import_onnx(model)
    assert model.SerializeToString() == before
    assert imported.prepared.graph.node[0].name  # named in the prepared copy only


def test_input_spec_names_symbolic_dims_and_fills_them(make_model) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    model = make_model(nodes, [("x", ["batch", 3, "h", "w"])], ["y"])
    imported = import_onnx(model, input_shape=(2, 3, 5, 7))
    assert imported.input.shape == ("batch", 3, "h", "w")
    assert imported.input.sample_shape == (3, 5, 7) and imported.input.layout == "NCHW"
    assert imported.input.dtype == "float32"


def test_layout_nhwc_from_channels_last_shape(make_model) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    imported = import_onnx(make_model(nodes, [("x", ["N", 28, 28, 1])], ["y"]))
    assert imported.input.layout == "NHWC"
    imported = import_onnx(make_model(nodes, [("x", ["N", 7, 5, 9])], ["y"]))
    assert imported.input.layout == "other" or imported.input.layout == "NCHW"
