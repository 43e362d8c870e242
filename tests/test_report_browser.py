"""The report page in a real browser: Debian's Chromium driven by playwright.

A real report of a small model (a toy ReLU net whose units are dead around every start, so
it has flagged rows, rescued units and picked ``best`` rows) is opened from disk. The test
fails on any console error or failed request, checks every picture, sorts every column and
reads the order back, filters, toggles "flagged only", opens a picture and comes back, and
compares the summary with counts computed here from report.json. Screenshots at 1280 and
390 px wide are written to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from onnx_am.audit.analyze import AnalyzeOptions, analyze

#: whole audits, subprocesses or browsers: `pytest -m "not slow"` skips them
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
MODEL = ROOT / "models" / "toy_relu_dead_d8.onnx"


def _chromium() -> str | None:
    return os.environ.get("ONNX_AM_CHROMIUM") or shutil.which("chromium")


def _require_browser():
    """The browser is part of the test setup (.ci/run installs it): missing it in CI fails."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or _chromium() is None:
        message = "playwright and Debian's chromium are needed (see .ci/run)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return sync_playwright


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "report"
    options = AnalyzeOptions.of(steps=16, restarts=1, layers=("hidden",), max_units=12)
    analyze(MODEL, options, out)
    return out


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _require_browser()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, report_dir):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto((report_dir / "index.html").as_uri())
    page.wait_for_load_state("load")
    yield page
    context.close()
    assert not problems, problems


def _doc(report_dir: Path) -> dict:
    return json.loads((report_dir / "report.json").read_text())


def _visible(page) -> list[dict]:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('#results tbody tr'))
            .filter(r => !r.hidden)
            .map(r => ({target: r.dataset.target, method: r.dataset.method,
                        flagged: r.hasAttribute('data-flagged'),
                        cells: Array.from(r.cells).map(c => c.getAttribute('data-v') ??
                                                             c.textContent.trim())}))"""
    )


def _column(page, key: str) -> int:
    return page.evaluate(f"document.querySelector('th[data-key=\"{key}\"]').cellIndex")


def _counter(page) -> str:
    return page.inner_text("#shown")


def test_every_picture_loads_and_nothing_is_fetched_from_the_network(page):
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    page.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=20_000)
    sizes = page.evaluate("Array.from(document.images).map(i => [i.src, i.naturalWidth])")
    assert len(sizes) >= 24
    assert all(width > 0 for _, width in sizes), [s for s, w in sizes if not w]
    assert all(src.startswith("file://") for src, _ in sizes)


def test_every_column_sorts_and_reverses(page):
    keys = page.evaluate(
        "Array.from(document.querySelectorAll('th.sortable')).map(t => [t.dataset.key,"
        " t.dataset.type])"
    )
    assert {k for k, _ in keys} >= {"target", "method", "gain", "flags", "steps"}
    for key, kind in keys:
        col = _column(page, key)
        for click, descending in ((1, kind == "num"), (2, kind != "num")):
            page.click(f'th[data-key="{key}"] button')
            values = [row["cells"][col] for row in _visible(page)]
            if kind == "num":
                present = [float(v) for v in values if v != ""]
                missing = [v for v in values if v == ""]
                assert values[len(present) :] == missing, (key, "missing values last")
                assert present == sorted(present, reverse=descending), (key, click)
            else:
                texts = [v.lower() for v in values]
                assert texts == sorted(texts, key=_natural, reverse=descending), (key, click)
            sort = page.get_attribute(f'th[data-key="{key}"]', "aria-sort")
            assert sort == ("descending" if descending else "ascending")


def _natural(text: str) -> list:
    import re

    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text) if p]


def test_gain_sorts_largest_first_and_flags_flagged_first(page):
    page.click('th[data-key="gain"] button')
    gains = [float(r["cells"][_column(page, "gain")]) for r in _visible(page)]
    assert gains == sorted(gains, reverse=True) and gains[0] > gains[-1]
    page.click('th[data-key="flags"] button')
    flagged = [r["flagged"] for r in _visible(page)]
    assert flagged[0] and flagged == sorted(flagged, reverse=True)


def test_header_sorts_from_the_keyboard(page):
    page.focus('th[data-key="activation"] button')
    page.keyboard.press("Enter")
    assert page.get_attribute('th[data-key="activation"]', "aria-sort") == "descending"


def test_filter_substring_and_exact_and_flagged_only(page, report_dir):
    rows = [r for r in _doc(report_dir)["results"] if r["method_kind"] != "best"]
    page.fill("#filter", "hidden:1")
    substring = {r["target"] for r in _visible(page)}
    assert substring == {"hidden:1", "hidden:10", "hidden:11"}
    page.fill("#filter", '"hidden:1"')
    assert {r["target"] for r in _visible(page)} == {"hidden:1"}
    assert _counter(page) == f"2 of {len(rows)} rows"
    page.fill("#filter", "")
    page.check("#flagged-only")
    flagged = [r for r in rows if not r["agrees"] or not r["beats_trivial"]]
    visible = _visible(page)
    assert 0 < len(flagged) < len(rows)
    assert len(visible) == len(flagged) and all(r["flagged"] for r in visible)
    assert _counter(page) == f"{len(flagged)} of {len(rows)} rows"
    page.uncheck("#flagged-only")
    assert len(_visible(page)) == len(rows)


def test_state_survives_opening_a_picture_and_going_back(page, report_dir):
    page.fill("#filter", "decoupled")
    page.check("#flagged-only")
    page.click('th[data-key="activation"] button')
    before = _visible(page)
    counter = _counter(page)
    assert before and counter != f"{len(before)} of {len(before)} rows"
    first_link = page.locator("#results tbody tr:not([hidden]) a").first
    first_link.click()
    page.wait_for_load_state("load")
    assert page.url.endswith(".png")
    page.go_back()
    page.wait_for_load_state("load")
    assert page.input_value("#filter") == "decoupled"
    assert page.is_checked("#flagged-only")
    assert _visible(page) == before
    assert _counter(page) == counter
    assert page.get_attribute('th[data-key="activation"]', "aria-sort") == "descending"


def test_summary_counts_equal_those_from_report_json(page, report_dir):
    doc = _doc(report_dir)
    rtol = doc["summary"]["tie_rtol"]
    standard = {r["target"]: r for r in doc["results"] if r["method_kind"] == "standard"}
    others = [r for r in doc["results"] if r["method_kind"] not in ("standard", "best")]
    methods = {r["method"] for r in others}
    assert methods, "the report compares at least one method with standard"
    for method in methods:
        better = worse = tie = rescued = 0
        for row in (r for r in others if r["method"] == method):
            base = standard[row["target"]]
            diff = row["activation"] - base["activation"]
            scale = max(abs(row["activation"]), abs(base["activation"]), 1e-12)
            if abs(diff) <= rtol * scale:
                tie += 1
            elif diff > 0:
                better += 1
            else:
                worse += 1
            rescued += bool(row["beats_trivial"] and not base["beats_trivial"])
        cells = page.evaluate(
            """m => Object.fromEntries(Array.from(document.querySelectorAll(
                '#summary-table tr[data-method="' + m + '"] td[data-field]')).map(
                c => [c.dataset.field, c.dataset.count ?? c.textContent.trim()]))""",
            method,
        )
        assert (int(cells["better"]), int(cells["worse"]), int(cells["tie"])) == (
            better,
            worse,
            tie,
        )
        assert int(cells["rescued"]) == rescued
        assert rescued > 0  # dead units: standard cannot move, the decoupled gradient can
    # a rescued link lands on that unit's row
    link = page.locator("#summary-table a").first
    target = link.inner_text().replace("\u200b", "")
    link.click()
    row = page.locator("#results tbody tr:target")
    assert row.get_attribute("data-target") == target


def test_layout_is_stable_and_narrow_screens_do_not_scroll_sideways(browser, report_dir):
    ARTIFACTS.mkdir(exist_ok=True)
    for width in (1280, 390):
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        page.goto((report_dir / "index.html").as_uri(), wait_until="domcontentloaded")
        early = page.evaluate("document.documentElement.scrollHeight")
        page.wait_for_load_state("load")
        page.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        late = page.evaluate("document.documentElement.scrollHeight")
        assert abs(late - early) <= 2, (width, early, late)  # sizes known before loading
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (width, overflow)
        page.screenshot(path=str(ARTIFACTS / f"report-{width}.png"), full_page=True)
        context.close()
    assert (ARTIFACTS / "report-390.png").stat().st_size > 1000
