"""Plots of a report: input vectors, convergence, beta sweeps, contact sheets.

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

from onnx_am.render.images import DisplayDomain, image_pixels, is_image  # noqa: E402
from onnx_am.results import UnitResult  # noqa: E402

#: Units per contact sheet and per convergence plot.
SHEET_ROWS = 10
CONVERGENCE_UNITS = 16


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
        else:  # tight_layout draws the whole figure once more: slow with many panels
            fig.subplots_adjust(
                left=0.06, right=0.98, bottom=0.04, top=0.95, hspace=0.7, wspace=0.35
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=80)
    finally:
        plt.close(fig)


def plot_vector(values: np.ndarray, domain: DisplayDomain, path: Path) -> Path:
    """A non-image input as a stem plot of its elements, y-axis fixed to the domain."""
    values = _vector_pixels(np.asarray(values, dtype=np.float64).reshape(-1), domain)
    with figure(path, size=(6, 2.5)) as (_, axes):
        ax = axes[0, 0]
        ax.plot(np.arange(values.size), values, marker="." if values.size <= 64 else None, lw=1)
        ax.set_ylim(domain.low, domain.high)
        ax.set_xlabel("input element")
        ax.set_ylabel("value")
    return path


def plot_convergence(results: Sequence[UnitResult], path: Path) -> Path:
    """Best activation so far vs step, one panel per unit, one line per method."""
    by_target = _group(results, lambda r: r.target)
    targets = list(by_target)[:CONVERGENCE_UNITS]
    cols = min(4, len(targets))
    rows = -(-len(targets) // cols)
    with figure(path, rows, cols, size=(3.2 * cols, 2.4 * rows)) as (_, axes):
        for ax in axes.flat[len(targets) :]:
            ax.axis("off")
        for ax, target in zip(axes.flat, targets, strict=False):
            for result in by_target[target]:
                ax.plot(np.arange(len(result.trace)), result.trace, label=result.method, lw=1.2)
            ax.set_title(target, fontsize=8)
            ax.set_xlabel("step", fontsize=7)
            ax.tick_params(labelsize=6)
        axes.flat[0].legend(fontsize=6)
    return path


def plot_beta_sweep(results: Sequence[UnitResult], path: Path) -> Path:
    """Activation vs backward slope, thin line per unit, bold mean; standard as dashed lines."""
    with figure(path, size=(6, 3.5)) as (_, axes):
        ax = axes[0, 0]
        for kind in ("decoupled", "proxy"):
            swept = [r for r in results if r.method_kind == kind and r.backward_slope is not None]
            betas = sorted({r.backward_slope for r in swept})
            if len(betas) < 2:
                continue
            table = {(r.target, r.backward_slope): r.activation for r in swept}
            units = sorted({r.target for r in swept})
            curves = np.array([[table.get((u, b), np.nan) for b in betas] for u in units])
            for curve in curves:
                ax.plot(
                    betas, curve, lw=0.5, alpha=0.4, color="C0" if kind == "decoupled" else "C1"
                )
            ax.plot(betas, np.nanmean(curves, axis=0), lw=2.5, marker="o", label=f"{kind}: mean")
        standard = [r.activation for r in results if r.method_kind == "standard"]
        if standard:
            ax.axhline(float(np.mean(standard)), ls="--", color="k", label="standard: mean")
        ax.set_xlabel("backward slope (beta)")
        ax.set_ylabel("activation")
        ax.legend(fontsize=7)
    return path


def plot_contact_sheet(results: Sequence[UnitResult], domain: DisplayDomain, path: Path) -> Path:
    """One row per unit, one column per method: the best input and its activation."""
    by_target = _group(results, lambda r: r.target)
    methods = list(OrderedDict.fromkeys(r.method for r in results))
    rows, cols = len(by_target), len(methods)
    with figure(path, rows, cols, size=(2.0 * cols + 0.5, 2.1 * rows)) as (_, axes):
        for row, (target, unit_results) in enumerate(by_target.items()):
            per_method = {r.method: r for r in unit_results}
            for col, method in enumerate(methods):
                ax = axes[row, col]
                result = per_method.get(method)
                _draw_cell(ax, result, domain)
                label = f"{method}\n{result.activation:.4g}" if result else f"{method}\n(not run)"
                ax.set_title(f"{target}\n{label}" if col == 0 else label, fontsize=7)
    return path


def contact_sheet_pages(results: Sequence[UnitResult]) -> list[list[UnitResult]]:
    """Split results into pages of at most :data:`SHEET_ROWS` units (targets)."""
    by_target = _group(results, lambda r: r.target)
    keys = list(by_target)
    return [
        [r for key in keys[i : i + SHEET_ROWS] for r in by_target[key]]
        for i in range(0, len(keys), SHEET_ROWS)
    ]


def _draw_cell(ax, result: UnitResult | None, domain: DisplayDomain) -> None:
    if result is None or result.image is None:
        ax.axis("off")
        return
    if is_image(result.image.shape, domain.layout):
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
        ax.plot(values, lw=0.8)
        ax.set_ylim(domain.low, domain.high)
        ax.set_xticks([])
        ax.set_yticks([domain.low, domain.high])
        ax.tick_params(labelsize=5)


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
