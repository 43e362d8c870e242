"""What a token search searches over and what it spends: sequences of ids, forward passes.

A :class:`TokenSpace` is the vocabulary's ``[V, D]`` matrix ``E`` (row ``v``: what token ``v``
becomes in the tensor the search sets), the sequence length and the fixed positions. A
:class:`Cost` counts what a search spent in forward-pass equivalents: one row forwarded is 1,
one row forwarded and backpropagated is 3 (a backward costs about two forwards), so that
searches of different kinds are compared at equal cost. A :class:`Halt` tells a search to stop
early (the command's deadline passed) and remembers that it did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from onnx_am.errors import SettingsError

#: A batch of the searched tensor ``[B, L, D]`` -> one objective value per row ``[B]``.
Scorer = Callable[[torch.Tensor], torch.Tensor]
#: ``(x [B, L, D], fraction of the budget spent) -> [B]``: the values whose gradient ranks a
#: swap search's swaps in place of the scorer's (:mod:`onnx_am.tokens.ranking`); the values
#: themselves are never compared.
Ranking = Callable[[torch.Tensor, float], torch.Tensor]
#: Rows one forward pass may hold (candidates are checked in chunks of this many).
MAX_ROWS = 128
BACKWARD_COST = 2


@dataclass(frozen=True)
class TokenSpace:
    """Sequences of ``length`` ids in ``[0, V)``, some positions fixed.

    Attributes:
        matrix: ``[V, D]`` float32, row ``v`` = token ``v`` in the searched tensor.
        length: the sequence length.
        fixed: position -> id held there.
    """

    matrix: torch.Tensor
    length: int
    fixed: Mapping[int, int] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def free(self) -> list[int]:
        return [i for i in range(self.length) if i not in self.fixed]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` ids -> ``[B, L, D]``."""
        return self.matrix[ids]

    def with_fixed(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids`` with the fixed positions set (a copy)."""
        ids = ids.clone()
        for position, token in self.fixed.items():
            ids[..., position] = token
        return ids

    def random(self, rows: int, generator: torch.Generator) -> torch.Tensor:
        ids = torch.randint(0, self.vocab_size, (rows, self.length), generator=generator)
        return self.with_fixed(ids)


def parse_fixed(items: tuple[str, ...], length: int, vocab_size: int) -> dict[int, int]:
    """``("0=101", "15=102")`` -> ``{0: 101, 15: 102}``; negative positions count from the end.

    Raises:
        SettingsError: not ``POS=ID``, a position outside the sequence or an id outside the
            vocabulary.
    """
    fixed = {}
    for item in items:
        position, sep, token = item.partition("=")
        try:
            pos, tok = int(position), int(token)
        except ValueError:
            pos = tok = None
        if not sep or pos is None or tok is None:
            raise SettingsError(f"cannot parse --fix {item!r}; write POSITION=ID, e.g. 0=101")
        if not -length <= pos < length:
            raise SettingsError(
                f"--fix {item}: position {pos} is outside the sequence of length {length}"
            )
        if not 0 <= tok < vocab_size:
            raise SettingsError(
                f"--fix {item}: id {tok} is outside the vocabulary of {vocab_size} tokens"
            )
        fixed[pos % length] = tok
    return fixed


@dataclass
class Cost:
    """Forward-pass equivalents spent (see the module docstring)."""

    forward: int = 0
    backward: int = 0

    @property
    def units(self) -> int:
        return self.forward + BACKWARD_COST * self.backward


class Halt:
    """Whether a search must stop now; remembers once it said yes.

    Args:
        stop: asked between batches (``None``: never stop), e.g. "has the deadline passed".

    Attributes:
        fired: the search was told to stop (its result is the best found until then).
    """

    def __init__(self, stop: Callable[[], bool] | None = None):
        self.stop, self.fired = stop, False

    def __call__(self) -> bool:
        if not self.fired and self.stop is not None and self.stop():
            self.fired = True
        return self.fired


def evaluate(
    score: Scorer, space: TokenSpace, ids: torch.Tensor, cost: Cost, halt: Halt | None = None
) -> torch.Tensor:
    """Objective values of ``[B, L]`` id sequences, forward only, in chunks; when ``halt``
    says stop, the values of the first rows only (those evaluated before it did)."""
    values = []
    with torch.no_grad():
        for start in range(0, ids.shape[0], MAX_ROWS):
            if halt is not None and halt():
                break
            chunk = ids[start : start + MAX_ROWS]
            values.append(score(space.embed(chunk)).detach().float())
            cost.forward += chunk.shape[0]
    return torch.cat(values) if values else torch.zeros(0)


def gradient(score: Scorer, x: torch.Tensor, cost: Cost) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values [B], d values / d x [B, L, D])`` at ``x``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        values = score(x)
        (grad,) = torch.autograd.grad(values.sum(), x)
    cost.forward += x.shape[0]
    cost.backward += x.shape[0]
    return values.detach().float(), grad
