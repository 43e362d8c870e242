"""The box the optimized input lives in, and what the model is fed.

By default (as in Linse, Barth and Martinetz) every input element lies in ``[-1, 1]`` and is
fed to the model as is. A user may state another raw range (``0..1``, ``0..255``) and the
preprocessing their model expects, a per-channel ``mean`` and ``std``: the optimized variable
then lives in the raw pixel range ``[low, high]`` and the model sees ``(x - mean) / std``.
The channel axis comes from the input's layout (axis 1 for NCHW, the last axis for NHWC), so
NHWC models need nothing from the user; a domain may name its own ``axis`` instead.

A per-dimension box ``[lo_d, hi_d]`` (:func:`per_dimension_box`, e.g. an embedding's range
over its matrix's rows) is such a domain: the raw range ``-1..1`` mapped onto each dimension
of the last axis by ``mean`` and ``std``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from onnx_am.errors import InputSpecError
from onnx_am.importer.input_spec import InputSpec

#: An element counts as saturated when it is within this fraction of the range of a bound.
SATURATION_ATOL = 1e-3

_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for an ONNX input dtype name (float32 when unknown)."""
    return _TORCH_DTYPES.get(name, torch.float32)


@dataclass(frozen=True)
class InputDomain:
    """Raw input range and optional per-channel normalisation.

    Attributes:
        low: lower bound of every raw input element.
        high: upper bound of every raw input element.
        mean: per-channel (or a single) mean subtracted before the model, or ``None``.
        std: per-channel (or a single) std divided by before the model, or ``None``.
        axis: the sample axis ``mean`` and ``std`` run along, negative (``-1``: the last);
            ``None``: the layout's channels.
    """

    low: float = -1.0
    high: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    axis: int | None = None

    def __post_init__(self):
        if not self.low < self.high:
            raise InputSpecError(f"input range {self.low}..{self.high} is empty; need low < high")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise InputSpecError(f"std {list(self.std)} must be positive")

    @property
    def mid(self) -> float:
        return (self.low + self.high) / 2

    @property
    def label(self) -> str:
        text = f"{self.low:g}..{self.high:g}"
        if self.mean is not None or self.std is not None:
            text += f" mean={list(self.mean or (0.0,))} std={list(self.std or (1.0,))}"
        return text

    def to_dict(self) -> dict:
        axis = {} if self.axis is None else {"axis": self.axis}
        return {"low": self.low, "high": self.high, "mean": self.mean, "std": self.std, **axis}

    def check(self, spec: InputSpec) -> None:
        """Raise :class:`InputSpecError` when mean/std do not fit the input's channels."""
        for name, values in (("mean", self.mean), ("std", self.std)):
            count = self._channel_count(spec)
            if values is not None and len(values) != 1 and len(values) != count:
                raise InputSpecError(
                    f"{name} has {len(values)} values but input {spec.name!r} of shape "
                    f"{list(spec.sample_shape)} ({spec.layout}) has {count} channels"
                )

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``x`` into ``[low, high]`` (the projection of projected gradient ascent)."""
        return x.clamp(self.low, self.high)

    def bounds(self, spec: InputSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element lower and upper bounds of what the model sees, one sample's shape."""
        low = torch.full(spec.sample_shape, self.low)
        high = torch.full(spec.sample_shape, self.high)
        return self.to_model(low[None], spec)[0], self.to_model(high[None], spec)[0]

    def to_model(self, x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
        """What the model gets for a raw batch ``x``: normalised, in the input's dtype."""
        if self.mean is not None:
            x = x - self._per_channel(self.mean, spec, x)
        if self.std is not None:
            x = x / self._per_channel(self.std, spec, x)
        return x.to(torch_dtype(spec.dtype))

    def saturation(self, x: torch.Tensor) -> torch.Tensor:
        """Per row: the fraction of raw elements at either bound."""
        tol = SATURATION_ATOL * (self.high - self.low)
        at_bound = (x <= self.low + tol) | (x >= self.high - tol)
        return at_bound.flatten(1).float().mean(1)

    def white(self, x: torch.Tensor) -> torch.Tensor:
        """Per row: the fraction of raw elements at the upper bound."""
        tol = SATURATION_ATOL * (self.high - self.low)
        return (x >= self.high - tol).flatten(1).float().mean(1)

    def _per_channel(
        self, values: Sequence[float], spec: InputSpec, x: torch.Tensor
    ) -> torch.Tensor:
        tensor = torch.tensor(values, dtype=x.dtype, device=x.device)
        if len(values) == 1:
            return tensor
        shape = [1] * x.dim()
        shape[_channel_axis(spec) if self.axis is None else self.axis] = len(values)
        return tensor.reshape(shape)

    def _channel_count(self, spec: InputSpec) -> int:
        if self.axis is not None and len(spec.sample_shape) >= -self.axis:
            return int(spec.sample_shape[self.axis])
        return _channel_count(spec)


def per_dimension_box(low: Sequence[float], high: Sequence[float]) -> InputDomain:
    """The box ``low[d] <= x[..., d] <= high[d]`` over the last axis: the raw range ``-1..1``,
    whose ``-1`` and ``1`` the model sees as ``low[d]`` and ``high[d]``. A dimension with
    ``low[d] == high[d]`` gets a width of 1e-6 of the widest (the model sees it constant).
    """
    low_t = torch.as_tensor(low, dtype=torch.float64)
    high_t = torch.as_tensor(high, dtype=torch.float64)
    if low_t.shape != high_t.shape or low_t.dim() != 1 or bool((high_t < low_t).any()):
        raise InputSpecError("a per-dimension box needs low <= high, one pair per dimension")
    half = (high_t - low_t) / 2
    half = half.clamp_min(1e-6 * max(float(half.max()), 1e-6))
    centre = (high_t + low_t) / 2
    std = 1.0 / half  # the model sees (x - mean) / std = centre + half * x
    mean = -centre * std
    return InputDomain(-1.0, 1.0, tuple(mean.tolist()), tuple(std.tolist()), axis=-1)


def _channel_axis(spec: InputSpec) -> int:
    """Channel axis of a batch: 1 for NCHW (and vectors: one value per feature), -1 for NHWC."""
    return -1 if spec.layout == "NHWC" else 1


def _channel_count(spec: InputSpec) -> int:
    if spec.layout in ("NCHW", "NHWC"):
        return int(spec.channels)
    return int(spec.sample_shape[0]) if spec.sample_shape else 1


def parse_domain(
    text: str | None = None,
    mean: str | Sequence[float] | None = None,
    std: str | Sequence[float] | None = None,
) -> InputDomain:
    """Build an :class:`InputDomain` from CLI-style strings.

    Args:
        text: ``"low..high"`` such as ``"0..255"``; default ``-1..1``.
        mean: ``"0.485,0.456,0.406"`` or a sequence, in raw units.
        std: same form as ``mean``.

    Raises:
        InputSpecError: malformed range or numbers.
    """
    low, high = -1.0, 1.0
    if text:
        parts = text.replace(" ", "").split("..")
        try:
            low, high = float(parts[0]), float(parts[1])
        except (ValueError, IndexError) as exc:
            raise InputSpecError(
                f"cannot parse input range {text!r}; write it like 0..255"
            ) from exc
        if len(parts) != 2:
            raise InputSpecError(f"cannot parse input range {text!r}; write it like 0..255")
    return InputDomain(low, high, _floats(mean, "mean"), _floats(std, "std"))


def _floats(value: str | Sequence[float] | None, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    items = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)
    try:
        return tuple(float(v) for v in items)
    except ValueError as exc:
        raise InputSpecError(
            f"cannot parse {name} {value!r}; write numbers separated by commas"
        ) from exc


#: Common input conventions, by name (``--preset``): raw range and normalization.
PRESETS: dict[str, InputDomain] = {
    "imagenet": InputDomain(0.0, 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "imagenet-255": InputDomain(0.0, 255.0, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "unit": InputDomain(0.0, 1.0),
    "symmetric": InputDomain(-1.0, 1.0),
}


@dataclass(frozen=True)
class DomainChoice:
    """The input domain a run uses, and where it came from.

    Attributes:
        domain: the domain.
        source: ``"given"`` (a preset or an explicit range / mean / std), ``"metadata"``
            (recorded by the producer) or ``"assumed"`` (nothing given or recorded).
        description: one line for people, e.g. ``"--preset imagenet"``.
    """

    domain: InputDomain
    source: str
    description: str

    def to_dict(self) -> dict:
        return {"source": self.source, "description": self.description, **self.domain.to_dict()}


def choose_domain(
    preset: str | None = None,
    input_range: str | None = None,
    mean: str | Sequence[float] | None = None,
    std: str | Sequence[float] | None = None,
    metadata=None,
) -> DomainChoice:
    """The domain from a preset, explicit values, or the producer's metadata, in that order.

    Explicit ``input_range`` / ``mean`` / ``std`` override the matching part of a preset.
    Without any of them, a range or normalization recorded in ``metadata``
    (:class:`~onnx_am.importer.metadata.ProducerMetadata`) is used; without that, the
    paper's ``-1..1`` box is assumed, and the choice says so.

    Raises:
        InputSpecError: an unknown preset, or malformed values.
    """
    if preset is not None and preset not in PRESETS:
        raise InputSpecError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    given = [
        text
        for text, value in (
            (f"--preset {preset}", preset),
            (f"--input-range {input_range}", input_range),
            ("--mean", mean),
            ("--std", std),
        )
        if value is not None
    ]
    if given:
        base = PRESETS[preset] if preset else InputDomain()
        explicit = parse_domain(input_range, mean, std)
        domain = InputDomain(
            explicit.low if input_range is not None else base.low,
            explicit.high if input_range is not None else base.high,
            explicit.mean if mean is not None else base.mean,
            explicit.std if std is not None else base.std,
        )
        return DomainChoice(domain, "given", " ".join(given))
    recorded = _from_metadata(metadata)
    if recorded is not None:
        return recorded
    return DomainChoice(
        InputDomain(),
        "assumed",
        "-1..1 assumed: no --preset / --input-range given and the model records none",
    )


def _from_metadata(metadata) -> DomainChoice | None:
    if metadata is None or not (metadata.input_range or metadata.mean or metadata.std):
        return None
    if metadata.input_range:
        low, high = metadata.input_range
    else:  # a mean recorded in raw units tells the pixel scale
        low, high = (0.0, 255.0) if max(metadata.mean or (0.0,)) > 1 else (0.0, 1.0)
    domain = InputDomain(low, high, metadata.mean, metadata.std)
    keys = ", ".join(f"{key}={value}" for key, value in metadata.domain_keys.items())
    return DomainChoice(domain, "metadata", f"{domain.label} from model metadata ({keys})")
