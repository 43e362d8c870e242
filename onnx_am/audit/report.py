"""The report directory: ``report.json`` written as results finish, resume, overwrite protection.

Layout of a report directory::

    report.json            the machine-readable report (schema in README, "Report format")
    index.html             the human-readable report (self-contained, opens from disk)
    images/<name>.png      best input per result (a plot for non-image inputs)
    images/<name>.npy      the exact values of that input (model layout and domain)
    plots/*.png            convergence, beta sweep, contact sheets
    checkpoint.pt          the running chunk's state, while a run is unfinished

Every file is written through a temporary file in the same directory and ``os.replace``, so
an interruption leaves either the old or the new version, never half a file. Nothing is
written outside the report directory, and an existing report is never overwritten unless the
caller says so (``force``) or continues it (``resume``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from onnx_am.engine.checkpoint import CHECKPOINT_FILE
from onnx_am.engine.results import TargetBaseline, UnitResult
from onnx_am.errors import ReportError

SCHEMA_VERSION = 1
REPORT_FILE = "report.json"
HTML_FILE = "index.html"
IMAGES_DIR = "images"
PLOTS_DIR = "plots"
#: What a report directory may contain that we wrote; ``force`` removes only these.
OWN_ENTRIES = (REPORT_FILE, HTML_FILE, IMAGES_DIR, PLOTS_DIR, CHECKPOINT_FILE)


class ReportDir:
    """A report directory being written.

    Attributes:
        root: the directory.
        previous: the report found there when resuming (``None`` otherwise).
    """

    def __init__(self, root: Path, previous: dict | None = None):
        self.root = root
        self.previous = previous

    @classmethod
    def open(cls, root: str | os.PathLike, force: bool = False, resume: bool = False) -> ReportDir:
        """Prepare ``root`` for writing a report.

        Args:
            root: the report directory (created if missing).
            force: replace an existing report (only the files a report consists of are removed).
            resume: keep an existing report and continue it (see :meth:`check_resumable`).

        Raises:
            ReportError: a report exists and neither ``force`` nor ``resume`` was given; the
                directory holds other files; it cannot be created; or ``force`` and ``resume``
                were both given.
        """
        if force and resume:
            raise ReportError("--force and --resume contradict each other; choose one")
        path = Path(root)
        if path.exists() and not path.is_dir():
            raise ReportError(f"report path exists and is not a directory: {path}")
        previous = _read_previous(path)
        if previous is not None and not (force or resume):
            raise ReportError(
                f"a report already exists in {path}; "
                "pass --force to overwrite it or --resume to continue it"
            )
        foreign = _foreign_entries(path)
        if foreign and not force:
            raise ReportError(
                f"output directory {path} is not empty and holds no onnx-am report "
                f"({', '.join(foreign[:3])}); choose another --out or pass --force"
            )
        if force:
            _remove_own(path)
            previous = None
        try:
            (path / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
            (path / PLOTS_DIR).mkdir(exist_ok=True)
        except OSError as exc:
            raise ReportError(f"cannot create report directory {path}: {exc}") from exc
        return cls(path, previous if resume else None)

    def check_resumable(self, model_sha256: str, settings: dict) -> None:
        """Refuse to continue a report made from another model or with other settings.

        Raises:
            ReportError: naming the settings that differ.
        """
        if self.previous is None:
            return
        if self.previous.get("schema_version") != SCHEMA_VERSION:
            raise ReportError(
                f"cannot resume report schema {self.previous.get('schema_version')!r} "
                f"with schema {SCHEMA_VERSION}; use --force"
            )
        old_sha = self.previous.get("model", {}).get("sha256")
        if old_sha != model_sha256:
            raise ReportError(
                f"cannot resume: the report in {self.root} was made from another model ({old_sha})"
            )
        old = self.previous.get("settings", {})
        differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if differ:
            listing = "; ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in differ)
            hint = "use --force to start over"
            if "racing" in differ and old.get("racing") is None:  # made before racing's default
                hint = "the report was made with plain restarts: add --no-racing to continue it, "
                hint += "or --force to start over"
            raise ReportError(f"cannot resume with different settings ({listing}); {hint}")

    def done_results(self) -> list[UnitResult]:
        """The results of the report being resumed, images loaded back from ``.npy``."""
        if self.previous is None:
            return []
        return [self.load_result(entry) for entry in self.previous.get("results", [])]

    def done_baselines(self) -> list[TargetBaseline]:
        if self.previous is None:
            return []
        return [
            TargetBaseline(b["target"], b["activations"])
            for b in self.previous.get("baselines", [])
        ]

    def path(self, relative: str) -> Path:
        """An absolute path inside the report; refuses anything that would leave it."""
        target = (self.root / relative).resolve()
        if not target.is_relative_to(self.root.resolve()):
            raise ReportError(f"refusing to write outside the report directory: {relative!r}")
        return target

    def image_name(self, result: UnitResult) -> str:
        """``images/<target>__<method>.png`` with unsafe characters replaced."""
        return f"{IMAGES_DIR}/{safe_name(result.target.name)}__{safe_name(result.method)}.png"

    def result_entry(self, result: UnitResult, image: str | None) -> dict:
        """The JSON form of one result; ``image``/``npy`` are paths relative to the report."""
        entry = {name: _plain(value) for name, value in result.to_dict().items()}
        entry["image"] = image
        entry["npy"] = str(Path(image).with_suffix(".npy")) if image else None
        return entry

    def load_result(self, entry: dict) -> UnitResult:
        """Rebuild a :class:`UnitResult` (image included) from its JSON form."""
        result = UnitResult.from_dict(entry)
        if entry.get("npy"):
            npy = self.path(entry["npy"])
            if not npy.is_file():
                raise ReportError(f"cannot resume: {npy} is missing; use --force to start over")
            result.image = np.load(npy)
        return result

    def write_json(self, relative: str, data: dict) -> Path:
        """Write JSON atomically (temp file + ``os.replace``)."""
        text = json.dumps(json_safe(data), indent=1, allow_nan=False)
        return self.write_text(relative, text + "\n")

    def write_text(self, relative: str, text: str) -> Path:
        return self.write_with(relative, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def write_with(self, relative: str, writer: Callable[[str], object]) -> Path:
        """Call ``writer(temp_path)`` and move the file into place atomically."""
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
        os.close(handle)
        try:
            writer(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def safe_name(text: str) -> str:
    """A file-name-safe version of a target or method label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def json_safe(value):
    """``value`` with non-finite floats replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _read_previous(path: Path) -> dict | None:
    report = path / REPORT_FILE
    if not report.is_file():
        return None
    try:
        return json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"existing report {report} cannot be read ({exc}); use --force") from exc


def _foreign_entries(path: Path) -> list[str]:
    if not path.is_dir():
        return []
    return sorted(
        p.name
        for p in path.iterdir()
        if p.name not in OWN_ENTRIES and not p.name.startswith(".tmp-")
    )


def _remove_own(path: Path) -> None:
    for name in OWN_ENTRIES:
        entry = path / name
        if entry.is_symlink() or entry.is_file():
            entry.unlink()
        elif entry.is_dir():
            shutil.rmtree(entry)
