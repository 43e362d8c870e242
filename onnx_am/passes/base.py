"""The contract of the decoupling pass: rules that recognise rectifiers, and what it returns.

A :class:`RectifierRule` is a registry entry for one kind of rectifier. It looks at an ONNX
node (and the torch module converted from it) and says whether the node is a rectifier of
its kind and with which forward slope ``alpha``; it then builds the replacement module.
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
    """

    name: ClassVar[str] = ""
    op_type: ClassVar[str] = ""

    def match(
        self, node: onnx.NodeProto, module: nn.Module, imported: ImportedModel
    ) -> RuleMatch | None:
        """Whether ``node`` (converted to ``module``) is a rectifier of this kind.

        Args:
            node: the ONNX node of the prepared model.
            module: the torch module onnx2torch made of it (never an already-decoupled one).
            imported: the model, for constant inputs and producers.

        Returns:
            The match, or ``None`` when this rule does not apply.
        """
        raise NotImplementedError

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


def constant_input(imported: ImportedModel, name: str) -> np.ndarray | None:
    """The value of a constant (initializer) tensor of the prepared model, else ``None``."""
    if not name:
        return None
    for tensor in imported.prepared.graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    return None


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of a node attribute, or ``default`` when absent."""
    for entry in node.attribute:
        if entry.name == name:
            return onnx.helper.get_attribute_value(entry)
    return default
