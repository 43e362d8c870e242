"""Raw-gradient projected ascent vs normalized-gradient ascent vs Adam, per target kind.

    python -m benchmarks.step_rule [--steps 256] [--seeds 0 1] [--threads 1]

The paper's update is ``x <- clip(x + lr * grad)`` on the raw gradient. Its step then scales
with the gradient's magnitude, which differs by orders of magnitude between a class logit and
the spatial mean of an early channel. This script measures, on the sample CNNs, how far each
update rule gets (true-forward activation, onnxruntime-checked) for class logits and for
channels of an early and a late rectifier, at 16 / 64 / 256 steps, with standard and
decoupled(0.3) gradients. Prints a markdown table and the machine; writes
benchmarks/results/step_rule.md. Not a test.
"""

from __future__ import annotations

import statistics
import time

import torch

import onnx_am
from benchmarks import harness
from onnx_am.engine.maximizer import AMConfig, maximize

#: model -> {target kind: target string}
SUBJECTS = {
    "digits_relu": {
        "class": "logits:0-9",
        "early channel": "/features/relu1/Relu_output_0:0-7",
        "late channel": "/features/relu3/Relu_output_0:0-7",
    },
    "digits_deep_relu": {"class": "logits:0-9"},
    "mnist_relu": {
        "class": "logits:0-9",
        "early channel": "/features/relu1/Relu_output_0:0-7",
        "late channel": "/features/relu3/Relu_output_0:0-7",
    },
}
RULES = {
    "pga raw, lr 0.1": dict(optimizer="pga", lr=0.1),
    "pga raw, lr 1": dict(optimizer="pga", lr=1.0),
    "pga normalized (unit RMS), lr 0.05": dict(optimizer="pga", lr=0.05, normalize_grad=True),
    "pga normalized (unit RMS), lr 0.1": dict(optimizer="pga", lr=0.1, normalize_grad=True),
    "adam, lr 0.05": dict(optimizer="adam", lr=0.05),
}
METHODS = ["standard", "decoupled(0.3)"]
BUDGETS = (16, 64, 256)


def run(steps: int, seeds: list[int]) -> list[dict]:
    rows = []
    for model_name, kinds in SUBJECTS.items():
        path = harness.model_path(model_name)
        if not path.is_file():
            continue
        model = onnx_am.import_onnx(path)
        rewrite = onnx_am.decouple_rectifiers(model)
        for kind, target in kinds.items():
            targets = onnx_am.parse_targets([target], model)
            for rule, settings in RULES.items():
                for seed in seeds:
                    config = AMConfig.of(steps=steps, restarts=1, seed=seed, **settings)
                    report = maximize(model, targets, METHODS, config, rewrite=rewrite)
                    baseline = {b.target: b.best for b in report.baselines}
                    for r in report.results:
                        rows.append(
                            {
                                "model": model_name,
                                "kind": kind,
                                "rule": rule,
                                "seed": seed,
                                "method": r.method,
                                "target": r.target.name,
                                "agrees": r.agrees,
                                "beats_trivial": r.beats_trivial,
                                "trivial": baseline[r.target.name],
                                **{f"@{b}": r.trace[min(b, len(r.trace) - 1)] for b in BUDGETS},
                            }
                        )
    return rows


def summarize(rows: list[dict]) -> str:
    best = {}
    for row in rows:
        key = (row["model"], row["target"])
        best[key] = max(best.get(key, float("-inf")), row[f"@{BUDGETS[-1]}"])
    header = ["model", "targets", "rule", "method"] + [f"norm @{b}" for b in BUDGETS]
    header += ["fails trivial"]
    table = []
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["kind"], row["rule"], row["method"]), []).append(row)
    for (model, kind, rule, method), items in groups.items():
        norms = []
        for b in BUDGETS:
            values = [
                r[f"@{b}"] / best[(r["model"], r["target"])]
                for r in items
                if best[(r["model"], r["target"])] > 0
            ]
            norms.append(f"{statistics.median(values):.3f}" if values else "-")
        fails = sum(not r["beats_trivial"] for r in items)
        table.append([model, kind, rule, method, *norms, f"{fails}/{len(items)}"])
    return harness.markdown_table(header, table)


def main(argv: list[str] | None = None) -> None:
    options = harness.parser(__doc__)
    options.add_argument("--steps", type=int, default=256)
    options.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = options.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = run(args.steps, args.seeds)
    elapsed = time.perf_counter() - start
    agree = sum(r["agrees"] for r in rows)
    run_as = harness.command(
        "step_rule", f"--steps {args.steps} --seeds {' '.join(map(str, args.seeds))}"
    )
    text = "\n".join(
        [
            "# Update rules: raw vs normalized gradient vs Adam (step_rule)",
            "",
            harness.machine_line(),
            "",
            f"Command: `{run_as}` ({elapsed / 60:.1f} min; 1 restart per seed, "
            "random start). `norm @b` = best-so-far true activation after b steps / the best "
            "value any rule reached for that unit at the last budget; median over units x seeds. "
            f"onnxruntime agreed on {agree}/{len(rows)} results.",
            "",
            summarize(rows),
            "",
        ]
    )
    print(text)
    harness.write_results(args.out, "step_rule", text, {"command": run_as, "rows": rows})


if __name__ == "__main__":
    main()
