"""What activation maximization maximizes: units of ONNX tensors, addressed by ONNX name.

A :class:`Target` reads one ONNX tensor (as Netron names it) and reduces it, per batch row,
to one scalar:

- ``unit``: one entry of an output vector (a 2-D tensor ``[N, units]``), ``"logits:3"``;
- ``channel``: the mean over space of one channel, ``"conv3_out:12"`` on a 3-D or more tensor;
- ``neuron``: one channel at one spatial position, ``"conv3_out:12@4,4"`` or ``"...@center"``;
- ``class``: one entry of the last axis, averaged over the axes between the batch and it:
  a class of a sequence's per-step scores ``[N, T, C]`` over time, ``"probs:3@last"``.

The channel axis is **axis 1** for every tensor of three or more dims, as in the ONNX graph
itself. Models converted from TensorFlow (tf2onnx) transpose their NHWC input to NCHW right
after the input, so their internal tensors are NCHW as well; a tensor still in NHWC (before
that Transpose) would have its height on axis 1.

Strings accept lists and ranges: ``"conv3_out:0-63"``, ``"logits:1,3,5"``, and a bare tensor
name (``"logits"``) means all its units up to a cap. Tensor names may themselves contain
``:`` (``"dense/Relu:0"``); the unit part is what follows the last ``:``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from onnx_am.errors import TargetError

if TYPE_CHECKING:
    from onnx_am.importer.model import ImportedModel

TARGET_KINDS = ("unit", "channel", "neuron", "class")


@dataclass(frozen=True)
class Target:
    """One scalar objective: a unit of an ONNX tensor.

    Attributes:
        tensor: the ONNX tensor name it reads.
        unit: unit index (entry of a vector, or channel).
        kind: ``"unit"``, ``"channel"``, ``"neuron"`` or ``"class"`` (last axis).
        position: spatial index of a neuron (one int per spatial dim), else ``None``.
    """

    tensor: str
    unit: int
    kind: str = "unit"
    position: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        """Canonical string form, e.g. ``"logits:3"`` or ``"conv3:12@4,4"``."""
        text = f"{self.tensor}:{self.unit}"
        if self.kind == "class":
            return text + "@last"
        if self.position is not None:
            text += "@" + ",".join(str(p) for p in self.position)
        return text

    @property
    def tensors(self) -> tuple[str, ...]:
        """The ONNX tensors this objective reads (the engine extracts only these)."""
        return (self.tensor,)

    def value(self, tensor: torch.Tensor) -> torch.Tensor:
        """The objective for every row of a batch of ``tensor``; shape ``[batch]``."""
        return _reduce(tensor, self.kind, self.position)[:, self.unit]


def unit(tensor: str, index: int) -> Target:
    """Entry ``index`` of a vector-valued tensor ``[N, units]``."""
    return Target(tensor, int(index), "unit")


def channel(tensor: str, index: int) -> Target:
    """Channel ``index`` (axis 1) of a tensor, averaged over all remaining axes."""
    return Target(tensor, int(index), "channel")


def neuron(tensor: str, index: int, *position: int) -> Target:
    """Channel ``index`` at one spatial position (e.g. ``y, x``); give none for the centre."""
    return Target(tensor, int(index), "neuron", tuple(int(p) for p in position) or None)


def last_axis(tensor: str, index: int) -> Target:
    """Entry ``index`` of the last axis, averaged over the axes between (over time)."""
    return Target(tensor, int(index), "class")


def _reduce(tensor: torch.Tensor, kind: str, position: tuple[int, ...] | None) -> torch.Tensor:
    """Reduce a batch ``[N, C, ...]`` to ``[N, C]`` as the target kind says (``class``:
    ``[N, ..., C]`` to ``[N, C]``)."""
    if tensor.dim() == 1:
        return tensor.unsqueeze(1)
    if kind == "class" and tensor.dim() > 2:
        return tensor.flatten(1, -2).mean(1)
    if kind == "neuron":
        if position is None:
            position = tuple(size // 2 for size in tensor.shape[2:])
        index = (slice(None), slice(None), *position)
        return tensor[index]
    if tensor.dim() == 2:
        return tensor
    return tensor.flatten(2).mean(2)


class RowObjective:
    """Objective of row ``i`` of a batch is ``targets[i]``; call it on the tensors.

    Rows are grouped once by (tensor, kind, position), so each call costs one reduction and
    one gather per group; a batch of many units of one tensor is a single group.

    Args:
        targets: one target per batch row.
        device: where the index tensors live (that of the tensors it will be called on).
    """

    def __init__(self, targets: Sequence[Target], device: torch.device | str = "cpu"):
        groups: dict[tuple, list[int]] = {}
        for row, target in enumerate(targets):
            groups.setdefault((target.tensor, target.kind, target.position), []).append(row)
        self.size = len(targets)
        self.groups = []
        for key, rows in groups.items():
            index = None if rows == list(range(self.size)) else torch.tensor(rows, device=device)
            units = torch.tensor([targets[r].unit for r in rows], device=device).unsqueeze(1)
            self.groups.append((key, index, units))

    def __call__(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[batch]`` objective values from ONNX tensor name -> batch of that tensor."""
        values = None
        for (name, kind, position), index, units in self.groups:
            tensor = tensors[name] if index is None else tensors[name].index_select(0, index)
            picked = _reduce(tensor, kind, position).gather(1, units).squeeze(1)
            if index is None:
                return picked
            if values is None:
                values = torch.zeros(self.size, dtype=picked.dtype, device=picked.device)
            values = values.index_copy(0, index, picked.to(values.dtype))
        return values


def row_values(targets: Sequence[Target], tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Objective of row ``i`` is ``targets[i]``; returns ``[batch]`` (see :class:`RowObjective`)."""
    first = next(iter(tensors.values()))
    return RowObjective(targets, first.device)(tensors)


def probe_shapes(imported: ImportedModel, names: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Shapes (batch dim included, batch 1) of ONNX tensors, found by one forward.

    Raises:
        TargetError: a name is not an ONNX tensor of the model, or not a float tensor.
    """
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    unknown = [name for name in names if name not in imported.tensor_map]
    if unknown:
        raise TargetError(f"no tensor named {unknown[0]!r} in the model; see `onnx-am inspect`")
    x = torch.zeros((1, *imported.input.sample_shape), dtype=_torch_dtype(imported.input.dtype))
    with torch.no_grad():
        values = imported.run(x, names)
    shapes = {}
    for name, value in zip(names, values, strict=True):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() == 0:
            raise TargetError(
                f"tensor {name!r} is not a batched float tensor and cannot be a target"
            )
        shapes[name] = tuple(value.shape)
    return shapes


def _torch_dtype(name: str) -> torch.dtype:
    return {"float64": torch.float64, "float16": torch.float16}.get(name, torch.float32)


_TARGET_RE = re.compile(r"^(?P<units>[0-9,\- ]+)(?:@(?P<pos>center|[0-9, ]+))?$")


def parse_targets(
    strings: str | Iterable[str],
    imported: ImportedModel,
    cap: int = 64,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> list[Target]:
    """Parse target strings against a model.

    Args:
        strings: one string or several, e.g. ``["logits:3", "conv3:0-7", "conv3:5@center"]``.
        imported: the model; tensor shapes are found by a probe forward.
        cap: a bare tensor name expands to at most this many units.
        shapes: tensor shapes a caller already probed (:func:`probe_shapes`); the probe
            forward runs only when a tensor is missing from them.

    Returns:
        The targets, in order, without duplicates.

    Raises:
        TargetError: unknown tensor, malformed unit list, or a unit or position out of range
            (the message names the valid range).
    """
    if isinstance(strings, str):
        strings = [strings]
    groups = _parse_each(list(strings), [], imported, cap, shapes)
    return list(dict.fromkeys(t for group in groups for t in group))


def _parse_each(
    strings: list[str],
    objects: list[Target],
    imported: ImportedModel,
    cap: int,
    known: Mapping[str, tuple[int, ...]] | None = None,
) -> list[list[Target]]:
    """Expand each string and check each object (one probe forward for all, none when every
    shape is ``known``)."""
    pieces = [_split(text, imported) for text in strings]
    names = [tensor for tensor, _ in pieces] + [t.tensor for t in objects]
    if known is not None and all(name in known for name in names):
        shapes = dict(known)
    else:
        shapes = probe_shapes(imported, names)
    for target in objects:
        _check(target, shapes[target.tensor])
    return [
        _expand(tensor, spec, shapes[tensor], cap, text)
        for (tensor, spec), text in zip(pieces, strings, strict=True)
    ]


def default_targets(imported: ImportedModel, cap: int = 64) -> list[Target]:
    """Every unit of the model's first output, at most ``cap`` of them."""
    return parse_targets([imported.output_names[0]], imported, cap=cap)


def resolve_targets(
    imported: ImportedModel, targets: Sequence[Target | str] | str | None, cap: int = 64
) -> list[Target]:
    """Targets from objects, strings or ``None`` (the default targets), checked against the model
    by one probe forward; a bare tensor name expands to at most ``cap`` units.

    Raises:
        TargetError: unknown tensors, units out of range, or no targets at all.
    """
    if targets is None:
        return default_targets(imported, cap)
    if isinstance(targets, str | Target):
        targets = [targets]
    strings = [t for t in targets if isinstance(t, str)]
    objects = [t for t in targets if isinstance(t, Target)]
    if len(strings) + len(objects) != len(targets):
        raise TargetError(f"targets must be Target objects or strings, got {targets!r}")
    expanded = iter(_parse_each(strings, objects, imported, cap))
    resolved = [
        t for item in targets for t in ([item] if isinstance(item, Target) else next(expanded))
    ]
    if not resolved:
        raise TargetError("no targets given; e.g. logits:3 or conv3_out:0-7")
    return list(dict.fromkeys(resolved))


def _check(target: Target, shape: tuple[int, ...]) -> None:
    count = _count(shape, target.kind == "class")
    if not 0 <= target.unit < count:
        raise TargetError(
            f"unit {target.unit} of {target.tensor!r} is out of range; "
            f"valid units are 0-{count - 1}"
        )
    if target.kind not in TARGET_KINDS:
        raise TargetError(
            f"unknown target kind {target.kind!r}; choose from {', '.join(TARGET_KINDS)}"
        )
    if target.position is not None:
        _position(",".join(str(p) for p in target.position), shape, target.name)


def _split(text: str, imported: ImportedModel) -> tuple[str, str | None]:
    text = text.strip()
    if text in imported.tensor_map:
        return text, None
    if ":" not in text:
        raise TargetError(f"no tensor named {text!r} in the model; see `onnx-am inspect`")
    tensor, spec = text.rsplit(":", 1)
    if tensor not in imported.tensor_map:
        raise TargetError(f"no tensor named {tensor!r} in the model (from target {text!r})")
    return tensor, spec


def _expand(
    tensor: str, spec: str | None, shape: tuple[int, ...], cap: int, text: str
) -> list[Target]:
    last = spec is not None and spec.strip().endswith("@last")
    count = _count(shape, last)
    kind = "class" if last else "unit" if len(shape) <= 2 else "channel"
    if last:
        spec = spec.strip()[: -len("@last")]
    if spec is None:
        return [Target(tensor, i, kind) for i in range(min(count, cap))]
    match = _TARGET_RE.match(spec.strip())
    if not match:
        raise TargetError(
            f"cannot parse units {spec!r} of target {text!r}; e.g. 3, 0-7, 1,3,5 or 12@4,4"
        )
    units = _units(match.group("units"), count, text)
    position = _position(match.group("pos"), shape, text)
    if position is not None:
        return [Target(tensor, i, "neuron", position) for i in units]
    return [Target(tensor, i, kind) for i in units]


def _count(shape: tuple[int, ...], last: bool) -> int:
    """Units of a tensor: along axis 1, or the last axis for ``class`` targets."""
    if len(shape) <= 1:
        return 1
    return shape[-1] if last else shape[1]


def _units(spec: str, count: int, text: str) -> list[int]:
    units: list[int] = []
    for part in spec.replace(" ", "").split(","):
        bounds = part.split("-")
        if not part or len(bounds) > 2 or not all(bounds):
            raise TargetError(f"cannot parse unit range {part!r} in target {text!r}")
        low, high = int(bounds[0]), int(bounds[-1])
        if low > high or high >= count:
            raise TargetError(
                f"unit {part} of target {text!r} is out of range; valid units are 0-{count - 1}"
            )
        units.extend(range(low, high + 1))
    return units


def _position(spec: str | None, shape: tuple[int, ...], text: str) -> tuple[int, ...] | None:
    if spec is None:
        return None
    spatial = shape[2:]
    if not spatial:
        raise TargetError(
            f"target {text!r} gives a position but tensor of shape {list(shape)} has no space"
        )
    if spec == "center":
        return tuple(size // 2 for size in spatial)
    position = tuple(int(p) for p in spec.replace(" ", "").split(","))
    if len(position) != len(spatial) or any(
        not 0 <= p < s for p, s in zip(position, spatial, strict=True)
    ):
        valid = " x ".join(f"0-{s - 1}" for s in spatial)
        raise TargetError(f"position {spec!r} of target {text!r} is out of range; valid: {valid}")
    return position
