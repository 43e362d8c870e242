"""The token searches' price in the plan against what they really take, per model.

For each model ``onnx-am analyze`` runs in this process (``--repeats`` times; the row is
the run of the median planned / measured ratio) (zero config but ``--steps`` and
``--max-units``, no time budget, so nothing is cut); the row gives the plan's
``token_search_seconds`` (:meth:`onnx_am.tokens.run.TokenPlan.price` with the timings of
:func:`onnx_am.audit.planning.measure_costs`) against the report's measured ``tokens`` phase,
and the batched calls the searches made, counted and timed here by wrapping the token
module's forward (:func:`~onnx_am.tokens.space.evaluate`, per chunk of rows) and gradient
calls.

Models: the repo's tiny transformers (``models/transformers``) and, when ``--cache`` holds
them, magika and the MiniLM-size encoder (``python -m benchmarks.text_audits --cache DIR
--only magika minilm`` fetches the one and builds the other).

Run (from the repository root)::

    python -m benchmarks.token_price [--cache DIR] [--steps 16] [--max-units 2] [--repeats 3]
        [--big-repeats 1] [--big-units 1]
        [--only bert_trigger_legacy ...] [--name token_price]
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks import harness
from benchmarks.transformer_models import DEFAULT_CACHE
from onnx_am.audit.analyze import analyze
from onnx_am.audit.options import AnalyzeOptions
from onnx_am.tokens import run as token_run
from onnx_am.tokens import search as token_search

REPO_MODELS = (
    "bert_trigger_legacy",
    "bert_trigger_optimum",
    "minilm_legacy",
    "distilbert_legacy",
    "keras_trigger_tf2onnx",
    "keras_bytes_tf2onnx",
    "bytes_sig_legacy",
)
MAGIKA = "magika__models__standard_v3_3__model.onnx"


class CallLog:
    """Counts and times the token searches' batched forward and gradient calls."""

    def __init__(self) -> None:
        self.forward_calls = self.forward_rows = self.gradient_calls = 0
        self.forward_s = self.gradient_s = 0.0
        self._patched: list[tuple[object, str, object]] = []

    def __enter__(self) -> CallLog:
        for module in (token_search, token_run):
            self._wrap(module, "evaluate", self._evaluate)
            self._wrap(module, "gradient", self._gradient)
        return self

    def __exit__(self, *exc) -> None:
        for module, name, original in self._patched:
            setattr(module, name, original)

    def _wrap(self, module, name, make) -> None:
        original = getattr(module, name)
        self._patched.append((module, name, original))
        setattr(module, name, make(original))

    def _evaluate(self, original):
        def evaluate(score, space, ids, cost, halt=None):
            def timed(x):
                tic = time.perf_counter()
                out = score(x)
                self.forward_s += time.perf_counter() - tic
                self.forward_calls += 1
                self.forward_rows += x.shape[0]
                return out

            return original(timed, space, ids, cost, halt)

        return evaluate

    def _gradient(self, original):
        def gradient(score, x, cost):
            tic = time.perf_counter()
            out = original(score, x, cost)
            self.gradient_s += time.perf_counter() - tic
            self.gradient_calls += 1
            return out

        return gradient


def measure_median(name: str, path: Path, steps: int, units: int, repeats: int) -> dict:
    """:func:`measure` ``repeats`` times: the run of the median ratio, with every ratio."""
    runs = sorted((measure(name, path, steps, units) for _ in range(repeats)),
                  key=lambda r: r["ratio"] or 0.0)  # fmt: skip
    return {**runs[len(runs) // 2], "ratios": [r["ratio"] for r in runs]}


def measure(name: str, path: Path, steps: int, units: int) -> dict:
    """One audit: the plan's token price, the measured token phase and the calls."""
    options = AnalyzeOptions.of(steps=steps, max_units=units)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out, CallLog() as log:
        report = analyze(path, options, Path(out) / "r")
    doc = report.doc
    plan, timings = doc["plan"], doc["timings"]
    planned, measured = plan["token_search_seconds"], timings["tokens"]
    return {
        "model": name,
        "units": plan["units"],
        "steps": plan["steps"],
        "token_steps": plan.get("token_steps") or plan["steps"],
        "planned_s": round(planned, 2),
        "measured_s": round(measured, 2),
        "ratio": round(planned / measured, 2) if measured else None,
        "forward_calls": log.forward_calls,
        "forward_rows": log.forward_rows,
        "forward_s": round(log.forward_s, 2),
        "gradient_calls": log.gradient_calls,
        "gradient_s": round(log.gradient_s, 2),
        "timing_s": round(timings.get("timing", 0.0), 2),
        "load": f"{load_before:.1f} / {os.getloadavg()[0]:.1f}",
    }


def models(cache: Path, only: list[str] | None) -> list[tuple[str, Path]]:
    found = [(n, harness.MODELS / "transformers" / f"{n}.onnx") for n in REPO_MODELS]
    for name, path in (
        ("magika", cache / "models" / "magika" / MAGIKA),
        ("minilm-size", cache / "minilm_size.onnx"),
    ):
        if path.exists():
            found.append((name, path))
    return [(n, p) for n, p in found if not only or n in only]


def main(argv: Sequence[str] | None = None) -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--max-units", type=int, default=2)
    parser.add_argument("--only", nargs="+")
    parser.add_argument("--repeats", type=int, default=3, help="audits per model (median)")
    parser.add_argument("--big-repeats", type=int, default=1, help="the same for magika, MiniLM")
    parser.add_argument("--big-units", type=int, default=1, help="--max-units of magika, MiniLM")
    parser.add_argument("--name", default="token_price", help="results file name")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name, path in models(args.cache, args.only):
        big = name in ("magika", "minilm-size")
        repeats = args.big_repeats if big else args.repeats
        units = args.big_units if big else args.max_units
        rows.append(measure_median(name, path, args.steps, units, repeats))
        print(rows[-1], flush=True)
    only = f"--only {' '.join(args.only)}" if args.only else ""
    command = harness.command(
        "token_price", f"--cache {args.cache}", f"--steps {args.steps}",
        f"--max-units {args.max_units}", only,
        f"--repeats {args.repeats}", f"--big-repeats {args.big_repeats}",
        f"--big-units {args.big_units}",
        f"--threads {args.threads}", f"--name {args.name}",
    )  # fmt: skip
    header = ["model", "units", "token steps", "planned s", "measured s", "planned / measured",
              "every ratio",
              "forward calls (rows)", "forward s", "gradient calls", "gradient s",
              "load before / after"]  # fmt: skip
    table = harness.markdown_table(
        header,
        [
            [r["model"], r["units"], r["token_steps"], r["planned_s"], r["measured_s"],
             r["ratio"], ", ".join(str(x) for x in r["ratios"]),
             f"{r['forward_calls']} ({r['forward_rows']})", r["forward_s"],
             r["gradient_calls"], r["gradient_s"], r["load"]]
            for r in rows
        ],
    )  # fmt: skip
    text = (
        f"# Token search: planned vs measured seconds\n\n`{command}`\n\n"
        f"{harness.machine_line()} (shared with other jobs: the load column is the 1-minute "
        f"load average before and after each audit)\n\n{table}\n"
    )
    print(harness.write_results(args.out, args.name, text, {"command": command, "rows": rows}))


if __name__ == "__main__":
    main()
