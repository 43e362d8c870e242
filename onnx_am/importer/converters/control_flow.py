"""``If`` and ``Loop``: their bodies are converted like a model and run eagerly in torch.

A body is an ONNX graph that may read tensors of the enclosing graphs by name. Each body
becomes its own ``fx.GraphModule`` (converted by onnx2torch with every converter registered
here, nested bodies included): its formal inputs come first, then every outer tensor it
reads that is computed (outer initializers are copied in as its own initializers).

- ``If``: the condition is read at run time and only the branch taken runs, so the gradient
  is that of the branch taken. The condition is one element for the whole batch; a graph
  whose condition depends on the optimized input therefore runs row by row (see
  :func:`onnx_am.importer.control_flow.data_dependent_control`), each row taking its own
  branch.
- ``Loop``: the body runs step by step, ``for i < M while cond``, carrying its values; scan
  outputs are stacked. A constant trip count runs the same way (the forward is eager, so it
  is unrolled in effect at every call); gradients flow through every step.

The decoupling pass rewrites only the top-level graph: rectifiers inside a body keep their
true gradient, and the ``If`` / ``Loop`` node is reported as untouched.

The body is converted at the model's opset, which onnx2torch does not pass to converters;
:func:`converting` records it for the duration of a conversion.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import onnx
import onnx2torch
import torch
from onnx import helper
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import fx, nn

from onnx_am.errors import ResourceLimitError
from onnx_am.importer.converters._registry import register

#: Most steps one Loop may run (a model file can loop forever).
MAX_LOOP_STEPS = 100_000

#: Domain of the nodes that mark a body's outputs (each output gets its own node, so that an
#: output that is a body input or an outer tensor is an output of the converted graph too).
BODY_DOMAIN = "onnx_am.body"

_OPSETS: contextvars.ContextVar[tuple[onnx.OperatorSetIdProto, ...] | None] = (
    contextvars.ContextVar("onnx_am_body_opsets", default=None)
)


@contextlib.contextmanager
def converting(model: onnx.ModelProto) -> Iterator[None]:
    """While active, ``If`` / ``Loop`` bodies are converted at ``model``'s opsets."""
    token = _OPSETS.set(tuple(model.opset_import))
    try:
        yield
    finally:
        _OPSETS.reset(token)


def free_names(graph: onnx.GraphProto) -> list[str]:
    """Tensors ``graph`` reads from enclosing graphs (its nested bodies' included), in order."""
    defined = {value.name for value in graph.input} | {t.name for t in graph.initializer}
    found: dict[str, None] = {}
    for node in graph.node:
        for name in [*node.input, *[n for body in bodies(node) for n in free_names(body)]]:
            if name and name not in defined:
                found[name] = None
        defined.update(node.output)
    for value in graph.output:
        if value.name not in defined:
            found[value.name] = None
    return list(found)


def bodies(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The subgraphs held in ``node``'s attributes."""
    found = []
    for attribute in node.attribute:
        if attribute.HasField("g"):
            found.append(attribute.g)
        found.extend(attribute.graphs)
    return found


class BodyOutput(nn.Module, OnnxToTorchModule):
    """Marks a body output; returns its input as it is (onnx2torch's Identity copies it, and
    a loop that carries its weights, as paddle2onnx's do, would copy them at every step)."""

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        return value


@register("Output", (1,), domain=BODY_DOMAIN)
def _output(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(
        torch_module=BodyOutput(),
        onnx_mapping=OnnxMapping(inputs=node.input_values, outputs=node.output_values),
    )


class _Body(nn.Module):
    """A converted body with the outer tensors it reads picked from the enclosing node's."""

    def __init__(self, module: fx.GraphModule, picks: Sequence[int], outputs: int):
        super().__init__()
        self.module = module
        self.picks = list(picks)
        self.outputs = outputs

    def forward(self, formal: Sequence[torch.Tensor], outer: Sequence[torch.Tensor]) -> list:
        result = self.module(*formal, *[outer[i] for i in self.picks])
        return list(result) if self.outputs > 1 else [result]


def _convert_body(
    body: onnx.GraphProto, graph: OnnxGraph, outer_names: list[str]
) -> tuple[fx.GraphModule, list[str]]:
    """The body as a graph module, and the outer tensors it takes after its formal inputs
    (each appended to ``outer_names`` if not there yet)."""
    opsets = _OPSETS.get()
    if opsets is None:
        raise NotImplementedError(
            "If/Loop bodies are converted only through onnx_am.importer (the opset is unknown)"
        )
    reads = free_names(body)
    constants = [name for name in reads if name in graph.initializers]
    computed = [name for name in reads if name not in graph.initializers]
    outputs = [f"onnx_am_body_output_{k}" for k in range(len(body.output))]
    nodes = [
        *body.node,
        *[
            helper.make_node("Output", [value.name], [name], name=name, domain=BODY_DOMAIN)
            for value, name in zip(body.output, outputs, strict=True)
        ],
    ]
    initializers = [*body.initializer, *[graph.initializers[name].proto for name in constants]]
    inner = helper.make_graph(
        nodes,
        "body",
        [*body.input, *[onnx.ValueInfoProto(name=name) for name in computed]],
        [onnx.ValueInfoProto(name=name) for name in outputs],
        initializers,
    )
    model = helper.make_model(
        inner,
        opset_imports=[*opsets, helper.make_opsetid(BODY_DOMAIN, 1)],
        ir_version=onnx.IR_VERSION,
    )
    module = onnx2torch.convert(model, attach_onnx_mapping=True)
    for name in computed:
        if name not in outer_names:
            outer_names.append(name)
    return module, computed


def _body(body: onnx.GraphProto, graph: OnnxGraph, outer_names: list[str]) -> _Body:
    module, reads = _convert_body(body, graph, outer_names)
    return _Body(module, [outer_names.index(name) for name in reads], len(body.output))


class OnnxIf(nn.Module, OnnxToTorchModule):
    """Runs ``then_branch`` or ``else_branch`` on the outer tensors, as the condition says."""

    def __init__(self, then_branch: _Body, else_branch: _Body):
        super().__init__()
        self.then_branch = then_branch
        self.else_branch = else_branch

    def forward(self, condition: torch.Tensor, *outer: torch.Tensor):
        if condition.numel() != 1:
            raise ValueError(f"If condition has {condition.numel()} elements, not one")
        branch = self.then_branch if bool(condition.reshape(-1)[0]) else self.else_branch
        result = branch((), outer)
        return tuple(result) if len(result) > 1 else result[0]


@register("If", (1, 11, 13, 16, 19, 21))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    attributes = {a.name: a.g for a in node.proto.attribute if a.HasField("g")}
    outer: list[str] = []
    then_branch = _body(attributes["then_branch"], graph, outer)
    else_branch = _body(attributes["else_branch"], graph, outer)
    return OperationConverterResult(
        torch_module=OnnxIf(then_branch, else_branch),
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0], *outer), outputs=node.output_values),
    )


class OnnxLoop(nn.Module, OnnxToTorchModule):
    """``for i in range(M) while cond``: the body carries ``carried`` values, stacks scans.

    Attributes:
        has_trip, has_condition: whether ``M`` / ``cond`` were given (they lead the inputs).
        carried: number of loop-carried values (after them come the outer tensors).
    """

    def __init__(self, body: _Body, has_trip: bool, has_condition: bool, carried: int):
        super().__init__()
        self.body = body
        self.has_trip = has_trip
        self.has_condition = has_condition
        self.carried = carried

    def forward(self, *inputs: torch.Tensor):
        rest = list(inputs)
        trip = int(rest.pop(0)) if self.has_trip else None
        keep = bool(rest.pop(0).reshape(-1)[0]) if self.has_condition else True
        values = rest[: self.carried]
        scans: list[list[torch.Tensor]] = []
        step = 0
        while keep and (trip is None or step < trip):
            if step >= MAX_LOOP_STEPS:
                raise ResourceLimitError(f"a Loop ran more than {MAX_LOOP_STEPS} steps")
            counter = torch.tensor(step, dtype=torch.int64)
            flag = torch.tensor(keep)
            result = self.body([counter, flag, *values], inputs)
            keep = bool(result[0].reshape(-1)[0])
            values = result[1 : 1 + self.carried]
            scans.append(result[1 + self.carried :])
            step += 1
        count = self.body.outputs - 1 - self.carried
        stacked = [
            torch.stack([s[k] for s in scans]) if scans else torch.zeros(0) for k in range(count)
        ]
        outputs = [*values, *stacked]
        return tuple(outputs) if len(outputs) > 1 else outputs[0]


@register("Loop", (1, 11, 13, 16, 19, 21))
def _(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    body = next(a.g for a in node.proto.attribute if a.name == "body")
    trip, condition, *initial = node.input_values
    if any(not name for name in initial):
        raise NotImplementedError("Loop with an omitted loop-carried initial value")
    leading = [name for name in (trip, condition) if name]
    outer = [*leading, *initial]
    converted = _body(body, graph, outer)
    return OperationConverterResult(
        torch_module=OnnxLoop(converted, bool(trip), bool(condition), len(initial)),
        onnx_mapping=OnnxMapping(inputs=tuple(outer), outputs=node.output_values),
    )
