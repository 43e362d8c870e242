"""``--require``: requirements on an audit, parsed at the edge and checked on report.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from onnx_am.audit.gate import (
    REQUIREMENT_EXIT_CODE,
    Requirement,
    RequirementError,
    check_requirements,
    parse_requirement,
    requirement_fields,
)
from onnx_am.audit.summary import summarize

MODELS = Path(__file__).resolve().parents[1] / "models"


def _row(target, kind, activation, white=0.0, saturation=0.0, beats=True, agrees=True):
    method = kind if kind == "standard" else f"{kind}(0.3)"
    return {
        "target": target,
        "method": method,
        "method_kind": kind,
        "activation": activation,
        "beats_trivial": beats,
        "agrees": agrees,
        "white": white,
        "saturation": saturation,
        "picked": None,
    }


RESULTS = [
    _row("a:0", "standard", 0.0, white=1.0, saturation=1.0, beats=False),
    _row("a:0", "decoupled", 2.0),
    _row("a:1", "standard", 3.0),
    _row("a:1", "decoupled", 1.0, agrees=False),
]
DOC = {"parity": {"passed": True}, "results": RESULTS, "summary": summarize(RESULTS)}


def test_parse_once_into_a_value():
    assert parse_requirement(" white<=0.2 ") == Requirement("white", "<=", 0.2)
    assert parse_requirement("decoupled.rescued == 0") == Requirement("decoupled.rescued", "==", 0)
    assert str(parse_requirement("agrees >= 1")) == "agrees >= 1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("white", "is not of the form FIELD OP NUMBER"),
        ("white => 0.2", "is not of the form"),
        ("whte <= 0.2", "unknown field 'whte'; did you mean white"),
        ("white <= nan", "is not a finite number"),
        ("white <= abc", "is not a finite number"),
    ],
)
def test_bad_expressions_are_one_line_errors(text, message):
    with pytest.raises(RequirementError, match=message) as caught:
        parse_requirement(text)
    assert "\n" not in str(caught.value)


def test_fields_measured_from_the_report():
    fields = requirement_fields(DOC)
    assert fields["units"] == 2 and fields["results"] == 4 and fields["parity"] == 1
    assert fields["agrees"] == 0.75 and fields["beats_trivial"] == 0.75
    assert fields["white"] == 0.25 and fields["standard.white"] == 0.5
    assert fields["decoupled.white"] == 0 and fields["decoupled.agrees"] == 0.5
    assert fields["decoupled.better"] == 1 and fields["decoupled.worse"] == 1
    assert fields["decoupled.rescued"] == 1 and fields["decoupled.white_cleared"] == 1
    assert "proxy.white" not in fields and "proxy.better" not in fields


def test_checks_pass_fail_and_unmeasurable():
    checks = check_requirements(
        [
            parse_requirement("white <= 0.25"),
            parse_requirement("agrees == 1"),
            parse_requirement("proxy.rescued == 0"),
        ],
        DOC,
    )
    assert [c.passed for c in checks] == [True, False, False]
    assert checks[1].describe() == "agrees == 1 failed: agrees is 0.75"
    assert "no result to measure 'proxy.rescued'" in checks[2].describe()


def _analyze(tmp_path: Path, *requires: str) -> subprocess.CompletedProcess:
    args = [
        sys.executable, "-m", "onnx_am_cli.main", "analyze", str(MODELS / "digits_relu.onnx"),
        "--target", "logits:0-1", "--steps", "8", "--restarts", "1", "--time-budget", "none",
        "--out", str(tmp_path / "report"), "--quiet",
    ]  # fmt: skip
    for text in requires:
        args += ["--require", text]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_gate_passes_fails_and_refuses_bad_expressions(tmp_path):
    bad = _analyze(tmp_path, "whte <= 0.2")
    assert bad.returncode == 2 and "unknown field 'whte'" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "report").exists()

    done = _analyze(tmp_path, "agrees == 1", "units == 2", "results > 100")
    assert done.returncode == REQUIREMENT_EXIT_CODE, done.stderr
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(doc["results"]) == 6  # the report is written although the gate failed
    [line] = [x for x in done.stderr.splitlines() if "requirement" in x]
    assert line == "onnx-am: requirement results > 100 failed: results is 6"

    # the same report meets requirements measured from it
    white = requirement_fields(doc)["white"]
    again = _analyze(tmp_path / "again", f"white <= {white}", "agrees == 1", "units == 2")
    assert again.returncode == 0, again.stderr
