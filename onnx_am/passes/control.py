"""``SlopeControl``: the one interface through which the AM engine sets rectifier slopes.

Row ``i`` of a batch uses gradient method ``methods[i]``. Setting slopes only stores small
per-row tensors on the rewritten modules, so they can change every step (schedules) without
rebuilding anything; when they do not change (a fixed beta), the same tensors are kept, so
the modules' plans (:class:`~onnx_am.passes.rectifier.SlopeLayout`) are kept too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from onnx_am.errors import PassError
from onnx_am.methods import GradientMethod
from onnx_am.passes.base import RewriteRecord
from onnx_am.passes.rectifier import Alpha, DecoupledRectifier, SlopeLayout

#: A row's slope: ``None`` (the module's own alpha), a float, or one per channel.
RowSlope = float | np.ndarray | None


class SlopeControl:
    """Sets the per-row forward and backward slopes of the rewritten rectifiers.

    Attributes:
        records: the rewritten nodes, in graph order.
    """

    def __init__(self, entries: Sequence[tuple[RewriteRecord, DecoupledRectifier]]):
        self._entries = list(entries)
        self.records: list[RewriteRecord] = [record for record, _ in self._entries]
        # Per module: (what the slopes were built from, forward tensor, backward tensor).
        self._built: list[tuple[tuple, torch.Tensor | None, torch.Tensor | None] | None] = [
            None
        ] * len(self._entries)
        # Per method object: (the object, its value key); objects are kept so ids stay valid.
        self._method_keys: dict[int, tuple[GradientMethod, tuple]] = {}
        self._last_layout: tuple = (None, None)
        # (row keys, what the slopes depended on, per module (forward, backward)).
        self._last_set: tuple | None = None

    def set_rows(
        self,
        methods: Sequence[GradientMethod],
        step: int = 0,
        total_steps: int = 1,
        *,
        proxy_forward: bool = True,
    ) -> None:
        """Row ``i`` of the next batches uses ``methods[i]``.

        For every rewritten module the backward slope of row ``i`` is
        ``methods[i].beta_for(node, op_type, alpha, step, total_steps)`` (``None``: its own
        alpha); the forward slope is alpha, except for ``proxy`` rows when ``proxy_forward``,
        where it is the same beta (the proxy network's forward).

        Slopes are worked out once per distinct method (by value, not per row), and a module
        keeps its slope tensors while their values stay the same (a fixed beta every step);
        only a change (a schedule's next beta, other methods) builds new ones.

        Args:
            methods: one gradient method per row of the batch.
            step: the optimization step, from 0.
            total_steps: the number of steps (for schedules).
            proxy_forward: run proxy rows through the proxy network's forward.

        Raises:
            PassError: no methods, a bad step, or a slope that is not finite.
        """
        if total_steps < 1 or not 0 <= step < total_steps:
            raise PassError(
                f"step {step} is outside 0..{total_steps - 1} (total_steps={total_steps})"
            )
        rows, distinct, layout = self._layout(methods)
        scheduled = any(m.schedule is not None or m.anneal_to_alpha for m in distinct)
        depends = (step, total_steps, proxy_forward) if scheduled else (proxy_forward,)
        last = self._last_set
        if last is not None and last[0] == rows and last[1] == depends:
            # The same methods, row by row, and slopes that do not change: the same tensors.
            for (_, module), slopes in zip(self._entries, last[2], strict=True):
                module.set_slopes(*slopes)
            return
        proxy = [proxy_forward and method.kind == "proxy" for method in distinct]
        for index, (record, module) in enumerate(self._entries):
            slopes = [
                _row_slope(method, record, module.alpha, step, total_steps) for method in distinct
            ]
            key = _layout_key(
                layout, [(_value_key(s), p) for s, p in zip(slopes, proxy, strict=True)]
            )
            built = self._built[index]
            if built is None or built[0] != key:
                backward = _slope_tensor(slopes, layout, module.alpha)
                forward = _slope_tensor(
                    [s if p else None for s, p in zip(slopes, proxy, strict=True)],
                    layout,
                    module.alpha,
                )
                plan = _plan(record.node, forward, backward, slopes, proxy, layout)
                built = self._built[index] = (key, forward, backward, plan)
            module.set_slopes(*built[1:])
        self._last_set = (rows, depends, [built[1:] for built in self._built])

    def _layout(
        self, methods: Sequence[GradientMethod]
    ) -> tuple[tuple, list[GradientMethod], tuple[int, ...]]:
        """The rows' method keys (:func:`method_key`), the distinct methods and, per row, the
        index of its method among them.

        Keys are values: a list or a new tuple of equal methods gives the same layout (and
        :meth:`set_rows` its fast path) as the tuple the engine passes every step.
        """
        rows = tuple(self._key(method) for method in methods)
        if not rows:
            raise PassError("set_rows needs at least one gradient method (one per row)")
        if self._last_layout[0] == rows:
            return self._last_layout[1]
        position: dict[tuple, int] = {}
        distinct = []
        for key, method in zip(rows, methods, strict=True):
            if key not in position:
                position[key] = len(distinct)
                distinct.append(method)
        found = rows, distinct, tuple(position[key] for key in rows)
        self._last_layout = (rows, found)
        return found

    def _key(self, method: GradientMethod) -> tuple:
        """:func:`method_key` of ``method``, worked out once per object."""
        known = self._method_keys.get(id(method))
        if known is not None and known[0] is method:
            return known[1]
        if len(self._method_keys) > 4096:
            self._method_keys.clear()
        key = method_key(method)
        self._method_keys[id(method)] = (method, key)
        return key

    def changes_forward(self, method: GradientMethod, total_steps: int = 1) -> bool:
        """Whether ``method`` (with ``proxy_forward``) runs a forward other than the original
        one at some step: a proxy whose slope differs from a module's alpha (a scheduled one
        is assumed to).

        Its rows then need a second, standard forward for their true values.
        """
        if method.kind != "proxy":
            return False
        if method.schedule is not None or method.anneal_to_alpha:
            return True
        return any(
            _row_slope(method, record, module.alpha, 0, total_steps) is not None
            for record, module in self._entries
        )

    def set_standard(self) -> None:
        """All modules compute the original op, forward and backward (the true gradient)."""
        for _, module in self._entries:
            module.set_slopes(None, None)

    @contextmanager
    def rows(
        self,
        methods: Sequence[GradientMethod],
        step: int = 0,
        total_steps: int = 1,
        *,
        proxy_forward: bool = True,
    ) -> Iterator[SlopeControl]:
        """:meth:`set_rows` for the duration of a ``with`` block, then :meth:`set_standard`."""
        try:
            self.set_rows(methods, step, total_steps, proxy_forward=proxy_forward)
            yield self
        finally:
            self.set_standard()


def method_key(method: GradientMethod) -> tuple:
    """What a method's slopes depend on, as a hashable value: two methods with equal keys set
    the same slopes at every step (a schedule, a function, counts by identity)."""
    return (
        method.kind,
        method.beta,
        None if method.schedule is None else id(method.schedule),
        tuple(sorted(method.per_op.items())),
        tuple(sorted(method.per_node.items())),
        method.anneal_to_alpha,
    )


def _row_slope(
    method: GradientMethod, record: RewriteRecord, alpha: Alpha, step: int, total: int
) -> RowSlope:
    """One row's slope for one module; ``None`` when it equals the module's alpha.

    A slope equal to alpha (at float32 precision) is ``None``, so such a row runs the original
    op and gets exactly its gradient, ties at 0 included.
    """
    if not isinstance(alpha, np.ndarray):
        beta = method.beta_for(record.node, record.op_type, alpha, step, total)
        if beta is None:
            return None
        _check_finite(beta, record)
        return None if _same(beta, alpha) else float(beta)
    betas = {}
    for value in np.unique(alpha):
        beta = method.beta_for(record.node, record.op_type, float(value), step, total)
        if beta is None:
            return None
        betas[float(value)] = _check_finite(beta, record)
    if all(_same(beta, value) for value, beta in betas.items()):
        return None
    if len(set(betas.values())) == 1:
        return next(iter(betas.values()))
    return np.vectorize(betas.__getitem__, otypes=[np.float64])(alpha)


def _layout_key(layout: tuple[int, ...], values: list[tuple]) -> tuple:
    """What one module's slope tensors are built from, the same for the same per-row values.

    ``layout[i]`` indexes ``values`` (one per distinct method); methods whose values are
    equal here are merged first, so other objects with the same slopes give the same key.
    """
    first: dict[tuple, int] = {}
    merged = [first.setdefault(value, len(first)) for value in values]
    if merged != list(range(len(values))):
        layout = tuple(merged[i] for i in layout)
    return layout, tuple(first)


def _value_key(slope: RowSlope) -> object:
    """A hashable, exact stand-in for a row slope (arrays by shape and bytes, floats by bits)."""
    if isinstance(slope, np.ndarray):
        return slope.shape, slope.tobytes()
    return None if slope is None else float(slope).hex()


def _same(beta: float, alpha: float) -> bool:
    """Equal at float32 precision, where the original op gives exactly the same gradient."""
    return bool(np.float32(beta) == np.float32(alpha))


def _check_finite(beta: float, record: RewriteRecord) -> float:
    if not math.isfinite(beta):
        raise PassError(f"slope {beta!r} for node {record.node!r} ({record.op_type}) is not finite")
    return float(beta)


def _plan(
    node: str,
    forward: torch.Tensor | None,
    backward: torch.Tensor | None,
    slopes: list[RowSlope],
    proxy: list[bool],
    layout: tuple[int, ...],
) -> SlopeLayout | None:
    """The modules' :class:`SlopeLayout` of float slopes, worked out per method (``None`` when
    a slope is per channel, or no row has one: the module then derives it itself)."""
    if (forward is None and backward is None) or any(isinstance(s, np.ndarray) for s in slopes):
        return None
    keys = [
        ("alpha", 0.0) if s is None else ("proxy" if p else "decoupled", s)
        for s, p in zip(slopes, proxy, strict=True)
    ]
    return SlopeLayout.of_methods(node, forward, backward, keys, layout)


def _slope_tensor(
    slopes: list[RowSlope], layout: tuple[int, ...], alpha: Alpha
) -> torch.Tensor | None:
    """Row ``i`` gets ``slopes[layout[i]]`` (one slope per distinct method): ``(N,)``
    NaN-padded slopes, or ``(N, *alpha.shape)`` when some slope is per channel. Decided per
    method, not per row: a schedule builds these every step."""
    if all(slope is None for slope in slopes):
        return None
    if not any(isinstance(slope, np.ndarray) for slope in slopes):
        values = [math.nan if slope is None else slope for slope in slopes]
        return torch.tensor([values[i] for i in layout], dtype=torch.float64)
    table = np.full((len(layout), *np.shape(alpha)), np.nan)
    for row, index in enumerate(layout):
        if slopes[index] is not None:
            table[row] = slopes[index]
    return torch.from_numpy(table)
