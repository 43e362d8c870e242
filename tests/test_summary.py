"""The report's summary: each method against standard on the same units."""

from __future__ import annotations

import re

from onnx_am.audit.render.html import render_html
from onnx_am.audit.summary import is_tie, summarize, summary_lines


def _row(target, method, activation, beats=True, picked=None):
    kind = method.split("(")[0]
    return {
        "target": target,
        "method": method,
        "method_kind": kind,
        "activation": activation,
        "beats_trivial": beats,
        "picked": picked,
        "gain_over_standard": None,
        "agrees": True,
        "saturation": 0.5,
        "steps_to_95": None,
        "image": None,
    }


ENTRIES = [
    _row("logits:0", "standard", 1.0),
    _row("logits:0", "decoupled(0.3)", 2.0),
    _row("logits:0", "best(0.3)", 2.0, picked="decoupled(0.3)"),
    _row("logits:1", "standard", 3.0),
    _row("logits:1", "decoupled(0.3)", 1.0),
    _row("logits:1", "best(0.3)", 3.0, picked="standard"),
    _row("logits:2", "standard", 0.0, beats=False),
    _row("logits:2", "decoupled(0.3)", 5.0),
    _row("logits:2", "best(0.3)", 5.0, picked="decoupled(0.3)"),
    _row("logits:10", "standard", 4.0),
    _row("logits:10", "decoupled(0.3)", 4.0 + 1e-6),
    _row("logits:10", "best(0.3)", 4.0 + 1e-6, picked="decoupled(0.3)"),
]


def test_counts_per_method_against_standard_exclude_best_rows():
    summary = summarize(ENTRIES)
    assert summary["units"] == 4
    [decoupled] = summary["methods"]  # best is not compared as a method of its own
    assert decoupled["method"] == "decoupled(0.3)"
    assert (decoupled["better"], decoupled["worse"], decoupled["tie"]) == (2, 1, 1)
    assert decoupled["units"] == 4
    # gains 1, -2, 5, 1e-6: median of the middle two
    assert abs(decoupled["median_gain"] - (1e-6 + 1.0) / 2) < 1e-12
    assert decoupled["rescued"] == ["logits:2"]
    [best] = summary["best"]
    assert best == {
        "method": "best(0.3)",
        "units": 4,
        "picked": {"decoupled(0.3)": 3, "standard": 1},
    }


def test_tie_is_relative():
    assert is_tie(1000.0, 1000.5) and not is_tie(1.0, 1.5)
    assert is_tie(0.0, 0.0) and not is_tie(0.0, 1e-3)


def test_terminal_lines_name_the_counts():
    line, saturation = summary_lines(summarize(ENTRIES))
    assert saturation.startswith("white / saturated results")
    assert line.startswith("decoupled(0.3) vs standard on 4 unit(s): better 2, worse 1, tie 1")
    assert "rescued 1 unit(s)" in line


def test_page_shows_summary_and_marks_best_instead_of_copying_rows():
    doc = {"model": {"name": "m"}, "results": ENTRIES, "summary": summarize(ENTRIES)}
    html = render_html(doc, [])
    rows = re.findall(r'<tr id="(row-\d+)"[^>]*data-target="([^"]*)" data-method="([^"]*)"', html)
    assert len(rows) == 8 and not any(m.startswith("best") for _, _, m in rows)
    assert "8 result(s) for 4 unit(s)" in html
    # the mark sits on the row best picked
    row_of = {(t, m): i for i, t, m in rows}
    for target, picked in [("logits:0", "decoupled(0.3)"), ("logits:1", "standard")]:
        start = html.index(f'id="{row_of[(target, picked)]}"')
        assert 'class="pick"' in html[start : html.index("</tr>", start)]
    # the rescued unit links to its row
    rescued_link = row_of[("logits:2", "decoupled(0.3)")]
    assert f'href="#{rescued_link}"' in html
    summary_row = re.search(r'<tr data-method="decoupled\(0.3\)">(.*?)</tr>', html, re.S).group(1)
    assert 'data-field="better">2<' in summary_row and 'data-field="worse">1<' in summary_row


def test_initial_order_breaks_gain_ties_naturally():
    entries = [_row(f"logits:{u}", "standard", 1.0) for u in (10, 2, 1)]
    html = render_html({"model": {"name": "m"}, "results": entries}, [])
    order = re.findall(r'data-target="(logits:\d+)"', html)
    assert order == ["logits:1", "logits:2", "logits:10"]


def test_page_names_untouched_nodes_and_states_the_parity_rule():
    doc = {
        "model": {"name": "m", "input": {"name": "x", "shape": ["unk__54", 3, 8, 8]}},
        "parity": {
            "passed": True,
            "samples": 4,
            "tolerance": 1e-4,
            "max_abs_diff": 1.7e-4,
            "outputs": [
                {"name": "y", "max_abs_diff": 1.7e-4, "max_rel_diff": 1e-5, "output_scale": 17.0}
            ],
        },
        "rewrites": {
            "rewritten": [],
            "untouched": [
                {"node": "pool_1", "op_type": "MaxPool", "output": "a"},
                {"node": "pool_2", "op_type": "MaxPool", "output": "b"},
            ],
        },
        "results": [],
        "timings": {"render": 0.5, "total": 9.0},
    }
    html = render_html(doc, [])
    assert "2 MaxPool (<code>pool_<wbr>1</code>, <code>pool_<wbr>2</code>)" in html
    assert "left untouched" not in html
    parity = re.search(r'<li id="parity">(.*?)</li>', html, re.S).group(1)
    assert "passed" in parity and "&times; max |output|" in parity and "allowed 0.001701" in parity
    assert "[batch, 3, 8, 8]" in html and "unk__54" not in html
    assert "time: render" in html and "time: total" in html


def _shaded(target, method, white, saturation):
    return {**_row(target, method, 1.0), "white": white, "saturation": saturation}


def test_white_and_saturated_counts_per_method_and_changes_per_unit():
    entries = [
        _shaded("a:0", "standard", 0.9, 1.0),  # white and saturated
        _shaded("a:0", "decoupled(0.3)", 0.1, 0.2),  # cleared
        _shaded("a:1", "standard", 0.49, 0.95),  # saturated, not white (below 0.5)
        _shaded("a:1", "decoupled(0.3)", 0.5, 0.5),  # white at exactly the threshold: caused
        _shaded("a:2", "standard", 0.0, 0.0),
        _shaded("a:2", "decoupled(0.3)", 0.0, 0.89),
    ]
    summary = summarize(entries)
    counts = {m["method"]: m for m in summary["saturation"]["methods"]}
    assert (counts["standard"]["white"], counts["standard"]["saturated"]) == (1, 2)
    assert (counts["decoupled(0.3)"]["white"], counts["decoupled(0.3)"]["saturated"]) == (1, 0)
    assert counts["standard"]["results"] == 3 and counts["standard"]["kind"] == "standard"
    [decoupled] = summary["methods"]
    assert decoupled["white_cleared"] == ["a:0"] and decoupled["white_caused"] == ["a:1"]
    text = " ".join(summary_lines(summary))
    assert "white cleared on 1, caused on 1 unit(s)" in text
    assert "standard 1 white, 2 saturated of 3" in text


def test_page_shows_white_and_saturated_counts():
    entries = [_shaded("a:0", "standard", 0.9, 1.0), _shaded("a:0", "decoupled(0.3)", 0.0, 0.0)]
    doc = {"model": {"name": "m"}, "results": entries, "summary": summarize(entries)}
    html = render_html(doc, [])
    row = re.search(r'id="saturation-table".*?<tr data-method="standard">(.*?)</tr>', html, re.S)
    assert 'data-field="white">1<' in row.group(1)
    assert "white cleared on 1 unit(s), caused on 0" in html
