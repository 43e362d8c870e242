"""Searches over sequences of token ids, each spending at most a given cost.

- :func:`swap_search`: gradient-guided token swaps (HotFlip / AutoPrompt / GCG): the gradient
  at the current sequence ranks every single-token swap by its linear gain
  ``g_i . (E[v] - E[s_i])`` (each position's best first); they are checked in that order
  with batched forward passes, ``CANDIDATES`` per beam at first and twice as many in each
  further round while none improves, never checking a swap twice for the same beams. The
  best sequences are kept (``beam`` of them; 1 is greedy); after a round that improved, the
  improving swaps at distinct positions are also applied together (the best 2, 3, ...
  ``COMBINE``), which climbs in one round what single swaps climb in several. When every
  single swap has been checked, the sequence is a local optimum of single swaps, and changes
  of two adjacent tokens (each among its ``PAIR_K`` best by linear gain) are tried; when none
  improves, the search restarts, alternately from the best so far with ``PERTURB`` ids
  redrawn and from random ids, keeping the best.
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

from onnx_am.tokens.space import (
    BACKWARD_COST,
    Cost,
    Halt,
    Ranking,
    Scorer,
    TokenSpace,
    evaluate,
    gradient,
)

#: Swaps checked per beam in a first round (doubled in each further round of the same beams).
CANDIDATES = 64
#: Tokens per position combined in the adjacent-pair moves tried at a local optimum.
PAIR_K = 8
#: Positions redrawn when a restart perturbs the best sequence.
PERTURB = 2
#: Improving swaps applied together after a round of checks.
COMBINE = 8
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
    ranking: Ranking | None = None,
) -> Found:
    """Gradient-guided swap search (greedy for ``beam == 1``); see the module docstring.

    ``ranking``: whose gradient ranks the swaps (default: ``score``'s own), e.g. a decoupled
    backward (:func:`~onnx_am.tokens.ranking.decoupled_ranking`); it costs what a gradient of
    ``score`` costs, and every value compared and returned is still ``score``'s.
    """
    generator = torch.Generator().manual_seed(seed)
    cost, best, halt = Cost(), _Best(), halt or Halt()
    beams = space.random(beam, generator)
    values = evaluate(score, space, beams, cost)
    best.offer(beams, values)
    window, restarts = CANDIDATES, 0
    while budget - cost.units >= (1 + BACKWARD_COST) * beam and space.free and not halt():
        ranked = score if ranking is None else lambda x: ranking(x, cost.units / budget)
        _, grad = gradient(ranked, space.embed(beams), cost)
        swaps = ranked_swaps(space, beams, grad)
        checked, improved, moved = 0, False, False
        while checked < len(swaps) and cost.units < budget and not halt():
            room = max(budget - cost.units, 0)
            chosen = swaps[checked : checked + min(window * beams.shape[0], room)]
            trial = beams[chosen[:, 0]].clone()
            trial[torch.arange(len(chosen)), chosen[:, 1]] = chosen[:, 2]
            found = evaluate(score, space, trial, cost, halt)
            checked += len(found)
            trial = trial[: len(found)]
            improved = bool(found.numel()) and float(found.max()) > float(values.max()) + 1e-7
            if improved:  # the improving swaps of one beam at distinct positions, together
                more = _combined(beams, values, chosen[: len(found)], found)
                more = more[: max(budget - cost.units, 0)]
                trial = torch.cat([trial, more])
                found = torch.cat([found, evaluate(score, space, more, cost, halt)])
                trial = trial[: len(found)]
            best.offer(trial, found)
            kept, kept_values = _keep(torch.cat([beams, trial]), torch.cat([values, found]), beam)
            moved = not torch.equal(kept, beams)
            beams, values = kept, kept_values
            if improved or moved:
                break
            window *= 2  # the same beams: check the next swaps of the same ranking
        if improved:
            window = CANDIDATES
        if improved or moved or checked < len(swaps):
            continue
        # every single swap checked: a local optimum; try adjacent pairs, else restart
        window = CANDIDATES
        trial = _pair_moves(space, beams[0], grad[0], PAIR_K)[: max(budget - cost.units, 0)]
        found = evaluate(score, space, trial, cost, halt)
        trial = trial[: len(found)]
        if found.numel() and float(found.max()) > float(values.max()) + 1e-7:
            best.offer(trial, found)
            beams, values = _keep(torch.cat([beams, trial]), torch.cat([values, found]), beam)
            continue
        if budget - cost.units < beam:
            break
        restarts += 1
        beams = space.random(beam, generator)
        if restarts % 2:  # every other restart: the best so far with PERTURB ids redrawn
            beams = _perturbed(space, torch.tensor(best.ids), beam, generator)
        values = evaluate(score, space, beams, cost)
        best.offer(beams, values)
    return Found(best.ids, best.value, cost.units, halt.fired)


def _combined(
    beams: torch.Tensor, values: torch.Tensor, chosen: torch.Tensor, found: torch.Tensor
) -> torch.Tensor:
    """The beam of the best checked swap with its ``2 .. COMBINE`` most improving swaps at
    distinct positions applied together (best first): ``[<= COMBINE - 1, L]``."""
    source = int(chosen[int(found.argmax()), 0])
    gain = found - values[chosen[:, 0]]
    mine = ((chosen[:, 0] == source) & (gain > 0)).nonzero().flatten()
    mine = mine[gain[mine].argsort(descending=True, stable=True)]
    seen, picked = set(), []
    for index in mine.tolist():
        position = int(chosen[index, 1])
        if position not in seen:
            seen.add(position)
            picked.append(index)
        if len(picked) == COMBINE:
            break
    rows, ids = [], beams[source].clone()
    for count, index in enumerate(picked):
        ids[chosen[index, 1]] = chosen[index, 2]
        if count:
            rows.append(ids.clone())
    return torch.stack(rows) if rows else beams[:0]


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


def ranked_swaps(space: TokenSpace, beams: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``[n, 4]`` rows ``(beam, position, token, rank)``: every swap at the free positions,
    ordered by rank (each position's best by linear gain first), by gain within a rank."""
    gain = grad @ space.matrix.T  # [W, L, V]
    gain = gain - torch.gather(gain, 2, beams[..., None])
    gain.scatter_(2, beams[..., None], -math.inf)
    for position in space.fixed:
        gain[:, position, :] = -math.inf
    ranks = space.vocab_size - 1
    top = gain.topk(ranks, dim=2)
    width, length = gain.shape[0], gain.shape[1]
    scores = top.values.permute(2, 0, 1).reshape(ranks, -1)  # [rank, W * L]
    order = scores.argsort(dim=1, descending=True)
    flat = order.reshape(-1)
    rank = torch.arange(ranks).repeat_interleave(width * length)
    beam, position = flat // length, flat % length
    token = top.indices[beam, position, rank]
    finite = torch.isfinite(scores.gather(1, order).reshape(-1))
    return torch.stack([beam, position, token, rank], dim=1)[finite]


def _keep(ids: torch.Tensor, values: torch.Tensor, beam: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``beam`` best distinct sequences."""
    order = values.argsort(descending=True, stable=True)
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
