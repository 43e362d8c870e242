"""The committed tiny transformers (models/make_tiny_transformers.py) convert with parity.

Every export (torch legacy, torch dynamo, optimum-onnx, dynamically and weight-only
quantized) is converted with all inputs, token ids and masks included, by
:func:`convert_graph` and compared with onnxruntime on the same inputs. Gradients through
the word embeddings onward are checked in float64.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from onnx_am.errors import InputSpecError, TargetError
from onnx_am.importer.graph import convert_graph
from onnx_am.reference.graph_parity import check_graph_parity, run_onnxruntime

MODELS = Path(__file__).resolve().parents[1] / "models" / "transformers"
RECORD = json.loads((MODELS / "tiny_transformers.json").read_text())
#: (the tf2onnx Keras exports, int32 inputs, are tested in test_import_keras_transformers.py)
FILES = sorted(path.name for path in MODELS.glob("*.onnx") if not path.name.startswith("keras_"))
#: Graphs the dynamo exporter specialized to batch 1 (nn.MultiheadAttention's fast path).
BATCH_ONE = {"bytes_sig_dynamo.onnx"}


def sample_inputs(names: list[str], batch: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids in the vocabulary, a mask with padding in row 1, two segments in row 2."""
    rng = np.random.default_rng(seed)
    seq = RECORD["bert_trigger"]["seq"]
    values = {}
    for name in names:
        if name == "input_ids":
            values[name] = rng.integers(0, RECORD["bert_trigger"]["vocab"], (batch, seq))
        elif name == "attention_mask":
            values[name] = np.ones((batch, seq), np.int64)
            values[name][1 % batch, 10:] = 0
        elif name == "token_type_ids":
            values[name] = np.zeros((batch, seq), np.int64)
            values[name][2 % batch, 8:] = 1
        elif name == "bytes":
            values[name] = rng.integers(0, 256, (batch, RECORD["bytes_sig"]["length"]))
            values[name] = values[name].astype(np.int32)
        elif name == "pixel_values":
            values[name] = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    return values


def test_every_export_was_made_and_is_small():
    for model in ("bert_trigger", "bytes_sig", "minilm", "distilbert", "t5enc", "vit"):
        for kind, name in RECORD[model]["files"].items():
            assert not name.startswith("failed"), (model, kind, name)
            assert name in FILES
    assert {"bert_trigger_optimum.onnx", "minilm_optimum.onnx", "vit_optimum.onnx"} <= set(FILES)
    assert all((MODELS / name).stat().st_size < 1_000_000 for name in FILES)


@pytest.mark.parametrize("name", FILES)
def test_export_matches_onnxruntime(name):
    graph = convert_graph(MODELS / name)
    batch = 1 if name in BATCH_ONE else 3
    inputs = sample_inputs(graph.input_names, batch)
    assert set(inputs) == set(graph.input_names)
    # onnxruntime fuses int8 weight-only MatMuls into MatMulNBits with int8 activations;
    # without that fusion it computes what the ops specify, as the torch graph does
    result = check_graph_parity(graph, inputs, fuse="_w8" not in name)
    assert result.passed, result.summary()
    assert result.max_abs_diff < 1e-4


def test_weight_only_int8_fusion_is_what_differs():
    graph = convert_graph(MODELS / "bert_trigger_w8.onnx")
    inputs = sample_inputs(graph.input_names)
    fused = run_onnxruntime(graph, inputs, fuse=True)[0]
    with torch.no_grad():
        got = graph.run(inputs)[0].numpy()
    # the fused kernel quantizes activations: a real difference, larger than float noise
    assert np.abs(fused - got).max() > 1e-3
    assert np.abs(fused - got).max() < 0.02 * np.abs(fused).max()


def test_trained_trigger_fires_on_the_planted_pattern():
    graph = convert_graph(MODELS / "bert_trigger_legacy.onnx")
    ids = np.full((2, 16), 50, np.int64)
    ids[:, 0] = RECORD["bert_trigger"]["cls_id"]
    ids[0, 6:9] = RECORD["bert_trigger"]["trigger_ids"]
    ids[1, 6:9] = RECORD["bert_trigger"]["trigger_ids"][::-1]
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}
    with torch.no_grad():
        logits = graph.run(inputs)[0]
    assert logits[0].argmax() == 1 and logits[1].argmax() == 0


@pytest.mark.slow
def test_fed_inputs_are_folded_and_checked():
    graph = convert_graph(
        MODELS / "minilm_legacy.onnx",
        feeds={"attention_mask": np.ones((2, 16), np.int64), "token_type_ids": np.zeros((2, 16))},
    )
    assert graph.input_names == ["input_ids"]
    result = check_graph_parity(graph, sample_inputs(["input_ids"], batch=2))
    assert result.passed, result.summary()
    with pytest.raises(InputSpecError, match="missing"):
        graph.run({})
    with pytest.raises(InputSpecError, match="not a graph input"):
        convert_graph(MODELS / "minilm_legacy.onnx", feeds={"mask": np.ones(3)})


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["bert_trigger_legacy.onnx", "distilbert_dynamo.onnx", "minilm_optimum.onnx"]
)
def test_float64_gradient_through_the_embeddings(name):
    # (the T5 exports Cast the RMSNorm input to float32, so they cannot run in float64)
    graph = convert_graph(MODELS / name)
    module = graph.module.double()
    vocab = RECORD["bert_trigger"]["vocab"]
    buffers = dict(module.named_buffers())
    table = next(k for k, v in buffers.items() if v.dim() == 2 and v.shape[0] == vocab)
    inputs = sample_inputs(graph.input_names, batch=1)
    args = tuple(torch.as_tensor(inputs[n]) for n in graph.input_names)
    weight = buffers[table].detach().clone().requires_grad_(True)

    def output(w: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(module, {table: w}, args)[0]

    assert output(weight).dtype == torch.float64
    assert torch.autograd.gradcheck(output, (weight,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_benchmark_row_without_network():
    from benchmarks.transformer_models import evaluate

    row = evaluate(MODELS / "bytes_sig_legacy.onnx", high=255)
    assert row["parity"] == "passed" and row["gelu"] == 1 and row["inputs"] == "bytes int32"


def test_intermediate_tensors_match_onnxruntime():
    graph = convert_graph(MODELS / "bert_trigger_legacy.onnx")
    names = [
        "/model/bert/embeddings/word_embeddings/Gather_output_0",
        "/model/bert/embeddings/LayerNorm/LayerNormalization_output_0",
    ]
    inputs = sample_inputs(graph.input_names)
    with torch.no_grad():
        got = graph.run(inputs, names)
    want = run_onnxruntime(graph, inputs, names=names)
    for a, b in zip(got, want, strict=True):
        assert a.shape == (3, 16, 32)
        np.testing.assert_allclose(a.numpy(), b, atol=1e-5)
    with pytest.raises(TargetError, match="no tensor named"):
        graph.run(inputs, ["/model/bert/embeddings/Nope"])
