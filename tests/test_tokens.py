"""Searches over token ids: exact maxima of the known-answer family, --fix, vocabularies,
and the end-to-end command whose values onnxruntime recomputes on the final ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx_am_cli.main import cli

from onnx_am import SettingsError, import_onnx, unit
from onnx_am.tokens.run import DEFAULT_TOKEN_METHODS, plan_tokens, search_tokens
from onnx_am.tokens.search import SEARCHES
from onnx_am.tokens.space import TokenSpace, parse_fixed
from onnx_am.vocab import load_vocabulary

MODELS = Path(__file__).resolve().parent.parent / "models"
FAMILY = {r["name"]: r for r in json.loads((MODELS / "token_family.json").read_text())}


def scorer(imported, target):
    extractor = imported.extractor([target.tensor])
    return lambda x: target.value(imported.batch.call(extractor, x)[0])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unary_sum_v16", "pair_sum_v16"])
def test_default_search_reaches_the_exact_maximum(name):
    record = FAMILY[name]
    imported = import_onnx(MODELS / record["file"], at="auto")
    space = TokenSpace(torch.from_numpy(imported.cut.lookup.matrix.copy()), record["length"])
    search = SEARCHES[DEFAULT_TOKEN_METHODS[0]]
    for entry in record["units"]:
        found = search(scorer(imported, unit("logits", entry["unit"])), space, 2048, 0)
        exact = entry["exact"]
        assert found.value >= exact - 0.01 * abs(exact), (entry, found)
        assert found.value <= exact + 1e-4 * max(1.0, abs(exact))  # nothing beats the exact


@pytest.mark.slow
def test_fixed_positions_are_held():
    record = FAMILY["pair_sum_v16"]
    imported = import_onnx(MODELS / record["file"], at="auto")
    matrix = torch.from_numpy(imported.cut.lookup.matrix.copy())
    space = TokenSpace(matrix, 6, parse_fixed(("0=3", "-1=9"), 6, 16))
    for method, search in SEARCHES.items():
        found = search(scorer(imported, unit("logits", 0)), space, 256, 1)
        assert found.ids[0] == 3 and found.ids[5] == 9, method


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (("6=1",), "position 6 is outside the sequence of length 6"),
        (("0=16",), "id 16 is outside the vocabulary of 16 tokens"),
        (("zero=1",), "write POSITION=ID"),
    ],
)
def test_bad_fix_is_one_line(items, message):
    with pytest.raises(SettingsError, match=message) as caught:
        parse_fixed(items, 6, 16)
    assert "\n" not in str(caught.value)


def test_vocabularies(tmp_path):
    lines = tmp_path / "vocab.txt"
    lines.write_text("".join(f"tok{i}\n" for i in range(16)))
    assert load_vocabulary(lines, 16).pieces([0, 15]) == ["tok0", "tok15"]
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({f"w{i}": i for i in range(16)}))
    assert load_vocabulary(mapping, 16).text([1, 2]) == "w1 w2"
    with pytest.raises(SettingsError, match="has 16 tokens but the embedding has 32 rows"):
        load_vocabulary(lines, 32)
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{not json")
    with pytest.raises(SettingsError, match="does not parse|needs the tokenizers library"):
        load_vocabulary(broken, 16)


def test_tokenizer_json(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, 16)}}
    model = tokenizers.models.WordLevel(vocab, unk_token="[UNK]")
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    loaded = load_vocabulary(path, 16)
    assert loaded.pieces([3, 4]) == ["w3", "w4"] and loaded.text([3, 4]) == "w3 w4"


@pytest.mark.slow
def test_byte_model_shows_bytes():
    record = FAMILY["byte_pair_sum"]
    imported = import_onnx(MODELS / record["file"], at="auto")
    assert imported.cut.lookup.kind == "onehot"
    plan = plan_tokens(imported, steps=4)
    assert plan.vocabulary is not None and plan.vocabulary.source == "bytes"
    (result,) = search_tokens(imported, plan, [unit("logits", 0)])
    assert result.pieces == [repr(bytes([i]))[2:-1] for i in result.ids]
    assert result.text == repr(bytes(result.ids))
    assert result.agrees


def test_token_options_need_a_lookup():
    imported = import_onnx(MODELS / "exact_family" / "dead2_d4_leaky001.onnx")
    assert plan_tokens(imported) is None
    with pytest.raises(SettingsError, match="need a search over tokens"):
        plan_tokens(imported, fix=("0=1",))


@pytest.mark.slow
def test_cli_token_model_end_to_end(tmp_path):
    record = FAMILY["pair_sum_v16"]
    path = MODELS / record["file"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(f"t{i}\n" for i in range(16)))
    out = tmp_path / "r"
    args = ["analyze", str(path), "--steps", "16", "--out", str(out), "--vocab", str(vocab)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "search starts at tensor 'embeddings'" in result.output  # stderr, mixed in
    doc = json.loads((out / "report.json").read_text())
    assert doc["cut"]["lookup"]["ids_input"] == "input_ids"
    tokens = doc["tokens"]["results"]
    assert {t["target"] for t in tokens} == {f"logits:{u}" for u in range(4)}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for entry in tokens:
        ids = np.array([entry["ids"]], np.int64)
        assert ids.shape == (1, record["length"]) and ids.min() >= 0 and ids.max() < 16
        logits = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        unit_index = int(entry["target"].split(":")[1])
        assert entry["value"] == pytest.approx(float(logits[0, unit_index]), rel=1e-6, abs=1e-6)
        assert entry["agrees"] and entry["tokens"] == [f"t{i}" for i in entry["ids"]]
        exact = record["units"][unit_index]["exact"]
        assert entry["value"] <= exact + 1e-4 * max(1.0, abs(exact))
        assert entry["embedding_value"] >= entry["value"] - 1e-4
    assert "Token sequences" in (out / "index.html").read_text()


def test_cli_vocab_size_mismatch_is_one_line(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\n")
    path = MODELS / FAMILY["pair_sum_v16"]["file"]
    result = CliRunner().invoke(
        cli, ["analyze", str(path), "--vocab", str(vocab), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "has 2 tokens but the embedding has 16 rows" in lines[0]


def test_cli_fix_outside_the_sequence_is_one_line(tmp_path):
    path = MODELS / FAMILY["pair_sum_v16"]["file"]
    result = CliRunner().invoke(
        cli, ["analyze", str(path), "--fix", "6=1", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "outside the sequence of length 6" in lines[0]


class TorchTokenNet(torch.nn.Module):
    """nn.Embedding -> Linear -> ReLU -> mean over positions -> Linear, as torch exports it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = torch.nn.Embedding(40, 8)
        self.hidden = torch.nn.Linear(8, 16)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.embedding(input_ids))).mean(1))


def test_torch_exported_embedding_model(tmp_path):
    path = tmp_path / "torch_tokens.onnx"
    torch.onnx.export(
        TorchTokenNet().eval(),
        (torch.zeros(1, 7, dtype=torch.long),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input_ids"],
        output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
    )
    imported = import_onnx(path, at="auto", seq_len=5)
    assert imported.cut.lookup.vocab_size == 40 and imported.input.sample_shape == (5, 8)
    plan = plan_tokens(imported, steps=4, fix=("0=2",))
    results = search_tokens(imported, plan, [unit("logits", 0), unit("logits", 2)])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for result in results:
        assert len(result.ids) == 5 and result.ids[0] == 2
        logits = session.run(None, {"input_ids": np.array([result.ids], np.int64)})[0]
        index = int(result.target.split(":")[1])
        assert result.value == pytest.approx(float(logits[0, index]), rel=1e-6, abs=1e-6)
        assert result.agrees
