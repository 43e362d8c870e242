"""One readable line about the nodes that cannot be converted, grouped by op type."""

from __future__ import annotations

from collections import Counter

#: ``(node name, domain, op type, opset)``, as :class:`~onnx_am.errors.UnsupportedOpError` keeps.
Unsupported = tuple[str, str, str, int]

#: How many node names each op type shows; the rest are counted.
FIRST_NAMES = 3


def summarize_unsupported(found: list[tuple[Unsupported, str]], first: int = FIRST_NAMES) -> str:
    """``"45 unsupported node(s) of 4 op type(s): ConvInteger x20 (ai.onnx opset 11: a, b, c,
    +17 more), ..."``: op types by count, each with the converter's reason if it gave one.

    Args:
        found: ``(node, reason)`` pairs; an empty reason means no converter exists.
        first: node names shown per op type.
    """
    by_op: dict[tuple[str, str, int], list[str]] = {}
    reasons: dict[tuple[str, str, int], str] = {}
    for (name, domain, op, version), reason in found:
        key = (domain, op, version)
        by_op.setdefault(key, []).append(name)
        if reason and key not in reasons:
            reasons[key] = reason
    counts = Counter({key: len(names) for key, names in by_op.items()})
    parts = []
    for key, count in counts.most_common():
        domain, op, version = key
        names = by_op[key]
        shown = ", ".join(names[:first]) + (f", +{count - first} more" if count > first else "")
        why = f"; {reasons[key]}" if key in reasons else ""
        parts.append(f"{op} x{count} ({domain} opset {version}: {shown}{why})")
    return (
        f"{len(found)} unsupported node(s) of {len(by_op)} op type(s): {', '.join(parts)} "
        "(every node: onnx-am inspect --json or --verbose)"
    )
