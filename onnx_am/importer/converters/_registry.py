"""Small helpers shared by the converter modules: registering without clashing, aliasing.

Converters are registered through onnx2torch's public ``add_converter``. A newer onnx2torch
may already provide a converter we add here; :func:`register` then leaves it alone, so an
upgrade never breaks the import of this package. Two converters of this package for the same
op version are a mistake and fail at import (the second would silently never run).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from onnx import defs
from onnx2torch.node_converters import get_converter
from onnx2torch.node_converters.registry import (
    _CONVERTER_REGISTRY,
    OperationDescription,
    add_converter,
)
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

Converter = Callable[[OnnxNode, OnnxGraph], OperationConverterResult]

#: Every (op type, version) this package registered, for the README table and tests.
REGISTERED: list[tuple[str, int]] = []

#: Every (domain, op type, version) a converter of this package was written for.
_CLAIMED: set[tuple[str, str, int]] = set()


def has_converter(op_type: str, version: int, domain: str = defs.ONNX_DOMAIN) -> bool:
    """Whether onnx2torch (or we) can already convert exactly this op version."""
    try:
        get_converter(operation_type=op_type, version=version, domain=domain)
    except NotImplementedError:
        return False
    return True


def register(
    op_type: str, versions: Iterable[int], domain: str = defs.ONNX_DOMAIN
) -> Callable[[Converter], Converter]:
    """Decorator: register ``converter`` for each version (of ``domain``, default the ONNX
    one, e.g. ``"com.microsoft"`` for onnxruntime's contrib ops) that has no converter yet."""

    def deco(converter: Converter) -> Converter:
        for version in versions:
            if (domain, op_type, version) in _CLAIMED:
                raise RuntimeError(f"two onnx-am converters for {domain}::{op_type}-{version}")
            _CLAIMED.add((domain, op_type, version))
            if not has_converter(op_type, version, domain):
                add_converter(operation_type=op_type, version=version, domain=domain)(converter)
                REGISTERED.append((op_type, version))
        return converter

    return deco


def replace(op_type: str, versions: Iterable[int]) -> Callable[[Converter], Converter]:
    """Decorator: use ``converter`` instead of onnx2torch's for each version (on purpose,
    for versions whose onnx2torch converter mishandles valid models; each such case has a
    parity test). The replaced converter is passed as ``fallback=`` to ``converter``."""

    def deco(converter: Converter) -> Converter:
        for version in versions:
            key = OperationDescription(
                domain=defs.ONNX_DOMAIN, operation_type=op_type, version=version
            )
            fallback = _CONVERTER_REGISTRY.pop(key, None)
            add_converter(operation_type=op_type, version=version)(
                functools.partial(converter, fallback=fallback)
            )
            REGISTERED.append((op_type, version))
        return converter

    return deco


def register_alias(
    op_type: str,
    versions: Iterable[int],
    target_version: int,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Convert newer ``versions`` of an op with the converter of ``target_version``.

    Newer versions of most ops only widen the accepted types. Attributes added since
    ``target_version`` are listed in ``defaults``; a node that sets one of them to anything
    else is refused (``NotImplementedError``, which the importer reports per node).
    """
    target = get_converter(operation_type=op_type, version=target_version)
    required = dict(defaults or {})

    def converter(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        for name, default in required.items():
            value = node.attributes.get(name, default)
            if value != default:
                raise NotImplementedError(f"{op_type} with {name}={value!r} is not supported")
        return target(node, graph)

    register(op_type, versions)(converter)
