"""Rendering: faithful pixel mapping, layouts, plots, HTML that references only real files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnx_am.audit.render.html import THUMB_SIZE, render_html, thumbnail_size
from onnx_am.audit.render.images import DisplayDomain, image_pixels, to_uint8, upscale
from onnx_am.audit.render.plots import (
    CONVERGENCE_UNITS,
    SHEET_PANELS,
    _short,
    contact_sheet_pages,
    convergence_pages,
    plot_beta_sweep,
    plot_contact_sheet,
    save_picture,
)
from onnx_am.audit.render.site import render_site
from onnx_am.audit.report import ReportDir
from onnx_am.engine.results import UnitResult
from onnx_am.errors import ReportError
from onnx_am.objectives import unit


def make_result(target="logits:0", method="standard", beta=None, image=None, activation=1.0):
    kind = method.split("(")[0]
    return UnitResult(
        target=unit("logits", int(target.split(":")[1])),
        method=method,
        method_kind=kind,
        backward_slope=beta,
        activation=activation,
        trace=[0.0, activation / 2, activation],
        image=image,
    )


def test_to_uint8_maps_bounds_exactly_and_clips():
    values = np.array([-1.0, 1.0, 0.0, -5.0, 5.0])
    assert to_uint8(values, -1.0, 1.0).tolist() == [0, 255, 128, 0, 255]
    assert to_uint8(np.array([0.0, 255.0, 100.0]), 0.0, 255.0).tolist() == [0, 255, 100]


def test_grey_image_is_upscaled_by_nearest_neighbour_and_values_map_linearly(tmp_path):
    sample = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 8, 8)
    path = save_picture(sample, DisplayDomain(-1, 1, "NCHW"), tmp_path / "a.png")
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (128, 128)  # 8 x 16
    assert pixels[0, 0] == 0 and pixels[-1, -1] == 255
    # every 16x16 block holds the one value of its input element
    blocks = pixels.reshape(8, 16, 8, 16)
    assert (blocks == blocks[:, :1, :, :1]).all()
    expected = to_uint8(sample[0], -1, 1)
    assert (blocks[:, 0, :, 0] == expected).all()


def test_nhwc_and_nchw_rgb_give_the_same_picture():
    rgb = np.random.default_rng(0).uniform(0, 1, size=(3, 5, 7)).astype(np.float32)
    nchw = image_pixels(rgb, DisplayDomain(0, 1, "NCHW"), min_size=1)
    nhwc = image_pixels(np.moveaxis(rgb, 0, -1), DisplayDomain(0, 1, "NHWC"), min_size=1)
    assert nchw.shape == (5, 7, 3)
    assert (nchw == nhwc).all()
    assert (nchw[:, :, 1] == to_uint8(rgb[1], 0, 1)).all()


def test_mean_std_normalisation_is_undone_before_mapping():
    pixel = np.array([[[0.0], [0.5], [1.0]]])  # H=1, W=3, one channel NHWC
    mean, std = 0.5, 0.25
    model_input = (pixel - mean) / std
    domain = DisplayDomain(0, 1, "NHWC", mean=(mean,), std=(std,))
    assert image_pixels(model_input, domain, min_size=1).tolist() == [[0, 128, 255]]


def test_vector_inputs_are_plotted(tmp_path):
    path = save_picture(np.linspace(-1, 1, 20), DisplayDomain(-1, 1, "vector"), tmp_path / "v.png")
    assert Image.open(path).size[0] > 100


def test_bad_domain_and_bad_channel_stats_raise():
    with pytest.raises(ReportError, match="1..1"):
        DisplayDomain(1, 1)
    with pytest.raises(ReportError, match="2 mean/std"):
        image_pixels(np.zeros((3, 2, 2)), DisplayDomain(0, 1, "NCHW", mean=(0.1, 0.2)))


def test_upscale_leaves_large_images_alone():
    assert upscale(np.zeros((300, 200), np.uint8)).shape == (300, 200)
    assert upscale(np.zeros((5, 10), np.uint8), 128).shape == (65, 130)


def test_contact_sheet_pages_split_by_unit():
    results = [
        make_result(f"logits:{u}", m) for u in range(23) for m in ("standard", "decoupled(0.3)")
    ]
    pages = contact_sheet_pages(results)
    assert [len(p) for p in pages] == [20, 20, 6]


def test_beta_sweep_plot_is_written(tmp_path):
    results = [make_result("logits:0", "standard", activation=1.0)]
    results += [
        make_result("logits:0", f"decoupled({b})", b, activation=1 + b) for b in (0.1, 0.3, 1.0)
    ]
    assert plot_beta_sweep(results, tmp_path / "s.png").stat().st_size > 1000


def test_site_writes_plots_and_html_referencing_only_existing_files(tmp_path):
    report = ReportDir.open(tmp_path / "r")
    images = np.random.default_rng(1).uniform(-1, 1, size=(4, 1, 8, 8)).astype(np.float32)
    results = [
        make_result("logits:0", "standard", image=images[0], activation=1.0),
        make_result("logits:0", "decoupled(0.3)", 0.3, image=images[1], activation=3.0),
        make_result("logits:1", "standard", image=images[2], activation=2.0),
        make_result("logits:1", "decoupled(0.3)", 0.3, image=images[3], activation=1.5),
    ]
    results[1].gain_over_standard = 2.0
    results[3].gain_over_standard = -0.5
    results[3].agrees = False
    results[2].beats_trivial = False
    entries = []
    for r in results:
        name = report.image_name(r)
        save_picture(r.image, DisplayDomain(), report.path(name))
        entries.append(report.result_entry(r, name))
    doc = {
        "schema_version": 1,
        "model": {"name": "m"},
        "results": entries,
        "settings": {},
        "timings": {},
    }
    report.write_json("report.json", doc)
    plots = render_site(report, doc, results, DisplayDomain())
    assert [p["path"] for p in plots] == ["plots/convergence.png", "plots/contact_sheet_1.png"]
    html = (report.root / "index.html").read_text()
    refs = set(re.findall(r'(?:src|href)="([^"]+)"', html))
    assert {"plots/convergence.png", "images/logits_0__decoupled_0.3.png"} <= refs
    ids = set(re.findall(r' id="([^"]+)"', html))
    for ref in refs:
        assert not ref.startswith(("http:", "https:", "//")), ref
        if ref.startswith("#"):
            assert ref[1:] in ids, ref  # in-page links land on a real element
        else:
            assert (report.root / ref).is_file(), ref
    # every plot has its size, so the page does not grow while it loads
    for plot in plots:
        assert plot["width"] > 0 and plot["height"] > 0
        assert f'src="{plot["path"]}" alt="{plot["title"]}" width="{plot["width"]}"' in html
    assert "onnxruntime disagrees" in html and "no better than a trivial input" in html
    # sorted by gain, largest first
    assert html.index("logits_0__decoupled") < html.index("logits_1__decoupled")
    assert not list(Path(report.root).rglob(".tmp-*"))


def test_html_escapes_names():
    doc = {"model": {"name": "<script>x</script>"}, "results": []}
    html = render_html(doc, [])
    assert "<script>x</script>" not in html


def test_contact_sheet_pages_hold_at_most_sheet_panels_panels():
    methods = ["standard"] + [f"decoupled({b})" for b in (0.1, 0.3, 1.0)]
    methods += [f"proxy({b})" for b in (0.1, 0.3, 1.0)]
    results = [make_result(f"logits:{u}", m) for u in range(12) for m in methods]
    pages = contact_sheet_pages(results)
    per_page = SHEET_PANELS // len(methods)  # 5 units of 7 methods
    assert [len(p) // len(methods) for p in pages] == [per_page, per_page, 12 - 2 * per_page]
    assert all(len(p) <= SHEET_PANELS for p in pages)
    # units are never split across pages
    assert [r.target.name for r in pages[1][:1]] == [f"logits:{per_page}"]


@pytest.mark.slow
def test_convergence_is_split_into_pages_not_cut(tmp_path):
    results = [make_result(f"logits:{u}", m) for u in range(42) for m in ("standard", "best")]
    pages = convergence_pages(results)
    assert [len(p) // 2 for p in pages] == [CONVERGENCE_UNITS, CONVERGENCE_UNITS, 10]
    report = ReportDir.open(tmp_path / "r")
    plots = render_site(report, {"model": {"name": "m"}, "results": []}, results, DisplayDomain())
    names = [p["path"] for p in plots if "onvergence" in p["path"]]
    assert names == ["plots/convergence.png", "plots/convergence_2.png", "plots/convergence_3.png"]
    titles = [p["title"].split(":")[0] for p in plots[:3]]
    assert titles == ["Convergence (1/3)", "Convergence (2/3)", "Convergence (3/3)"]


def test_contact_sheet_has_readable_panels(tmp_path):
    image = np.random.default_rng(2).uniform(-1, 1, size=(1, 28, 28)).astype(np.float32)
    results = [
        make_result(f"/features/relu2/Relu_output_0:{u}", m, image=image)
        for u in range(10)
        for m in ("standard", "decoupled(0.3)", "best(0.3)")
    ]
    path = plot_contact_sheet(results, DisplayDomain(), tmp_path / "c.png")
    width, height = Image.open(path).size
    # every 28x28 input gets at least 4 screen pixels per input pixel
    assert width >= 3 * 28 * 4 and height >= 10 * 28 * 4


def test_long_titles_are_shortened_in_the_middle():
    name = "/features/block4/conv2/Relu_output_0:123"
    assert _short(name, 20) == "/features\u2026tput_0:123" and len(_short(name, 20)) == 20
    assert _short("logits:3") == "logits:3"


def test_thumbnails_are_integer_multiples_or_smooth():
    assert thumbnail_size(8, 8) == {"width": 80, "height": 80, "pixelated": True}
    assert thumbnail_size(28, 28) == {"width": 56, "height": 56, "pixelated": True}
    assert thumbnail_size(300, 200) == {"width": THUMB_SIZE, "height": 53, "pixelated": False}
    assert thumbnail_size(0, 0, pixels=False) == {"width": 200, "height": None, "pixelated": False}
    # a plot keeps its aspect ratio, so the page knows its height before it loads
    assert thumbnail_size(640, 240, pixels=False) == {
        "width": 200,
        "height": 75,
        "pixelated": False,
    }


def _entry(target, method, gain, **extra):
    entry = {
        "target": target,
        "method": method,
        "activation": 1.0,
        "activation_onnxruntime": 1.0,
        "gain_over_standard": gain,
        "agrees": True,
        "beats_trivial": True,
        "saturation": 0.25,
        "steps_to_95": 3,
        "image": f"images/{target}__{method}.png",
    }
    return {**entry, **extra}


def test_results_table_is_sortable_by_gain_and_filterable():
    results = [
        _entry("logits_0", "standard", 0.0),
        _entry("logits_0", "decoupled", 2.5, beats_trivial=False),
        _entry("logits_1", "decoupled", None, saturation=None, steps_to_95=None),
    ]
    thumbs = {"images/logits_0__standard.png": thumbnail_size(8, 8)}
    html = render_html({"model": {"name": "m"}, "results": results}, [], thumbs)
    gain_header = re.search(r"<th[^>]*data-key=\"gain\"[^>]*>", html).group(0)
    assert 'class="sortable"' in gain_header and 'data-type="num"' in gain_header
    assert 'aria-sort="descending"' in gain_header
    # gain as a full-precision data attribute, missing values empty (not "None")
    cells = re.findall(r'<td class="num[^"]*" data-v="([^"]*)">', html)
    assert cells[2::6] == ["2.5", "0.0", ""]
    assert "None" not in html
    assert 'id="filter"' in html and 'id="flagged-only"' in html
    assert html.count('data-flagged="1"') == 1
    assert 'class="am pixelated" src="images/logits_0__standard.png" width="80" height="80"' in html
    assert "image-rendering: pixelated" in html
    assert "addEventListener" in html and "aria-sort" in html


def test_html_needs_no_network():
    doc = {"model": {"name": "m"}, "results": [_entry("logits_0", "standard", 0.0)]}
    html = render_html(doc, [{"title": "t", "path": "plots/convergence.png"}])
    assert not re.search(r"(?:https?:)?//[a-z]", html, re.IGNORECASE)
    assert "<link" not in html and "@import" not in html
    assert not re.search(r"<script[^>]+src=", html)


def test_checks_summarise_flags_at_the_top():
    results = [
        _entry("logits_0", "standard", 0.0, agrees=False),
        _entry("logits_0", "decoupled", 1.0, beats_trivial=False),
        _entry("logits_1", "decoupled", 1.0),
    ]
    doc = {"model": {"name": "m"}, "parity": {"passed": False}, "results": results}
    html = render_html(doc, [])
    top = html[: html.index('id="results"')]
    assert "FAILED" in top and "1 of 3" in top
    assert top.count("1 of 3") == 2
