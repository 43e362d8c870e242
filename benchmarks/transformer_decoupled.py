"""Does the decoupled gradient help on transformers? standard vs decoupled, embeddings and tokens.

Every class logit of the tiny transformers (``models/transformers``: ``bert_trigger_legacy``
and ``bytes_sig_legacy`` with erf GELU, ``keras_trigger_tf2onnx`` with an erf GELU,
``keras_bytes_tf2onnx`` with a ReLU feed-forward) and of the planted BERTs / byte classifier
that ``benchmarks.planted_tokens`` trains (read from ``--cache``; trained there when missing
unless ``--no-train``) is maximized from the embedding lookup that ``analyze`` finds
zero-config, with the standard gradient and with decoupled ones: the default rectifier rules
(the ReLU) plus the opt-in ``gelu`` / ``gelu_subgraph`` rules (the GELUs, written as Erf
subgraphs by these exporters), fixed slopes and annealed (``decoupled(anneal(b))``: from
``b`` to each node's true derivative over the run).

- Embedding space: ``maximize`` with analyze's settings (its box per dimension of the
  embedding matrix, its learning rate and step rule), every method with the same steps x
  rows; the value is the original graph's at the best row (cross-checked by onnxruntime with
  the tensor made an input).
- Token space: the default greedy swap search at ``--steps`` x 64 forward-pass equivalents,
  its swaps ranked by the standard gradient or by the decoupled module's
  (:func:`onnx_am.tokens.ranking.decoupled_ranking`); the value is onnxruntime's on the
  uncut file with the final ids.

Per (space, activation, method): the mean value, the mean gain over standard, and on how many
unit-seeds the method beats / loses to standard by more than 1 % of |standard|.

Run (from the repository root)::

    python -m benchmarks.transformer_decoupled [--cache DIR] [--seeds 0 1] [--train-seeds 0 1]
        [--steps 256] [--token-steps 128] [--no-train]

Writes ``benchmarks/results/transformer_decoupled.md`` and ``.json``.
"""

from __future__ import annotations

import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import (
    command,
    load_maker,
    machine,
    machine_line,
    markdown_table,
    parser,
    write_results,
)
from benchmarks.planted_tokens import MIN_ACCURACY, shipped, train_bert, train_bytes
from onnx_am import import_onnx, unit
from onnx_am.audit.options import AnalyzeOptions, analysis_config
from onnx_am.engine.maximizer import maximize
from onnx_am.importer.cut import cut_domain
from onnx_am.methods import STANDARD, parse_method
from onnx_am.passes import RULES, decouple_rectifiers
from onnx_am.tokens.ranking import decoupled_ranking
from onnx_am.tokens.recompute import IdsRuntime
from onnx_am.tokens.run import COST_PER_STEP, plan_tokens
from onnx_am.tokens.search import swap_search

#: The default rules (rectifiers) and the opt-in GELU rules.
DECOUPLE_RULES = [*(name for name, rule in RULES.items() if rule.default), "gelu", "gelu_subgraph"]
EMBEDDING_METHODS = [
    "standard", "decoupled(0.1)", "decoupled(0.3)", "decoupled(1)",
    "decoupled(anneal(0.3))", "decoupled(anneal(1))",
]  # fmt: skip
TOKEN_METHODS = ["standard", "decoupled(0.3)", "decoupled(1)", "decoupled(anneal(1))"]
RESTARTS = 3
THRESHOLD = 0.01


def models(options) -> list[dict]:
    """The committed models, then the planted models of ``--cache`` (trained when missing)."""
    found = shipped()
    if options.no_train:
        return found
    maker = load_maker("make_tiny_transformers")
    trained = [train_bert(maker, s, 3, options.cache, 2000) for s in options.train_seeds]
    trained.append(train_bytes(maker, options.train_seeds[0], 3, options.cache, 2000))
    return found + [m for m in trained if (m.get("accuracy") or 1.0) >= MIN_ACCURACY]


def logits(imported, space) -> int:
    extractor = imported.extractor([imported.output_names[0]])
    with torch.no_grad():
        out = imported.batch.call(extractor, space.embed(torch.zeros(1, space.length).long()))
    return int(out[0].shape[-1])


def embedding_rows(name, imported, rewrite, units, steps, seed) -> list[dict]:
    """``maximize`` from the lookup, every unit and method at the same steps x rows."""
    domain = cut_domain(imported.cut, imported.input.sample_shape).domain
    config = analysis_config(
        AnalyzeOptions.of(steps=steps, restarts=RESTARTS, seed=seed, time_budget=None), domain
    )
    targets = [f"{imported.output_names[0]}:{k}" for k in units]
    report = maximize(imported, targets, EMBEDDING_METHODS, config, rewrite=rewrite)
    return [
        {"space": "embedding", "model": name, "seed": seed, "unit": r.unit, "method": r.method,
         "value": r.activation, "agrees": r.agrees, "cost": steps * RESTARTS * 3}
        for r in report.results
    ]  # fmt: skip


def token_rows(name, imported, rewrite, units, steps, seed) -> list[dict]:
    """The greedy search per unit, ranked by each method's gradient; onnxruntime's values."""
    plan = plan_tokens(imported, steps=steps)
    output = imported.output_names[0]
    runtime = IdsRuntime(imported.cut, imported.feeds, [output])
    rows = []
    for k in units:
        target = unit(output, k)
        extractor = imported.extractor([target.tensor])

        def score(x, target=target, extractor=extractor):
            return target.value(imported.batch.call(extractor, x)[0])

        for text in TOKEN_METHODS:
            method = parse_method(text)
            ranking = None
            if method is not STANDARD:
                ranking = decoupled_ranking(imported, target, rewrite, method)
            tic = time.perf_counter()
            found = swap_search(score, plan.space, plan.budget, 1, seed + 7919 * k, None, ranking)
            value = runtime.value(target, found.ids)
            rows.append({
                "space": "tokens", "model": name, "seed": seed, "unit": target.name,
                "method": method.label, "value": value, "torch_value": found.value,
                "agrees": abs(value - found.value) <= 1e-3 * max(1.0, abs(value)),
                "ids": list(found.ids), "cost": found.cost,
                "seconds": time.perf_counter() - tic,
            })  # fmt: skip
    return rows


def activation(rewrite) -> str:
    kinds = collections.Counter(r.kind for r in rewrite.rewritten)
    return ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))


def run(options) -> dict:
    rows, rewritten = [], {}
    for model in models(options):
        imported = import_onnx(model["path"], at="auto")
        rewrite = decouple_rectifiers(imported, rules=DECOUPLE_RULES)
        rewritten[model["name"]] = activation(rewrite)
        space = plan_tokens(imported, steps=1).space
        units = range(logits(imported, space))
        for seed in options.seeds:
            found = embedding_rows(model["name"], imported, rewrite, units, options.steps, seed)
            found += token_rows(model["name"], imported, rewrite, units, options.token_steps, seed)
            for row in found:
                row["activation"] = "ReLU" if "relu" in rewritten[model["name"]] else "GELU"
            rows += found
        print(model["name"], rewritten[model["name"]], "done", flush=True)
    return {"rows": rows, "rewritten": rewritten}


def summarize(rows: list[dict], by: str) -> list[list[object]]:
    """Per (space, ``row[by]`` and then all together, method): means, gain, wins, losses."""
    table = []
    keys = dict.fromkeys((r["space"], r[by]) for r in rows)
    for space, kind in [*keys, *dict.fromkeys((s, "all") for s, _ in keys)]:
        group = [r for r in rows if r["space"] == space and kind in ("all", r[by])]
        key = lambda r: (r["model"], r["seed"], r["unit"])  # noqa: E731
        standard = {key(r): r["value"] for r in group if r["method"] == "standard"}
        for method in dict.fromkeys(r["method"] for r in group):
            if method == "standard":
                continue
            mine = {key(r): r["value"] for r in group if r["method"] == method}
            gains = {k: mine[k] - standard[k] for k in standard}
            limit = {k: THRESHOLD * abs(standard[k]) for k in standard}
            wins = sum(gains[k] > limit[k] for k in gains)
            losses = sum(gains[k] < -limit[k] for k in gains)
            cost = np.mean([r["cost"] for r in group if r["method"] == method])
            table.append([
                space, kind, method, len(gains), f"{np.mean(list(standard.values())):.3f}",
                f"{np.mean(list(mine.values())):.3f}", f"{np.mean(list(gains.values())):+.3f}",
                f"{wins}/{len(gains)}", f"{losses}/{len(gains)}", f"{cost:.0f}",
            ])  # fmt: skip
    return table


def flags(options) -> list[str]:
    return ["--seeds", *map(str, options.seeds), "--train-seeds",
            *map(str, options.train_seeds), "--steps", str(options.steps),
            "--token-steps", str(options.token_steps)] + (["--no-train"] if options.no_train
                                                           else [])  # fmt: skip


def render(data: dict) -> str:
    """The results page from the JSON payload (``data["command_line"]``: the run's line)."""
    columns = ["unit-seeds", "standard mean", "method mean", "mean gain", "beats standard",
               "loses to standard", "cost / unit-seed"]  # fmt: skip
    agree = sum(bool(r["agrees"]) for r in data["rows"])
    models = "; ".join(f"{m}: {a}" for m, a in data["rewritten"].items())
    return "\n".join([
        "# Transformers: standard vs decoupled gradient, in embedding space and token space",
        "",
        data["command_line"],
        "",
        f"Rewritten per model: {models}.",
        "",
        f"Embedding space: analyze's zero-config cut and box, {RESTARTS} rows x "
        f"{data['steps']} steps per unit and method (cost in forward-pass equivalents, a "
        "step = forward + backward = 3), the best row's value on the original graph. Tokens: "
        f"the greedy swap search at {data['token_steps']} x {COST_PER_STEP} forward-pass "
        "equivalents, ranked by each method's gradient; value by onnxruntime on the uncut "
        "file with the final ids. 'beats / loses': unit-seeds where the method is more than "
        f"1 % of |standard| above / below standard. Values agree with onnxruntime on {agree}/"
        f"{len(data['rows'])} rows.",
        "",
        markdown_table(["space", "activation", "method", *columns],
                       summarize(data["rows"], "activation")),
        "",
        "Per model:",
        "",
        markdown_table(["space", "model", "method", *columns], summarize(data["rows"], "model")),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__)
    args.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "planted")
    args.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="search seeds")
    args.add_argument(
        "--train-seeds", type=int, nargs="+", default=[0, 1], help="planted models trained"
    )
    args.add_argument("--steps", type=int, default=256, help="embedding-space steps per row")
    args.add_argument("--token-steps", type=int, default=128, help="token cost / 64")
    args.add_argument("--no-train", action="store_true", help="only the committed models")
    args.add_argument(
        "--render", action="store_true", help="only rewrite the page from <out>'s JSON"
    )
    options = args.parse_args(argv)
    torch.set_num_threads(options.threads)
    if options.render:
        payload = json.loads((options.out / "transformer_decoupled.json").read_text())
    else:
        options.cache.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        payload = run(options)
        line = (f"`{command('transformer_decoupled', *flags(options))}` on {machine_line()}; "
                f"{time.perf_counter() - tic:.0f} s; shared machine.")  # fmt: skip
        payload = {"machine": machine(), "command_line": line, "steps": options.steps,
                   "token_steps": options.token_steps, **payload}  # fmt: skip
    text = render(payload)
    print(text)
    print(f"wrote {write_results(options.out, 'transformer_decoupled', text, payload)}")


if __name__ == "__main__":
    main()
