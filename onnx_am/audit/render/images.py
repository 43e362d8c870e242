"""Inputs as pixels: the mapping of image-like inputs to PNG pixel values.

:func:`~onnx_am.audit.render.plots.save_picture` writes a PNG from these pixels for
image-like inputs and a line plot for everything else.

The mapping from the input domain to pixel values is faithful and linear: the lower bound of
the domain becomes 0, the upper bound 255, nothing is stretched to the observed range. When
the model normalizes its input (``x = (pixel - mean) / std``) the pixel value is recovered
first. Tiny inputs (8x8 digits) are enlarged with nearest-neighbour so each input element is
a visible block; the exact values are kept beside the PNG as ``.npy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onnx_am.errors import ReportError

#: PNGs are enlarged by an integer factor until their longer side reaches this many pixels.
MIN_DISPLAY_SIZE = 128


@dataclass(frozen=True)
class DisplayDomain:
    """How one input sample maps to pixel values.

    Attributes:
        low: value shown as black (0).
        high: value shown as white (255).
        layout: ``"NCHW"``, ``"NHWC"``, ``"vector"`` or ``"other"`` (of the model input).
        mean: per-channel mean the model subtracts (``None``: no normalization).
        std: per-channel std the model divides by.
    """

    low: float = -1.0
    high: float = 1.0
    layout: str = "NCHW"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        if not self.high > self.low:
            raise ReportError(f"input range {self.low}..{self.high} is empty")


def is_image(shape: Sequence[int], layout: str) -> bool:
    """Whether a sample of this shape and layout is drawn as a picture (not a plot)."""
    if layout in ("NCHW", "NHWC") and len(shape) == 3:
        return True
    return layout == "other" and len(shape) == 2


def to_hwc(sample: np.ndarray, layout: str) -> np.ndarray:
    """One sample as ``H x W x C`` (``C`` = 1 for 2-D inputs).

    Raises:
        ReportError: the sample is not image-like.
    """
    if not is_image(sample.shape, layout):
        raise ReportError(f"input of shape {list(sample.shape)} ({layout}) is not an image")
    if sample.ndim == 2:
        return sample[:, :, None]
    return np.moveaxis(sample, 0, -1) if layout == "NCHW" else sample


def to_pixel_domain(hwc: np.ndarray, domain: DisplayDomain) -> np.ndarray:
    """Undo the model's ``(pixel - mean) / std`` normalization, channel-wise."""
    values = hwc.astype(np.float64)
    if domain.std is not None:
        values = values * _per_channel(domain.std, hwc.shape[-1])
    if domain.mean is not None:
        values = values + _per_channel(domain.mean, hwc.shape[-1])
    return values


def to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low -> 0`` and ``high -> 255`` linearly, clipping outside, rounding to nearest."""
    scaled = (np.asarray(values, dtype=np.float64) - low) / (high - low) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def image_pixels(
    sample: np.ndarray, domain: DisplayDomain, min_size: int = MIN_DISPLAY_SIZE
) -> np.ndarray:
    """The displayable ``uint8`` picture of a sample: ``H x W`` (grey) or ``H x W x 3``.

    Channel counts other than 1 and 3 are shown as grey tiles side by side, one per channel.
    """
    hwc = to_pixel_domain(to_hwc(np.asarray(sample), domain.layout), domain)
    pixels = to_uint8(hwc, domain.low, domain.high)
    channels = pixels.shape[-1]
    if channels == 1:
        pixels = pixels[:, :, 0]
    elif channels != 3:
        pixels = np.concatenate([pixels[:, :, c] for c in range(channels)], axis=1)
    return upscale(pixels, min_size)


def upscale(pixels: np.ndarray, min_size: int = MIN_DISPLAY_SIZE) -> np.ndarray:
    """Enlarge by the smallest integer factor that brings the longer side to ``min_size``."""
    longest = max(pixels.shape[0], pixels.shape[1])
    factor = max(1, -(-min_size // longest))
    if factor == 1:
        return pixels
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)


def _per_channel(values: tuple[float, ...], channels: int) -> np.ndarray:
    if len(values) == 1:
        return np.full(channels, values[0])
    if len(values) != channels:
        raise ReportError(f"{len(values)} mean/std values {list(values)} for {channels} channels")
    return np.asarray(values, dtype=np.float64)
