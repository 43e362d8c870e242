"""What the token searches' calls cost on this model, timed at plan time.

The searches spend their time in two kinds of batched calls (:mod:`onnx_am.tokens.space`): a
forward of up to :data:`~onnx_am.tokens.space.MAX_ROWS` id sequences (the swap checks, the
relaxed search's ids) and a gradient of a few rows (a swap round's ranking, a relaxed or
reference step). :func:`time_token_calls` times real ones of each, on the real scorer of one
target, as :mod:`onnx_am.engine.probe` times the engine's step: after one untimed wide call
of each (warm-up: a first call of 64 rows pays for its fresh memory, 1.4 x the search's
per-row time on magika), the median of a few. :meth:`onnx_am.tokens.run.TokenPlan.price` turns them
into seconds with the searches' call schedule.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from onnx_am.tokens.search import ranked_swaps
from onnx_am.tokens.space import Cost, Scorer, TokenSpace, evaluate, gradient

#: Rows of the wide timed forward: the first round's swap checks (``search.CANDIDATES``).
WIDE_ROWS = 64
#: Rows of the wide timed gradient (the relaxed and reference searches' rows, a beam's).
WIDE_GRADIENT = 4
#: Timed repeats of each call (the median is kept), fewer for the wide calls of a large
#: model: a wide call is repeated only while its repeats so far took under
#: :data:`WIDE_SECONDS` (so that planning magika stays a few seconds).
REPEATS = 3
WIDE_SECONDS = 1.0


@dataclass(frozen=True)
class TokenTimings:
    """Seconds of the token searches' calls on one model.

    Attributes:
        forward_fixed, forward_row: a forward of ``n`` rows costs
            ``forward_fixed + forward_row * n``.
        gradient_fixed, gradient_row: likewise for a gradient call.
        rank: ranking every swap of one sequence by a gradient (the swap searches do it
            after each gradient, per beam: ``search.ranked_swaps``).
    """

    forward_fixed: float
    forward_row: float
    gradient_fixed: float
    gradient_row: float
    rank: float = 0.0

    def forward(self, rows: float) -> float:
        return self.forward_fixed + self.forward_row * rows

    def gradient(self, rows: float) -> float:
        return self.gradient_fixed + self.gradient_row * rows

    def to_dict(self) -> dict:
        return {
            "forward_fixed": self.forward_fixed,
            "forward_row": self.forward_row,
            "gradient_fixed": self.gradient_fixed,
            "gradient_row": self.gradient_row,
            "rank": self.rank,
        }


def time_token_calls(
    score: Scorer, space: TokenSpace, clock: Callable[[], float] = time.perf_counter
) -> TokenTimings:
    """Time forwards of 1 and :data:`WIDE_ROWS` rows and gradients of 1 and
    :data:`WIDE_GRADIENT` rows of ``score`` at random ids (seeded), each line fitted
    through its two points (never below zero), and one ranking of the swaps."""
    generator = torch.Generator().manual_seed(0)
    one, wide = space.random(1, generator), space.random(WIDE_ROWS, generator)
    cost = Cost()

    def forward(ids: torch.Tensor) -> None:
        evaluate(score, space, ids, cost)

    def backward(ids: torch.Tensor) -> None:
        gradient(score, space.embed(ids), cost)

    grad = torch.randn(1, space.length, space.matrix.shape[1], generator=generator)

    forward(wide)  # warm-up: a first wide call also pays for its fresh memory
    backward(wide[:WIDE_GRADIENT])
    f1 = _median(clock, lambda: forward(one), REPEATS)
    fw = _median(clock, lambda: forward(wide), REPEATS, WIDE_SECONDS)
    g1 = _median(clock, lambda: backward(one), REPEATS)
    gw = _median(clock, lambda: backward(wide[:WIDE_GRADIENT]), REPEATS, WIDE_SECONDS)
    rank = _median(clock, lambda: ranked_swaps(space, one, grad), REPEATS, WIDE_SECONDS)
    f_row = max(0.0, (fw - f1) / (WIDE_ROWS - 1))
    g_row = max(0.0, (gw - g1) / (WIDE_GRADIENT - 1))
    return TokenTimings(max(0.0, f1 - f_row), f_row, max(0.0, g1 - g_row), g_row, rank)


def _median(
    clock: Callable[[], float],
    call: Callable[[], None],
    repeats: int,
    within: float = float("inf"),
) -> float:
    """The median seconds of ``call`` over ``repeats`` calls, fewer (at least one) once the
    calls so far took ``within`` seconds."""
    times: list[float] = []
    while len(times) < repeats and sum(times) < within:
        tic = clock()
        call()
        times.append(clock() - tic)
    return statistics.median(times)
