"""The portfolio: standard, decoupled and annealed rows, per unit the highest true value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnx_am import AMConfig, import_onnx, maximize
from onnx_am.methods import STANDARD, expand_methods, method_label, portfolio_method

ROOT = Path(__file__).resolve().parents[1]
FAMILY = json.loads((ROOT / "models" / "exact_family.json").read_text())["networks"]


def test_portfolio_expands_to_three_runs_and_parses_its_slope():
    [plan] = expand_methods("portfolio")
    assert plan.label == "portfolio(0.3)" and plan.kind == "best"
    assert [method_label(m) for m in plan.runs] == [
        "standard",
        "decoupled(0.3)",
        "decoupled(anneal(1->alpha))",
    ]
    [other] = expand_methods("portfolio(0.123456789)")
    assert other.runs[1].beta == 0.123456789 and other == portfolio_method(0.123456789)
    assert other.runs[0] is STANDARD


def test_annealed_best_pairs_standard_with_the_annealed_row_and_shares_its_rows():
    """analyze's default: ``best(anneal(0.3))`` runs the same rows as standard and
    ``decoupled(anneal(0.3))`` (one row each per start), and has no single slope."""
    from onnx_am.errors import MethodError
    from onnx_am.methods import distinct_runs

    plans = expand_methods(["standard", "decoupled(anneal(0.3))", "best(anneal(0.3))"])
    assert [p.label for p in plans] == [
        "standard",
        "decoupled(anneal(0.3->alpha))",
        "best(anneal(0.3->alpha))",
    ]
    best = plans[2]
    assert best.kind == "best" and best.beta is None and best.runs[0] is STANDARD
    assert best.runs[1].anneal_to_alpha and best.runs[1].beta == 0.3
    assert [method_label(m) for m in distinct_runs(plans)] == [
        "standard",
        "decoupled(anneal(0.3->alpha))",
    ]
    with pytest.raises(MethodError, match="best\\(anneal\\(x\\)\\)"):
        expand_methods("best(anneal(x))")


@pytest.mark.parametrize("name", ["dead2_d8_relu", "peak_d6_relu"])
def test_portfolio_is_the_best_of_its_rows_and_never_below_standard(name):
    imported = import_onnx(ROOT / "models" / FAMILY[name]["file"])
    config = AMConfig.of(steps=48, restarts=2, normalize_grad=True, crosscheck=False)
    methods = ["standard", "decoupled(0.3)", "decoupled(anneal(1.0))", "portfolio"]
    found = maximize(imported, ["output:0"], methods, config)
    by_method = {r.method: r for r in found.results}
    portfolio = by_method["portfolio(0.3)"]
    rows = [by_method[m] for m in ("standard", "decoupled(0.3)", "decoupled(anneal(1->alpha))")]
    assert portfolio.activation == max(r.activation for r in rows)
    assert portfolio.picked in {r.method for r in rows}
    assert by_method[portfolio.picked].activation == portfolio.activation
    assert portfolio.activation <= FAMILY[name]["max"] * (1 + 1e-6)
    # the same rows: asking for the portfolio alone costs nothing more and finds the same
    alone = maximize(imported, ["output:0"], ["portfolio"], config).results[0]
    assert alone.activation == portfolio.activation


@pytest.mark.slow
def test_robust_transforms_report_both_activations_and_keep_values_true(tmp_path):
    from onnx_am.audit.analyze import AnalyzeOptions, analyze

    model = ROOT / "models" / "digits_relu.onnx"
    options = AnalyzeOptions.of(
        targets=("logits:0,1",), methods=("standard",), steps=8, restarts=1, robust=True
    )
    report = analyze(model, options, tmp_path / "r")
    assert report.doc["settings"]["regularizers"][:2] == ["pad(12)", "jitter(8)"]
    for entry in report.doc["results"]:
        transformed = entry["activation_transformed"]
        assert transformed is not None and transformed != entry["activation"]
        assert abs(entry["activation"] - entry["activation_onnxruntime"]) < 1e-3
    assert "under transforms" in (tmp_path / "r" / "index.html").read_text()
    plain = analyze(model, options.replaced(robust=False), tmp_path / "p")
    assert all(e["activation_transformed"] is None for e in plain.doc["results"])
    assert "under transforms" not in (tmp_path / "p" / "index.html").read_text()


def test_fourier_default_lr_is_in_parameter_units_whatever_the_range():
    from onnx_am.audit.options import DEFAULT_LR, AnalyzeOptions, analysis_config
    from onnx_am.domain import parse_domain

    domain = parse_domain("0..255")
    pixel = analysis_config(AnalyzeOptions.of(input_range="0..255"), domain)
    fourier = analysis_config(
        AnalyzeOptions.of(input_range="0..255", parameterization="fourier"), domain
    )
    assert pixel.ascent.lr == DEFAULT_LR * 127.5 and fourier.ascent.lr == DEFAULT_LR
