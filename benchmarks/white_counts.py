"""White and saturated results per method on the sample models, with analyze's default methods.

    python -m benchmarks.white_counts [--steps 256] [--restarts 3] [--step-rule raw] [--no-racing]
        [--only M]

The paper's headline measure: how often activation maximization ends in a saturated, "white"
input. Every trained model in ``models/`` (``*_models.json``) is audited with ``analyze``'s
default methods (standard, decoupled(anneal(0.3)), best(anneal(0.3))) on its default targets,
with its default racing restarts (``--no-racing``: plain restarts), no time budget, and the
report's own ``summary.saturation`` counts (white: >= 50 % of the input at the upper bound;
saturated: >= 90 % at either bound) are tallied per method, with the units where the
decoupled row cleared or caused a white result. Writes
``benchmarks/results/white_counts.md`` and ``.json`` (``white_counts_raw`` with the paper's
raw-gradient step, ``_plain`` added with ``--no-racing``). Not a test.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import harness
from onnx_am.audit.analyze import DEFAULT_STEP_RULE, STEP_RULES, AnalyzeOptions, analyze
from onnx_am.audit.options import DEFAULT_RACING
from onnx_am.engine.racing import RacingSettings

#: The trained sample models (the toys have no image to saturate meaningfully).
LISTS = ("digits_models.json", "mnist_models.json")


def sample_models() -> list[Path]:
    """The ``.onnx`` files the model lists name (``{"models": {key: {"file": ...}}}``)."""
    paths = []
    for listing in LISTS:
        path = harness.MODELS / listing
        if path.is_file():
            models = json.loads(path.read_text())["models"]
            paths += [harness.MODELS / entry["file"] for entry in models.values()]
    return [path for path in paths if path.is_file()]


def audit(
    path: Path,
    steps: int,
    restarts: int,
    step_rule: str = DEFAULT_STEP_RULE,
    racing: RacingSettings | None = DEFAULT_RACING,
) -> dict:
    options = AnalyzeOptions.of(
        steps=steps,
        restarts=restarts,
        step_rule=step_rule,
        racing=racing,
        time_budget=None,
        seed=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        report = analyze(path, options, Path(tmp) / "report")
        seconds = time.perf_counter() - tic
    summary = report.doc["summary"]
    changed = {
        m["method"]: (len(m.get("white_cleared", [])), len(m.get("white_caused", [])))
        for m in summary["methods"]
    }
    return {
        "model": path.stem,
        "units": summary["units"],
        "seconds": seconds,
        "agree": sum(bool(r.get("agrees")) for r in report.doc["results"]),
        "results": len(report.doc["results"]),
        "saturation": summary["saturation"],
        "white_changed": changed,
    }


def race_text(racing: RacingSettings | None) -> str:
    """How the rows were spent, as the results file says it."""
    if racing is None:
        return "plain restarts (every row runs every step)"
    return f"racing restarts ({racing})"


def table(rows: list[dict]) -> str:
    header = ["model", "units", "method", "white", "saturated", "white cleared / caused"]
    body = []
    for row in rows:
        for method in row["saturation"]["methods"]:
            cleared, caused = row["white_changed"].get(method["method"], (None, None))
            change = "-" if cleared is None else f"{cleared} / {caused}"
            body.append(
                [
                    row["model"],
                    row["units"],
                    method["method"],
                    f"{method['white']}/{method['results']}",
                    f"{method['saturated']}/{method['results']}",
                    change,
                ]
            )
    return harness.markdown_table(header, body)


def totals(rows: list[dict]) -> str:
    sums: dict[str, list[int]] = {}
    for row in rows:
        for method in row["saturation"]["methods"]:
            tally = sums.setdefault(method["method"], [0, 0, 0])
            tally[0] += method["white"]
            tally[1] += method["saturated"]
            tally[2] += method["results"]
    body = [[m, f"{w}/{n}", f"{s}/{n}"] for m, (w, s, n) in sums.items()]
    return harness.markdown_table(["method (all models)", "white", "saturated"], body)


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--only", action="append", help="model file stem (repeatable)")
    parser.add_argument(
        "--step-rule", choices=list(STEP_RULES), default=DEFAULT_STEP_RULE, help="as analyze's"
    )
    parser.add_argument(
        "--no-racing", action="store_true", help="plain restarts instead of analyze's race"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    racing = None if args.no_racing else DEFAULT_RACING
    paths = [p for p in sample_models() if not args.only or p.stem in args.only]
    rows = [audit(path, args.steps, args.restarts, args.step_rule, racing) for path in paths]
    only = " ".join(f"--only {name}" for name in args.only or ())
    options = f"--steps {args.steps} --restarts {args.restarts} --step-rule {args.step_rule}"
    options += " --no-racing" if args.no_racing else ""
    options = f"{options} {only}".strip()
    text = "\n\n".join(
        [
            "# White and saturated results on the sample models",
            harness.command("white_counts", options),
            harness.machine_line(),
            "White: >= 50 % of the input at the box's upper bound; saturated: >= 90 % at "
            "either bound (`onnx_am.audit.summary`). Default methods and targets of analyze, "
            f"{race_text(racing)}, no time budget, seed 0; every value cross-checked by "
            "onnxruntime "
            f"({sum(r['agree'] for r in rows)} of {sum(r['results'] for r in rows)} agree).",
            totals(rows),
            table(rows),
        ]
    )
    print(text)
    name = (
        "white_counts" if args.step_rule == DEFAULT_STEP_RULE else f"white_counts_{args.step_rule}"
    )
    name += "_plain" if args.no_racing else ""
    harness.write_results(args.out, name, text, {"rows": rows})


if __name__ == "__main__":
    main()
