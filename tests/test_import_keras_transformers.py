"""The committed tf2onnx exports of tiny Keras transformers (models/make_keras_transformers.py).

Both convert with parity (int32 inputs, Keras ``MultiHeadAttention`` as tf2onnx writes it,
``LayerNormalization`` decomposed into ReduceMean / Sqrt / Reciprocal), fire on their
planted pattern, and a short zero-config token audit through the CLI ends with token ids
whose values onnxruntime recomputes on the unmodified file and that agree with torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx_am_cli.main import cli

from onnx_am.importer.graph import convert_graph
from onnx_am.reference.graph_parity import check_graph_parity

MODELS = Path(__file__).resolve().parents[1] / "models" / "transformers"
RECORD = json.loads((MODELS / "keras_transformers.json").read_text())
TRIGGER, BYTES = RECORD["keras_trigger"], RECORD["keras_bytes"]


def _ids(record: dict, rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if "vocab" in record:
        ids = rng.integers(8, record["vocab"], (rows, record["seq"]))
        ids[:, 0] = record["cls_id"]
    else:
        ids = rng.integers(0, 256, (rows, record["length"]))
    return ids.astype(np.int32)


@pytest.mark.parametrize("record", [TRIGGER, BYTES], ids=["trigger", "bytes"])
def test_keras_export_matches_onnxruntime(record):
    path = MODELS / record["file"]
    assert path.stat().st_size < 1_000_000
    graph = convert_graph(path)
    assert graph.input_names == [record["input"]]
    assert graph.original.producer_name == "tf2onnx"
    result = check_graph_parity(graph, {record["input"]: _ids(record, 3)})
    assert result.passed, result.summary()
    assert result.max_abs_diff < 1e-4


@pytest.mark.parametrize(
    ("record", "pattern"),
    [(TRIGGER, TRIGGER.get("trigger_ids")), (BYTES, BYTES.get("signature"))],
    ids=["trigger", "bytes"],
)
def test_keras_export_fires_on_its_planted_pattern(record, pattern):
    graph = convert_graph(MODELS / record["file"])
    ids = _ids(record, 2, seed=1)
    ids[0, 5:8] = pattern
    ids[1, 5:8] = pattern[::-1]  # the reversed pattern is a trained negative
    with torch.no_grad():
        logits = graph.run({record["input"]: ids})[0]
    assert logits[0].argmax() == 1 and logits[1].argmax() == 0


@pytest.mark.slow
def test_cli_token_audit_of_the_keras_trigger(tmp_path):
    path = MODELS / TRIGGER["file"]
    out = tmp_path / "r"
    args = ["analyze", str(path), "--steps", "8", "--restarts", "1", "--method", "standard",
            "--target", "logits:1", "--fix", "0=2", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "search starts at tensor" in result.output  # stderr, mixed in
    doc = json.loads((out / "report.json").read_text())
    assert doc["parity"]["passed"] and doc["cut"]["lookup"]["ids_input"] == "input_ids"
    tokens = doc["tokens"]["results"]
    assert tokens and {t["target"] for t in tokens} == {"logits:1"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for entry in tokens:
        ids = np.array([entry["ids"]], np.int32)
        assert ids.shape == (1, TRIGGER["seq"]) and ids[0, 0] == TRIGGER["cls_id"]
        assert ids.min() >= 0 and ids.max() < TRIGGER["vocab"]
        logits = session.run(None, {"input_ids": ids})[0]
        assert entry["value"] == pytest.approx(float(logits[0, 1]), rel=1e-5, abs=1e-5)
        assert entry["agrees"]
        assert entry["embedding_value"] >= entry["value"] - 1e-4
