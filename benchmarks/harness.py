"""The benchmarks' shared harness: paths, machine, timing, statistics, tables, models, output.

Every benchmark is a module run as ``python -m benchmarks.NAME`` from the repository root. It
builds its command line with :func:`parser`, writes its results with :func:`write_results`
(markdown, plus JSON when it has structured data) under :data:`RESULTS`, and runs measurements
that need their own process (peak memory) through :func:`run_child`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from onnx_am.engine.racing import RacingSettings

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
RESULTS = ROOT / "benchmarks" / "results"


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (or ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """What the benchmark ran on: CPU, cores, threads torch uses, versions."""
    import onnxruntime

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def machine_line(info: dict | None = None) -> str:
    """One line naming the machine, for the top of printed tables."""
    info = info or machine()
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads), "
        f"torch {info['torch']}, onnxruntime {info['onnxruntime']}, Python {info['python']}"
    )


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (VmHWM, else ``getrusage``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def stopwatch(store: dict, key: str):
    """Add the seconds spent in the block to ``store[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        store[key] = store.get(key, 0.0) + time.perf_counter() - start


def median_iqr(values: Iterable[float]) -> tuple[float, float, float]:
    """``(median, 25th percentile, 75th percentile)``; NaNs when empty."""
    data = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if data.size == 0:
        return (float("nan"),) * 3
    q25, q50, q75 = np.percentile(data, [25, 50, 75])
    return float(q50), float(q25), float(q75)


def fmt_med(values: Iterable[float], digits: int = 3) -> str:
    """``median [q25, q75]`` as text, ``-`` when empty."""
    med, low, high = median_iqr(values)
    if not np.isfinite(med):
        return "-"
    return f"{med:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def fmt_share(flags: Sequence[bool]) -> str:
    """``k/n (p %)`` for a list of booleans."""
    if not flags:
        return "-"
    k = int(sum(bool(f) for f in flags))
    return f"{k}/{len(flags)} ({100 * k / len(flags):.0f} %)"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as indented JSON (numpy scalars converted)."""

    def default(obj: object) -> object:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        raise TypeError(f"not JSON-able: {type(obj).__name__}")

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=default) + "\n")


def model_path(name: str) -> Path:
    """``models/<name>.onnx``."""
    return MODELS / f"{name}.onnx"


def available(names: Iterable[str]) -> list[str]:
    """The model names whose ``models/<name>.onnx`` exists."""
    return [n for n in names if model_path(n).exists()]


def native_digits(name: str) -> torch.nn.Module:
    """The digits CNN ``name`` (e.g. ``"digits_relu"``) rebuilt natively in torch.

    The architecture comes from ``models/make_digits_cnns.py``; the weights from the ONNX
    file's initializers, whose names are the torch ``state_dict`` keys.
    """
    model = load_maker().VARIANTS[name.removeprefix("digits_")]()
    weights = onnx_weights(model_path(name))
    state = {k: weights[k].reshape(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def onnx_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The initializers of the ONNX file at ``path`` as tensors, by name."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}


def load_maker(script: str = "make_digits_cnns"):
    """``models/<script>.py`` as a module (by default the digits CNN architectures)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(script, MODELS / f"{script}.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    return maker


def resnet50() -> torch.nn.Module:
    """torchvision ResNet-50 with seeded random weights (nothing downloads), in eval mode."""
    import torchvision

    torch.manual_seed(0)  # torchvision's initializers use the global RNG; this is a benchmark
    model = torchvision.models.resnet50(weights=None).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def export_resnet50(path: str | Path) -> None:
    """The seeded ResNet-50 as ONNX (opset 17, legacy exporter) with a dynamic batch."""
    export_classifier(resnet50(), (3, 224, 224), path)


def export_classifier(
    net: torch.nn.Module, sample_shape: tuple[int, ...], path: str | Path
) -> None:
    """``net`` as ONNX (opset 17, legacy exporter): input ``input``, output ``logits``, dynamic
    batch."""
    torch.onnx.export(
        net,
        (torch.zeros(1, *sample_shape),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )


#: Racing settings as rounds 1-5 of issue 26 measured them (the defaults then): a named
#: configuration below states what it changes from these, so that a later change of
#: RacingSettings' defaults does not change what it runs.
ROUND1_RACING = {
    "candidates": 8,
    "corners": 2,
    "keep": 0.5,
    "rungs": 3,
    "screen": 64,
    "lr_schedule": None,
    "settle": 0,
    "first_steps": 1,
}


def raced(**settings) -> RacingSettings:
    """The round-1 racing settings with ``settings`` changed."""
    return RacingSettings(**{**ROUND1_RACING, **settings})


def parser(doc: str | None, *, threads: int = 1, child: bool = False) -> argparse.ArgumentParser:
    """The options every benchmark shares: ``--out`` (results folder) and ``--threads``.

    Args:
        doc: the benchmark module's docstring; its first line becomes the description.
        threads: the default number of torch intra-op threads.
        child: add the hidden ``--child ARGS...`` option used by :func:`run_child`.
    """
    parsed = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parsed.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parsed.add_argument(
        "--threads", type=int, default=threads, help=f"torch threads (default {threads})"
    )
    if child:
        parsed.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return parsed


def command(name: str, *options: str) -> str:
    """How benchmark ``name`` was run, as its results file quotes it (empty options dropped)."""
    return " ".join(["python -m", f"benchmarks.{name}", *(o for o in options if o)])


def write_results(out: Path, name: str, text: str, data: dict | None = None) -> Path:
    """Write ``<out>/<name>.md`` (and ``<name>.json`` when ``data`` is given); returns the .md."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.md"
    path.write_text(text if text.endswith("\n") else text + "\n")
    if data is not None:
        write_json(out / f"{name}.json", data)
    return path


def run_child(module: str, args: Sequence[str], threads: int) -> dict:
    """``python -m <module> --threads N --child ARGS`` in a fresh interpreter.

    The child prints one JSON line last; used where a measurement needs a process of its own
    (peak RSS). Raises ``RuntimeError`` with the child's stderr tail when it fails.
    """
    cmd = [sys.executable, "-m", module, "--threads", str(threads), "--child", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
