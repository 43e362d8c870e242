"""``analyze``: the plan, the time budget, progress lines, signals and checkpoints."""

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
from onnx_am_cli.progress import ProgressLines
from onnx_am_cli.signals import GracefulStop
from torch_models import export_random

import onnx_am.audit.pipeline as pipeline_module
from onnx_am.audit.analyze import AnalyzeOptions, AnalyzeProgress, analyze
from onnx_am.audit.budget import CostModel
from onnx_am.audit.planning import Measured
from onnx_am.engine.checkpoint import read_checkpoint

#: whole audits, subprocesses or browsers: `pytest -m "not slow"` skips them
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> str:
    """A 1x4x4 image in, 24 logits."""
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 24)
    )
    return export_random(net, (1, 4, 4), tmp_path_factory.mktemp("m") / "wide.onnx", scale=0.3)


def invoke(*args: str):
    return CliRunner().invoke(cli, ["analyze", *args], catch_exceptions=False)


def slow_machine(monkeypatch, seconds_per_row_step: float = 1.0) -> None:
    """Measured costs as on a machine where one row-step takes ``seconds_per_row_step``."""
    cost = CostModel(0.0, seconds_per_row_step, batch_size=16, chunk_rows=64)
    measured = Measured(cost, 16, 16 * seconds_per_row_step, 2**30)
    monkeypatch.setattr(pipeline_module, "measure_costs", lambda *a, **k: measured)


def test_dry_run_prints_the_plan_and_writes_nothing(wide, tmp_path):
    out = tmp_path / "r"
    result = invoke(wide, "--dry-run", "--out", str(out), "--steps", "7", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["units"] == 24 and plan["steps"] == 7 and plan["cuts"] == []
    assert (
        plan["runs"] == ["standard", "decoupled(anneal(0.3->alpha))"] and plan["rows"] == 24 * 2 * 3
    )
    assert plan["seconds_per_step"] > 0 and plan["peak_memory_bytes"] > 0
    for words in ("targets: logits (24)", "estimated time", "peak memory", "time budget 15m"):
        assert words in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("racing", [False, True], ids=["plain", "raced"])
def test_the_budget_cuts_in_order_and_says_so_everywhere(wide, tmp_path, monkeypatch, racing):
    slow_machine(monkeypatch)  # one unit at 3 restarts x 256 steps: about 26 minutes
    out = tmp_path / "r"
    flag = "--racing" if racing else "--no-racing"
    result = invoke(wide, "--time-budget", "10m", "--out", str(out), "--quiet", flag)
    assert result.exit_code == 0, result.stderr
    doc = json.loads((out / "report.json").read_text())
    cuts = [(c["what"], c["from"], c["to"]) for c in doc["plan"]["cuts"]]
    units = cuts[0][2]
    assert cuts == [("units", 24, units), ("restarts", 3, 1), ("steps", 256, 64)]
    expected = f"units 24 -> {units}, restarts 3 -> 1, steps 256 -> 64"
    assert f"cut to fit the time budget: {expected}" in result.stderr  # even with --quiet
    assert doc["plan"]["estimated_seconds"] <= 600  # the plan prices what it runs
    assert doc["settings"]["steps"] == 64 and doc["settings"]["asked_steps"] == 256
    targets = doc["settings"]["targets"]
    assert len(targets) == units and targets[0] == "logits:0" and targets[-1] == "logits:23"
    assert {r["method"] for r in doc["results"]} == {
        "standard",
        "decoupled(anneal(0.3->alpha))",
        "best(anneal(0.3->alpha))",
    }
    if racing:  # the plan's stages are run: the finalist takes every stage's steps
        stages = doc["plan"]["racing"]
        assert stages[0]["candidates"] > stages[-1]["candidates"] == 1
        assert len(doc["results"][0]["trace"]) == sum(s["steps"] for s in stages) + 1
    else:
        assert units == 3 and doc["plan"]["racing"] is None
        assert len(doc["results"][0]["trace"]) == 65
    html = (out / "index.html").read_text()
    assert "Cut to fit the time budget" in html and "restarts 3 &rarr; 1" in html


def test_a_budget_too_small_for_one_unit_is_an_error_naming_the_smallest(
    wide, tmp_path, monkeypatch
):
    slow_machine(monkeypatch)
    result = invoke(wide, "--time-budget", "30s", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert "smallest budget that can is --time-budget" in result.stderr
    assert not (tmp_path / "r" / "report.json").exists()
    assert invoke(wide, "--time-budget", "soon").exit_code == 2


def test_resume_keeps_the_cut_of_the_first_run(wide, tmp_path, monkeypatch):
    slow_machine(monkeypatch)
    options = AnalyzeOptions.of(time_budget=600.0)

    def stop(event: AnalyzeProgress) -> None:
        if event.phase == "optimize" and event.steps_done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        analyze(wide, options, tmp_path / "r", progress=stop)
    first = json.loads((tmp_path / "r" / "report.json").read_text())  # the stopped run's
    units = first["plan"]["cuts"][0]
    assert units["what"] == "units" and units["to"] < 24
    slow_machine(monkeypatch, 0.001)  # the machine got faster: the plan stays the same
    resumed = analyze(wide, AnalyzeOptions.of(time_budget=600.0, resume=True), tmp_path / "r")
    assert resumed.doc["settings"]["targets"] == first["settings"]["targets"]
    assert len(resumed.doc["settings"]["targets"]) == units["to"]
    assert resumed.doc["plan"]["cuts"][0] == units
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_progress_lines_show_units_elapsed_and_eta(capsys):
    now = [100.0]
    lines = ProgressLines(interval=3600, clock=lambda: now[0], started=40.0)
    lines.update(AnalyzeProgress("optimize", 0, 10, 0, 100, 5))
    now[0] = 160.0
    lines.update(AnalyzeProgress("optimize", 5, 10, 0, 100, 5))  # half done in 60 s
    assert (
        lines.line() == "onnx-am: optimize, units 5/10, chunk step 0/100, elapsed 2m00s, ETA 1:00"
    )
    with lines:
        lines.emit()
    assert capsys.readouterr().err.strip().endswith("ETA 1:00")


def test_sighup_and_sigterm_wait_for_the_step_and_sigint_twice_does_not():
    with GracefulStop() as stop:
        stop.deferring = True
        signal.raise_signal(signal.SIGHUP)  # no exception: the step finishes
        assert stop.signum == signal.SIGHUP and stop.exit_code == 129
        with pytest.raises(KeyboardInterrupt):
            stop.check()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # a second signal stops at once
    with GracefulStop() as stop, pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)  # not optimizing: at once
    assert stop.exit_code == 143


# Real processes: one chunk of 8 units x 2 methods x 2 restarts. Each run is held at a known
# step by the CLI's test-only hook (ONNX_AM_TEST_HOLD_AT) until the test has acted, so nothing
# depends on how fast the machine is; a checkpoint is written after every step. Plain restarts:
# a race's stop and resume are tested in test_racing_resume.py.
STEPS = 200
LONG = ["--steps", str(STEPS), "--restarts", "2", "--max-units", "8", "--no-racing"]
LONG += ["--method", "standard", "--method", "decoupled(0.3)", "--checkpoint-interval", "0"]


def run_cli(*args: str, hold: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(TEST_HOLD_ENV, None)
    if hold is not None:
        env[TEST_HOLD_ENV] = hold
    command = [sys.executable, "-m", "onnx_am_cli.main", "analyze", *args]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def read_until(process: subprocess.Popen, *words: str) -> list[str]:
    """stderr lines up to the first that holds every one of ``words`` (blocking reads)."""
    seen = []
    for line in process.stderr:
        seen.append(line)
        if all(word in line for word in words):
            return seen
    raise AssertionError(f"ended before {words}: {''.join(seen)}")


def measured_free(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in ("timings", "plan")}


def test_killed_then_stopped_mid_chunk_then_resumed_equals_an_uninterrupted_run(wide, tmp_path):
    whole = run_cli(wide, *LONG, "--out", str(tmp_path / "whole"), "--json")
    out = tmp_path / "r"
    killed = run_cli(wide, *LONG, "--out", str(out), "--progress-interval", "0.05", hold="0:60")
    read_until(killed, "test hold")
    read_until(killed, "onnx-am: optimize, units 0/8, chunk step 60/200")  # lines off a tty
    saved = read_checkpoint(out / "checkpoint.pt")
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=120)
    assert saved["batch"] == 0 and saved["step"] == 60
    partial = json.loads((out / "report.json").read_text())
    assert partial["status"] == "running" and partial["results"] == []  # the plan is there

    stopped = run_cli(wide, *LONG, "--out", str(out), "--resume", hold="0:120")
    read_until(stopped, "test hold")
    again = read_checkpoint(out / "checkpoint.pt")  # went on from the kill
    stopped.send_signal(signal.SIGTERM)
    _, stderr = stopped.communicate(timeout=120)
    kept = read_checkpoint(out / "checkpoint.pt")  # written at the stop, after the step
    assert again["step"] == 120 and stopped.returncode == 143 and kept["step"] == 120
    assert f"holds the running chunk at step 120 of {STEPS}" in stderr
    assert "continue with --resume" in stderr

    resumed = run_cli(wide, *LONG, "--out", str(out), "--resume", "--json")
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    reference, reference_err = whole.communicate(timeout=600)
    assert whole.returncode == 0, reference_err
    assert measured_free(json.loads(stdout)) == measured_free(json.loads(reference))
    assert not (out / "checkpoint.pt").exists()
