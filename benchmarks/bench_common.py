"""Shared helpers of the benchmark scripts: machine description, statistics, tables, models.

Not part of the library; the scripts under ``benchmarks/`` import it by path.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

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
    import importlib.util

    import onnx
    from onnx import numpy_helper

    spec = importlib.util.spec_from_file_location(
        "make_digits_cnns", MODELS / "make_digits_cnns.py"
    )
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    model = maker.VARIANTS[name.removeprefix("digits_")]()
    graph = onnx.load(str(model_path(name))).graph
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    state = {k: weights[k].reshape(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
