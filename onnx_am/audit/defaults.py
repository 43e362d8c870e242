"""Defaults that fit the model: what ``analyze`` maximizes and with which methods.

- An output that is a Softmax / LogSoftmax / Sigmoid of a tensor (possibly through reshapes
  or an average) is a probability: it saturates at 1 within a few steps and every method
  "wins". The default targets are the pre-activation logits instead.
- An output that is not a per-class vector ``[N, classes]`` (a detector's boxes and scores,
  a segmenter's maps, a sequence) has no unit that means one thing; averaging it mixes
  unrelated quantities. The default targets are then the channels of the last rectifier
  (else of the last convolution), and the report says why.
- Of several outputs, a classification head (a Softmax / LogSoftmax / Sigmoid output) is
  preferred over regression outputs (a face detector's boxes before its scores); the report
  says which output was chosen and why.
- A sequence of per-step class scores ``[N, T, C]`` (an activation over its last axis) gives
  one unit per class, averaged over the steps (``"probs:3@last"``), as ``[N, C]`` does.
- With no rectifier to decouple, the decoupled methods would compute the standard gradient
  again: the default is standard only.

Each choice carries one sentence saying what was chosen and why, for the report and stderr.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import onnx

from onnx_am.audit.written_softmax import written_softmax
from onnx_am.domain import DomainChoice
from onnx_am.importer.model import ImportedModel
from onnx_am.objectives import Target, parse_targets, probe_shapes

#: The activation name :func:`pre_activation` gives a softmax written as ops.
WRITTEN = "exp/sum"

#: Ops whose output is a probability of their input.
ACTIVATIONS = {"Softmax": "softmax", "LogSoftmax": "log-softmax", "Sigmoid": "sigmoid"}
#: What the report calls each activation, a softmax written as ``exp / sum`` included.
ACTIVATION_NAMES = {**ACTIVATIONS, WRITTEN: "softmax (written as exp / sum)"}
#: Ops walked through between an output and its activation: they move or average units.
PASS_THROUGH = frozenset(
    {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "ReduceMean",
     "GlobalAveragePool", "Cast"}
)  # fmt: skip
CONV_OPS = ("Conv", "ConvTranspose")
#: The last convolution with at least this many channels is the default feature layer.
MIN_CHANNELS = 8


@dataclass(frozen=True)
class TargetDefault:
    """The default targets of a model and why.

    Attributes:
        targets: the targets.
        tensor: the ONNX tensor they read.
        reason: one sentence: what was chosen instead of every unit of the first output.
            Empty when the first output itself is used.
        labels: target name -> class name, where the producer recorded class names.
        shapes: the shapes of the one probe forward that chose them (``also`` tensors
            included), so that the plan parses its ``--layer`` targets without another.
    """

    targets: list[Target]
    tensor: str
    reason: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"tensor": self.tensor, "reason": self.reason, "labels": dict(self.labels)}


@dataclass(frozen=True)
class AnalysisDefaults:
    """The choices ``analyze`` made for the model where the user left them open.

    Attributes:
        domain: the input domain and where it came from.
        targets: the default targets and why; ``None`` when targets were given.
        standard_only: no method was given and the model has no rectifier to decouple.
        cut: where the search starts when not at a graph input (``Cut.note``), else empty.
    """

    domain: DomainChoice
    targets: TargetDefault | None = None
    standard_only: bool = False
    cut: str = ""  # tokens (issue 22): where the graph was cut, one line (empty: no cut)

    @property
    def notes(self) -> list[str]:
        """One line per choice a person should know about (printed on stderr)."""
        notes = [self.cut] if self.cut else []
        if self.domain.source != "given":
            notes.append(f"input domain {self.domain.description}")
        if self.targets is not None and self.targets.reason:
            notes.append(self.targets.reason)
        if self.standard_only:
            notes.append(NO_RECTIFIER_NOTE)
        return notes

    def to_dict(self) -> dict:
        return {
            "domain": self.domain.to_dict(),
            "targets": self.targets.to_dict() if self.targets is not None else None,
            "standard_only": self.standard_only,
            "cut": self.cut or None,
            "notes": self.notes,
        }


def default_targets_for(
    imported: ImportedModel, cap: int = 64, also: Sequence[str] = ()
) -> TargetDefault:
    """The targets ``analyze`` maximizes when none are given (see the module docstring).

    One probe forward finds the shapes of every candidate (the first output, its logits, the
    convolutions) and of the ``also`` tensors (``--layer``), which the result carries.
    """
    output, preferred = _main_output(imported)
    logits = pre_activation(imported, output)
    candidates = [output, *([logits[0]] if logits else []), *_conv_outputs(imported), *also]
    if imported.cut is not None:  # tokens (issue 22): an encoder's other outputs (pooled)
        candidates += [name for name in imported.output_names if name not in candidates]
    shapes = probe_shapes(imported, candidates)
    shape = shapes[output]

    def chosen(tensor: str, reason: str, labelled: bool, last: bool = False) -> TargetDefault:
        text = f"{tensor}:0-{min(shapes[tensor][-1], cap) - 1}@last" if last else tensor
        targets = parse_targets([text], imported, cap=cap, shapes=shapes)
        labels = unit_labels(imported, targets, shapes) if labelled else {}
        reason = "; ".join(part for part in (preferred, reason) if part)
        return TargetDefault(targets, tensor, reason, labels, shapes)

    sequence = len(shape) == 3 and logits is not None and _over_last_axis(imported, output)
    if len(shape) <= 2 or sequence:
        over_time = (
            f"; output {output!r} of shape {list(shape)} holds class scores per step: each "
            f"target is one class (last axis), averaged over the {shape[1]} step(s) of axis 1"
            if sequence
            else ""
        )
        if logits is None:
            return chosen(output, "", True)
        tensor, op = logits
        reason = (
            f"targets are the pre-activation logits {tensor!r}: output {output!r} is the "
            f"{ACTIVATION_NAMES[op]} of it, and probabilities saturate{over_time}"
        )
        return chosen(tensor, reason, True, last=sequence and len(shapes[tensor]) == 3)
    what = f"output {output!r} of shape {list(shape)} is not a per-class vector [N, classes]"
    if imported.cut is not None and len(shape) == 3 and logits is None:  # tokens (issue 22)
        return _encoder_targets(imported, output, shapes, what, chosen)
    layer = last_feature_layer(imported, shapes)
    if layer is None:
        reason = (
            f"{what}, and the model has no rectifier or convolution; each target is one "
            f"slice of it along axis 1, averaged over the remaining axes"
        )
        return chosen(output, reason, False)
    tensor, kind = layer
    reason = (
        f"{what} (averaging it would mix unrelated quantities); targets are the channels of "
        f"the last {kind}, {tensor!r}"
    )
    return chosen(tensor, reason, False)


def _encoder_targets(imported, output: str, shapes, what: str, chosen) -> TargetDefault:
    """An encoder without a head (a search over tokens, output ``[N, L, D]``): the dimensions
    of its pooled output ``[N, D]`` if it has one, else the last layer's neurons (the last
    axis, averaged over the positions)."""
    pooled = [name for name in imported.output_names if name != output and len(shapes[name]) == 2]
    if pooled:
        return chosen(
            pooled[0],
            f"{what}: an encoder without a head; targets are the dimensions of its pooled "
            f"output {pooled[0]!r}",
            False,
        )
    return chosen(
        output,
        f"{what}: an encoder without a head; targets are its neurons (last axis), each "
        f"averaged over the {shapes[output][1]} positions",
        False,
        last=True,
    )


def _main_output(imported: ImportedModel) -> tuple[str, str]:
    """The output to maximize and why it is not the first one (else empty): the first
    classification head (an activation output, :func:`pre_activation`), else the first."""
    first = imported.output_names[0]
    if pre_activation(imported, first) is not None:
        return first, ""
    for name in imported.output_names[1:]:
        found = pre_activation(imported, name)
        if found is not None:
            return name, (
                f"output {name!r} chosen over the first output {first!r}: it is a "
                f"{ACTIVATION_NAMES[found[1]]} (a classification head), the outputs before it are "
                "not"
            )
    return first, ""


def _over_last_axis(imported: ImportedModel, tensor: str) -> bool:
    """Whether the activation behind ``tensor`` normalizes its last axis (Sigmoid: any)."""
    producers = producer_nodes(imported.prepared)
    node = producers.get(tensor)
    while node is not None and node.op_type in PASS_THROUGH:
        if node.op_type not in ("Identity", "Cast"):
            return False  # the layout may have moved
        node = producers.get(node.input[0]) if node.input else None
    if node is None or node.op_type == "Sigmoid":
        return node is not None
    written = written_softmax(imported.prepared, producers, node)
    if written is not None:
        return written[1] in (-1, 2)
    opset = imported.opsets.get("ai.onnx", 13)
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
    return axis in (-1, 2)


def _conv_outputs(imported: ImportedModel) -> list[str]:
    return [
        node.output[0]
        for node in imported.prepared.graph.node
        if node.op_type in CONV_OPS and node.output and _checkable(imported, node.output[0])
    ]


def pre_activation(imported: ImportedModel, tensor: str) -> tuple[str, str] | None:
    """``(logits tensor, activation op)`` when ``tensor`` is a probability of another tensor.

    Walks back from ``tensor`` through :data:`PASS_THROUGH` ops to a Softmax / LogSoftmax /
    Sigmoid and returns that op's input, if the torch graph exposes it; a softmax written as
    ``exp / sum`` (:func:`~onnx_am.audit.written_softmax.written_softmax`) gives the tensor
    it normalizes and :data:`WRITTEN`.
    """
    producers = producer_nodes(imported.prepared)
    node = producers.get(tensor)
    seen = 0
    while node is not None and node.op_type in PASS_THROUGH and seen < 32:
        node, seen = producers.get(node.input[0]) if node.input else None, seen + 1
    if node is None or not node.input:
        return None
    written = written_softmax(imported.prepared, producers, node)
    if written is not None:
        logits, op = written[0], WRITTEN
    elif node.op_type in ACTIVATIONS:
        logits, op = node.input[0], node.op_type
    else:
        return None
    return (logits, op) if _checkable(imported, logits) else None


def _checkable(imported: ImportedModel, tensor: str) -> bool:
    """Torch exposes ``tensor`` and onnxruntime can too: it is produced in the original
    model's main graph (not only inside an If branch that the pre-passes inlined)."""
    if tensor not in imported.tensor_map:
        return False
    produced = {name for node in imported.original.graph.node for name in node.output}
    return tensor in produced or tensor in {v.name for v in imported.original.graph.input}


def last_feature_layer(
    imported: ImportedModel, shapes: Mapping[str, tuple[int, ...]] | None = None
) -> tuple[str, str] | None:
    """``(tensor, "rectifier" | "convolution")``: the last rectifier's output, else the last
    convolution's with at least :data:`MIN_CHANNELS` channels (a detector's head
    convolutions, with a few channels of box coordinates or scores, come after it), in
    graph order; ``None`` when there is neither."""
    from onnx_am.passes import plan_rewrites

    rectifiers, _ = plan_rewrites(imported)
    for record in reversed(rectifiers):
        if _checkable(imported, record.output):
            return record.output, "rectifier"
    convs = _conv_outputs(imported)
    if not convs:
        return None
    if shapes is None or any(name not in shapes for name in convs):
        shapes = probe_shapes(imported, convs)
    wide = [name for name in convs if len(shapes[name]) > 1 and shapes[name][1] >= MIN_CHANNELS]
    return (wide or convs)[-1], "convolution"


def has_rectifiers(imported: ImportedModel) -> bool:
    """Whether the decoupling pass finds anything to rewrite."""
    from onnx_am.passes import plan_rewrites

    return bool(plan_rewrites(imported)[0])


#: Said in the report and on stderr when :func:`has_rectifiers` is false and no method given.
NO_RECTIFIER_NOTE = (
    "the model has no rectifier to decouple, so decoupled and proxy gradients equal the "
    "standard one; running standard only"
)


def unit_labels(
    imported: ImportedModel,
    targets: list[Target],
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, str]:
    """Class names for targets on the first output or its logits, when recorded and the
    unit count matches the number of names."""
    names = imported.metadata.class_names
    if not names:
        return {}
    output = _main_output(imported)[0]
    logits = pre_activation(imported, output)
    tensors = {output, logits[0] if logits else output}
    if shapes is None or any(name not in shapes for name in tensors):
        shapes = probe_shapes(imported, list(tensors))
    labels = {}
    for target in targets:
        shape = shapes.get(target.tensor)
        if target.tensor in tensors and shape is not None and len(shape) > 1:
            count = shape[-1] if target.kind == "class" else shape[1]
            if count == len(names) and target.unit in names:
                labels[target.name] = names[target.unit]
    return labels


def producer_nodes(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Tensor name -> the node that produces it."""
    return {name: node for node in model.graph.node for name in node.output}
