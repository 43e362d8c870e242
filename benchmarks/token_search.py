"""Token searches against the exact maximum of the known-answer token family, at equal cost.

Every unit of ``models/token_family.json`` (small embedding / one-hot models with position-
wise or pairwise scores and sum or max pooling; exact maxima over all sequences by dynamic
programming, see ``models/make_token_family.py``) is searched by each method with the same
cost, counted in forward-pass equivalents (one row forwarded 1, forwarded and backpropagated
3; :mod:`onnx_am.tokens.space`): greedy and beam (width 4) gradient-guided swaps, and the
relaxed softmax search. Beside them, the embedding-space search (the tensor free in the box
of the matrix's rows) at the same cost, an upper reference and not a sequence of tokens.

The table gives per method and cost the share of units whose value reaches the exact
maximum within 1 % (``value >= exact - 0.01 |exact|``), the median value / exact, and the
mean seconds per unit; values are the scorer's (torch at the cut; onnxruntime agrees on the
final ids, which analyze checks on every result).

Run (from the repository root)::

    python -m benchmarks.token_search [--costs 1024 4096 16384] [--seeds 0 1]
        [--relaxed-max-cost 4096] [--only MODEL ...] [--methods greedy beam relaxed embedding]
        [--merge]

``--merge`` keeps the rows of the methods not run now from the results file, and their
command, so that a changed search can be measured again without the others.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from benchmarks.harness import MODELS, command, machine_line, markdown_table, parser, write_results
from onnx_am import import_onnx, unit
from onnx_am.tokens.search import SEARCHES, embedding_search
from onnx_am.tokens.space import TokenSpace

FAMILY = MODELS / "token_family.json"
METHODS = ("greedy", "beam", "relaxed")


def within(value: float, exact: float) -> bool:
    return value >= exact - 0.01 * abs(exact)


def run(
    costs: list[int],
    seeds: list[int],
    relaxed_max: int,
    only: list[str] | None = None,
    methods: tuple[str, ...] = (*METHODS, "embedding"),
) -> dict:
    records = [r for r in json.loads(FAMILY.read_text()) if not only or r["name"] in only]
    rows = []
    for record in records:
        imported = import_onnx(MODELS / record["file"], at="auto")
        space = TokenSpace(torch.from_numpy(imported.cut.lookup.matrix.copy()), record["length"])
        extractor = imported.extractor(["logits"])
        for entry in record["units"]:
            target = unit("logits", entry["unit"])

            def score(x, target=target, imported=imported, extractor=extractor):
                return target.value(imported.batch.call(extractor, x)[0])

            for cost in costs:
                for seed in seeds:
                    for method in methods:
                        if method == "relaxed" and cost > relaxed_max:
                            continue
                        tic = time.perf_counter()
                        if method == "embedding":
                            found = embedding_search(score, space, cost, seed=seed)
                        else:
                            found = SEARCHES[method](score, space, cost, seed)
                        rows.append(
                            {
                                "model": record["name"],
                                "unit": entry["unit"],
                                "exact": entry["exact"],
                                "cost": cost,
                                "seed": seed,
                                "method": method,
                                "value": found.value,
                                "spent": found.cost,
                                "ids": list(found.ids) if found.ids else None,
                                "seconds": time.perf_counter() - tic,
                            }
                        )
        print(record["name"], "done", flush=True)
    return {"rows": rows}


def table(data: dict) -> str:
    rows = data["rows"]
    lines = []
    for cost in sorted({r["cost"] for r in rows}):
        for method in (*METHODS, "embedding"):
            chosen = [r for r in rows if r["cost"] == cost and r["method"] == method]
            if not chosen:
                continue
            hits = [within(r["value"], r["exact"]) for r in chosen]
            ratio = [r["value"] / r["exact"] for r in chosen if r["exact"] > 0]
            lines.append(
                [
                    cost,
                    method + (" (reference, not tokens)" if method == "embedding" else ""),
                    f"{sum(hits)}/{len(hits)} ({100 * sum(hits) / len(hits):.0f} %)",
                    f"{statistics.median(ratio):.3f}",
                    f"{statistics.mean(r['seconds'] for r in chosen):.2f}",
                ]
            )
    header = ["cost / unit", "method", "within 1 % of exact", "median value / exact", "s / unit"]
    return markdown_table(header, lines)


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__)
    args.add_argument("--costs", type=int, nargs="+", default=[1024, 4096, 16384])
    args.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args.add_argument(
        "--relaxed-max-cost", type=int, default=4096, help="skip relaxed above this cost (slow)"
    )
    args.add_argument("--only", nargs="+", metavar="MODEL", help="only these family models")
    args.add_argument(
        "--merge",
        action="store_true",
        help="keep the other methods' rows of the results file (one run per method)",
    )
    args.add_argument(
        "--methods",
        nargs="+",
        choices=[*METHODS, "embedding"],
        default=[*METHODS, "embedding"],
        help="searches to run (embedding: the reference)",
    )
    options = args.parse_args(argv)
    torch.set_num_threads(options.threads)
    kept = _kept(options.out, options.methods) if options.merge else {"rows": [], "commands": []}
    data = run(
        options.costs,
        options.seeds,
        options.relaxed_max_cost,
        options.only,
        tuple(options.methods),
    )
    data["command"] = command(
        "token_search",
        "--costs " + " ".join(map(str, options.costs)),
        "--seeds " + " ".join(map(str, options.seeds)),
        f"--relaxed-max-cost {options.relaxed_max_cost}",
        "--methods " + " ".join(options.methods),
        "--merge" if options.merge else "",
    )
    data["rows"] = [*kept["rows"], *data["rows"]]
    data["earlier_commands"] = kept["commands"]
    text = "\n\n".join(
        [
            "# Token search on the known-answer token family",
            *kept["commands"],
            data["command"],
            machine_line(),
            table(data),
        ]
    )
    print(text)
    write_results(options.out, "token_search", text, data)


def _kept(out, methods: list[str]) -> dict:
    """The rows of the other methods and the commands in ``<out>/token_search.json`` (a file
    from before ``--merge`` existed quotes its command in its first lines)."""
    path = out / "token_search.json"
    if not path.exists():
        return {"rows": [], "commands": []}
    earlier = json.loads(path.read_text())
    rows = [r for r in earlier["rows"] if r["method"] not in methods]
    quoted = earlier.get("command") or next(
        (line for line in (out / "token_search.md").read_text().splitlines()
         if line.startswith("python -m benchmarks.token_search")),
        None,
    )  # fmt: skip
    commands = [*earlier.get("earlier_commands", []), quoted]
    return {"rows": rows, "commands": [c for c in commands if c and rows]}


if __name__ == "__main__":
    main()
