"""The decoupling pass: a copy of the torch graph whose rectifiers take per-row slopes.

``decouple_rectifiers`` never changes ``imported.module``: it builds a new graph module that
shares the unchanged submodules and holds new :class:`DecoupledRectifier` modules where the
rules matched. With all slopes unset the new module computes exactly what the old one does.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import onnx
from torch import fx, nn

from onnx_am.passes.base import (
    RectifierRule,
    RewriteRecord,
    RuleMatch,
    UntouchedRecord,
    alpha_to_record,
)
from onnx_am.passes.control import SlopeControl
from onnx_am.passes.rectifier import DecoupledRectifier
from onnx_am.passes.registry import select_rules

if TYPE_CHECKING:
    from onnx_am.importer.model import ImportedModel

#: Non-linear ONNX ops that are reported when the pass leaves them alone.
NONLINEAR_OP_TYPES = frozenset(
    {
        "Relu", "LeakyRelu", "PRelu", "Clip", "ThresholdedRelu", "HardSwish", "HardSigmoid",
        "Sigmoid", "Tanh", "Gelu", "Softmax", "LogSoftmax", "Hardmax", "Elu", "Selu", "Celu",
        "Softplus", "Softsign", "Erf", "Mish", "Swish", "Shrink", "MaxPool", "GlobalMaxPool",
        "LpPool", "MaxRoiPool", "Max", "Min", "Abs", "Sign", "Round", "Floor", "Ceil", "Exp",
        "Log", "Sqrt", "Pow", "Reciprocal", "Sin", "Cos", "ReduceMax", "ReduceMin", "TopK",
        "LSTM", "GRU", "RNN", "DynamicQuantizeLSTM", "If", "Loop",
    }
)  # fmt: skip

#: Why some non-linearities are never rewritten, reported with them.
UNTOUCHED_REASONS = {
    **{
        op: "recurrent cell: its sigmoid/tanh gates keep their true gradient"
        for op in ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM")
    },
    **{
        op: "control flow: the rectifiers inside its bodies keep their true gradient (only "
        "the top-level graph is rewritten)"
        for op in ("If", "Loop")
    },
    **{
        op: f"smooth: decoupled only with the opt-in rule {rule!r}"
        for op, rule in (
            ("HardSwish", "hardswish"),
            ("HardSigmoid", "hardsigmoid"),
            ("Gelu", "gelu"),
            ("Mish", "mish"),
        )
    },
}


@dataclass
class RewriteResult:
    """What :func:`decouple_rectifiers` returns.

    Attributes:
        module: the new graph module; the imported module is left unchanged.
        rewritten: one record per rewritten rectifier, in graph order.
        untouched: non-linearities left alone, in graph order.
        control: sets the per-row forward and backward slopes of the rewritten modules.
    """

    module: fx.GraphModule
    rewritten: list[RewriteRecord]
    untouched: list[UntouchedRecord]
    control: SlopeControl

    @property
    def modified(self) -> bool:
        """Whether any node was rewritten."""
        return bool(self.rewritten)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary for reports."""
        return {
            "modified": self.modified,
            "rewritten": [asdict(record) for record in self.rewritten],
            "untouched": [asdict(record) for record in self.untouched],
        }


@dataclass(frozen=True)
class _Planned:
    target: str
    node: onnx.NodeProto
    module: nn.Module
    rule: RectifierRule
    match: RuleMatch
    record: RewriteRecord


def plan_rewrites(
    imported: ImportedModel,
    *,
    rules: Sequence[str | RectifierRule] | None = None,
    module: fx.GraphModule | None = None,
) -> tuple[list[RewriteRecord], list[UntouchedRecord]]:
    """Which nodes :func:`decouple_rectifiers` would rewrite, without building anything.

    Args:
        imported: the imported model.
        rules: rule names (or rules) to apply; default all registered rules.
        module: the graph module to look at (default ``imported.module``).

    Returns:
        ``(rewritten, untouched)`` records, in graph order.

    Raises:
        PassError: an unknown rule name.
    """
    planned, untouched = _plan(imported, module or imported.module, select_rules(rules))
    return [entry.record for entry in planned], untouched


def plan_onnx(
    model: onnx.ModelProto, *, rules: Sequence[str | RectifierRule] | None = None
) -> tuple[list[RewriteRecord], list[UntouchedRecord]]:
    """Which nodes the pass would rewrite, read from the ONNX graph alone (nothing converted).

    The same rules decide as in :func:`plan_rewrites` (:meth:`RectifierRule.match_node`), on
    the nodes whose value depends on a graph input; what conversion adds is only the check
    that the converted module is one the rule can replace. ``inspect`` uses this for models
    that cannot be imported.

    Args:
        model: an ONNX model (the prepared one gives exactly the pass's answer).
        rules: rule names (or rules) to apply; default all registered rules.

    Returns:
        ``(rewritten, untouched)`` records, in graph order.

    Raises:
        PassError: an unknown rule name.
    """
    selected = select_rules(rules)
    graph = model.graph
    dependent = _onnx_input_dependent(graph)
    rewritten, untouched = [], []
    for node in graph.node:
        found = None
        if any(name in dependent for name in node.output) and node.domain in ("", "ai.onnx"):
            found = next(
                (
                    (rule, match)
                    for rule in selected
                    if rule.op_type == node.op_type
                    and (match := rule.match_node(node, graph)) is not None
                ),
                None,
            )
        if found is not None:
            rewritten.append(_record(node, *found))
        elif node.op_type in NONLINEAR_OP_TYPES:
            untouched.append(_untouched(node))
    return rewritten, untouched


def decouple_rectifiers(
    imported: ImportedModel,
    *,
    decouple_upper: bool = False,
    rules: Sequence[str | RectifierRule] | None = None,
    module: fx.GraphModule | None = None,
) -> RewriteResult:
    """A new graph module whose rectifiers can use decoupled or proxy slopes per row.

    Args:
        imported: the imported model; its ``module`` is not changed.
        decouple_upper: also decouple the saturated top of clips (ReLU6).
        rules: rule names (or rules) to apply; default all registered rules.
        module: the graph module to rewrite (default ``imported.module``); rewriting an
            already rewritten module rebuilds its rectifiers from the converted originals.

    Returns:
        The :class:`RewriteResult`; its ``control`` sets the slopes.

    Raises:
        PassError: an unknown rule name.
    """
    source = module or imported.module
    planned, untouched = _plan(imported, source, select_rules(rules))
    new = fx.GraphModule(source, copy.deepcopy(source.graph))
    new.training = source.training
    entries = []
    for entry in planned:
        replacement = entry.rule.build(
            entry.node, entry.module, entry.match, decouple_upper=decouple_upper
        )
        setattr(new, entry.target, replacement)
        entries.append((entry.record, replacement))
    return RewriteResult(
        module=new,
        rewritten=[entry.record for entry in planned],
        untouched=untouched,
        control=SlopeControl(entries),
    )


def _plan(
    imported: ImportedModel, module: fx.GraphModule, rules: list[RectifierRule]
) -> tuple[list[_Planned], list[UntouchedRecord]]:
    onnx_nodes = {node.name: node for node in imported.prepared.graph.node}
    dependent = _input_dependent(module)
    planned, untouched = [], []
    for fx_node in module.graph.nodes:
        if fx_node.op != "call_module" or fx_node.target not in imported.node_names:
            continue
        node = onnx_nodes[imported.node_names[fx_node.target]]
        found = None
        if fx_node.name in dependent and node.domain in ("", "ai.onnx"):
            converted = _converted(module.get_submodule(fx_node.target))
            found = _first_match(rules, node, converted, imported)
        if found is not None:
            rule, match = found
            record = _record(node, rule, match)
            planned.append(_Planned(fx_node.target, node, converted, rule, match, record))
        elif node.op_type in NONLINEAR_OP_TYPES:
            untouched.append(_untouched(node))
    return planned, untouched


def _record(node: onnx.NodeProto, rule: RectifierRule, match: RuleMatch) -> RewriteRecord:
    alpha = alpha_to_record(match.alpha)
    return RewriteRecord(node.name, node.op_type, rule.name, alpha, node.output[0])


def _untouched(node: onnx.NodeProto) -> UntouchedRecord:
    output = next((name for name in node.output if name), "")
    return UntouchedRecord(node.name, node.op_type, output, UNTOUCHED_REASONS.get(node.op_type, ""))


def _first_match(
    rules: list[RectifierRule], node: onnx.NodeProto, module: nn.Module, imported: ImportedModel
) -> tuple[RectifierRule, RuleMatch] | None:
    for rule in rules:
        if rule.op_type == node.op_type:
            match = rule.match(node, module, imported)
            if match is not None:
                return rule, match
    return None


def _converted(module: nn.Module) -> nn.Module:
    """The converted module behind a (possibly already decoupled) submodule."""
    while isinstance(module, DecoupledRectifier):
        module = module.source_module
    return module


def _onnx_input_dependent(graph: onnx.GraphProto) -> set[str]:
    """Names of the tensors of ``graph`` whose value depends on a graph input.

    Nodes are in topological order (as ONNX requires); a node with subgraphs (If, Loop)
    depends on whatever its subgraphs read from the outer scope as well.
    """
    constants = {tensor.name for tensor in graph.initializer}
    dependent = {value.name for value in graph.input if value.name not in constants}
    for node in graph.node:
        if any(name in dependent for name in (*node.input, *_subgraph_reads(node))):
            dependent.update(name for name in node.output if name)
    return dependent


def _subgraph_reads(node: onnx.NodeProto) -> list[str]:
    """Every tensor name the subgraphs of ``node`` read (their nodes' inputs, recursively)."""
    names = []
    for attribute in node.attribute:
        for subgraph in [*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs]:
            for inner in subgraph.node:
                names += [*inner.input, *_subgraph_reads(inner)]
    return names


def _input_dependent(module: fx.GraphModule) -> set[str]:
    """Names of the fx nodes whose value depends on a graph input."""
    dependent: set[str] = set()
    for node in module.graph.nodes:
        if node.op == "placeholder" or any(arg.name in dependent for arg in node.all_input_nodes):
            dependent.add(node.name)
    return dependent
