"""Token searches for the targets of a model cut at its embedding lookup, results checked by
onnxruntime on the uncut model with the final ids.

:func:`plan_tokens` parses the settings once (methods, cost, ``--fix``, ``--vocab``) into a
:class:`TokenPlan`; :func:`search_tokens` runs every method for every target and returns one
:class:`TokenResult` each: the ids, their text, onnxruntime's value on them (the reported
value), torch's, the embedding-space reference beside it, and the best single-token
alternatives per position.

The plan of ``analyze`` prices the searches (:meth:`TokenPlan.price`) with the rest of the run
and fits them to the time budget with it (they scale with ``--steps`` and the units); given
the command's :class:`~onnx_am.engine.deadline.Deadline`, :func:`search_tokens` stops when it
passes, keeping the best ids found until then, and :func:`token_cut` says what that cut.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from onnx_am.engine.deadline import Deadline
from onnx_am.errors import SettingsError
from onnx_am.importer.model import ImportedModel
from onnx_am.objectives import Target
from onnx_am.reference.tolerance import agrees
from onnx_am.tokens.recompute import IdsRuntime
from onnx_am.tokens.search import SEARCHES, embedding_search
from onnx_am.tokens.space import (
    BACKWARD_COST,
    MAX_ROWS,
    Cost,
    Halt,
    Scorer,
    TokenSpace,
    evaluate,
    gradient,
    parse_fixed,
)
from onnx_am.tokens.timing import TokenTimings, time_token_calls
from onnx_am.vocab import BYTES, Vocabulary, byte_vocabulary, load_vocabulary

#: Chosen from benchmarks/results/token_search.md: on the known-answer family greedy came
#: within 1 % of the exact maximum on 80 / 94 / 98 % of 64 unit-seeds at cost 1024 / 4096 /
#: 16384, beam (width 4) on 73 / 89 / 98 %, relaxed on 14 % (1024 and 4096); on the planted
#: patterns (benchmarks/results/planted_tokens.md) greedy scored at least every planted input
#: on 16 of 17 units.
DEFAULT_TOKEN_METHODS = ("greedy",)
#: Forward-pass equivalents a token search may spend per unit and method, per ``--steps``.
COST_PER_STEP = 64
ALTERNATIVES = 3
#: Rows the alternatives of one result may check (16 positions x 3 fit; a sequence of 2048
#: bytes gets them at its 85 positions of largest predicted gain).
ALTERNATIVE_ROWS = 256
#: The embedding-space reference spends this fraction of a search's cost (it is a reference:
#: benchmarks/results/token_search.md found it at the same value from cost 1024 to 16384).
REFERENCE_SHARE = 4
#: Batched calls per ``COST_PER_STEP`` forward-pass equivalents, for pricing: ``(gradient
#: calls, their rows, forward calls)`` (a forward's rows are the cost the gradients leave).
#: A swap round is one gradient of the beams and its ranking of the swaps, one forward of the
#: candidates (64 at first, twice as many in each further round of the same beams) and, after
#: a round that improved, one of the combined swaps. Counted at cost 1024 (16 steps), greedy
#: made 11 to 12 rounds and 23 to 24 forwards on the planted BERT, 13 to 14 rounds and 27 to
#: 30 forwards on bytes_sig (fewer per cost at 4096: 6 to 7 rounds per 1024), beam 4
#: gradients of 4 rows and 12 forwards. A relaxed step is a forward and backward of 4 rows
#: (priced as a gradient) and a forward of their ids, 16 a step; the reference steps 4 rows
#: forward and backward, 12 a step.
CALLS_PER_STEP = {
    "greedy": (COST_PER_STEP / 80, 1, COST_PER_STEP / 40),
    "beam": (COST_PER_STEP / 256, 4, COST_PER_STEP / 256 * 3),
    "relaxed": (COST_PER_STEP / 16, 4, COST_PER_STEP / 16),
    "reference": (COST_PER_STEP / REFERENCE_SHARE / 12, 4, 0.0),
}
#: The searches that rank the swaps after each gradient (:data:`TokenTimings.rank`).
RANKING = ("greedy", "beam")


@dataclass(frozen=True)
class TokenPlan:
    """What the token searches do (parsed once by :func:`plan_tokens`).

    Attributes:
        methods: search names (:data:`~onnx_am.tokens.search.SEARCHES`).
        budget: forward-pass equivalents per unit and method.
        space: the vocabulary matrix, sequence length and fixed positions.
        seed: seeds every search.
        vocabulary: how ids are shown as text (``None``: ids only).
    """

    methods: tuple[str, ...]
    budget: int
    space: TokenSpace = field(repr=False)
    seed: int = 0
    vocabulary: Vocabulary | None = None

    @property
    def steps(self) -> int:
        """The ``--steps`` the budget stands for."""
        return self.budget // COST_PER_STEP

    def with_steps(self, steps: int) -> TokenPlan:
        """The same searches at the cost of ``steps`` (the steps the time budget left)."""
        return replace(self, budget=steps * COST_PER_STEP)

    def price(self, timings: TokenTimings, per_target: float = 0.0) -> tuple[float, float]:
        """Expected seconds of one unit's searches: ``(per step, per unit)``.

        Per step: every method's and the reference's batched calls (:data:`CALLS_PER_STEP`),
        each gradient and forward at the seconds ``timings`` measured on this model (the
        forwards' rows are the step's cost less the gradients'), and the swap searches'
        ranking of the swaps after each gradient, per beam. Per unit: ``per_target``
        (building the target's scorer), and per method the first ids' forward, the
        alternatives (one gradient, then :data:`ALTERNATIVES` rows per free position, at most
        :data:`ALTERNATIVE_ROWS`, in calls of :data:`~onnx_am.tokens.space.MAX_ROWS`) and
        onnxruntime's check of the ids (priced as a one-row forward).
        """
        per_step = 0.0
        for method in (*self.methods, "reference"):
            gradients, rows, forwards = CALLS_PER_STEP[method]
            cost = COST_PER_STEP / (REFERENCE_SHARE if method == "reference" else 1)
            forward_rows = max(0.0, cost - gradients * rows * (1 + BACKWARD_COST))
            per_step += gradients * timings.gradient(rows)
            if method in RANKING:
                per_step += gradients * rows * timings.rank
            per_step += forwards * timings.forward_fixed + forward_rows * timings.forward_row
        alternatives = min(ALTERNATIVES * len(self.space.free), ALTERNATIVE_ROWS)
        per_method = (
            timings.gradient(1)
            + -(-alternatives // MAX_ROWS) * timings.forward_fixed
            + alternatives * timings.forward_row
            + 2 * timings.forward(1)
        )
        return per_step, per_target + per_method * len(self.methods)

    def tail(self, timings: TokenTimings) -> float:
        """Seconds the searches may run past the moment they are told to stop: the batched
        call in flight (at most a forward of :data:`~onnx_am.tokens.space.MAX_ROWS` rows or
        a gradient of 4) and, per method, the stopped unit's result (the alternatives'
        gradient, onnxruntime's check): the token searches stop this long before their
        deadline (:meth:`onnx_am.audit.planning.BudgetPlan.token_deadline`)."""
        in_flight = max(timings.forward(MAX_ROWS), timings.gradient(4))
        return in_flight + len(self.methods) * (timings.gradient(1) + 2 * timings.forward(1))

    def to_dict(self) -> dict:
        return {
            "methods": list(self.methods),
            "cost_per_unit_and_method": self.budget,
            "sequence_length": self.space.length,
            "vocab_size": self.space.vocab_size,
            "fixed": {str(k): v for k, v in sorted(self.space.fixed.items())},
            "vocabulary": self.vocabulary.source if self.vocabulary else None,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class TokenResult:
    """The best sequence one method found for one target.

    Attributes:
        target: the target's name.
        method: the search.
        ids: the final token ids.
        value: onnxruntime's value of the target on the uncut model fed ``ids`` (reported).
        torch_value: the same computed by the converted graph at the cut.
        agrees: the two agree within the report's tolerance.
        embedding_value: the best value found with the searched tensor free in the box of
            the matrix's rows, at a quarter of a search's cost (an upper reference, not a
            sequence of tokens).
        cost: forward-pass equivalents spent.
        pieces: the tokens as strings (``None`` without a vocabulary).
        text: the sequence as text (``None`` without a vocabulary).
        alternatives: per free position, the best single-token replacements and the value
            (torch) of the sequence with each.
        stopped: the search stopped at the deadline before spending its cost (``ids`` are
            the best it found until then).
    """

    target: str
    method: str
    ids: tuple[int, ...]
    value: float
    torch_value: float
    agrees: bool
    embedding_value: float
    cost: int
    pieces: list[str] | None = None
    text: str | None = None
    alternatives: list[dict] = field(default_factory=list)
    stopped: bool = False

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "method": self.method,
            "ids": list(self.ids),
            "value": self.value,
            "value_source": "onnxruntime, uncut model, these ids",
            "torch_value": self.torch_value,
            "agrees": self.agrees,
            "embedding_value": self.embedding_value,
            "cost": self.cost,
            "tokens": self.pieces,
            "text": self.text,
            "alternatives": self.alternatives,
            "stopped_at_deadline": self.stopped,
        }


def plan_tokens(
    imported: ImportedModel,
    methods: Sequence[str] = (),
    steps: int = 64,
    fix: Sequence[str] = (),
    vocab: str | None = None,
    seed: int = 0,
) -> TokenPlan | None:
    """The token plan for a model cut at a lookup whose output is ``[L, D]`` per sample;
    ``None`` for any other model (then ``fix`` and ``vocab`` must be empty).

    Raises:
        SettingsError: an unknown method, a bad ``--fix``, a vocabulary that does not parse
            or does not match the matrix, or ``--fix`` / ``--vocab`` for a model without one.
    """
    lookup = imported.cut.lookup if imported.cut is not None else None
    shape = imported.input.sample_shape
    if lookup is None or len(shape) != 2 or shape[1] != lookup.matrix.shape[1]:
        if fix or vocab:
            raise SettingsError(
                "--fix and --vocab need a search over tokens: --at an embedding lookup or "
                "one-hot whose output is [batch, length, width]"
            )
        return None
    unknown = [m for m in methods if m not in SEARCHES]
    if unknown:
        raise SettingsError(
            f"unknown token search {unknown[0]!r}; choose from {', '.join(SEARCHES)}"
        )
    matrix = torch.from_numpy(lookup.matrix.copy())
    fixed = parse_fixed(tuple(fix), shape[0], lookup.vocab_size)
    if vocab is not None:
        vocabulary = load_vocabulary(vocab, lookup.vocab_size)
    else:
        vocabulary = byte_vocabulary() if lookup.vocab_size == BYTES else None
    return TokenPlan(
        tuple(methods) or DEFAULT_TOKEN_METHODS,
        steps * COST_PER_STEP,
        TokenSpace(matrix, shape[0], fixed),
        seed,
        vocabulary,
    )


def search_tokens(
    imported: ImportedModel,
    plan: TokenPlan,
    targets: Sequence[Target],
    deadline: Deadline | None = None,
) -> list[TokenResult]:
    """Every method of ``plan`` for every target (see the module docstring).

    Args:
        deadline: when it passes, the running search returns the best ids it found so far
            (``TokenResult.stopped``) and no further search starts (see :func:`token_cut`).
    """
    runtime = IdsRuntime(imported.cut, imported.feeds, [t.tensor for t in targets])
    halt = Halt(deadline.expired if deadline is not None else None)
    results = []
    for index, target in enumerate(targets):
        if halt():
            break
        score = scorer(imported, target)
        seed = plan.seed + 7919 * index
        found = {}
        for method in plan.methods:  # the ids first: the reference is stopped before them
            if halt():
                break
            found[method] = SEARCHES[method](score, plan.space, plan.budget, seed, halt)
        reference = embedding_search(
            score, plan.space, plan.budget // REFERENCE_SHARE, seed=seed, halt=halt
        ).value
        for method, one in found.items():
            results.append(_result(target, method, one, reference, score, plan, runtime, halt))
    return results


def scorer(imported: ImportedModel, target: Target) -> Scorer:
    """The target's value at a batch of the searched tensor ``[B, L, D]`` -> ``[B]``."""
    extractor = imported.extractor([target.tensor])

    def score(x: torch.Tensor) -> torch.Tensor:
        return target.value(imported.batch.call(extractor, x)[0])

    return score


def time_tokens(
    imported: ImportedModel,
    plan: TokenPlan,
    target: Target,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[TokenTimings, float]:
    """What :meth:`TokenPlan.price` needs, timed on ``target``: the searches' calls
    (:func:`~onnx_am.tokens.timing.time_token_calls`) and the seconds of building a
    target's scorer (done once per unit)."""
    tic = clock()
    score = scorer(imported, target)
    built = clock() - tic
    return time_token_calls(score, plan.space, clock), built


def token_cut(plan: TokenPlan, targets: Sequence[Target], results: Sequence[TokenResult]):
    """What the deadline cut from the searches (``None``: nothing): searches stopped before
    spending their cost, and searches (target x method) not started."""
    stopped = sum(1 for r in results if r.stopped)
    not_started = len(targets) * len(plan.methods) - len(results)
    if not stopped and not not_started:
        return None
    return {"searches_stopped_at_deadline": stopped, "searches_not_started": not_started}


def token_cut_text(cut: dict) -> str:
    """:func:`token_cut` for people."""
    parts = []
    if cut.get("searches_stopped_at_deadline"):
        parts.append(f"{cut['searches_stopped_at_deadline']} stopped with the best ids so far")
    if cut.get("searches_not_started"):
        parts.append(f"{cut['searches_not_started']} not started")
    return "the token searches reached the time budget's deadline: " + "; ".join(parts)


def _result(target, method, found, reference, score, plan, runtime, halt) -> TokenResult:
    value = runtime.value(target, found.ids)
    pieces = text = None
    if plan.vocabulary is not None:
        pieces, text = plan.vocabulary.pieces(found.ids), plan.vocabulary.text(found.ids)
    return TokenResult(
        target.name,
        method,
        found.ids,
        value,
        found.value,
        agrees(found.value, value),
        reference,
        found.cost,
        pieces,
        text,
        _alternatives(score, plan, found.ids, halt),
        found.stopped,
    )


def _alternatives(score, plan: TokenPlan, ids: tuple[int, ...], halt: Halt) -> list[dict]:
    """The :data:`ALTERNATIVES` swaps the gradient ranks best at each free position, checked
    in one batched evaluation; a long sequence gets them at the positions with the largest
    predicted gain only, :data:`ALTERNATIVE_ROWS` rows in all (none after the deadline)."""
    space, cost = plan.space, Cost()
    current = torch.tensor([ids])
    _, grad = gradient(score, space.embed(current), cost)
    gain = grad[0] @ space.matrix.T  # [L, V]
    gain.scatter_(1, current[0][:, None], -float("inf"))
    k = min(ALTERNATIVES, space.vocab_size - 1)
    top = gain.topk(k, dim=1)
    free = torch.tensor(space.free, dtype=torch.long)
    if len(free) == 0:
        return []
    positions = free[top.values[free, 0].argsort(descending=True)][: ALTERNATIVE_ROWS // k]
    positions = positions.sort().values
    trial = current.repeat(len(positions) * k, 1)
    rows = torch.arange(len(trial))
    trial[rows, positions.repeat_interleave(k)] = top.indices[positions].reshape(-1)
    values = evaluate(score, space, trial, cost, halt)
    found = []
    for index, position in enumerate(positions.tolist()):
        if (index + 1) * k > len(values):
            break
        tokens = top.indices[position].tolist()
        checked = values[index * k : (index + 1) * k].tolist()
        entries = sorted(zip(tokens, checked, strict=True), key=lambda e: -e[1])
        found.append(
            {
                "position": position,
                "alternatives": [
                    {"id": token, "value": value, **_piece(plan, token)} for token, value in entries
                ],
            }
        )
    return found


def _piece(plan: TokenPlan, token: int) -> dict:
    return {"token": plan.vocabulary.pieces([token])[0]} if plan.vocabulary else {}
