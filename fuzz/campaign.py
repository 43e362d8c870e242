"""Mutation fuzzer: does ``onnx-am inspect`` survive hostile models?

Seeds are the repo's own models (``models/*.onnx``) and test fixtures. Each case is one seed
changed by mutators of one family (see :mod:`fuzz.mutators`) and run through the
``inspect`` command exactly as the command line runs it (``--json``), in a worker process with
a wall-clock limit and an address-space limit (``RLIMIT_AS``). The parent watches a canary
file in the working directory and the models' parent folder with inotify: any open of it is a
read outside the model's directory.

Outcomes per case: ``parity passed`` (exit 0), ``parity failed`` (exit 3), ``clean error``
(exit 2: an ``OnnxAmError``); and the failures: ``other exception`` (exit 1), ``hang``,
``crash`` (killed by a signal), ``memory limit`` (``MemoryError`` or an allocation failure),
``canary opened``, ``bad stderr`` (not exactly one ``onnx-am: error:`` line of at most
``MAX_LINE`` characters on an error, or anything on success), ``bad json`` (stdout is not
one JSON object).

Run: ``python -m fuzz --minutes 5`` or ``--cases 10000``; the same ``--seed``
gives the same cases. The case index alone determines a case, so ``--only 1234`` replays one.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from benchmarks import harness
from fuzz.mutators import CANARY, FAMILIES, Case, mutate

ROOT = harness.ROOT
SEED_GLOBS = ("models/*.onnx", "tests/fixtures/*.onnx")
#: Longest acceptable error line on stderr (the prefix ``onnx-am: error: `` included).
MAX_LINE = 400
FAILURES = (
    "other exception", "hang", "crash", "memory limit", "canary opened", "bad stderr", "bad json",
)  # fmt: skip
#: A worker process serves this many cases, then a fresh one starts (bounds drift in memory).
RESTART_EVERY = 200
#: Seconds a worker may take to import torch, onnxruntime and onnx-am.
STARTUP_TIMEOUT = 300
OUTCOMES = ("parity passed", "parity failed", "clean error", *FAILURES)


@dataclass
class Seed:
    name: str
    model: onnx.ModelProto
    files: dict[str, bytes]


@dataclass
class CaseResult:
    index: int
    seed: str
    family: str
    steps: list[str]
    outcome: str
    exit_code: int | None = None
    error: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def load_seeds(max_bytes: int | None = None) -> list[Seed]:
    """The repo's models and fixtures (external data files carried along), by name."""
    seeds = []
    for pattern in SEED_GLOBS:
        for path in sorted(ROOT.glob(pattern)):
            if max_bytes is not None and path.stat().st_size > max_bytes:
                continue
            model = onnx.load(path, load_external_data=False)
            _fill_symbolic_dims(model)
            files = {p.name: p.read_bytes() for p in path.parent.glob(path.name + ".data")}
            seeds.append(Seed(str(path.relative_to(ROOT)), model, files))
    return seeds


def _fill_symbolic_dims(model: onnx.ModelProto, size: int = 24) -> None:
    """Give a seed's symbolic non-batch input dims a size, so that the seed imports."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    for value in model.graph.input:
        if value.name not in initializers:
            for dim in value.type.tensor_type.shape.dim[1:]:
                if not dim.HasField("dim_value"):
                    dim.Clear()
                    dim.dim_value = size


def make_case(index: int, seeds: list[Seed], run_seed: int) -> tuple[Case, str, str]:
    """Case ``index`` of run ``run_seed``: families in turn, a seed model drawn at random."""
    rng = random.Random(run_seed * 1_000_003 + index)
    family = list(FAMILIES)[index % len(FAMILIES)]
    seed = seeds[rng.randrange(len(seeds))]
    model = onnx.ModelProto()
    model.CopyFrom(seed.model)
    case = Case(model, files=dict(seed.files))
    mutate(case, family, rng)
    return case, seed.name, family


def write_case(case: Case, folder: Path) -> Path:
    """Write the model and its companions into an empty ``folder``; returns the model path."""
    folder.mkdir(parents=True)
    for relative, content in case.files.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    for relative, link in case.symlinks.items():
        os.symlink(link, folder / relative)
    for relative in set(case.fifos):
        os.mkfifo(folder / relative)
    path = folder / "model.onnx"
    path.write_bytes(case.serialized())
    return path


# --- running cases in a worker process ---------------------------------------------------------


def _set_memory_limit(memory_bytes: int) -> None:
    status = Path("/proc/self/status").read_text()
    vm_kb = int(next(line for line in status.splitlines() if line.startswith("VmSize")).split()[1])
    limit = vm_kb * 1024 + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _run_inspect(model: str, out: Path) -> dict:
    """``onnx-am inspect --json MODEL`` in this process, stdout and stderr into ``out``."""
    import onnx_am_cli.main

    saved = [os.dup(1), os.dup(2)]
    for fd, name in ((1, "stdout"), (2, "stderr")):
        handle = os.open(out / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    code, error = None, ""
    try:
        onnx_am_cli.main.cli.main(["inspect", "--json", model], prog_name="onnx-am")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        cause = exc.__context__
        if cause is not None:
            error = f"{type(cause).__name__}: {str(cause)[:300]}"
    except MemoryError:
        error = "MemoryError"
    except BaseException as exc:  # noqa: BLE001 - the worker reports everything it sees
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
    return {"code": code, "error": error}


def worker_main(requests: int, replies: int, workdir: str, memory_bytes: int) -> None:
    """Worker loop: read ``model-path\tout-dir`` lines, run each, reply ``done``."""
    import torch

    torch.set_num_threads(1)
    import onnx_am_cli.main  # noqa: F401

    os.chdir(workdir)
    _set_memory_limit(memory_bytes)
    with os.fdopen(requests, "r") as reader, os.fdopen(replies, "w") as writer:
        writer.write("ready\n")
        writer.flush()
        for line in reader:
            model, out = line.rstrip("\n").split("\t")
            result = _run_inspect(model, Path(out))
            (Path(out) / "result.json").write_text(json.dumps(result))
            writer.write("done\n")
            writer.flush()


class Worker:
    """A worker process that runs cases one after another; restarted after a hang or crash."""

    def __init__(self, workdir: Path, memory_bytes: int):
        self.workdir, self.memory_bytes = workdir, memory_bytes
        self.process = None
        self.served = 0

    def start(self) -> None:
        request_r, self.request_w = os.pipe()
        self.reply_r, reply_w = os.pipe()
        code = (
            "import sys; from fuzz.campaign import worker_main; "
            f"worker_main({request_r}, {reply_w}, {str(self.workdir)!r}, {self.memory_bytes})"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=(request_r, reply_w),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
        os.close(request_r)
        os.close(reply_w)
        self.served = 0
        ready, _, _ = select.select([self.reply_r], [], [], STARTUP_TIMEOUT)
        if not ready or not os.read(self.reply_r, 6).startswith(b"ready"):
            raise RuntimeError("the fuzz worker did not start")

    def stop(self) -> None:
        if self.process is None:
            return
        for fd in (self.request_w, self.reply_r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process = None

    def run(self, model: Path, out: Path, timeout: float) -> tuple[str, str]:
        """``("done" | "hang" | "crash", detail)`` for one case."""
        if self.process is None or self.served >= RESTART_EVERY:
            self.stop()
            self.start()
        self.served += 1
        os.write(self.request_w, f"{model}\t{out}\n".encode())
        ready, _, _ = select.select([self.reply_r], [], [], timeout)
        if not ready:
            self.stop()
            return "hang", ""
        reply = os.read(self.reply_r, 64)
        if reply.startswith(b"done"):
            return "done", ""
        status = self.process.wait()
        self.process = None
        detail = signal.Signals(-status).name if status < 0 else f"exit status {status}"
        return "crash", detail


def _classify(result: CaseResult, out: Path) -> None:
    info = json.loads((out / "result.json").read_text())
    code, error = info["code"], info["error"]
    result.exit_code, result.error = code, error
    stderr = (out / "stderr").read_bytes().decode("utf-8", "replace")
    stdout = (out / "stdout").read_bytes().decode("utf-8", "replace")
    lines = stderr.splitlines()
    if code is None or (
        "MemoryError" in error or "can't allocate memory" in error or "bad_alloc" in error
    ):
        result.outcome = (
            "memory limit" if "emory" in error or "alloc" in error else "other exception"
        )
        return
    if code == 1:
        result.outcome = "other exception"
        return
    result.outcome = {0: "parity passed", 3: "parity failed", 2: "clean error"}.get(
        code, "other exception"
    )
    if code == 0 and stderr.strip():
        result.problems.append("bad stderr")
    if code in (2, 3) and (
        len(lines) != 1 or not lines[0].startswith("onnx-am: error: ") or len(lines[0]) > MAX_LINE
    ):
        result.problems.append("bad stderr")
    try:
        parsed = json.loads(stdout)
        if not isinstance(parsed, dict):
            raise ValueError("not an object")
    except ValueError:
        result.problems.append("bad json")


class CanaryWatch:
    """inotify on the canary files: did anyone open them since the last :meth:`opened`?"""

    IN_OPEN, IN_ACCESS = 0x20, 0x01

    def __init__(self, paths: list[Path]):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        for path in paths:
            self.libc.inotify_add_watch(self.fd, str(path).encode(), self.IN_OPEN | self.IN_ACCESS)

    def opened(self) -> bool:
        seen = False
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return seen
            seen = seen or len(data) >= struct.calcsize("iIII")

    def close(self) -> None:
        os.close(self.fd)


def run_case(
    index: int, seeds: list[Seed], run_seed: int, root: Path, canary: CanaryWatch,
    worker: Worker, timeout: float, keep: Path | None = None,
) -> CaseResult:  # fmt: skip
    case, seed_name, family = make_case(index, seeds, run_seed)
    folder, out = root / "models" / f"case{index}", root / "out"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    model = write_case(case, folder)
    result = CaseResult(index, seed_name, family, case.steps, "clean error")
    start = time.monotonic()
    status, detail = worker.run(model, out, timeout)
    result.seconds = round(time.monotonic() - start, 3)
    if status == "done":
        _classify(result, out)
    else:
        result.outcome, result.error = status, detail
    if canary.opened():
        result.problems.append("canary opened")
    if keep is not None and (result.outcome in FAILURES or result.problems):
        shutil.rmtree(keep / f"case{index}", ignore_errors=True)
        write_case(case, keep / f"case{index}")
    shutil.rmtree(folder, ignore_errors=True)
    return result


def run_campaign(
    cases: int | None = None,
    minutes: float | None = None,
    seed: int = 0,
    timeout: float = 30.0,
    memory_gib: float = 3.0,
    max_seed_bytes: int | None = None,
    keep: Path | None = None,
    only: list[int] | None = None,
    progress=None,
    start: int = 0,
) -> list[CaseResult]:
    """Run fuzz cases until ``cases`` are done or ``minutes`` have passed.

    Args:
        cases: how many cases (indices 0..cases-1).
        minutes: wall-clock budget; the run stops after the case in progress.
        seed: the run seed; with the case index it determines every case.
        timeout: seconds after which a case counts as a hang.
        memory_gib: address space a worker may add to what it starts with.
        max_seed_bytes: use only seed models up to this size (short runs).
        keep: copy failing cases' files here.
        only: run just these case indices.
        start: the first case index (shards of one run: same seed, disjoint ranges).
        progress: called with each :class:`CaseResult`.
    """
    seeds = load_seeds(max_seed_bytes)
    indices = only if only is not None else range(start, start + (cases or 2**62))
    deadline = time.monotonic() + 60 * minutes if minutes else None
    results = []
    with tempfile.TemporaryDirectory(prefix="onnx-am-fuzz-") as tmp:
        root = Path(tmp)
        (root / "models").mkdir()
        (root / CANARY).write_bytes(b"canary" * 64)
        (root / "models" / CANARY).write_bytes(b"canary" * 64)
        canary = CanaryWatch([root / CANARY, root / "models" / CANARY])
        worker = Worker(root, int(memory_gib * 2**30))
        try:
            for index in indices:
                if deadline is not None and time.monotonic() > deadline:
                    break
                result = run_case(index, seeds, seed, root, canary, worker, timeout, keep)
                results.append(result)
                if progress is not None:
                    progress(result)
        finally:
            worker.stop()
            canary.close()
    return results


def tally(results: list[CaseResult]) -> Counter:
    """Cases per outcome; ``problems`` (stderr, JSON, canary) are counted as extra rows."""
    counts = Counter(result.outcome for result in results)
    for result in results:
        counts.update(result.problems)
    return counts


def failures(results: list[CaseResult]) -> list[CaseResult]:
    return [r for r in results if r.outcome in FAILURES or r.problems]


def render(results: list[CaseResult], seconds: float) -> str:
    counts = tally(results)
    lines = [
        f"{len(results)} cases in {seconds:.0f} s",
        "",
        "| outcome | cases |",
        "|---|---|",
    ]
    lines += [f"| {name} | {counts.get(name, 0)} |" for name in OUTCOMES]
    families = Counter(r.family for r in results)
    lines += ["", "cases per family: " + ", ".join(f"{k} {v}" for k, v in families.items())]
    groups = Counter(
        (r.outcome, *r.problems, r.error.split(":")[0], r.error[:120]) for r in failures(results)
    )
    if groups:
        lines += ["", "failures (outcome, kind, example error):"]
        for key, count in groups.most_common(40):
            example = next(r for r in failures(results) if (r.outcome, *r.problems) == key[:-2])
            lines.append(f"  {count:5d}  {key[:-2]}  {key[-1]!r}  e.g. case {example.index}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--cases", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first case index (shards)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds = hang")
    parser.add_argument("--memory-gib", type=float, default=3.0)
    parser.add_argument("--max-seed-bytes", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="copy failing cases here")
    parser.add_argument("--only", type=int, nargs="*", default=None, help="replay these cases")
    parser.add_argument("--json", type=Path, default=None, help="also write every case here")
    args = parser.parse_args(argv)
    if args.cases is None and args.minutes is None and args.only is None:
        args.minutes = 1.0
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)

    def progress(result: CaseResult) -> None:
        if result.outcome in FAILURES or result.problems:
            print(
                f"case {result.index} [{result.family}] {result.outcome} {result.problems} "
                f"{result.error[:160]!r} steps={result.steps}",
                file=sys.stderr,
                flush=True,
            )
        elif (result.index + 1) % 100 == 0:
            print(f"... {result.index + 1} cases", file=sys.stderr, flush=True)

    start = time.monotonic()
    results = run_campaign(
        args.cases, args.minutes, args.seed, args.timeout, args.memory_gib,
        args.max_seed_bytes, args.keep, args.only, progress, args.start,
    )  # fmt: skip
    options = [
        f"--cases {args.cases}" if args.cases is not None else "",
        f"--minutes {args.minutes:g}" if args.minutes is not None else "",
        f"--seed {args.seed}",
        f"--start {args.start}" if args.start else "",
        f"--timeout {args.timeout:g}",
        f"--memory-gib {args.memory_gib:g}",
        f"--max-seed-bytes {args.max_seed_bytes}" if args.max_seed_bytes else "",
    ]
    how = " ".join(["python -m fuzz", *(o for o in options if o)])
    text = f"{harness.machine_line()}\n`{how}`\n\n{render(results, time.monotonic() - start)}"
    print(text)
    if args.only is None:
        data = {
            "command": how,
            "machine": harness.machine(),
            "counts": dict(tally(results)),
            "failures": [asdict(r) for r in failures(results)],
        }
        harness.write_results(args.out, "fuzz", text, data)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 1 if failures(results) else 0


if __name__ == "__main__":
    sys.exit(main())
