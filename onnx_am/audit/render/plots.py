"""Plots of a report: input pictures, convergence, beta sweeps, contact sheets.

matplotlib runs with the Agg backend (no display); every figure is closed in ``finally``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from onnx_am.audit.render.images import (  # noqa: E402
    MIN_DISPLAY_SIZE,
    DisplayDomain,
    image_pixels,
    is_image,
)
from onnx_am.engine.results import UnitResult  # noqa: E402

#: Units (rows) per contact sheet, and at most this many panels on one sheet.
SHEET_ROWS = 10
SHEET_PANELS = 40
#: Units per convergence plot; more units go to further pages.
CONVERGENCE_UNITS = 16
#: Resolution of every plot.
DPI = 100
#: Line style per method (in order of appearance), so identical curves stay distinguishable.
LINE_STYLES = ("-", "--", ":", "-.")
#: Target names longer than this are shortened in the middle in plot titles.
TITLE_CHARS = 40


@contextmanager
def figure(
    path: Path, rows: int = 1, cols: int = 1, size: tuple[float, float] = (6, 3)
) -> Iterator:
    """A figure of ``rows x cols`` axes (a 2-D array) saved to ``path`` and always closed."""
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    try:
        yield fig, axes
        if rows * cols == 1:
            fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)


def save_picture(
    sample: np.ndarray, domain: DisplayDomain, path: Path, min_size: int = MIN_DISPLAY_SIZE
) -> Path:
    """Write one sample as a PNG: a picture for image-like inputs, a line plot otherwise.

    Args:
        sample: one input sample in the model's layout and domain (no batch dim).
        domain: the mapping to pixel values.
        path: where the PNG goes.
        min_size: enlarge tiny images to at least this many pixels.

    Returns:
        ``path``.
    """
    sample = np.asarray(sample)
    if is_image(sample.shape, domain.layout):
        Image.fromarray(image_pixels(sample, domain, min_size)).save(path, format="PNG")
    else:
        plot_vector(sample.reshape(-1), domain, path)
    return path


def plot_vector(values: np.ndarray, domain: DisplayDomain, path: Path) -> Path:
    """A non-image input as a stem plot of its elements, y-axis fixed to the domain."""
    values = _vector_pixels(np.asarray(values, dtype=np.float64).reshape(-1), domain)
    with figure(path, size=(6, 2.5)) as (_, axes):
        ax = axes[0, 0]
        ax.plot(np.arange(values.size), values, marker="." if values.size <= 64 else None, lw=1)
        ax.set_ylim(*_padded(domain))
        ax.set_xlabel("input element")
        ax.set_ylabel("value")
    return path


def plot_convergence(results: Sequence[UnitResult], path: Path) -> Path:
    """Best activation so far vs step, one panel per unit, one line per method.

    Args:
        results: the results to draw; their units should number at most
            :data:`CONVERGENCE_UNITS` (see :func:`convergence_pages`), later units are dropped.
        path: where the PNG goes.

    Returns:
        ``path``.
    """
    by_target = _group(results, lambda r: r.target.name)
    targets = list(by_target)[:CONVERGENCE_UNITS]
    methods = list(OrderedDict.fromkeys(r.method for r in results))
    cols = min(4, len(targets))
    rows = -(-len(targets) // cols)
    height = 2.3 * rows + 0.5
    with figure(path, rows, cols, size=(3.4 * cols, height)) as (fig, axes):
        fig.subplots_adjust(
            left=0.06, right=0.98, bottom=0.35 / height, top=1 - 0.55 / height,
            hspace=0.55, wspace=0.3,
        )  # fmt: skip
        for ax in axes.flat[len(targets) :]:
            ax.axis("off")
        for ax, target in zip(axes.flat, targets, strict=False):
            for result in by_target[target]:
                index = methods.index(result.method)
                ax.plot(
                    np.arange(len(result.trace)),
                    result.trace,
                    label=result.method,
                    color=f"C{index % 10}",
                    ls=LINE_STYLES[index % len(LINE_STYLES)],
                    lw=1.6,
                )
            ax.set_title(_short(target), fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
        handles = [
            plt.Line2D([], [], color=f"C{i % 10}", ls=LINE_STYLES[i % len(LINE_STYLES)], lw=1.6)
            for i in range(len(methods))
        ]
        fig.legend(handles, methods, loc="upper center", ncol=min(len(methods), 6), fontsize=9)
    return path


def convergence_pages(results: Sequence[UnitResult]) -> list[list[UnitResult]]:
    """Split results into pages of at most :data:`CONVERGENCE_UNITS` units (targets)."""
    return _pages(results, CONVERGENCE_UNITS)


def plot_beta_sweep(results: Sequence[UnitResult], path: Path) -> Path:
    """Activation vs backward slope, thin line per unit, bold mean; standard as dashed lines.

    The slope axis is logarithmic when the slopes span a factor of 5 or more; ticks sit at
    the slopes that were run.
    """
    with figure(path, size=(7, 4)) as (_, axes):
        ax = axes[0, 0]
        all_betas: set[float] = set()
        for kind, color in (("decoupled", "C0"), ("proxy", "C1")):
            swept = [r for r in results if r.method_kind == kind and r.backward_slope is not None]
            betas = sorted({r.backward_slope for r in swept})
            if len(betas) < 2:
                continue
            all_betas.update(betas)
            table = {(r.target.name, r.backward_slope): r.activation for r in swept}
            units = sorted({r.target.name for r in swept})
            curves = np.array([[table.get((u, b), np.nan) for b in betas] for u in units])
            for curve in curves:
                ax.plot(betas, curve, lw=0.6, alpha=0.35, color=color)
            mean = np.nanmean(curves, axis=0)
            label = f"{kind}: mean of {len(units)} unit(s)"
            ax.plot(betas, mean, lw=2.5, marker="o", color=color, label=label)
        standard = [r.activation for r in results if r.method_kind == "standard"]
        if standard:
            ax.axhline(float(np.mean(standard)), ls="--", color="k", label="standard: mean")
        _slope_axis(ax, sorted(all_betas))
        ax.set_xlabel("backward slope (beta)")
        ax.set_ylabel("activation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return path


def plot_contact_sheet(results: Sequence[UnitResult], domain: DisplayDomain, path: Path) -> Path:
    """One row per unit, one column per method: the best input and its activation.

    Each row is headed by the unit; each panel is titled by its method and activation, in
    red when onnxruntime disagrees and in orange when a trivial input does at least as well.
    Image inputs are drawn with nearest-neighbour interpolation.
    """
    by_target = _group(results, lambda r: r.target.name)
    methods = list(OrderedDict.fromkeys(r.method for r in results))
    vector = not any(
        r.image is not None and is_image(r.image.shape, domain.layout) for r in results
    )
    cell_w, cell_h = (2.4, 1.1) if vector else (1.6, 1.6)
    pad, head, title, gap = 0.3, 0.25, 0.4, 0.2  # inches
    row_h = head + title + cell_h + gap
    width = pad * 2 + len(methods) * (cell_w + pad)
    height = len(by_target) * row_h + gap
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    # Pictures are pasted into the drawn sheet's pixels: an axes per panel costs ~20 ms.
    pasted: list[tuple[int, int, np.ndarray]] = []
    try:
        for row, (target, unit_results) in enumerate(by_target.items()):
            top = height - gap - row * row_h
            fig.text(pad / width, (top - head * 0.8) / height, target, fontsize=10, weight="bold")
            per_method = {r.method: r for r in unit_results}
            for col, method in enumerate(methods):
                left = pad * 1.5 + col * (cell_w + pad)
                bottom = top - head - title - cell_h
                result = per_method.get(method)
                panel = (left, height - bottom - cell_h, cell_w)  # left, top (from the top), side
                picture = None if vector else _framed_picture(result, domain, panel)
                if picture is not None:
                    pasted.append(picture)
                    _cell_title(fig, result, method, panel)
                    continue
                ax = fig.add_axes((left / width, bottom / height, cell_w / width, cell_h / height))
                _draw_cell(ax, result, method, domain)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not pasted:
            fig.savefig(path, dpi=DPI)
            return path
        fig.canvas.draw()
        sheet = np.array(fig.canvas.buffer_rgba())[:, :, :3]
        for y, x, block in pasted:
            sheet[y : y + block.shape[0], x : x + block.shape[1]] = block
        Image.fromarray(sheet).save(path, format="PNG")
    finally:
        plt.close(fig)
    return path


def _px(inches: float) -> int:
    return round(inches * DPI)


def _framed_picture(
    result: UnitResult | None, domain: DisplayDomain, panel: tuple[float, float, float]
) -> tuple[int, int, np.ndarray] | None:
    """``(y, x, pixels)``: ``result``'s picture framed by one black pixel, placed in the square
    ``panel`` (inches: left, top from the sheet's top, side); ``None`` when it is no picture.

    The picture is scaled by nearest neighbour to fit the panel and centred, as ``imshow``
    with ``interpolation="nearest"`` shows it in a square axes with its frame.
    """
    if result is None or result.image is None or not is_image(result.image.shape, domain.layout):
        return None
    pixels = image_pixels(result.image, domain, min_size=1)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    left, top, side = _px(panel[0]), _px(panel[1]), _px(panel[2])
    scale = side / max(pixels.shape[0], pixels.shape[1])
    rows = max(1, round(pixels.shape[0] * scale))
    cols = max(1, round(pixels.shape[1] * scale))
    down, across = (np.arange(rows) / scale).astype(int), (np.arange(cols) / scale).astype(int)
    framed = np.zeros((rows + 2, cols + 2, 3), dtype=np.uint8)
    framed[1:-1, 1:-1] = pixels[down][:, across]
    return top + (side - rows) // 2 - 1, left + (side - cols) // 2 - 1, framed


def _cell_title(fig, result: UnitResult, method: str, panel: tuple[float, float, float]) -> None:
    """The title :func:`_draw_cell` gives a panel's axes, above the pasted picture."""
    left, top, side = panel
    color = "#b00020" if not result.agrees else "#a15c00" if not result.beats_trivial else "k"
    height = fig.get_figheight()
    x, y = (left + side / 2) / fig.get_figwidth(), (height - top + 6 / 72) / height  # pad 6 pt
    text = f"{method}\n{result.activation:.4g}"
    fig.text(x, y, text, fontsize=8, color=color, ha="center", va="bottom")


def contact_sheet_pages(results: Sequence[UnitResult]) -> list[list[UnitResult]]:
    """Split results into pages of at most :data:`SHEET_ROWS` units (targets).

    A page also holds at most :data:`SHEET_PANELS` panels (units x methods), so many
    methods mean fewer units per page (at least one).
    """
    methods = len({r.method for r in results})
    return _pages(results, max(1, min(SHEET_ROWS, SHEET_PANELS // max(methods, 1))))


def _pages(results: Sequence[UnitResult], units: int) -> list[list[UnitResult]]:
    by_target = _group(results, lambda r: r.target.name)
    keys = list(by_target)
    return [
        [r for key in keys[i : i + units] for r in by_target[key]]
        for i in range(0, len(keys), units)
    ]


def _draw_cell(ax, result: UnitResult | None, method: str, domain: DisplayDomain) -> None:
    if result is None:
        ax.set_title(f"{method}\n(not run)", fontsize=8, color="0.5")
        ax.axis("off")
        return
    color = "#b00020" if not result.agrees else "#a15c00" if not result.beats_trivial else "k"
    ax.set_title(f"{method}\n{result.activation:.4g}", fontsize=8, color=color)
    if result.image is None:
        ax.axis("off")
    elif is_image(result.image.shape, domain.layout):
        pixels = image_pixels(result.image, domain, min_size=1)
        ax.imshow(
            pixels,
            cmap="gray" if pixels.ndim == 2 else None,
            vmin=0,
            vmax=255,
            interpolation="nearest",
        )
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        values = _vector_pixels(result.image.reshape(-1).astype(np.float64), domain)
        ax.plot(values, lw=1, marker="." if values.size <= 64 else None, ms=3)
        ax.set_ylim(*_padded(domain))
        ax.set_xticks([])
        ax.set_yticks([domain.low, domain.high])
        ax.tick_params(labelsize=7)


def _padded(domain: DisplayDomain) -> tuple[float, float]:
    """The domain with a margin, so values at a bound stay visible."""
    margin = 0.06 * (domain.high - domain.low)
    return domain.low - margin, domain.high + margin


def _slope_axis(ax, betas: list[float]) -> None:
    if not betas:
        return
    if betas[0] > 0 and betas[-1] / betas[0] >= 5:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(betas)
    ax.set_xticklabels([f"{b:g}" for b in betas])


def _short(name: str, limit: int = TITLE_CHARS) -> str:
    """``name`` shortened in the middle to at most ``limit`` characters."""
    if len(name) <= limit:
        return name
    keep = limit - 1
    return name[: keep // 2] + "\u2026" + name[len(name) - (keep - keep // 2) :]


def _vector_pixels(values: np.ndarray, domain: DisplayDomain) -> np.ndarray:
    for stats, combine in ((domain.std, np.multiply), (domain.mean, np.add)):
        if stats is not None and len(stats) in (1, values.size):
            values = combine(values, np.asarray(stats, dtype=np.float64))
    return values


def _group(results: Sequence[UnitResult], key) -> OrderedDict[str, list[UnitResult]]:
    groups: OrderedDict[str, list[UnitResult]] = OrderedDict()
    for result in results:
        groups.setdefault(key(result), []).append(result)
    return groups
