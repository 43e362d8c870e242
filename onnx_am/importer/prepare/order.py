"""The pre-passes in their fixed order, each stating what it needs and what it guarantees.

As in onnxscript's ``PassManager``, a :class:`Prepass` names the properties of the model it
``requires`` (made true by an earlier pass) and the ones it ``ensures``; :func:`check_order`
proves, for the inputs given, that every requirement is ensured by a pass that runs before
it. Where a property can be read off the model cheaply, :data:`CHECKS` holds the test, and
``prepare_model(..., verify=True)`` runs it after the pass that ensures it (the tests do).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnx_am.errors import PassError
from onnx_am.importer.input_spec import InputSpec
from onnx_am.importer.prepare.constants import (
    constants_to_initializers,
    fold_initializer_identities,
    refuse_huge_constants,
)
from onnx_am.importer.prepare.fed_batch import broadcast_fed_batch
from onnx_am.importer.prepare.fed_inputs import feeds_to_initializers
from onnx_am.importer.prepare.folding import fold_where_needed
from onnx_am.importer.prepare.naming import name_nodes, normalize_domains
from onnx_am.importer.prepare.opset import upgrade_opset
from onnx_am.importer.prepare.padding import explicit_auto_pad
from onnx_am.importer.prepare.pooling import split_asymmetric_average_pools
from onnx_am.importer.prepare.quantized import dequantize_constant_weights
from onnx_am.importer.prepare.reshape import drop_needless_allowzero
from onnx_am.importer.prepare.shapes import drop_recorded_shapes

# Properties of a model that the passes need or guarantee.
FEEDS_HELD = "fed inputs are initializers"
DEFAULT_DOMAIN = "the default domain is spelled ''"
NAMED_NODES = "every node has a unique name"
SIZES_BOUNDED = "no constant node asks for an absurd tensor"
NO_RECORDED_SHAPES = "no recorded intermediate shapes"
OPSET_UPGRADED = "opset 11 or later where onnx could convert it"
BATCH_BROADCAST = "fed one-row inputs follow the batch"
FOLDED = "constant subgraphs folded where control flow or feeds need it"
CONSTANTS_AS_INITIALIZERS = "Constant nodes are initializers"
IDENTITIES_FOLDED = "Identity of an initializer is an initializer"
WEIGHTS_DEQUANTIZED = "constant int weights behind DequantizeLinear are float initializers"
NO_NEEDLESS_ALLOWZERO = "Reshape allowzero only where it matters"
PADS_EXPLICIT = "auto_pad is explicit where the input's shape is known"
POOLS_SYMMETRIC = "AveragePools pad symmetrically"


@dataclass(frozen=True)
class PrepareInputs:
    """What the caller gives besides the model (see
    :func:`onnx_am.importer.prepare.prepare_model`)."""

    spec: InputSpec | None = None
    feeds: Mapping[str, np.ndarray] = field(default_factory=dict)
    batch_axes: Mapping[str, int] = field(default_factory=dict)


Apply = Callable[[onnx.ModelProto, PrepareInputs], tuple[onnx.ModelProto, list[str]]]


def _always(inputs: PrepareInputs) -> bool:
    return True


def _with_spec(inputs: PrepareInputs) -> bool:
    return inputs.spec is not None


def _with_batch_axes(inputs: PrepareInputs) -> bool:
    return inputs.spec is not None and bool(inputs.batch_axes)


@dataclass(frozen=True)
class Prepass:
    """One ONNX-side pre-pass: a model in, the model and notes out.

    Attributes:
        name: what it is called in errors.
        apply: the pass.
        requires: properties an earlier pass must have ensured.
        ensures: properties true after it.
        runs: whether it runs for the given inputs (e.g. only with an input spec).
    """

    name: str
    apply: Apply
    requires: frozenset[str] = frozenset()
    ensures: frozenset[str] = frozenset()
    runs: Callable[[PrepareInputs], bool] = _always


def _graph(function) -> Apply:
    """A pass of the model alone."""
    return lambda model, inputs: function(model)


#: Every pre-pass, in the order they run. Why each requirement holds is said beside it.
PREPASSES: tuple[Prepass, ...] = (
    Prepass(
        "feeds_to_initializers",
        lambda m, i: feeds_to_initializers(m, i.feeds),
        ensures=frozenset({FEEDS_HELD}),
    ),
    Prepass("normalize_domains", _graph(normalize_domains), ensures=frozenset({DEFAULT_DOMAIN})),
    Prepass("name_nodes", _graph(name_nodes), ensures=frozenset({NAMED_NODES})),
    Prepass(
        "refuse_huge_constants",
        _graph(refuse_huge_constants),
        requires=frozenset({NAMED_NODES}),  # its error names the node
        ensures=frozenset({SIZES_BOUNDED}),
    ),
    Prepass(
        "drop_recorded_shapes",
        _graph(drop_recorded_shapes),
        ensures=frozenset({NO_RECORDED_SHAPES}),
    ),
    Prepass(
        "upgrade_opset",
        _graph(upgrade_opset),
        # onnx's version converter trusts recorded shapes (stale ones dropped Softmax's
        # flattening, see drop_recorded_shapes)
        requires=frozenset({NO_RECORDED_SHAPES}),
        ensures=frozenset({OPSET_UPGRADED}),
    ),
    Prepass(
        "broadcast_fed_batch",
        lambda m, i: broadcast_fed_batch(m, i.spec, i.batch_axes),
        requires=frozenset({FEEDS_HELD}),  # it rewrites the fed initializers
        ensures=frozenset({BATCH_BROADCAST}),
        runs=_with_batch_axes,
    ),
    Prepass(
        "fold_where_needed",
        lambda m, i: fold_where_needed(m, fed=bool(i.feeds), spec=i.spec),
        # fed values fold only as initializers; huge constants are refused before anything
        # is computed
        requires=frozenset({FEEDS_HELD, SIZES_BOUNDED}),
        ensures=frozenset({FOLDED}),
    ),
    Prepass(
        "constants_to_initializers",
        _graph(constants_to_initializers),
        requires=frozenset({FOLDED}),  # after folding, more ConstantOfShape shapes are constant
        ensures=frozenset({CONSTANTS_AS_INITIALIZERS}),
    ),
    Prepass(
        "fold_initializer_identities",
        _graph(fold_initializer_identities),
        requires=frozenset({CONSTANTS_AS_INITIALIZERS}),  # Identity of a former Constant
        ensures=frozenset({IDENTITIES_FOLDED}),
    ),
    Prepass(
        "dequantize_constant_weights",
        _graph(dequantize_constant_weights),
        requires=frozenset({CONSTANTS_AS_INITIALIZERS}),  # int weights held as Constant nodes
        ensures=frozenset({WEIGHTS_DEQUANTIZED}),
    ),
    Prepass(
        "drop_needless_allowzero",
        _graph(drop_needless_allowzero),
        requires=frozenset({FOLDED}),  # a shape computed from fed values is constant once folded
        ensures=frozenset({NO_NEEDLESS_ALLOWZERO}),
    ),
    Prepass(
        "explicit_auto_pad",
        lambda m, i: explicit_auto_pad(m, i.spec),
        # a Conv's kernel size is read from its weight initializer's dims
        requires=frozenset({CONSTANTS_AS_INITIALIZERS, IDENTITIES_FOLDED, WEIGHTS_DEQUANTIZED}),
        ensures=frozenset({PADS_EXPLICIT}),
        runs=_with_spec,
    ),
    Prepass(
        "split_asymmetric_average_pools",
        lambda m, i: split_asymmetric_average_pools(m, i.spec),
        requires=frozenset({PADS_EXPLICIT}),  # it reads explicit pads
        ensures=frozenset({POOLS_SYMMETRIC}),
        runs=_with_spec,
    ),
)


def check_order(passes: Sequence[Prepass], inputs: PrepareInputs) -> list[Prepass]:
    """The passes that run for ``inputs``, after proving each one's requirements ensured by
    one that runs before it.

    Raises:
        PassError: a pass needs a property no earlier pass that runs ensures.
    """
    ensured: set[str] = set()
    running = [p for p in passes if p.runs(inputs)]
    for prepass in running:
        missing = prepass.requires - ensured
        if missing:
            raise PassError(
                f"pre-pass {prepass.name!r} needs {', '.join(sorted(missing))}, which no "
                "earlier pre-pass ensures"
            )
        ensured |= prepass.ensures
    return running


def _feeds_held(model: onnx.ModelProto, inputs: PrepareInputs) -> bool:
    held = {t.name for t in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input}
    return all(name in held and name not in graph_inputs for name in inputs.feeds)


def _default_domain(model: onnx.ModelProto, inputs: PrepareInputs) -> bool:
    domains = [n.domain for n in model.graph.node] + [o.domain for o in model.opset_import]
    return "ai.onnx" not in domains


def _named_nodes(model: onnx.ModelProto, inputs: PrepareInputs) -> bool:
    names = [n.name for n in model.graph.node]
    return all(names) and len(set(names)) == len(names)


def _no_recorded_shapes(model: onnx.ModelProto, inputs: PrepareInputs) -> bool:
    return len(model.graph.value_info) == 0


#: Properties that can be read off a model, with their test.
CHECKS: dict[str, Callable[[onnx.ModelProto, PrepareInputs], bool]] = {
    FEEDS_HELD: _feeds_held,
    DEFAULT_DOMAIN: _default_domain,
    NAMED_NODES: _named_nodes,
    NO_RECORDED_SHAPES: _no_recorded_shapes,
}


def verify_ensured(prepass: Prepass, model: onnx.ModelProto, inputs: PrepareInputs) -> None:
    """Test what ``prepass`` ensures on the model it returned, where a test exists.

    Raises:
        PassError: a property the pass ensures does not hold.
    """
    for prop in sorted(prepass.ensures):
        check = CHECKS.get(prop)
        if check is not None and not check(model, inputs):
            raise PassError(f"pre-pass {prepass.name!r} did not ensure that {prop}")


__all__ = [
    "CHECKS",
    "PREPASSES",
    "PrepareInputs",
    "Prepass",
    "check_order",
    "verify_ensured",
]
