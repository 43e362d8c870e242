"""Known-answer family (b): does the token search find a sequence scoring at least as high as
the planted pattern a model was trained to fire on?

Units (a model's logit for one planted pattern):

- ``bert_trigger`` (``models/transformers/bert_trigger_legacy.onnx``, logits:1: ``A B C``
  anywhere) and ``bytes_sig`` (``bytes_sig_legacy.onnx``, logits:1: a 3-byte signature);
- the Keras transformers exported by tf2onnx on the same tasks
  (``keras_trigger_tf2onnx.onnx``, ``keras_bytes_tf2onnx.onnx``, int32 inputs);
- BERTs trained here (``transformers``, vocab 100, width 32, 2 layers, 16 tokens) with 1 + K
  classes, class k firing on its own planted trigger of 3 tokens anywhere (hard negatives
  hold permutations and scattered parts of the triggers), one per seed;
- a byte classifier trained here (one-hot inside the graph, one transformer layer, 64 bytes)
  with 1 + K classes, class k firing on its own 3-byte signature.

Models trained here are exported with the legacy torch exporter to ``--cache`` (nothing is
committed but the results). The planted value of a unit is onnxruntime's value of its logit
on ``--planted`` held-out sequences that hold its pattern at a random place (the other
tokens random): the strict bar is their maximum, the typical bar their median. Each unit is
searched as ``analyze`` does after its steps (the lookup found zero-config, every method at
``--steps`` x 64 forward-pass equivalents, the value recomputed by onnxruntime on the uncut
file with the final ids), beside the embedding-space reference at a quarter of that.

Run (from the repository root)::

    python -m benchmarks.planted_tokens [--cache DIR] [--seeds 0 1] [--classes 3]
        [--steps 256] [--methods greedy beam relaxed] [--planted 256] [--no-train] [--merge]

(``--no-train``: only the committed models.) Each method can run on its own (``--methods beam
--merge`` keeps the rows of the methods run before it in the results file, and their
commands), so that a slow one cannot stop the others.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from benchmarks.harness import (
    MODELS,
    command,
    load_maker,
    machine_line,
    markdown_table,
    parser,
    write_results,
)
from onnx_am import import_onnx, unit
from onnx_am.tokens.run import REFERENCE_SHARE, plan_tokens, search_tokens
from onnx_am.tokens.search import embedding_search

TRANSFORMERS = MODELS / "transformers"
SEQ, VOCAB, CLS, BYTES = 16, 100, 2, 64


def patterns(count: int, low: int, high: int, seed: int) -> list[list[int]]:
    """``count`` disjoint patterns of 3 distinct ids in ``[low, high)``."""
    gen = torch.Generator().manual_seed(1000 + seed)
    picked = torch.randperm(high - low, generator=gen)[: 3 * count] + low
    return [picked[3 * k : 3 * k + 3].tolist() for k in range(count)]


def planted_batch(gen, n, found, length, low, high, first=None):
    """Random sequences, each with one pattern (label k + 1), a scrambled one (label 0) or
    none (label 0); ``first``: the id held at position 0 (a [CLS])."""
    ids = torch.randint(low, high, (n, length), generator=gen)
    if first is not None:
        ids[:, 0] = first
    labels = torch.zeros(n, dtype=torch.long)
    start = 1 if first is not None else 0
    for row in range(n):
        k = int(torch.randint(0, len(found), (1,), generator=gen))
        where = int(torch.randint(start, length - 2, (1,), generator=gen))
        kind = int(torch.randint(0, 4, (1,), generator=gen))
        pattern = torch.tensor(found[k])
        if kind < 2:
            ids[row, where : where + 3] = pattern
            labels[row] = k + 1
        elif kind == 2:  # a permutation: a hard negative
            ids[row, where : where + 3] = pattern[[2, 0, 1]]
        else:  # its ids scattered
            spots = torch.randperm(length - start, generator=gen)[:3] + start
            ids[row, spots] = pattern
            text = ids[row].tolist()
            if any(text[i : i + 3] == found[k] for i in range(length - 2)):
                labels[row] = k + 1
    return ids, labels


class ByteClasses(nn.Module):
    """Bytes -> one-hot (in the graph) -> linear -> one transformer layer -> mean -> logits."""

    def __init__(self, classes: int, width: int = 32):
        super().__init__()
        self.embed = nn.Linear(256, width)
        self.position = nn.Parameter(torch.zeros(BYTES, width))
        self.layer = nn.TransformerEncoderLayer(
            width, nhead=2, dim_feedforward=64, dropout=0.0, activation="gelu", batch_first=True
        )
        self.head = nn.Linear(width, classes)

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(data.long(), 256).float()
        return self.head(self.layer(self.embed(onehot) + self.position).mean(dim=1))


def train_bert(maker, seed: int, classes: int, cache: Path, steps: int) -> dict:
    from transformers import BertConfig, BertForSequenceClassification

    path = cache / f"bert_planted_s{seed}_k{classes}.onnx"
    found = patterns(classes, 8, VOCAB, seed)
    if not path.exists():
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=SEQ, type_vocab_size=2,
            hidden_act="gelu", attn_implementation="eager", hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, num_labels=classes + 1,
        )  # fmt: skip
        bert = BertForSequenceClassification(config)

        def batch(gen, n):
            return planted_batch(gen, n, found, SEQ, 8, VOCAB, CLS)

        info = maker.train(bert, batch, lambda m, x: m(input_ids=x).logits, steps, seed, lr=1e-3)
        ids = torch.tensor([[CLS, *range(10, 10 + SEQ - 1)]])
        torch.onnx.export(
            maker.Wrapped(bert, ["logits"]).eval(),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["logits"],
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in ("input_ids", "attention_mask",
                                                                   "token_type_ids")}
            | {"logits": {0: "batch"}},
        )  # fmt: skip
        path.with_suffix(".json").write_text(json.dumps(info))
    units = [
        {"unit": k + 1, "pattern": p, "planted": lambda n, g, p=p: _with(p, n, g, SEQ, 8, CLS)}
        for k, p in enumerate(found)
    ]
    accuracy = json.loads(path.with_suffix(".json").read_text())["test_accuracy"]
    return {"name": path.stem, "path": path, "units": units, "ids": "input_ids", "high": VOCAB,
            "accuracy": accuracy}  # fmt: skip


def train_bytes(maker, seed: int, classes: int, cache: Path, steps: int) -> dict:
    path = cache / f"bytes_planted_s{seed}_k{classes}.onnx"
    found = patterns(classes, 0, 256, seed)
    if not path.exists():
        torch.manual_seed(seed)
        model = ByteClasses(classes + 1)

        def batch(gen, n):
            return planted_batch(gen, n, found, BYTES, 0, 256)

        info = maker.train(model, batch, lambda m, x: m(x), steps, seed, lr=2e-3)
        torch.onnx.export(
            model.eval(),
            (torch.zeros(1, BYTES, dtype=torch.int32),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["bytes"],
            output_names=["logits"],
            dynamic_axes={"bytes": {0: "batch"}, "logits": {0: "batch"}},
        )
        path.with_suffix(".json").write_text(json.dumps(info))
    units = [
        {"unit": k + 1, "pattern": p, "planted": lambda n, g, p=p: _with(p, n, g, BYTES, 0, None)}
        for k, p in enumerate(found)
    ]
    accuracy = json.loads(path.with_suffix(".json").read_text())["test_accuracy"]
    return {"name": path.stem, "path": path, "units": units, "ids": "bytes", "high": 256,
            "accuracy": accuracy}  # fmt: skip


def shipped() -> list[dict]:
    """The two planted models committed in models/transformers (trained by make_tiny_...)."""
    record = json.loads((TRANSFORMERS / "tiny_transformers.json").read_text())
    trigger = record["bert_trigger"]["trigger_ids"]
    signature = record["bytes_sig"]["signature"]
    accuracy = {k: record[k]["training"]["test_accuracy"] for k in ("bert_trigger", "bytes_sig")}
    return [
        {
            "name": "bert_trigger_legacy",
            "path": TRANSFORMERS / "bert_trigger_legacy.onnx",
            "units": [{"unit": 1, "pattern": trigger,
                       "planted": lambda n, g: _with(trigger, n, g, SEQ, 8, CLS)}],
            "ids": "input_ids",
            "high": VOCAB,
            "accuracy": accuracy["bert_trigger"],
        },
        {
            "name": "bytes_sig_legacy",
            "path": TRANSFORMERS / "bytes_sig_legacy.onnx",
            "units": [{"unit": 1, "pattern": signature,
                       "planted": lambda n, g: _with(signature, n, g, BYTES, 0, None)}],
            "ids": "bytes",
            "high": 256,
            "accuracy": accuracy["bytes_sig"],
        },
        *keras_shipped(),
    ]  # fmt: skip


def keras_shipped() -> list[dict]:
    """The tf2onnx Keras transformers (models/make_keras_transformers.py), same tasks."""
    record = json.loads((TRANSFORMERS / "keras_transformers.json").read_text())
    trigger, signature = record["keras_trigger"], record["keras_bytes"]
    return [
        {
            "name": "keras_trigger_tf2onnx",
            "path": TRANSFORMERS / trigger["file"],
            "units": [{"unit": 1, "pattern": trigger["trigger_ids"],
                       "planted": lambda n, g: _with(trigger["trigger_ids"], n, g, SEQ, 8, CLS)}],
            "ids": trigger["input"],
            "high": VOCAB,
            "accuracy": trigger["test_accuracy"],
        },
        {
            "name": "keras_bytes_tf2onnx",
            "path": TRANSFORMERS / signature["file"],
            "units": [{"unit": 1, "pattern": signature["signature"],
                       "planted": lambda n, g: _with(signature["signature"], n, g, BYTES, 0,
                                                     None)}],
            "ids": signature["input"],
            "high": 256,
            "accuracy": signature["test_accuracy"],
        },
    ]  # fmt: skip


def _with(pattern, n, gen, length, low, first) -> torch.Tensor:
    """``n`` random sequences holding ``pattern`` at a random place."""
    high = VOCAB if length == SEQ else 256
    ids = torch.randint(low, high, (n, length), generator=gen)
    start = 0
    if first is not None:
        ids[:, 0], start = first, 1
    for row in range(n):
        where = int(torch.randint(start, length - 2, (1,), generator=gen))
        ids[row, where : where + 3] = torch.tensor(pattern)
    return ids


def planted_values(model: dict, entry: dict, count: int) -> list[float]:
    """onnxruntime's logit of the unit on ``count`` sequences holding its pattern."""
    session = ort.InferenceSession(str(model["path"]), providers=["CPUExecutionProvider"])
    ids = entry["planted"](count, torch.Generator().manual_seed(99))
    feeds = {}
    for value in session.get_inputs():
        dtype = np.int32 if "int32" in value.type else np.int64
        if value.name == model["ids"]:
            feeds[value.name] = ids.numpy().astype(dtype)
        elif "mask" in value.name:
            feeds[value.name] = np.ones(ids.shape, dtype)
        else:
            feeds[value.name] = np.zeros(ids.shape, dtype)
    logits = session.run(None, feeds)[0]
    return [float(v) for v in logits[:, entry["unit"]]]


#: A model trained here whose held-out accuracy is below this did not learn its patterns: it
#: is listed, not searched (its "planted value" would not be what it fires on).
MIN_ACCURACY = 0.8


def run(models: list[dict], steps: int, methods: list[str], planted: int, done=None) -> dict:
    rows, skipped = [], []
    data = {"rows": rows, "skipped": skipped, "steps": steps, "cost": steps * 64,
            "planted_samples": planted}  # fmt: skip
    for model in models:
        if (model.get("accuracy") or 1.0) < MIN_ACCURACY:
            skipped.append({"model": model["name"], "training_accuracy": model["accuracy"]})
            continue
        imported = import_onnx(model["path"], at="auto")
        tokens = tuple(m for m in methods if m != "embedding")
        plan = plan_tokens(imported, methods=tokens or ("greedy",), steps=steps)
        for entry in model["units"]:
            values = planted_values(model, entry, planted)
            if "embedding" in methods:
                rows.append(_embedding_row(imported, plan, model, entry, values))
            if not tokens:
                continue
            tic = time.perf_counter()
            results = search_tokens(imported, plan, [unit("logits", entry["unit"])])
            seconds = time.perf_counter() - tic
            for result in results:
                rows.append(
                    {
                        "model": model["name"],
                        "training_accuracy": model.get("accuracy"),
                        "unit": entry["unit"],
                        "pattern": entry["pattern"],
                        "method": result.method,
                        "ids": list(result.ids),
                        "value": result.value,
                        "agrees": result.agrees,
                        "embedding_value": result.embedding_value,
                        "cost": result.cost,
                        "planted_max": max(values),
                        "planted_median": statistics.median(values),
                        "planted_min": min(values),
                        "holds_pattern": _holds(result.ids, entry["pattern"]),
                        "seconds_all_methods": seconds,
                    }
                )
        print(model["name"], "done", flush=True)
        if done is not None:
            done(data)  # the results so far, written after every model
    return data


def _embedding_row(imported, plan, model: dict, entry: dict, values: list[float]) -> dict:
    """The embedding-space search at the token searches' full cost (torch's value: it is a
    tensor, not ids onnxruntime could be fed)."""
    target = unit("logits", entry["unit"])
    extractor = imported.extractor([target.tensor])

    def score(x: torch.Tensor) -> torch.Tensor:
        return target.value(imported.batch.call(extractor, x)[0])

    tic = time.perf_counter()
    found = embedding_search(score, plan.space, plan.budget, seed=plan.seed)
    return {
        "model": model["name"],
        "training_accuracy": model.get("accuracy"),
        "unit": entry["unit"],
        "pattern": entry["pattern"],
        "method": "embedding",
        "ids": None,
        "value": found.value,
        "agrees": None,
        "embedding_value": found.value,
        "cost": found.cost,
        "planted_max": max(values),
        "planted_median": statistics.median(values),
        "planted_min": min(values),
        "holds_pattern": None,
        "seconds_all_methods": time.perf_counter() - tic,
    }


def _holds(ids, pattern) -> bool:
    ids = list(ids)
    return any(ids[i : i + 3] == list(pattern) for i in range(len(ids) - 2))


def table(data: dict) -> str:
    rows = data["rows"]
    lines = []
    for method in dict.fromkeys(r["method"] for r in rows):
        chosen = [r for r in rows if r["method"] == method]
        name = "embedding at full cost (reference, not tokens)" if method == "embedding" else method
        strict = [r["value"] >= r["planted_max"] for r in chosen]
        typical = [r["value"] >= r["planted_median"] for r in chosen]
        tokens = method != "embedding"
        lines.append(
            [
                name,
                f"{sum(strict)}/{len(strict)} ({100 * sum(strict) / len(strict):.0f} %)",
                f"{sum(typical)}/{len(typical)} ({100 * sum(typical) / len(typical):.0f} %)",
                f"{sum(r['holds_pattern'] for r in chosen)}/{len(chosen)}" if tokens else "-",
                f"{sum(r['agrees'] for r in chosen)}/{len(chosen)}" if tokens else "-",
                f"{statistics.median(r['value'] - r['planted_max'] for r in chosen):+.3f}",
                f"{statistics.mean(r['cost'] for r in chosen):.0f}",
                f"{statistics.mean(r['seconds_all_methods'] for r in chosen):.1f}",
            ]
        )
    first = next(r["method"] for r in rows if r["method"] != "embedding")
    embedding = [r for r in rows if r["method"] == first]
    lines.append(
        [
            "embedding at a quarter of the cost (analyze's reference)",
            f"{sum(r['embedding_value'] >= r['planted_max'] for r in embedding)}/{len(embedding)}",
            f"{sum(r['embedding_value'] >= r['planted_median'] for r in embedding)}/"
            f"{len(embedding)}",
            "-",
            "-",
            f"{statistics.median(r['embedding_value'] - r['planted_max'] for r in embedding):+.3f}",
            f"{data['cost'] // REFERENCE_SHARE}",
            "-",
        ]
    )
    header = [
        "method",
        ">= every planted input (max)",
        ">= median planted input",
        "ids hold the pattern",
        "onnxruntime agrees",
        "median value - planted max",
        "cost / unit",
        "s / unit (token methods: with the reference)",
    ]
    units = "\n".join(
        f"- {r['model']} (trained to {r.get('training_accuracy')} held-out accuracy) "
        f"logits:{r['unit']} (pattern {r['pattern']}): {r['method']} "
        f"{r['value']:.3f} vs planted max {r['planted_max']:.3f} / median "
        f"{r['planted_median']:.3f}"
        + (f"; reference {r['embedding_value']:.3f}; ids {r['ids']}" if r["ids"] else "")
        for r in rows
    )
    return markdown_table(header, lines) + "\n\nPer unit:\n\n" + units


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__)
    args.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "planted")
    args.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args.add_argument("--classes", type=int, default=3, help="planted patterns per model")
    args.add_argument("--train-steps", type=int, default=2000)
    args.add_argument("--steps", type=int, default=256, help="analyze's --steps (cost / 64)")
    args.add_argument("--methods", nargs="+", default=["greedy", "beam", "relaxed"])
    args.add_argument("--planted", type=int, default=256, help="planted inputs per unit")
    args.add_argument("--no-train", action="store_true", help="only the committed models")
    args.add_argument(
        "--merge",
        action="store_true",
        help="keep the other methods' rows of the results file (one run per method)",
    )
    options = args.parse_args(argv)
    torch.set_num_threads(options.threads)
    options.cache.mkdir(parents=True, exist_ok=True)
    maker = load_maker("make_tiny_transformers")
    models = shipped()
    if not options.no_train:
        models += [train_bert(maker, seed, options.classes, options.cache, options.train_steps)
                   for seed in options.seeds]  # fmt: skip
        models.append(
            train_bytes(
                maker, options.seeds[0], options.classes, options.cache, options.train_steps
            )
        )
    tic = time.perf_counter()
    kept = _kept_rows(options.out, options.methods) if options.merge else {"rows": []}

    def write(data: dict, final: bool = False) -> None:
        data = data | {
            "search_seconds": time.perf_counter() - tic,
            "complete": final,
            "rows": [*kept["rows"], *data["rows"]],
            "earlier_commands": kept.get("commands", []),
        }
        text = render(options, data)
        write_results(options.out, "planted_tokens", text, data)
        if final:
            print(text)

    write(run(models, options.steps, options.methods, options.planted, write), final=True)


def _kept_rows(out: Path, methods: list[str]) -> dict:
    """The rows of the other methods and the commands in ``<out>/planted_tokens.json``."""
    path = out / "planted_tokens.json"
    if not path.exists():
        return {"rows": []}
    earlier = json.loads(path.read_text())
    rows = [r for r in earlier["rows"] if r["method"] not in methods]
    commands = [*earlier.get("earlier_commands", []), earlier.get("command")]
    return {"rows": rows, "commands": [c for c in commands if c and rows]}


def render(options, data: dict) -> str:
    skipped = "".join(
        f"\n\nNot searched: {s['model']} (held-out accuracy {s['training_accuracy']} after "
        f"training, below {MIN_ACCURACY}: it did not learn its patterns)."
        for s in data["skipped"]
    )
    partial = "" if data["complete"] else "\n\n(Partial: the run has not finished.)"
    data["command"] = command(
        "planted_tokens",
        "--seeds " + " ".join(map(str, options.seeds)),
        f"--classes {options.classes}",
        f"--train-steps {options.train_steps}",
        f"--steps {options.steps}",
        "--methods " + " ".join(options.methods),
        f"--planted {options.planted}",
        *(["--merge"] if options.merge else []),
        "--no-train" * options.no_train,
    )
    return "\n\n".join(
        [
            "# Planted patterns (known-answer family b): token search vs the planted inputs",
            "\n\n".join([*data["earlier_commands"], data["command"]]),
            machine_line(),
            f"Every method at {options.steps * 64} forward-pass equivalents per unit "
            f"(analyze's --steps {options.steps}); the token searches' values by onnxruntime on "
            "the final ids, the embedding searches' by torch (a tensor, not ids).",
            table(data) + skipped + partial,
        ]
    )


if __name__ == "__main__":
    main()
