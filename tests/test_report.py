"""The report directory: overwrite protection, resume checks, atomic writes, round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onnx_am.audit.report import REPORT_FILE, SCHEMA_VERSION, ReportDir, json_safe, safe_name
from onnx_am.engine.results import UnitResult
from onnx_am.errors import ReportError
from onnx_am.objectives import Target, neuron


def write_report(root, settings=None, sha="abc", results=()):
    report = ReportDir.open(root, force=True)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "model": {"sha256": sha},
        "settings": settings or {"steps": 4},
    }
    doc["results"] = list(results)
    report.write_json(REPORT_FILE, doc)
    return report


def test_fresh_directory_is_created(tmp_path):
    report = ReportDir.open(tmp_path / "a" / "b")
    assert (report.root / "images").is_dir() and (report.root / "plots").is_dir()
    assert report.previous is None


def test_existing_report_is_not_overwritten_without_force(tmp_path):
    write_report(tmp_path)
    with pytest.raises(ReportError, match="--force"):
        ReportDir.open(tmp_path)
    assert json.loads((tmp_path / REPORT_FILE).read_text())["settings"] == {"steps": 4}


def test_force_removes_only_report_files(tmp_path):
    write_report(tmp_path)
    (tmp_path / "images" / "x.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("mine")
    report = ReportDir.open(tmp_path, force=True)
    assert not (tmp_path / REPORT_FILE).exists()
    assert not (tmp_path / "images" / "x.png").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert report.previous is None


def test_foreign_directory_is_refused_without_force(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(ReportError, match="thesis.tex"):
        ReportDir.open(tmp_path)
    with pytest.raises(ReportError, match="thesis.tex"):
        ReportDir.open(tmp_path, resume=True)


def test_force_and_resume_contradict(tmp_path):
    with pytest.raises(ReportError, match="contradict"):
        ReportDir.open(tmp_path, force=True, resume=True)


def test_resume_refuses_other_settings_and_other_model(tmp_path):
    write_report(tmp_path, {"steps": 4, "seed": 0})
    report = ReportDir.open(tmp_path, resume=True)
    report.check_resumable("abc", {"steps": 4, "seed": 0})
    with pytest.raises(ReportError, match=r"steps: 4 -> 8"):
        report.check_resumable("abc", {"steps": 8, "seed": 0})
    with pytest.raises(ReportError, match="another model"):
        report.check_resumable("def", {"steps": 4, "seed": 0})


def test_a_plain_report_is_resumed_with_no_racing_and_the_refusal_says_so(tmp_path):
    """Reports made before racing was the default hold no racing setting."""
    write_report(tmp_path, {"steps": 4})
    report = ReportDir.open(tmp_path, resume=True)
    report.check_resumable("abc", {"steps": 4, "racing": None})  # what --no-racing records
    with pytest.raises(ReportError, match="plain restarts: add --no-racing to continue it"):
        report.check_resumable("abc", {"steps": 4, "racing": {"candidates": 16}})


def test_result_round_trip_through_json_and_npy(tmp_path):
    report = ReportDir.open(tmp_path)
    image = np.random.default_rng(0).normal(size=(1, 3, 3)).astype(np.float32)
    result = UnitResult(
        neuron("out", 2, 1, 0),
        "decoupled(0.3)",
        "decoupled",
        0.3,
        1.2345678901234567,
        activation_onnxruntime=1.2345678,
        trace=[0.1, 1 / 3],
        restart_activations=[1.0, 0.5],
        steps_to_95=1,
        image=image,
    )
    name = report.image_name(result)
    np.save(report.path(name).with_suffix(".npy"), image)
    entry = report.result_entry(result, name)
    assert entry["image"] == "images/out_2_1_0__decoupled_0.3.png"
    assert entry["npy"] == "images/out_2_1_0__decoupled_0.3.npy"
    assert (entry["target"], entry["tensor"], entry["unit"], entry["kind"]) == (
        "out:2@1,0",
        "out",
        2,
        "neuron",
    )
    report.write_json(REPORT_FILE, {"schema_version": SCHEMA_VERSION, "results": [entry]})
    back = ReportDir.open(tmp_path, resume=True).done_results()[0]
    assert back.target == result.target == Target("out", 2, "neuron", (1, 0))
    assert back.activation == result.activation and back.trace == result.trace
    assert back.image.dtype == np.float32 and (back.image == image).all()


def test_paths_outside_the_report_are_refused(tmp_path):
    report = ReportDir.open(tmp_path / "r")
    with pytest.raises(ReportError, match="outside"):
        report.write_text("../escape.txt", "x")
    assert not (tmp_path / "escape.txt").exists()
    assert "/" not in safe_name("../../etc/passwd")


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    report = ReportDir.open(tmp_path)
    report.write_text("index.html", "old")

    def broken(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        report.write_with("index.html", broken)
    assert (tmp_path / "index.html").read_text() == "old"
    assert not list(tmp_path.glob(".tmp-*"))


def test_json_is_strict():
    assert json_safe({"a": float("nan"), "b": [np.float32(1.5), float("inf")]}) == {
        "a": None,
        "b": [1.5, None],
    }


def test_written_files_get_the_usual_mode_not_mkstemps_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        report = write_report(tmp_path)
    finally:
        os.umask(old)
    assert (report.root / REPORT_FILE).stat().st_mode & 0o777 == 0o644
