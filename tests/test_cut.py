"""Starting the search at a tensor (``--at``): the cut, the lookup it finds, the feeds it
defaults, the box, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from onnx_am_cli.main import cli

from onnx_am import InputSpecError, import_onnx
from onnx_am import unit as onnx_am_unit
from onnx_am.importer.cut import cut_model
from onnx_am.importer.lookup import find_lookup
from onnx_am.reference.parity import check_parity

RNG = np.random.default_rng(0)
E = RNG.normal(size=(10, 4)).astype(np.float32)
W = RNG.normal(size=(4, 3)).astype(np.float32)


def token_model(table: str = "plain", mask: bool = True) -> onnx.ModelProto:
    """ids [batch, seq] (+ attention_mask) -> Gather(E) -> * mask -> MatMul -> ReduceSum."""
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.array([1]), "axis1")]
    nodes = []
    if table == "plain":
        inits.append(numpy_helper.from_array(E, "E"))
        source = "E"
    elif table == "cast":
        inits.append(numpy_helper.from_array(E.astype(np.float16), "E16"))
        nodes.append(helper.make_node("Cast", ["E16"], ["E"], to=TensorProto.FLOAT))
        source = "E"
    else:  # int8 weight-only quantized table
        scale = np.float32(np.abs(E).max() / 127)
        quantized = np.round(E / scale).astype(np.int8)
        inits += [
            numpy_helper.from_array(quantized, "Eq"),
            numpy_helper.from_array(np.array(scale, np.float32), "scale"),
            numpy_helper.from_array(np.array(0, np.int8), "zero"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", ["Eq", "scale", "zero"], ["E"]))
        source = "E"
    nodes.append(helper.make_node("Gather", [source, "input_ids"], ["emb"], axis=0))
    x = "emb"
    if mask:
        inputs.append(
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])
        )
        inits.append(numpy_helper.from_array(np.array([-1]), "last"))
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask_f", "last"], ["mask3"]),
            helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        ]
        x = "masked"
    nodes += [
        helper.make_node("MatMul", [x, "W"], ["per_token"]),
        helper.make_node("ReduceSum", ["per_token", "axis1"], ["logits"], keepdims=0),
    ]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph(nodes, "tok", inputs, [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def float_model() -> onnx.ModelProto:
    """x [batch, 4] -> Mul 2 (a fixed normalization) -> Gemm -> Relu -> Gemm -> logits."""
    w1 = RNG.normal(size=(5, 4)).astype(np.float32)
    w2 = RNG.normal(size=(2, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["scaled"]),
        helper.make_node("Gemm", ["scaled", "w1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "float",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        initializer=[
            numpy_helper.from_array(np.array(2.0, np.float32), "two"),
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(w2, "w2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("table", ["plain", "cast", "dequantize"])
def test_lookup_found_behind_cast_and_dequantize(table):
    model = token_model(table)
    lookup = find_lookup(model, "emb")
    assert lookup is not None and lookup.kind == "embedding"
    assert lookup.ids_input == "input_ids"
    # the table the model really uses, computed independently by onnxruntime on every id
    session = ort.InferenceSession(_exposed(model, "emb"), providers=["CPUExecutionProvider"])
    ids = np.arange(10)[None]
    rows = session.run(["emb"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]
    np.testing.assert_array_equal(lookup.matrix, rows)


def _exposed(model: onnx.ModelProto, name: str) -> bytes:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(onnx.ValueInfoProto(name=name))
    return copy.SerializeToString()


def test_cut_makes_the_tensor_an_input_and_keeps_the_mask():
    model = token_model()
    cut, info = cut_model(model, "emb", seq_len=5)
    names = [v.name for v in cut.graph.input]
    assert names == ["emb", "attention_mask"]
    assert info.dropped_inputs == ("input_ids",) and info.removed == 1
    dims = [d.dim_param or d.dim_value for d in cut.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 5, 4]
    assert info.box == (float(E.min()), float(E.max()))
    # the cut model fed E[ids] computes what the model computes from ids
    ids = np.array([[1, 7, 3, 3, 0]])
    mask = np.array([[1, 1, 0, 1, 1]])
    full = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    part = ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"])
    want = full.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    got = part.run(None, {"emb": E[ids], "attention_mask": mask})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_import_at_defaults_the_mask_to_ones_and_passes_parity():
    imported = import_onnx(token_model(), at="emb", seq_len=6)
    assert imported.input.name == "emb" and imported.input.sample_shape == (6, 4)
    feed = imported.feeds["attention_mask"]
    assert feed.source.startswith("ones") and feed.value.tolist() == [[1] * 6]
    assert imported.cut is not None and imported.cut.lookup is not None
    assert check_parity(imported, low=-2, high=2).passed


def test_auto_cut_only_without_float_inputs():
    assert import_onnx(token_model(), at="auto").cut.tensor == "emb"
    assert import_onnx(float_model(), at="auto").cut is None


def test_unknown_tensor_names_the_nearest():
    with pytest.raises(InputSpecError, match="nearest names: emb") as caught:
        import_onnx(token_model(), at="embb")
    assert "\n" not in str(caught.value)


def test_float_model_cut_after_normalization_matches_onnxruntime():
    imported = import_onnx(float_model(), at="scaled")
    assert imported.input.name == "scaled" and imported.cut.lookup is None
    low, high = imported.cut.box
    assert -2.0 <= low < -1.0 and 1.0 < high <= 2.0  # 2 x uniform(-1, 1), measured
    x = torch.linspace(-1.5, 1.5, 8).reshape(2, 4)
    session = ort.InferenceSession(imported.original.SerializeToString())
    want = session.run(None, {"scaled": x.numpy()})[0]
    np.testing.assert_allclose(imported.run(x)[0].numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cli_analyze_at_float_tensor(tmp_path):
    path = tmp_path / "float.onnx"
    onnx.save(float_model(), path)
    out = tmp_path / "r"
    result = CliRunner().invoke(
        cli,
        ["analyze", str(path), "--at", "scaled", "--steps", "4", "--restarts", "1",
         "--out", str(out)],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "report.json").read_text())
    assert doc["cut"]["tensor"] == "scaled" and doc["cut"]["lookup"] is None
    assert doc["model"]["input"]["name"] == "scaled"
    assert doc["defaults"]["domain"]["source"] == "cut"
    assert "tokens" not in doc
    assert all(r["agrees"] for r in doc["results"])


def test_cli_unknown_at_is_one_line(tmp_path):
    path = tmp_path / "float.onnx"
    onnx.save(float_model(), path)
    result = CliRunner().invoke(cli, ["analyze", str(path), "--at", "scaledd"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "nearest names: scaled" in lines[0]


def bert_like() -> onnx.ModelProto:
    """Word (12 ids), position (32) and token type (2) embeddings summed, masked, pooled."""
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "token_type_ids", "position_ids", "attention_mask")
    ]
    tables = {"word": (12, 4), "position": (32, 4), "type": (2, 4)}
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
        for name, shape in tables.items()
    ]
    inits += [numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.array([-1]), "last")]
    inits.append(numpy_helper.from_array(np.array([1]), "axis1"))
    nodes = [
        helper.make_node("Gather", ["word", "input_ids"], ["word_emb"]),
        helper.make_node("Gather", ["position", "position_ids"], ["pos_emb"]),
        helper.make_node("Gather", ["type", "token_type_ids"], ["type_emb"]),
        helper.make_node("Sum", ["word_emb", "pos_emb", "type_emb"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "last"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("MatMul", ["masked", "W"], ["per_token"]),
        helper.make_node("ReduceSum", ["per_token", "axis1"], ["logits"], keepdims=0),
    ]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph(nodes, "bert_like", inputs, [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_bert_like_inputs_get_defaults_and_results_recompute():
    from onnx_am.tokens.run import plan_tokens, search_tokens

    model = bert_like()
    imported = import_onnx(model, at="auto", seq_len=5)
    assert imported.cut.tensor == "word_emb"  # not the larger position table
    feeds = {name: feed.value.tolist() for name, feed in imported.feeds.items()}
    assert feeds == {
        "token_type_ids": [[0] * 5],
        "position_ids": [[0, 1, 2, 3, 4]],
        "attention_mask": [[1] * 5],
    }
    plan = plan_tokens(imported, steps=2)
    (result, *_) = search_tokens(imported, plan, [onnx_am_unit("logits", 1)])
    session = ort.InferenceSession(model.SerializeToString())
    ids = np.array([result.ids])
    logits = session.run(
        None,
        {
            "input_ids": ids,
            "token_type_ids": np.zeros_like(ids),
            "position_ids": np.arange(5)[None],
            "attention_mask": np.ones_like(ids),
        },
    )[0]
    assert result.value == pytest.approx(float(logits[0, 1]), rel=1e-6)
    assert result.agrees


def test_a_lookup_that_feeds_nothing_is_not_a_start(make_model) -> None:
    """A lookup whose output is only the graph's output leaves nothing to compute: no
    automatic cut (the model has no float input to optimize), and an explicit one is refused."""
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["y"], name="embed")]
    model = make_model(
        nodes, [("ids", ["N", 7])], ["y"], {"emb": np.ones((10, 3), np.float32)},
        input_type=onnx.TensorProto.INT64,
    )  # fmt: skip
    with pytest.raises(InputSpecError, match="no float input"):
        import_onnx(model, at="auto")
    with pytest.raises(InputSpecError, match="feeds no node"):
        import_onnx(model, at="y")


def test_lookup_box_is_per_dimension_over_the_rows(tmp_path):
    """The box of an embedding: each dimension between its smallest and largest value over
    the matrix's rows (not one range for all), in the plan, the engine and the results."""
    from onnx_am.audit.analyze import analyze
    from onnx_am.audit.options import AnalyzeOptions
    from onnx_am.importer.cut import cut_domain

    imported = import_onnx(token_model(), at="emb", seq_len=3)
    domain = cut_domain(imported.cut, imported.input.sample_shape).domain
    low, high = domain.bounds(imported.input)
    want_low = torch.from_numpy(E.min(0)).expand(3, 4)
    want_high = torch.from_numpy(E.max(0)).expand(3, 4)
    torch.testing.assert_close(low, want_low, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(high, want_high, atol=1e-5, rtol=1e-5)
    assert (want_high - want_low).max() < E.max() - E.min()  # narrower than the scalar box
    assert cut_domain(imported.cut).domain.mean is None  # without the shape: the scalar box

    path = tmp_path / "tokens.onnx"
    onnx.save(token_model(), path)
    options = AnalyzeOptions.of(at="emb", seq_len=3, steps=16, restarts=1, time_budget=None)
    report = analyze(path, options, tmp_path / "r")
    assert report.doc["defaults"]["domain"]["axis"] == -1
    assert "per dimension" in report.doc["defaults"]["domain"]["description"]
    for result in report.results:
        seen = domain.to_model(torch.from_numpy(result.image)[None], imported.input)[0]
        assert bool((seen >= want_low - 1e-5).all() and (seen <= want_high + 1e-5).all())
        assert result.agrees
    assert report.exit_code == 0


def equal_one_hot_model() -> onnx.ModelProto:
    """bytes int32 [batch, 6] -> Reshape [batch, 6, 1] -> Equal(arange(5) [1, 1, 5]) -> Cast
    -> MatMul W [5, 2] -> ReduceSum over positions: the one-hot jax2tf writes (magika)."""
    weight = RNG.normal(size=(5, 2)).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array([0, 6, 1]), "shape"),
        numpy_helper.from_array(np.arange(5, dtype=np.int32).reshape(1, 1, 5), "range"),
        numpy_helper.from_array(weight, "Wd"),
        numpy_helper.from_array(np.array([1]), "axis1"),
    ]
    nodes = [
        helper.make_node("Reshape", ["bytes", "shape"], ["column"]),
        helper.make_node("Equal", ["column", "range"], ["hot"]),
        helper.make_node("Cast", ["hot"], ["hot_f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["hot_f", "Wd"], ["scores"]),
        helper.make_node("ReduceSum", ["scores", "axis1"], ["logits"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "equal_one_hot",
        [helper.make_tensor_value_info("bytes", TensorProto.INT32, ["batch", 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_equal_one_hot_is_a_lookup_and_its_token_search_is_exact():
    from onnx_am.tokens.run import plan_tokens, search_tokens

    model = equal_one_hot_model()
    lookup = find_lookup(model, "hot_f")
    assert lookup is not None and lookup.kind == "onehot" and lookup.ids_input == "bytes"
    np.testing.assert_array_equal(lookup.matrix, np.eye(5, dtype=np.float32))
    assert find_lookup(model, "hot") is None  # the bool tensor is not searched
    imported = import_onnx(model, at="auto")
    assert imported.cut.tensor == "hot_f" and imported.input.sample_shape == (6, 5)
    plan = plan_tokens(imported, steps=8)
    (result,) = search_tokens(imported, plan, [onnx_am_unit("logits", 1)])
    weight = numpy_helper.to_array(model.graph.initializer[2])
    exact = 6 * float(weight[:, 1].max())  # the best id at every position
    assert result.value == pytest.approx(exact, rel=1e-5) and result.agrees


def test_encoder_without_a_head_targets_its_pooled_output_or_its_neurons():
    from pathlib import Path

    from onnx_am.audit.defaults import default_targets_for

    path = Path(__file__).resolve().parent.parent / "models" / "transformers"
    choice = default_targets_for(import_onnx(path / "minilm_legacy.onnx", at="auto"), 8)
    assert choice.tensor == "pooler_output" and len(choice.targets) == 8
    assert "pooled output" in choice.reason

    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["emb"], axis=0),
        helper.make_node("Tanh", ["emb"], ["hidden"]),
    ]
    graph = helper.make_graph(
        nodes,
        "encoder",
        inputs,
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", 4])],
        [numpy_helper.from_array(E, "E")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    choice = default_targets_for(import_onnx(model, at="auto", seq_len=5), 8)
    assert choice.tensor == "hidden" and len(choice.targets) == 4  # the 4 neurons
    assert "averaged over the 5 positions" in choice.reason


def _wrapped_lookup(form: str) -> onnx.ModelProto:
    """``Gather(E, where(ids < 0, ids + 6, ids))`` as Keras 3's Embedding writes it: a ``Where``
    or tf2onnx's arithmetic form; ``form="other"`` keeps a different tensor where ids >= 0."""
    less = [
        helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Less", ["ids_f", "zero"], ["neg"]),
        helper.make_node("Add", ["ids", "six"], ["wrapped"]),
    ]
    if form == "where":
        index = [helper.make_node("Where", ["neg", "wrapped", "ids"], ["index"])]
    elif form == "other":
        index = [helper.make_node("Where", ["neg", "ids", "wrapped"], ["index"])]
    else:
        index = [
            helper.make_node("Cast", ["neg"], ["neg_i"], to=TensorProto.INT32),
            helper.make_node("Not", ["neg"], ["pos"]),
            helper.make_node("Cast", ["pos"], ["pos_i"], to=TensorProto.INT32),
            helper.make_node("Mul", ["neg_i", "wrapped"], ["a"]),
            helper.make_node("Mul", ["ids", "pos_i"], ["b"]),
            helper.make_node("Add", ["b", "a"], ["index"]),
        ]
    gather = helper.make_node("Gather", ["table", "index"], ["emb"], axis=0)
    graph = helper.make_graph(
        [*less, *index, gather],
        "wrapped",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, ["N", 3])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", 3, 2])],
        [
            numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(6, 2), "table"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(np.array(6, np.int32), "six"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("form", ["where", "arithmetic"])
def test_lookup_found_behind_the_negative_index_wrap(form):
    model = _wrapped_lookup(form)
    lookup = find_lookup(model, "emb")
    assert lookup is not None and lookup.ids_input == "ids"
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = session.run(["emb"], {"ids": np.arange(6, dtype=np.int32).reshape(2, 3)})[0]
    np.testing.assert_array_equal(lookup.matrix, rows.reshape(6, 2))


def test_a_where_that_does_not_keep_the_ids_is_not_walked_through():
    assert find_lookup(_wrapped_lookup("other"), "emb") is None
