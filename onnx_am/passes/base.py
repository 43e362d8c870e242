"""The contract of the decoupling pass: rules that recognise rectifiers, and what it returns.

A :class:`RectifierRule` is a registry entry for one kind of rectifier. It looks at an ONNX
node and says whether the node is a rectifier of its kind and with which forward slope
``alpha`` (:meth:`~RectifierRule.match_node`, from the ONNX graph alone, which is also what
``inspect`` reports); the pass further requires the torch module converted from it to be one
the rule can replace (:meth:`~RectifierRule.match`), and the rule builds the replacement.
The pass records what it rewrote and which non-linearities it left alone (the records here;
what the pass returns, :class:`~onnx_am.passes.decouple.RewriteResult`, beside the pass).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import onnx
from onnx import numpy_helper
from torch import nn

from onnx_am.passes.rectifier import Alpha, DecoupledRectifier

if TYPE_CHECKING:
    from onnx_am.importer.model import ImportedModel


@dataclass(frozen=True)
class RuleMatch:
    """A node recognised as a rectifier.

    Attributes:
        alpha: the forward negative-side slope (a float, or an array for per-channel PRelu).
        details: whatever else the rule needs to build the replacement (e.g. the clip max).
    """

    alpha: Alpha
    details: Mapping[str, Any] = field(default_factory=dict)


class RectifierRule:
    """One kind of rectifier; subclasses are registered with ``@register_rule(name)``.

    Attributes:
        name: the registry name, also the ``kind`` of the rewrite records.
        op_type: the ONNX op type (default domain) this rule looks at.
        module_types: the torch modules onnx2torch makes of a matching node that
            :meth:`build` can replace.
        default: whether the rule applies when no rules are named.
    """

    name: ClassVar[str] = ""
    op_type: ClassVar[str] = ""
    module_types: ClassVar[tuple[type[nn.Module], ...]] = ()
    #: Applied when no rules are named; opt-in rules (smooth activations) set ``False``.
    default: ClassVar[bool] = True

    def match_node(self, node: onnx.NodeProto, graph: onnx.GraphProto) -> RuleMatch | None:
        """Whether ONNX ``node`` of ``graph`` is a rectifier of this kind, from ONNX alone.

        Args:
            node: a node of ``graph`` with this rule's ``op_type``.
            graph: the graph, for constant inputs (initializers) and producers.

        Returns:
            The match, or ``None`` when this rule does not apply.
        """
        raise NotImplementedError

    def match(
        self, node: onnx.NodeProto, module: nn.Module, imported: ImportedModel
    ) -> RuleMatch | None:
        """What the pass asks: :meth:`match_node`, and ``module`` is one :meth:`build` replaces.

        Args:
            node: the ONNX node of the prepared model.
            module: the torch module onnx2torch made of it (never an already-decoupled one).
            imported: the model; its prepared graph is what :meth:`match_node` reads.

        Returns:
            The match, or ``None`` when this rule does not apply.
        """
        if not isinstance(module, self.module_types):
            return None
        return self.match_node(node, imported.prepared.graph)

    def build(
        self,
        node: onnx.NodeProto,
        module: nn.Module,
        match: RuleMatch,
        *,
        decouple_upper: bool = False,
    ) -> DecoupledRectifier:
        """The replacement module, built from the fields of ``module``.

        Args:
            node: the ONNX node.
            module: the converted torch module being replaced.
            match: what :meth:`match` returned.
            decouple_upper: also decouple a saturated upper side (Clip).
        """
        raise NotImplementedError


@dataclass(frozen=True)
class RewriteRecord:
    """A rectifier node that was (or would be) rewritten.

    Attributes:
        node: ONNX node name.
        op_type: ONNX op type.
        kind: the rule that matched.
        alpha: forward slope, a float or one float per channel.
        output: the ONNX name of the node's output tensor.
    """

    node: str
    op_type: str
    kind: str
    alpha: float | list[float]
    output: str


@dataclass(frozen=True)
class UntouchedRecord:
    """A non-linearity that the pass left as it is.

    Attributes:
        node: ONNX node name.
        op_type: ONNX op type.
        output: the ONNX name of the node's first output tensor.
        reason: why it is left alone, when there is more to say than "no rule matches".
    """

    node: str
    op_type: str
    output: str
    reason: str = ""


def alpha_to_record(alpha: Alpha) -> float | list[float]:
    """A JSON-friendly alpha: a float, or a flat list of floats."""
    if isinstance(alpha, np.ndarray):
        return [float(value) for value in alpha.reshape(-1)]
    return float(alpha)


def constant_value(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """The value of tensor ``name`` when ``graph`` holds it as a constant, else ``None``.

    Initializers and the outputs of ``Constant`` nodes count (the importer's pre-passes fold
    the latter into the former, so both the prepared and the original graph read alike).
    """
    if not name:
        return None
    for tensor in graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    node = producer(graph, name)
    if node is None or node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    for entry in node.attribute:
        if entry.name in _CONSTANT_VALUES:
            value = onnx.helper.get_attribute_value(entry)
            if entry.name == "value":
                return numpy_helper.to_array(value)
            return np.asarray(value, dtype=_CONSTANT_VALUES[entry.name])
    return None


#: Constant-node attributes that hold a plain value, and the dtype ONNX gives it.
_CONSTANT_VALUES = {
    "value": None,
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
}


def constant_input(imported: ImportedModel, name: str) -> np.ndarray | None:
    """The value of a constant (initializer) tensor of the prepared model, else ``None``."""
    return constant_value(imported.prepared.graph, name)


def producer(graph: onnx.GraphProto, tensor: str) -> onnx.NodeProto | None:
    """The node of ``graph`` that outputs ``tensor``, else ``None``."""
    return next((node for node in graph.node if tensor in node.output), None)


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of a node attribute, or ``default`` when absent."""
    for entry in node.attribute:
        if entry.name == name:
            return onnx.helper.get_attribute_value(entry)
    return default
