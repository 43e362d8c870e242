"""Rendering: faithful pixel mapping, layouts, plots, HTML that references only real files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onnx_am.errors import ReportError
from onnx_am.render.html import render_html
from onnx_am.render.images import DisplayDomain, image_pixels, save_picture, to_uint8, upscale
from onnx_am.render.plots import contact_sheet_pages, plot_beta_sweep
from onnx_am.render.site import render_site
from onnx_am.report import ReportDir
from onnx_am.results import UnitResult


def make_result(target="logits:0", method="standard", beta=None, image=None, activation=1.0):
    kind = method.split("(")[0]
    return UnitResult(
        target=target,
        tensor="logits",
        unit=int(target.split(":")[1]),
        kind="unit",
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
    for ref in refs:
        assert not ref.startswith(("http:", "https:", "//")), ref
        assert (report.root / ref).is_file(), ref
    assert "onnxruntime disagrees" in html and "no better than a trivial input" in html
    # sorted by gain, largest first
    assert html.index("logits_0__decoupled") < html.index("logits_1__decoupled")
    assert not list(Path(report.root).rglob(".tmp-*"))


def test_html_escapes_names():
    doc = {"model": {"name": "<script>x</script>"}, "results": []}
    html = render_html(doc, [])
    assert "<script>x</script>" not in html
