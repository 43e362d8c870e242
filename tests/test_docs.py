"""README and docs/ tell the truth: the README stays short and links every page, links
resolve, the commands and options they show exist, the benchmark results they cite exist, the
README's results figures are in the files it cites, and the defaults it states are the code's.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from onnx_am_cli.analyze_cmd import analyze_command
from onnx_am_cli.inspect_cmd import inspect_command

from onnx_am.audit.analyze import DEFAULT_MAX_UNITS, DEFAULT_RESTARTS, DEFAULT_STEPS
from onnx_am.audit.budget import DEFAULT_TIME_BUDGET, parse_duration
from onnx_am.audit.options import DEFAULT_RACING

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
COMMANDS = {"analyze": analyze_command, "inspect": inspect_command}


def _ids(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def test_readme_is_short_shows_a_report_and_links_every_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert "](docs/report.png)" in text and (ROOT / "docs" / "report.png").is_file()
    for page in DOCS:
        assert f"](docs/{page.name})" in text, f"README does not link docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_relative_links_resolve(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
        if not target.startswith(("http://", "https://")):
            assert (page.parent / target).exists(), f"{_ids(page)} links to missing {target}"


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_modules_and_result_files_named_exist(page: Path) -> None:
    text = page.read_text()
    for module in re.findall(r"python -m ((?:benchmarks\.)?\w+)", text):
        if module in ("pytest", "venv", "pip", "benchmarks.NAME"):
            continue
        assert importlib.util.find_spec(module) is not None, f"{_ids(page)}: no module {module}"
    for path in re.findall(r"benchmarks/results/[\w.\-]+\.(?:md|json|png)", text):
        assert (ROOT / path).is_file(), f"{_ids(page)} cites missing {path}"


def _command_lines(text: str) -> list[str]:
    """Every ``onnx-am analyze|inspect ...`` command shown, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return re.findall(r"onnx-am (?:analyze|inspect)\b[^\n`]*", joined)


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_options_in_commands_exist(page: Path) -> None:
    for line in _command_lines(page.read_text()):
        command = COMMANDS[line.split()[1]]
        options = (opt for param in command.params for opt in (*param.opts, *param.secondary_opts))
        known = {"--help", *options}
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line.split("#")[0]):
            assert option in known, f"{_ids(page)}: {option} is no option of: {line.strip()}"


def _results_rows() -> list[str]:
    section = README.read_text().split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return rows[1:]  # without the header


def test_readme_results_figures_come_from_the_files_cited() -> None:
    rows = _results_rows()
    assert rows
    for row in rows:
        sources = re.findall(r"`(benchmarks/results/[^`]+)`", row)
        assert sources, f"results row cites no file: {row}"
        cited = "".join((ROOT / source).read_text() for source in sources)
        measured = row.split("|")[2]
        figures = re.findall(r"\d+/\d+ \(\d+ %\)|\d+/\d+|\d\.\d{3}|\d\.\de-\d\d", measured)
        for figure in figures:
            assert figure in cited, f"{figure} is not in {', '.join(sources)}"


def test_readme_defaults_are_the_code_defaults() -> None:
    text = re.sub(r"\s+", " ", README.read_text())
    assert f"{DEFAULT_STEPS} steps, {DEFAULT_RESTARTS} restarts" in text
    assert f"up to {DEFAULT_MAX_UNITS}" in text
    budget = re.search(r"--time-budget` \(default `(\w+)`", text)
    assert budget and parse_duration(budget.group(1)) == DEFAULT_TIME_BUDGET
    raced = f"{DEFAULT_RESTARTS} restarts, raced (racing restarts:"
    assert (raced in text) == (DEFAULT_RACING is not None)
    assert ("`--no-racing` gives plain restarts" in text) == (DEFAULT_RACING is not None)
