"""What producers record about a model in ``metadata_props``, read safely.

Exporters store facts a person would otherwise have to guess: the image size a detector was
trained at (``imgsz``), the class names (``names``), and the pixel range or normalization
(ONNX's own ``Image.NominalPixelRange`` convention, or ``mean`` / ``std``). Values are
strings; structured ones are parsed with :func:`ast.literal_eval` (literals only, never
code) or JSON. Anything unreadable is ignored, never guessed.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field

import onnx

#: ONNX metadata convention (onnx/docs/MetadataProps.md): ``Image.NominalPixelRange``.
NOMINAL_PIXEL_RANGES = {
    "NominalRange_0_255": (0.0, 255.0),
    "Normalized_0_1": (0.0, 1.0),
    "Normalized_1_1": (-1.0, 1.0),
}
_IMAGE_SIZE_KEYS = ("imgsz", "image_size", "img_size", "input_size")
_NAMES_KEYS = ("names", "class_names", "classes", "labels")
_RANGE_KEYS = ("Image.NominalPixelRange",)
_MEAN_KEYS = ("mean", "Image.Mean")
_STD_KEYS = ("std", "Image.Std")
_DOMAIN_KEYS = (*_RANGE_KEYS, *_MEAN_KEYS, *_STD_KEYS)
#: Class names beyond this many are not kept (a label file, not metadata).
MAX_CLASS_NAMES = 100_000
#: Longer metadata values are not parsed.
MAX_VALUE_CHARS = 2_000_000


@dataclass(frozen=True)
class ProducerMetadata:
    """What was read from ``metadata_props``; ``None`` where nothing usable was recorded.

    Attributes:
        image_size: ``(height, width)`` the model was exported for.
        class_names: unit index -> name of the model's classes.
        input_range: ``(low, high)`` of the raw pixels.
        mean, std: per-channel normalization in raw units.
        keys: every metadata key that was used, with its value, for the report.
    """

    image_size: tuple[int, int] | None = None
    class_names: dict[int, str] | None = None
    input_range: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def domain_keys(self) -> dict[str, str]:
        """The used keys that describe the input domain (range, mean, std)."""
        return {k: v for k, v in self.keys.items() if k in _DOMAIN_KEYS}

    def to_dict(self) -> dict:
        return {
            "image_size": list(self.image_size) if self.image_size else None,
            "class_names": len(self.class_names) if self.class_names else 0,
            "input_range": list(self.input_range) if self.input_range else None,
            "mean": list(self.mean) if self.mean else None,
            "std": list(self.std) if self.std else None,
            "keys": {k: (v if len(v) <= 80 else v[:77] + "...") for k, v in self.keys.items()},
        }


def read_metadata(model: onnx.ModelProto) -> ProducerMetadata:
    """Read the facts onnx-am uses from the model's ``metadata_props``."""
    props = {entry.key: entry.value for entry in model.metadata_props}
    used: dict[str, str] = {}
    image_size = _first(props, _IMAGE_SIZE_KEYS, _image_size, used)
    names = _first(props, _NAMES_KEYS, _class_names, used)
    input_range = _first(props, _RANGE_KEYS, NOMINAL_PIXEL_RANGES.get, used)
    mean = _first(props, _MEAN_KEYS, _floats, used)
    std = _first(props, _STD_KEYS, _floats, used)
    return ProducerMetadata(image_size, names, input_range, mean, std, used)


def _first(props: dict[str, str], keys, parse, used: dict[str, str]):
    for key in keys:
        if key in props:
            value = parse(props[key])
            if value is not None:
                used[key] = props[key]
                return value
    return None


def _literal(text: str):
    if len(text) > MAX_VALUE_CHARS:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _image_size(text: str) -> tuple[int, int] | None:
    value = _literal(text)
    if isinstance(value, int):
        value = [value, value]
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and 0 < v <= 65536 for v in value)
    ):
        return int(value[0]), int(value[1])
    return None


def _class_names(text: str) -> dict[int, str] | None:
    value = _literal(text)
    if isinstance(value, list | tuple):
        value = dict(enumerate(value))
    if not isinstance(value, dict) or not 0 < len(value) <= MAX_CLASS_NAMES:
        return None
    try:
        return {int(k): str(v) for k, v in value.items()}
    except (TypeError, ValueError):
        return None


def _floats(text: str) -> tuple[float, ...] | None:
    value = _literal(text)
    if isinstance(value, int | float):
        value = [value]
    if isinstance(value, list | tuple) and 0 < len(value) <= 4:
        try:
            return tuple(float(v) for v in value)
        except (TypeError, ValueError):
            return None
    return None
