"""The README's Python API example runs as written and does what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a whole audit of a sample model
def test_python_api_example_runs(monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    report = namespace["report"]
    assert len(report.results) == 14 * 3  # 10 logits + 4 channels, three methods
    assert all(r.agrees for r in report.results)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(report.results) and printed[0].startswith("logits:0 standard")
