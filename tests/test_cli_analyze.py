"""``onnx-am analyze`` through click's CliRunner and as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from onnx_am_cli.analyze_cmd import TEST_HOLD_ENV
from onnx_am_cli.main import cli
from torch_models import export_random

import onnx_am.audit.analyze as analyze_module
from onnx_am.reference.parity import ParityResult

#: whole audits, subprocesses or browsers: `pytest -m "not slow"` skips them
pytestmark = pytest.mark.slow

FAST = ["--steps", "5", "--restarts", "1"]


def export(module: torch.nn.Module, shape: tuple[int, ...], path) -> str:
    return export_random(module, shape, path, scale=0.3)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> str:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 2)
    )
    return export(net, (1, 4, 4), tmp_path_factory.mktemp("m") / "cnn.onnx")


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> str:
    """A 1x4x4 image in, 24 outputs: two chunks of units at 2 runs x 2 restarts.

    The default methods are standard, decoupled(0.3) and best(0.3), which shares the rows of
    the other two: 24 units give 72 results.
    """
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 24)
    )
    return export(net, (1, 4, 4), tmp_path_factory.mktemp("m") / "wide.onnx")


def invoke(*args: str):
    return CliRunner().invoke(cli, ["analyze", *args], catch_exceptions=False)


def test_json_goes_to_stdout_alone(cnn, tmp_path):
    out = tmp_path / "r"
    result = invoke(cnn, *FAST, "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc == json.loads((out / "report.json").read_text())
    methods = {r["method"] for r in doc["results"]}
    assert methods == {
        "standard",
        "decoupled(anneal(0.3->alpha))",
        "best(anneal(0.3->alpha))",
    }  # the defaults
    assert doc["status"] == "complete" and len(doc["results"]) == 2 * len(methods)


def test_summary_and_default_out_dir_in_the_working_directory(cnn, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(cnn, *FAST, "--method", "standard")
    assert result.exit_code == 0, result.stderr
    assert "report: onnx-am-report/cnn/index.html" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx-am-report"]
    assert (tmp_path / "onnx-am-report" / "cnn" / "report.json").is_file()
    quiet = invoke(cnn, *FAST, "--method", "standard", "--quiet", "--force")
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_existing_report_exits_2_and_is_kept(cnn, tmp_path):
    out = str(tmp_path / "r")
    assert invoke(cnn, *FAST, "--out", out, "--method", "standard").exit_code == 0
    before = (tmp_path / "r" / "report.json").read_bytes()
    again = invoke(cnn, *FAST, "--out", out, "--method", "standard")
    assert again.exit_code == 2
    assert again.stderr.startswith("onnx-am: error: a report already exists")
    assert (tmp_path / "r" / "report.json").read_bytes() == before
    assert invoke(cnn, *FAST, "--out", out, "--method", "standard", "--force").exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "nope:1"], "no tensor named 'nope'"),
        (["--target", "logits:7"], "logits"),
        (["--method", "sideways(1)"], "sideways"),
        (["--input-range", "1..0"], "is empty"),
        (["--mean", "0.1,0.2"], "mean has 2 values"),
    ],
)
def test_input_errors_exit_2_with_one_line(cnn, tmp_path, args, message):
    result = invoke(cnn, *FAST, "--out", str(tmp_path / "r"), *args)
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "r" / "report.json").exists()


def test_bad_option_values_are_usage_errors(cnn, tmp_path):
    assert invoke(cnn, "--backward-slope", "a,b").exit_code == 2
    assert invoke(cnn, "--input-shape", "1,x").exit_code == 2
    assert invoke(cnn, "--steps", "0").exit_code == 2


def test_cuda_unavailable_is_a_clear_error(cnn, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = invoke(cnn, *FAST, "--out", str(tmp_path / "r"), "--device", "cuda")
    assert result.exit_code == 2 and "CUDA" in result.stderr


def test_onnxruntime_disagreement_exits_3_with_the_report_written(cnn, tmp_path, monkeypatch):
    failed = ParityResult(
        max_abs_diff=0.5, max_rel_diff=0.5, passed=False, tolerance=1e-4, samples=4
    )
    monkeypatch.setattr(analyze_module, "check_parity", lambda *a, **k: failed)
    result = invoke(cnn, *FAST, "--out", str(tmp_path / "r"), "--json")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["parity"]["passed"] is False
    assert "parity check failed" in result.stderr
    assert (tmp_path / "r" / "index.html").is_file()


def test_ctrl_c_before_the_plan_exits_130_and_says_nothing_was_kept(cnn, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("onnx_am_cli.analyze_cmd.analyze", interrupted)
    result = invoke(cnn, "--out", str(tmp_path / "r"))
    assert result.exit_code == 130 and "nothing was kept" in result.stderr  # and says so
    assert "--resume" not in result.stderr


def run_cli(*args: str, hold: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(TEST_HOLD_ENV, None)
    if hold is not None:  # held at a known step until a signal comes (test-only hook)
        env[TEST_HOLD_ENV] = hold
    command = [sys.executable, "-m", "onnx_am_cli.main", "analyze", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def without_timings(doc: dict) -> dict:
    """Without what is measured (timings, the plan's step times and memory)."""
    return {k: v for k, v in doc.items() if k not in ("timings", "plan")}


def test_resume_after_sigkill_matches_an_uninterrupted_run(wide, tmp_path):
    settings = ["--steps", "200", "--restarts", "2"]
    reference = run_cli(wide, *settings, "--out", str(tmp_path / "whole"), "--json")
    killed = run_cli(wide, *settings, "--out", str(tmp_path / "cut"), "--quiet", hold="1:1")
    for line in killed.stderr:  # held in the second chunk, after the first one's results
        if b"test hold" in line:
            break
    partial = json.loads((tmp_path / "cut" / "report.json").read_text())
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert partial["status"] == "running"
    assert 0 < len(partial["results"]) < 72
    resumed = run_cli(wide, *settings, "--out", str(tmp_path / "cut"), "--resume", "--json")
    resumed_out, resumed_err = resumed.communicate(timeout=300)
    reference_out, reference_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, reference_err.decode()
    assert resumed.returncode == 0, resumed_err.decode()
    whole, again = json.loads(reference_out), json.loads(resumed_out)  # stdout is only JSON
    assert len(whole["results"]) == 72
    assert without_timings(again) == without_timings(whole)


def test_progress_bar_shows_units_steps_and_eta(capsys):
    from onnx_am_cli.progress import ProgressBar

    from onnx_am.audit.analyze import AnalyzeProgress

    event = AnalyzeProgress("optimize", 1, 4, 5, 10, 2)
    assert event.fraction == 0.5  # (1 unit + half of a 2-unit chunk) / 4
    bar = ProgressBar()
    bar.update(AnalyzeProgress("optimize", 0, 4, 0, 10, 2))
    bar.update(event)  # within 0.1 s of the last line: throttled
    assert "units 1/4" not in capsys.readouterr().err
    bar.shown -= 1.0
    bar.update(event)
    line = capsys.readouterr().err.split("\r")[-1]
    assert "units 1/4" in line and "step 5/10" in line and "ETA" in line
    assert line.count("#") == 15
