"""The swap search's rounds on hand-made scores (no model): what it spends, that it checks no
swap twice for the same sequence, and that improving swaps are combined."""

from __future__ import annotations

import pytest
import torch

from onnx_am.tokens.search import SEARCHES, swap_search
from onnx_am.tokens.space import BACKWARD_COST, TokenSpace

V, L = 16, 6
WEIGHTS = torch.randn(L, V, generator=torch.Generator().manual_seed(0))
SPACE = TokenSpace(torch.eye(V), L)


def separable(x: torch.Tensor) -> torch.Tensor:
    """Each position's own score of its token (the maximum: each position's best token)."""
    return (x * WEIGHTS).sum(dim=(1, 2))


def planted(x: torch.Tensor) -> torch.Tensor:
    """A small score per token plus a bonus for the tokens 3 4 5 side by side anywhere."""
    base = 0.1 * separable(x)
    trigger = x[:, :-2, 3] * x[:, 1:-1, 4] * x[:, 2:, 5]
    return base + 5 * trigger.max(dim=1).values


@pytest.mark.parametrize("method", ["greedy", "beam"])
@pytest.mark.parametrize("budget", [20, 257, 1500])
def test_the_search_spends_its_budget_and_no_more(method, budget):
    found = SEARCHES[method](planted, SPACE, budget, 0)
    width = 1 if method == "greedy" else 4
    assert budget - (1 + BACKWARD_COST) * width < found.cost <= budget


def test_one_round_of_combined_swaps_reaches_a_separable_maximum():
    """Every position's best swap improves; checked together they give the maximum after one
    gradient and one round (1 + 3 + 64 + 5 forward-pass equivalents), where one swap per
    round would need six rounds."""
    found = swap_search(separable, SPACE, 1 + 3 + 64 + 5, seed=0)
    assert found.value == pytest.approx(float(WEIGHTS.max(dim=1).values.sum()), abs=1e-5)
    assert found.ids == tuple(WEIGHTS.argmax(dim=1).tolist())


def test_no_swap_is_checked_twice_for_the_same_sequence():
    """Of the rows checked between two gradients, those one swap away from the gradient's
    sequence are distinct, and the gradient is not taken again at an unchanged sequence (the
    next round goes on down the same ranking)."""
    calls: list[tuple[bool, list[tuple[int, ...]]]] = []

    def recording(x: torch.Tensor) -> torch.Tensor:
        rows = [tuple(row.argmax(dim=-1).tolist()) for row in x.detach()]
        calls.append((x.requires_grad, rows))
        return planted(x)

    swap_search(recording, SPACE, 3000, seed=1)
    gradients = [rows[0] for grad, rows in calls if grad]
    assert len(gradients) > 5
    assert all(a != b for a, b in zip(gradients, gradients[1:], strict=False))
    at, swaps = None, []
    for grad, rows in calls:
        if grad:
            at, swaps = rows[0], []
        elif at is not None:
            swaps += [row for row in rows if sum(a != b for a, b in zip(row, at, strict=True)) == 1]
            assert len(set(swaps)) == len(swaps)
    assert len(swaps) > 0
