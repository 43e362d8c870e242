"""Optional image parameterizations from the feature-visualization literature; off by default.

The paper (and the default, ``"pixel"``) optimizes the raw input itself: projected gradient
ascent on every element, clipped to the box ``[low, high]``. Feature-visualization work
(Olah, Mordvintsev and Schubert, "Feature Visualization", Distill 2017) instead optimizes a
parameter that an image is made from, which changes the geometry of the ascent and tends to
give smoother pictures:

- ``"fourier"``: the parameter is the 2-D real spectrum of every channel, one complex
  coefficient per ``rfft2`` bin stored as ``[..., 2]`` (real, imaginary). Each bin is
  multiplied by a ``1 / f`` scale (``f`` the frequency in cycles per pixel, floored at
  ``1 / max(H, W)``, raised to ``decay_power``; the scale is normalized to mean square 1),
  so a step of the same size moves low frequencies more than high ones.
- ``"fourier+decorrelated"``: as ``"fourier"``, and the three channels of the spectrum are
  decorrelated colour components that a fixed 3 x 3 matrix mixes into RGB (the square root
  of the colour covariance of natural images, the values published with Lucid); RGB inputs
  only.

From the spatial map ``z`` (after the inverse FFT and the colour mixing) the raw input is
``low + (high - low) * sigmoid(z)``: always strictly inside the box, so no projection is
needed, and every element can approach either bound. The inverse (:meth:`from_raw`, used to
turn a start image into a parameter) pulls elements within :data:`BOUND_MARGIN` of the range
onto that margin first, because the sigmoid never reaches a bound. Whatever the
parameterization, the engine measures and reports the original network on the raw input that
the parameter produces.

Image inputs only (NCHW or NHWC); the mapping works on ``[N, C, H, W]`` and moves the channel
axis for NHWC.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from onnx_am.domain import InputDomain
from onnx_am.errors import SettingsError
from onnx_am.importer.input_spec import InputSpec

PARAMETERIZATIONS = ("pixel", "fourier", "fourier+decorrelated")

#: Start images are kept this fraction of the range away from the bounds by :meth:`from_raw`.
BOUND_MARGIN = 1e-3

#: Square root of the colour covariance of natural images, rows RGB, columns decorrelated
#: components (Olah et al. 2017; the values Lucid publishes). Normalized before use.
COLOUR_CORRELATION_SQRT = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)


def check_parameterization(name: str, spec: InputSpec | None = None) -> None:
    """Raise :class:`SettingsError` when ``name`` is unknown or does not fit the input.

    Args:
        name: one of :data:`PARAMETERIZATIONS`.
        spec: the input; ``None`` checks the name only.

    Raises:
        SettingsError: unknown name; Fourier on a non-image input; decorrelation on an input
            without exactly three channels.
    """
    if name not in PARAMETERIZATIONS:
        raise SettingsError(
            f"unknown parameterization {name!r}; choose from {', '.join(PARAMETERIZATIONS)}"
        )
    if spec is None or name == "pixel":
        return
    if spec.layout not in ("NCHW", "NHWC"):
        raise SettingsError(
            f"parameterization {name!r} needs an image input (NCHW or NHWC); input "
            f"{spec.name!r} of shape {list(spec.sample_shape)} has layout {spec.layout!r}"
        )
    if name == "fourier+decorrelated" and spec.channels != 3:
        raise SettingsError(
            f"parameterization {name!r} needs 3 colour channels; input {spec.name!r} "
            f"({spec.layout}, shape {list(spec.sample_shape)}) has {spec.channels}"
        )


def make_parameterization(
    name: str, spec: InputSpec, domain: InputDomain
) -> FourierParameterization | None:
    """The parameterization called ``name`` for this input, or ``None`` for ``"pixel"``.

    Raises:
        SettingsError: see :func:`check_parameterization`.
    """
    check_parameterization(name, spec)
    if name == "pixel":
        return None
    return FourierParameterization(spec, domain, decorrelate=name == "fourier+decorrelated")


def spectrum_scale(height: int, width: int, decay_power: float = 1.0) -> torch.Tensor:
    """The ``1 / f ** decay_power`` scale of every ``rfft2`` bin, shape ``[H, W // 2 + 1]``.

    ``f`` is the frequency in cycles per pixel, floored at ``1 / max(H, W)`` (so the DC bin
    gets the scale of the lowest frequency); the result is normalized to mean square 1.
    """
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(width, dtype=torch.float64)[None, :]
    frequency = (fx * fx + fy * fy).sqrt().clamp_min(1.0 / max(height, width))
    scale = frequency.pow(-decay_power)
    return scale / scale.pow(2).mean().sqrt()


def colour_matrix() -> torch.Tensor:
    """:data:`COLOUR_CORRELATION_SQRT` with its largest column scaled to unit norm (float64)."""
    matrix = torch.tensor(COLOUR_CORRELATION_SQRT, dtype=torch.float64)
    return matrix / matrix.norm(dim=0).max()


@dataclass
class FourierParameterization:
    """Spectrum (optionally decorrelated colour) -> sigmoid -> raw box, and back.

    Attributes:
        spec: the image input (NCHW or NHWC).
        domain: the raw box the produced images lie in.
        decorrelate: mix three decorrelated channels into RGB with :func:`colour_matrix`.
        decay_power: exponent of the ``1 / f`` scale.
    """

    spec: InputSpec
    domain: InputDomain
    decorrelate: bool = False
    decay_power: float = 1.0
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        name = "fourier+decorrelated" if self.decorrelate else "fourier"
        check_parameterization(name, self.spec)

    @property
    def image_size(self) -> tuple[int, int]:
        """Height and width."""
        shape = self.spec.sample_shape
        return (shape[1], shape[2]) if self.spec.layout == "NCHW" else (shape[0], shape[1])

    def parameter_shape(self, rows: int) -> tuple[int, ...]:
        """Shape of the parameter of ``rows`` images: ``[rows, C, H, W // 2 + 1, 2]``."""
        height, width = self.image_size
        return (rows, int(self.spec.channels), height, width // 2 + 1, 2)

    def to_raw(self, parameter: torch.Tensor) -> torch.Tensor:
        """The raw images (inside the box) a parameter makes; differentiable.

        Args:
            parameter: ``[N, C, H, W // 2 + 1, 2]``.

        Returns:
            ``[N, *sample_shape]`` in ``(low, high)``, the parameter's dtype.
        """
        scale = self._constant("scale", parameter)
        spectrum = torch.complex(parameter[..., 0], parameter[..., 1]) * scale
        z = torch.fft.irfft2(spectrum, s=self.image_size, norm="ortho")
        if self.decorrelate:
            z = torch.einsum("ck,nkhw->nchw", self._constant("colour", parameter), z)
        low, high = self.domain.low, self.domain.high
        images = low + (high - low) * torch.sigmoid(z)
        return images.movedim(1, -1) if self.spec.layout == "NHWC" else images

    def from_raw(self, images: torch.Tensor) -> torch.Tensor:
        """The parameter whose :meth:`to_raw` gives ``images`` back (bounds: see the module).

        Args:
            images: ``[N, *sample_shape]`` raw images.

        Returns:
            ``[N, C, H, W // 2 + 1, 2]``, the images' dtype.
        """
        z = images.movedim(-1, 1) if self.spec.layout == "NHWC" else images
        low, high = self.domain.low, self.domain.high
        fraction = ((z - low) / (high - low)).clamp(BOUND_MARGIN, 1 - BOUND_MARGIN)
        z = torch.logit(fraction)
        if self.decorrelate:
            z = torch.einsum("ck,nkhw->nchw", self._constant("uncolour", images), z)
        spectrum = torch.fft.rfft2(z, norm="ortho") / self._constant("scale", images)
        return torch.view_as_real(spectrum).contiguous()

    def _constant(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """``scale``, ``colour`` or its inverse ``uncolour``, in ``like``'s dtype and device."""
        key = (name, like.dtype, like.device)
        if key not in self._cache:
            if name == "scale":
                value = spectrum_scale(*self.image_size, self.decay_power)
            else:
                value = colour_matrix()
                value = torch.linalg.inv(value) if name == "uncolour" else value
            self._cache[key] = value.to(dtype=like.dtype, device=like.device)
        return self._cache[key]
