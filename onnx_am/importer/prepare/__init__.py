"""ONNX-side pre-passes that make a model convertible without changing what it computes.

Each pass takes a model and returns ``(model, notes)``, and states what it needs and
guarantees (:mod:`onnx_am.importer.prepare.order`); :func:`prepare_model` runs them in their
fixed order on a copy, so the original is never modified. Parity with onnxruntime on the
*original* model checks that the passes were sound. What needs a torch module rather than a
graph edit lives in :mod:`onnx_am.importer.converters`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from onnx_am.importer.input_spec import InputSpec
from onnx_am.importer.prepare.constants import (
    MAX_CONSTANT_ELEMENTS,
    constants_to_initializers,
    fold_initializer_identities,
    refuse_huge_constants,
)
from onnx_am.importer.prepare.fed_batch import broadcast_fed_batch
from onnx_am.importer.prepare.fed_inputs import feeds_to_initializers
from onnx_am.importer.prepare.folding import fold_constants, fold_where_needed
from onnx_am.importer.prepare.naming import name_nodes, normalize_domains
from onnx_am.importer.prepare.opset import upgrade_opset
from onnx_am.importer.prepare.order import (
    PREPASSES,
    PrepareInputs,
    Prepass,
    check_order,
    verify_ensured,
)
from onnx_am.importer.prepare.padding import explicit_auto_pad, same_pads
from onnx_am.importer.prepare.pooling import split_asymmetric_average_pools
from onnx_am.importer.prepare.quantized import dequantize_constant_weights
from onnx_am.importer.prepare.reshape import drop_needless_allowzero
from onnx_am.importer.prepare.shapes import drop_recorded_shapes
from onnx_am.importer.prepare.util import default_opset, infer_shapes


def prepare_model(
    model: onnx.ModelProto,
    spec: InputSpec | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    batch_axes: Mapping[str, int] | None = None,
    verify: bool = False,
) -> tuple[onnx.ModelProto, list[str]]:
    """Run the pre-passes (:data:`~onnx_am.importer.prepare.order.PREPASSES`, in their fixed,
    checked order) on a copy of ``model``.

    Args:
        model: the model as loaded.
        spec: the chosen input; with it, ``auto_pad`` is made explicit from inferred shapes.
        feeds: values of the inputs that are not optimized; they become initializers first,
            so every later pass sees them as constants.
        batch_axes: fed input name -> its axis tied to ``spec``'s batch dim; a value of one
            row along it is broadcast to the batch (needs ``spec``).
        verify: test, after each pass, the properties it ensures that can be read off the
            model (:data:`~onnx_am.importer.prepare.order.CHECKS`).

    Returns:
        The prepared copy and one note per change.

    Raises:
        ModelLoadError: a node would create a tensor too large to allocate.
        PassError: with ``verify``, a pass did not ensure what it states.
    """
    inputs = PrepareInputs(spec, feeds or {}, batch_axes or {})
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    notes: list[str] = []
    for prepass in check_order(PREPASSES, inputs):
        prepared, new_notes = prepass.apply(prepared, inputs)
        notes.extend(new_notes)
        if verify:
            verify_ensured(prepass, prepared, inputs)
    return prepared, notes


__all__ = [
    "MAX_CONSTANT_ELEMENTS",
    "PREPASSES",
    "Prepass",
    "broadcast_fed_batch",
    "constants_to_initializers",
    "default_opset",
    "dequantize_constant_weights",
    "drop_needless_allowzero",
    "drop_recorded_shapes",
    "explicit_auto_pad",
    "feeds_to_initializers",
    "fold_constants",
    "fold_where_needed",
    "fold_initializer_identities",
    "infer_shapes",
    "name_nodes",
    "normalize_domains",
    "prepare_model",
    "refuse_huge_constants",
    "same_pads",
    "split_asymmetric_average_pools",
    "upgrade_opset",
]
