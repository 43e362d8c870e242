"""Searches over sequences of token ids, each spending at most a given cost.

- :func:`swap_search`: gradient-guided token swaps (HotFlip / AutoPrompt / GCG): the gradient
  at the current sequence ranks every single-token swap by its linear gain
  ``g_i . (E[v] - E[s_i])``; the ``top_k`` best per position are checked with batched
  forward passes and the best sequences kept (``beam`` of them; 1 is greedy). When no
  checked swap improves, ``top_k`` doubles, up to every token; then the sequence is a local
  optimum of single swaps, and changes of two adjacent tokens (each among its ``PAIR_K``
  best by linear gain) are tried; when none improves, the search restarts, alternately from
  the best so far with ``PERTURB`` ids redrawn and from random ids, keeping the best.
- :func:`relaxed_search`: a distribution over the ``V`` tokens per position, mixed through
  the embedding matrix, ascended with Adam while its temperature is annealed towards
  one-hot; the argmax ids are checked every step.
- :func:`embedding_search`: the tensor itself, free in the per-dimension box of the matrix's
  rows (normalized projected gradient ascent): the unconstrained reference a token result
  is compared with (not a sequence of tokens).

Every search is deterministic for a seed and returns a :class:`Found`. Given a
:class:`~onnx_am.tokens.space.Halt`, a search asks it between batches and, told to stop,
returns the best it found until then (``Found.stopped``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from onnx_am.tokens.space import Cost, Halt, Scorer, TokenSpace, evaluate, gradient

#: Candidates checked per step and beam at first (doubled while nothing improves).
CANDIDATES = 64
#: Swaps ranked per position at first.
TOP_K = 8
#: Tokens per position combined in the adjacent-pair moves tried at a local optimum.
PAIR_K = 8
#: Positions redrawn when a restart perturbs the best sequence.
PERTURB = 2
RELAXED_ROWS = 4
RELAXED_LR = 0.3
TEMPERATURES = (1.0, 0.02)


@dataclass(frozen=True)
class Found:
    """The best a search found.

    Attributes:
        ids: the sequence (``None`` for :func:`embedding_search`).
        value: the objective there, as the scorer computed it.
        cost: forward-pass equivalents spent.
        stopped: the search was told to stop before its budget was spent.
    """

    ids: tuple[int, ...] | None
    value: float
    cost: int
    stopped: bool = False


class _Best:
    def __init__(self) -> None:
        self.value, self.ids = -math.inf, None

    def offer(self, ids: torch.Tensor, values: torch.Tensor) -> bool:
        if values.numel() == 0:
            return False
        index = int(values.argmax())
        if float(values[index]) > self.value:
            self.value, self.ids = float(values[index]), tuple(int(i) for i in ids[index])
            return True
        return False


def swap_search(
    score: Scorer,
    space: TokenSpace,
    budget: int,
    beam: int = 1,
    seed: int = 0,
    halt: Halt | None = None,
) -> Found:
    """Gradient-guided swap search (greedy for ``beam == 1``); see the module docstring."""
    generator = torch.Generator().manual_seed(seed)
    cost, best, halt = Cost(), _Best(), halt or Halt()
    beams = space.random(beam, generator)
    values = evaluate(score, space, beams, cost)
    best.offer(beams, values)
    top_k, candidates, restarts = TOP_K, CANDIDATES, 0
    while cost.units < budget and space.free and not halt():
        _, grad = gradient(score, space.embed(beams), cost)
        swaps = _ranked_swaps(space, beams, grad, min(top_k, space.vocab_size - 1))
        room = max(budget - cost.units, 0)
        chosen = _choose(swaps, min(candidates * beams.shape[0], room))
        if chosen is None:
            break
        trial = beams[chosen[:, 0]].clone()
        trial[torch.arange(len(chosen)), chosen[:, 1]] = chosen[:, 2]
        found = evaluate(score, space, trial, cost, halt)
        trial = trial[: len(found)]
        pool_ids = torch.cat([beams, trial])
        pool_values = torch.cat([values, found])
        improved = bool(found.numel()) and float(found.max()) > float(values.max()) + 1e-7
        best.offer(pool_ids, pool_values)
        beams, values = _keep(pool_ids, pool_values, beam)
        if improved or halt():
            top_k, candidates = TOP_K, CANDIDATES
            continue
        exhausted = top_k >= space.vocab_size - 1 and len(chosen) == len(swaps)
        if not exhausted:
            top_k, candidates = top_k * 2, candidates * 2
            continue
        # a local optimum of single swaps: try adjacent pairs, else start again elsewhere
        trial = _pair_moves(space, beams[0], grad[0], PAIR_K)[: max(budget - cost.units, 0)]
        found = evaluate(score, space, trial, cost, halt)
        trial = trial[: len(found)]
        top_k, candidates = TOP_K, CANDIDATES
        if found.numel() and float(found.max()) > float(values.max()) + 1e-7:
            best.offer(trial, found)
            beams, values = _keep(torch.cat([beams, trial]), torch.cat([values, found]), beam)
            continue
        restarts += 1
        beams = space.random(beam, generator)
        if restarts % 2:  # every other restart: the best so far with PERTURB ids redrawn
            beams = _perturbed(space, torch.tensor(best.ids), beam, generator)
        values = evaluate(score, space, beams, cost)
        best.offer(beams, values)
    return Found(best.ids, best.value, cost.units, halt.fired)


def _pair_moves(space: TokenSpace, ids: torch.Tensor, grad: torch.Tensor, k: int) -> torch.Tensor:
    """Sequences with two adjacent free positions both changed, to each position's ``k`` best
    tokens by linear gain: ``[pairs * k * k, L]``."""
    gain = grad @ space.matrix.T  # [L, V]
    gain.scatter_(1, ids[:, None], -math.inf)
    k = min(k, space.vocab_size - 1)
    top = gain.topk(k, dim=1).indices  # [L, k]
    free = set(space.free)
    trials = []
    for position in range(space.length - 1):
        if position in free and position + 1 in free:
            first = top[position].repeat_interleave(k)
            second = top[position + 1].repeat(k)
            block = ids.repeat(k * k, 1)
            block[:, position], block[:, position + 1] = first, second
            trials.append(block)
    return torch.cat(trials) if trials else ids[None][:0]


def _perturbed(
    space: TokenSpace, ids: torch.Tensor, rows: int, generator: torch.Generator
) -> torch.Tensor:
    """``rows`` copies of ``ids`` with :data:`PERTURB` free positions each set at random."""
    out = ids.repeat(rows, 1)
    free = torch.tensor(space.free)
    for row in range(rows):
        picked = free[torch.randperm(len(free), generator=generator)[:PERTURB]]
        out[row, picked] = torch.randint(0, space.vocab_size, (len(picked),), generator=generator)
    return out


def _ranked_swaps(
    space: TokenSpace, beams: torch.Tensor, grad: torch.Tensor, top_k: int
) -> torch.Tensor:
    """``[n, 4]`` rows ``(beam, position, token, rank)`` of the ``top_k`` swaps per position
    by linear gain, best first within each rank."""
    gain = grad @ space.matrix.T  # [W, L, V]
    gain = gain - torch.gather(gain, 2, beams[..., None])
    gain.scatter_(2, beams[..., None], -math.inf)
    for position in space.fixed:
        gain[:, position, :] = -math.inf
    top = gain.topk(top_k, dim=2)
    width, length = gain.shape[0], gain.shape[1]
    scores = top.values.permute(2, 0, 1).reshape(top_k, -1)  # [rank, beam * position]
    order = scores.argsort(dim=1, descending=True)
    flat = order.reshape(-1)
    rank = torch.arange(top_k).repeat_interleave(width * length)
    beam, position = flat // length, flat % length
    token = top.indices[beam, position, rank]
    finite = torch.isfinite(scores.gather(1, order).reshape(-1))
    return torch.stack([beam, position, token, rank], dim=1)[finite]


def _choose(swaps: torch.Tensor, count: int) -> torch.Tensor | None:
    """The first ``count`` swaps in rank order (all when they fit)."""
    if count <= 0 or len(swaps) == 0:
        return None
    return swaps[:count]


def _keep(ids: torch.Tensor, values: torch.Tensor, beam: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``beam`` best distinct sequences."""
    order = values.argsort(descending=True)
    kept, seen = [], set()
    for index in order.tolist():
        key = tuple(ids[index].tolist())
        if key not in seen:
            seen.add(key)
            kept.append(index)
        if len(kept) == beam:
            break
    index = torch.tensor(kept)
    return ids[index], values[index]


def relaxed_search(
    score: Scorer,
    space: TokenSpace,
    budget: int,
    rows: int = RELAXED_ROWS,
    seed: int = 0,
    halt: Halt | None = None,
) -> Found:
    """Softmax relaxation annealed towards one-hot; see the module docstring."""
    generator = torch.Generator().manual_seed(seed)
    cost, best, halt = Cost(), _Best(), halt or Halt()
    vocab = space.vocab_size
    steps = max(budget // (4 * rows), 1)
    logits = (0.01 * torch.randn(rows, space.length, vocab, generator=generator)).requires_grad_()
    pinned = torch.zeros(space.length, vocab, dtype=torch.bool)
    for position in space.fixed:
        pinned[position] = True
    pinned_values = torch.zeros(space.length, vocab)
    for position, token in space.fixed.items():
        pinned_values[position, token] = 1.0
    optimizer = torch.optim.Adam([logits], lr=RELAXED_LR)
    hot, cold = TEMPERATURES
    for step in range(steps):
        if cost.units >= budget or (step > 0 and halt()):
            break
        temperature = hot * (cold / hot) ** (step / max(steps - 1, 1))
        probs = torch.where(pinned, pinned_values, torch.softmax(logits / temperature, dim=-1))
        with torch.enable_grad():
            values = score(probs @ space.matrix)
            loss = -values.sum()
            optimizer.zero_grad()
            loss.backward()
        cost.forward += rows
        cost.backward += rows
        optimizer.step()
        ids = space.with_fixed(logits.detach().argmax(-1))
        best.offer(ids, evaluate(score, space, ids, cost))
    return Found(best.ids, best.value, cost.units, halt.fired)


def embedding_search(
    score: Scorer,
    space: TokenSpace,
    budget: int,
    rows: int = RELAXED_ROWS,
    seed: int = 0,
    halt: Halt | None = None,
) -> Found:
    """Normalized projected gradient ascent of the searched tensor in the per-dimension box
    of the matrix's rows (fixed positions held at their rows); the reference value."""
    generator = torch.Generator().manual_seed(seed)
    cost, halt = Cost(), halt or Halt()
    low, high = space.matrix.min(0).values, space.matrix.max(0).values
    centre, half = (low + high) / 2, (high - low) / 2
    x = centre + half * (
        2 * torch.rand(rows, space.length, space.matrix.shape[1], generator=generator) - 1
    )
    fixed_rows = {p: space.matrix[t] for p, t in space.fixed.items()}
    best = -math.inf
    lr = 0.1 * float(half.mean().clamp_min(1e-6))
    steps = max(budget // 3 // rows, 1)
    for _ in range(steps):
        if halt():
            break
        for position, row in fixed_rows.items():
            x[:, position] = row
        values, grad = gradient(score, x, cost)
        best = max(best, float(values.max()))
        rms = grad.pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-12)
        x = torch.maximum(torch.minimum(x + lr * grad / rms, high), low)
    for position, row in fixed_rows.items():
        x[:, position] = row
    with torch.no_grad():
        best = max(best, float(score(x).max()))
    cost.forward += rows
    return Found(None, best, cost.units, halt.fired)


#: name -> search ``(score, space, budget, seed, halt=None) -> Found``.
SEARCHES = {
    "greedy": lambda score, space, budget, seed, halt=None: swap_search(
        score, space, budget, 1, seed, halt
    ),
    "beam": lambda score, space, budget, seed, halt=None: swap_search(
        score, space, budget, 4, seed, halt
    ),
    "relaxed": lambda score, space, budget, seed, halt=None: relaxed_search(
        score, space, budget, seed=seed, halt=halt
    ),
}
