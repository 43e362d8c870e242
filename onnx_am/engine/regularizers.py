"""Optional image priors for activation maximization; all off by default.

The paper optimizes the raw objective; these exist for users who want smoother pictures.
None of them changes the value that is reported: the engine always measures the original
network on the unregularized input. Each regularizer may

- ``transform`` the model input before the gradient forward (``jitter``, ``pad``,
  ``scale``, ``rotate``: the transformation robustness of lucid / lucent,
  :data:`ROBUST_TRANSFORMS`),
- add a ``penalty`` per row that the gradient step subtracts (``l2``, ``tv``),
- ``smooth`` the raw input after each step (``blur``).

Spatial ones need an image input (NCHW or NHWC). Strings: ``"jitter(2)"``, ``"blur(0.5)"``,
``"l2(0.01)"``, ``"tv(0.1)"``. Fourier / decorrelated parameterizations are in
:mod:`onnx_am.engine.parameterizations`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from onnx_am.errors import OnnxAmError, SettingsError
from onnx_am.importer.input_spec import InputSpec

REGISTRY: dict[str, type[Regularizer]] = {}


def register(name: str):
    """Class decorator: make a regularizer available under ``name``; duplicates fail."""

    def decorate(cls):
        if name in REGISTRY:
            raise OnnxAmError(f"regularizer {name!r} registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return decorate


@dataclass(frozen=True)
class Regularizer:
    """Base class: every hook is a no-op. ``strength`` is the one parameter."""

    strength: float
    name = "none"

    @property
    def label(self) -> str:
        return f"{self.name}({self.strength:g})"

    def transform(
        self, x: torch.Tensor, spec: InputSpec, generator: torch.Generator
    ) -> torch.Tensor:
        return x

    def penalty(self, x: torch.Tensor, spec: InputSpec) -> torch.Tensor | None:
        """Per-row penalty of the raw input centred on the box middle, or ``None``."""
        return None

    def smooth(self, x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
        return x


def _spatial_dims(spec: InputSpec, name: str) -> tuple[int, int]:
    """Height and width axes of a batch of the input."""
    if spec.layout == "NCHW":
        return 2, 3
    if spec.layout == "NHWC":
        return 1, 2
    raise SettingsError(
        f"regularizer {name!r} needs an image input; input layout is {spec.layout!r}"
    )


@register("jitter")
class Jitter(Regularizer):
    """Roll the model input by up to ``strength`` pixels per step (one shift per step)."""

    def transform(self, x, spec, generator):
        dims = _spatial_dims(spec, self.name)
        limit = int(self.strength)
        shifts = torch.randint(-limit, limit + 1, (2,), generator=generator).tolist()
        return torch.roll(x, shifts=shifts, dims=dims)


def _affine(x: torch.Tensor, spec: InputSpec, name: str, theta: torch.Tensor) -> torch.Tensor:
    """Resample the images of a batch with one 2x3 affine matrix (border values repeat)."""
    h, w = _spatial_dims(spec, name)
    channels_last = (h, w) == (1, 2)
    images = x.movedim(-1, 1) if channels_last else x
    grid = torch.nn.functional.affine_grid(
        theta.to(images.dtype).expand(images.shape[0], 2, 3), list(images.shape), False
    )
    out = torch.nn.functional.grid_sample(
        images, grid.to(images.device), mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.movedim(1, -1) if channels_last else out


@register("scale")
class Scale(Regularizer):
    """Zoom the model input by a random factor in ``[1 - strength, 1 + strength]`` per step
    (about the centre, bilinear, borders repeated), as lucid's ``random_scale``."""

    def transform(self, x, spec, generator):
        factor = 1 + (torch.rand((), generator=generator).item() * 2 - 1) * self.strength
        theta = torch.tensor([[1 / factor, 0.0, 0.0], [0.0, 1 / factor, 0.0]])
        return _affine(x, spec, self.name, theta)


@register("rotate")
class Rotate(Regularizer):
    """Rotate the model input by a random angle in ``[-strength, strength]`` degrees per step
    (about the centre, bilinear, borders repeated), as lucid's ``random_rotate``."""

    def transform(self, x, spec, generator):
        angle = math.radians((torch.rand((), generator=generator).item() * 2 - 1) * self.strength)
        cos, sin = math.cos(angle), math.sin(angle)
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]])
        return _affine(x, spec, self.name, theta)


@register("pad")
class Pad(Regularizer):
    """Pad by ``strength`` pixels (edge values) and crop back at a random offset: a shift
    that fills with the border instead of wrapping around (lucid's ``pad`` + ``jitter``)."""

    def transform(self, x, spec, generator):
        h, w = _spatial_dims(spec, self.name)
        limit = int(self.strength)
        if limit <= 0:
            return x
        dy, dx = torch.randint(0, 2 * limit + 1, (2,), generator=generator).tolist()
        channels_last = (h, w) == (1, 2)
        images = x.movedim(-1, 1) if channels_last else x
        padded = torch.nn.functional.pad(images, (limit,) * 4, mode="replicate")
        height, width = images.shape[2], images.shape[3]
        out = padded[:, :, dy : dy + height, dx : dx + width]
        return out.movedim(1, -1) if channels_last else out


#: The transformation-robustness set lucid / lucent use by default, as regularizer strings.
ROBUST_TRANSFORMS = ("pad(12)", "jitter(8)", "scale(0.1)", "rotate(10)", "jitter(4)")


@register("l2")
class L2(Regularizer):
    """Penalty ``strength * mean((x - mid)^2)`` per row (the engine passes ``x - mid``)."""

    def penalty(self, x, spec):
        return self.strength * x.flatten(1).pow(2).mean(1)


@register("tv")
class TotalVariation(Regularizer):
    """Penalty ``strength * mean |neighbour differences|`` per row (anisotropic TV)."""

    def penalty(self, x, spec):
        h, w = _spatial_dims(spec, self.name)
        dy = x.diff(dim=h).abs().flatten(1).mean(1)
        dx = x.diff(dim=w).abs().flatten(1).mean(1)
        return self.strength * (dx + dy)


@register("blur")
class Blur(Regularizer):
    """After each step mix ``strength`` of a 3x3 box blur into the raw input."""

    def smooth(self, x, spec):
        h, w = _spatial_dims(spec, self.name)
        channels_last = (h, w) == (1, 2)
        images = x.movedim(-1, 1) if channels_last else x
        kernel = torch.full((images.shape[1], 1, 3, 3), 1 / 9, dtype=x.dtype, device=x.device)
        padded = torch.nn.functional.pad(images, (1, 1, 1, 1), mode="replicate")
        blurred = torch.nn.functional.conv2d(padded, kernel, groups=images.shape[1])
        blurred = blurred.movedim(1, -1) if channels_last else blurred
        return (1 - self.strength) * x + self.strength * blurred


_SPEC_RE = re.compile(r"^([a-z0-9_]+)\(([^)]*)\)$")


def parse_regularizer(text: str) -> Regularizer:
    """Parse ``"name(strength)"``.

    Raises:
        SettingsError: unknown name or malformed strength.
    """
    match = _SPEC_RE.match(text.strip().lower().replace(" ", ""))
    if not match or match.group(1) not in REGISTRY:
        raise SettingsError(
            f"unknown regularizer {text!r}; choose from {', '.join(sorted(REGISTRY))}, e.g. tv(0.1)"
        )
    try:
        strength = float(match.group(2))
    except ValueError as exc:
        raise SettingsError(f"cannot parse the strength of regularizer {text!r}") from exc
    return REGISTRY[match.group(1)](strength)
