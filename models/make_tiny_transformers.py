"""Build tiny transformers with ``transformers`` (from configs, no download) and export them.

Models (all random-init unless trained; seeds fixed; 1 torch thread):

* ``bert_trigger``: ``BertForSequenceClassification`` (vocab 100, width 32, 2 layers, 2 heads),
  trained to fire (class 1) when the tokens ``A B C`` = ids ``5 6 7`` appear consecutively
  anywhere in a 16-token sequence that starts with ``[CLS]`` = 2. Inputs ``input_ids``,
  ``attention_mask``, ``token_type_ids`` (int64 ``[batch, 16]``), output ``logits``.
* ``bytes_sig``: a byte classifier over raw bytes (int32 ``[batch, 64]``); the one-hot over
  256 values is built inside the graph, then a linear embedding, one
  ``nn.TransformerEncoderLayer`` (GELU) and a mean pool. Trained to fire when the signature
  ``4D 5A 90`` appears anywhere.
* ``minilm``: ``BertModel`` (MiniLM-style sentence encoder, with pooler), random.
* ``distilbert``: ``DistilBertForSequenceClassification``, random.
* ``t5enc``: ``T5EncoderModel`` (relative position buckets: Log, Min, Where), random.
* ``vit``: ``ViTForImageClassification`` on ``[batch, 3, 32, 32]`` images, random.

Each is exported with ``torch.onnx.export(dynamo=False)`` (``*_legacy.onnx``, opset 17) and
``dynamo=True`` (``*_dynamo.onnx``, opset 18), and with ``optimum-onnx`` (``*_optimum.onnx``)
for the architectures it supports. Quantized variants of the BERT legacy export:
``bert_trigger_qdyn.onnx`` (``onnxruntime.quantization.quantize_dynamic``: DynamicQuantizeLinear
+ MatMulInteger) and ``bert_trigger_w8.onnx`` (int8 weight-only: every MatMul weight and the
word-embedding matrix as int8 + ``DequantizeLinear``; the position embeddings stored float16
behind a ``Cast``); and ``t5enc_qdyn.onnx``. Everything is described in
``tiny_transformers.json``.

Needs the ``models`` extra (``transformers``, ``optimum-onnx``); never used by tests::

    python models/make_tiny_transformers.py
"""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

HERE = Path(__file__).resolve().parent / "transformers"
SEQ = 16
BYTES = 64
TRIGGER = [5, 6, 7]
SIGNATURE = [0x4D, 0x5A, 0x90]
CLS = 2
VOCAB = 100


def trigger_batch(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sequences, half with ``A B C`` planted; hard negatives hold parts of it."""
    ids = torch.randint(8, VOCAB, (n, SEQ), generator=gen)
    ids[:, 0] = CLS
    labels = torch.zeros(n, dtype=torch.long)
    for row in range(n):
        where = int(torch.randint(1, SEQ - 2, (1,), generator=gen))
        kind = int(torch.randint(0, 4, (1,), generator=gen))
        if kind < 2:
            ids[row, where : where + 3] = torch.tensor(TRIGGER)
            labels[row] = 1
        elif kind == 2:  # a permutation or a part of the trigger
            perm = torch.randperm(3, generator=gen)
            if perm.tolist() == [0, 1, 2]:
                perm = torch.tensor([2, 1, 0])
            ids[row, where : where + 3] = torch.tensor(TRIGGER)[perm]
        else:  # trigger tokens scattered, not adjacent in order
            spots = torch.randperm(SEQ - 1, generator=gen)[:3] + 1
            ids[row, spots] = torch.tensor(TRIGGER)
            text = ids[row].tolist()
            labels[row] = int(any(text[i : i + 3] == TRIGGER for i in range(SEQ - 2)))
    return ids, labels


def signature_batch(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random bytes, half with the signature planted anywhere."""
    data = torch.randint(0, 256, (n, BYTES), generator=gen, dtype=torch.int32)
    labels = torch.zeros(n, dtype=torch.long)
    for row in range(n):
        where = int(torch.randint(0, BYTES - 2, (1,), generator=gen))
        kind = int(torch.randint(0, 3, (1,), generator=gen))
        if kind < 2:
            data[row, where : where + 3] = torch.tensor(SIGNATURE, dtype=torch.int32)
            labels[row] = 1 if kind == 0 else 0
            if kind == 1:  # two of three bytes: a hard negative
                data[row, where + int(torch.randint(0, 3, (1,), generator=gen))] ^= 0x11
    return data, labels


class ByteClassifier(nn.Module):
    """Bytes -> one-hot (in the graph) -> linear -> one transformer layer -> mean -> 2 logits."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.embed = nn.Linear(256, width)
        self.position = nn.Parameter(torch.zeros(BYTES, width))
        self.layer = nn.TransformerEncoderLayer(
            width, nhead=2, dim_feedforward=64, dropout=0.0, activation="gelu", batch_first=True
        )
        self.head = nn.Linear(width, 2)

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(data.long(), 256).float()
        hidden = self.layer(self.embed(onehot) + self.position)
        return self.head(hidden.mean(dim=1))


def train(
    model: nn.Module,
    batch: Callable[[torch.Generator, int], tuple[torch.Tensor, torch.Tensor]],
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    steps: int,
    seed: int,
    lr: float = 3e-3,
) -> dict:
    """Adam on fresh synthetic batches; returns held-out accuracy."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        x, y = batch(gen, 64)
        loss = nn.functional.cross_entropy(forward(model, x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = batch(torch.Generator().manual_seed(seed + 1000), 1024)
    with torch.no_grad():
        logits = forward(model, x)
    accuracy = float((logits.argmax(-1) == y).float().mean())
    return {"steps": steps, "test_accuracy": round(accuracy, 4), "final_loss": float(loss)}


def planted_values(logits: torch.Tensor) -> dict:
    """Class-1 logit statistics on sequences that hold the planted pattern."""
    values = logits[:, 1]
    return {
        "class1_logit_min": round(float(values.min()), 4),
        "class1_logit_mean": round(float(values.mean()), 4),
        "class1_logit_max": round(float(values.max()), 4),
    }


class Wrapped(nn.Module):
    """Returns one named tensor of a ``transformers`` model's output (for torch.onnx)."""

    def __init__(self, model: nn.Module, fields: list[str]):
        super().__init__()
        self.model = model
        self.fields = fields

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        names = list(inspect.signature(self.model.forward).parameters)[: len(args)]
        out = self.model(**dict(zip(names, args, strict=True)), return_dict=True)
        return tuple(out[f] for f in self.fields)


def export_both(
    name: str, model: nn.Module, args: tuple, inputs: list[str], outputs: list[str]
) -> dict[str, str]:
    """Legacy (opset 17) and dynamo (opset 18) exports; a failure is recorded, not raised."""
    done = {}
    dynamic = {n: {0: "batch"} for n in inputs + outputs}
    batch = torch.export.Dim("batch", min=1, max=64)
    shapes = tuple({0: batch} for _ in inputs)
    model.eval()
    for kind in ("legacy", "dynamo"):
        path = HERE / f"{name}_{kind}.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if kind == "legacy":
                    torch.onnx.export(
                        model, args, path, input_names=inputs, output_names=outputs,
                        dynamic_axes=dynamic, opset_version=17, dynamo=False,
                    )  # fmt: skip
                else:
                    program = torch.onnx.export(
                        model, args, input_names=inputs, output_names=outputs,
                        dynamic_shapes=(shapes,) if isinstance(model, Wrapped) else shapes,
                        opset_version=18, dynamo=True, external_data=False,
                    )  # fmt: skip
                    program.optimize()
                    program.save(path, external_data=False)
            onnx.checker.check_model(onnx.load(path))
            done[kind] = path.name
        except Exception as exc:  # record why, keep going
            done[kind] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return done


def export_optimum(name: str, model: nn.Module, task: str) -> str:
    """``optimum.exporters.onnx.main_export`` from a saved local copy (no hub access)."""
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as exc:
        return f"failed: {exc}"
    folder = Path(tempfile.mkdtemp())
    try:
        model.save_pretrained(folder / "model")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main_export(
                str(folder / "model"), output=folder / "onnx", task=task, opset=17,
                no_post_process=True, do_validation=False, device="cpu",
            )  # fmt: skip
        shutil.copy(folder / "onnx" / "model.onnx", HERE / f"{name}_optimum.onnx")
        return f"{name}_optimum.onnx"
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def weight_only_int8(source: Path, target: Path) -> None:
    """MatMul weights and the word embeddings as int8 + DequantizeLinear (per tensor); the
    position embeddings as float16 behind a Cast."""
    model = onnx.load(source)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    new_nodes = []
    for name, tensor in list(inits.items()):
        uses = consumers.get(name, [])
        if not uses:
            continue
        value = numpy_helper.to_array(tensor)
        ops = {node.op_type for node, _ in uses}
        if ops == {"MatMul"} and value.ndim == 2 or "word_embeddings" in name:
            scale = np.float32(np.abs(value).max() / 127 or 1.0)
            q = np.clip(np.round(value / scale), -127, 127).astype(np.int8)
            graph.initializer.remove(tensor)
            graph.initializer.extend(
                [
                    numpy_helper.from_array(q, name + "_q"),
                    numpy_helper.from_array(np.array(scale), name + "_scale"),
                    numpy_helper.from_array(np.array(0, np.int8), name + "_zero"),
                ]
            )
            new_nodes.append(
                onnx.helper.make_node(
                    "DequantizeLinear", [name + "_q", name + "_scale", name + "_zero"], [name]
                )
            )
        elif "position_embeddings" in name:
            graph.initializer.remove(tensor)
            graph.initializer.append(numpy_helper.from_array(value.astype(np.float16), name + "_h"))
            new_nodes.append(
                onnx.helper.make_node("Cast", [name + "_h"], [name], to=onnx.TensorProto.FLOAT)
            )
    nodes = new_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, target)


def quantize(source: Path, target: Path) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, weight_type=QuantType.QInt8)
    return target.name


def main() -> None:
    torch.set_num_threads(1)
    HERE.mkdir(exist_ok=True)
    import transformers
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        T5Config,
        T5EncoderModel,
        ViTConfig,
        ViTForImageClassification,
    )

    record: dict = {"transformers": transformers.__version__, "torch": torch.__version__}
    bert_cfg = dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=SEQ, type_vocab_size=2,
        hidden_act="gelu", attn_implementation="eager", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    text_inputs = ["input_ids", "attention_mask", "token_type_ids"]
    ids = torch.tensor([[CLS, *range(10, 10 + SEQ - 1)]])
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)

    # bert_trigger: trained on the planted A B C
    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig(**bert_cfg, num_labels=2))
    info = train(bert, trigger_batch, lambda m, x: m(input_ids=x).logits, 2000, seed=0, lr=1e-3)
    x, y = trigger_batch(torch.Generator().manual_seed(7), 512)
    with torch.no_grad():
        info["planted"] = planted_values(bert(input_ids=x[y == 1]).logits)
        info["unplanted"] = planted_values(bert(input_ids=x[y == 0]).logits)
    files = export_both(
        "bert_trigger", Wrapped(bert, ["logits"]), (ids, mask, types), text_inputs, ["logits"]
    )
    files["optimum"] = export_optimum("bert_trigger", bert, "text-classification")
    legacy = HERE / "bert_trigger_legacy.onnx"
    files["qdyn"] = quantize(legacy, HERE / "bert_trigger_qdyn.onnx")
    weight_only_int8(legacy, HERE / "bert_trigger_w8.onnx")
    files["w8"] = "bert_trigger_w8.onnx"
    record["bert_trigger"] = {
        "config": bert_cfg, "inputs": text_inputs, "seq": SEQ, "vocab": VOCAB,
        "cls_id": CLS, "trigger_ids": TRIGGER, "target": "logits:1", "seed": 0,
        "training": info, "files": files,
    }  # fmt: skip

    # bytes_sig: one-hot inside the graph
    torch.manual_seed(1)
    byte_model = ByteClassifier()
    info = train(byte_model, signature_batch, lambda m, x: m(x), 2000, seed=1, lr=2e-3)
    x, y = signature_batch(torch.Generator().manual_seed(8), 512)
    planted = x[(y == 1)]
    with torch.no_grad():
        info["planted"] = planted_values(byte_model(planted))
    files = export_both(
        "bytes_sig", byte_model, (torch.zeros(1, BYTES, dtype=torch.int32),), ["bytes"],
        ["logits"],
    )  # fmt: skip
    record["bytes_sig"] = {
        "inputs": ["bytes"], "length": BYTES, "dtype": "int32", "signature": SIGNATURE,
        "target": "logits:1", "seed": 1, "training": info, "files": files,
        "notes": "the dynamo export declares a fixed batch of 1 (torch.export specialized it)",
    }  # fmt: skip

    # random encoders
    torch.manual_seed(2)
    minilm = BertModel(BertConfig(**bert_cfg)).eval()
    files = export_both(
        "minilm", Wrapped(minilm, ["last_hidden_state", "pooler_output"]), (ids, mask, types),
        text_inputs, ["last_hidden_state", "pooler_output"],
    )  # fmt: skip
    files["optimum"] = export_optimum("minilm", minilm, "feature-extraction")
    record["minilm"] = {"config": bert_cfg, "inputs": text_inputs, "seed": 2, "files": files}

    torch.manual_seed(3)
    distil_cfg = dict(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
        max_position_embeddings=SEQ, attn_implementation="eager",
    )  # fmt: skip
    distil = DistilBertForSequenceClassification(DistilBertConfig(**distil_cfg)).eval()
    files = export_both(
        "distilbert", Wrapped(distil, ["logits"]), (ids, mask), text_inputs[:2], ["logits"]
    )
    files["optimum"] = export_optimum("distilbert", distil, "text-classification")
    record["distilbert"] = {
        "config": distil_cfg,
        "inputs": text_inputs[:2],
        "seed": 3,
        "files": files,
    }

    torch.manual_seed(4)
    t5_cfg = dict(
        vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu", attn_implementation="eager",
    )  # fmt: skip
    t5 = T5EncoderModel(T5Config(**t5_cfg)).eval()
    files = export_both(
        "t5enc", Wrapped(t5, ["last_hidden_state"]), (ids, mask), text_inputs[:2],
        ["last_hidden_state"],
    )  # fmt: skip
    files["qdyn"] = quantize(HERE / "t5enc_legacy.onnx", HERE / "t5enc_qdyn.onnx")
    record["t5enc"] = {"config": t5_cfg, "inputs": text_inputs[:2], "seed": 4, "files": files}

    torch.manual_seed(5)
    vit_cfg = dict(
        image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=10, attn_implementation="eager",
    )  # fmt: skip
    vit = ViTForImageClassification(ViTConfig(**vit_cfg)).eval()
    pixels = torch.zeros(1, 3, 32, 32)
    files = export_both("vit", Wrapped(vit, ["logits"]), (pixels,), ["pixel_values"], ["logits"])
    files["optimum"] = export_optimum("vit", vit, "image-classification")
    record["vit"] = {"config": vit_cfg, "inputs": ["pixel_values"], "seed": 5, "files": files}

    for path in sorted(HERE.glob("*.onnx")):
        record.setdefault("sizes_bytes", {})[path.name] = path.stat().st_size
    (HERE / "tiny_transformers.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
