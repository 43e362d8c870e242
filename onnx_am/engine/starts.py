"""Start inputs of activation maximization, in the raw input domain.

- ``random`` (default): the middle of the box plus uniform noise of ``init_scale`` times
  half the range; seeded per (target, restart), so a unit's start does not depend on which
  other units are optimized with it or how rows are batched;
- ``lower`` / ``upper`` / ``mid``: constant images;
- ``random_corner``: every element at a random bound;
- ``screened``: per restart ``r``, a pool of ``screen`` random corners of the box (every
  element at a random bound), seeded by ``(seed, r)`` alone, is evaluated with forward passes
  only (no gradient, batched); each unit starts from the candidate with its highest value.
  One pool serves every unit of a run, and a unit's pick depends only on its own values, so
  its start does not depend on the other units or on batching. Cost: ``screen`` forwards per
  restart, about ``screen / 3`` row-steps (a forward is about a third of a step), whatever the
  number of units. Measured in ``benchmarks/results/exact_family.md`` and
  ``am_quality_starts.md``;
- ``hedged``: restart 0 the ``random`` start, every later restart ``screened``: a unit keeps
  the centre start that serves trained CNNs best and also gets starts from the best corners
  (which find narrow and dead regions). Costs ``screen`` forwards per restart after the
  first;
- ``dead``: an input that leaves as many rectifiers as possible inactive on the target's
  path (the hard case for the true gradient, which is zero there). Candidates (lower,
  upper, mid, small random, random corners, negated random images) are ranked by the
  fraction of positive outputs of the rectifiers upstream of the target tensor (those the
  decoupling pass recognises); the lower bound wins ties. Restart ``r`` takes the
  ``r``-th least active candidate.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from onnx_am.domain import InputDomain
from onnx_am.errors import SettingsError
from onnx_am.objectives import Target

if TYPE_CHECKING:
    from onnx_am.importer.model import ImportedModel

START_KINDS = ("random", "lower", "upper", "mid", "random_corner", "dead", "screened", "hedged")
#: The starts that screen a pool of corners, and from which restart on.
SCREENING_FROM = {"screened": 0, "hedged": 1}
#: The start of ``maximize`` and ``analyze`` unless one is asked for (see README "Results":
#: ``screened`` reaches far more exact maxima but does not help the trained CNNs).
DEFAULT_START = "random"
#: Candidates the ``screened`` start evaluates per restart.
SCREEN_CANDIDATES = 384
#: Candidates per forward batch of the screen (bounds its memory).
SCREEN_BATCH = 64


#: How many random candidates of each kind the ``dead`` start searches.
DEAD_CANDIDATES = 8


def row_seed(seed: int, key: str, restart: int) -> int:
    """A stable seed for one (target, restart): independent of row order and batching."""
    return zlib.crc32(f"{seed}|{key}|{restart}".encode())


def make_starts(
    kind: str,
    imported: ImportedModel,
    domain: InputDomain,
    targets: Sequence[Target],
    restarts: int,
    seed: int = 0,
    init_scale: float = 0.1,
    screen: int = SCREEN_CANDIDATES,
) -> torch.Tensor:
    """Start inputs for every (target, restart), shape ``[targets, restarts, *sample]``.

    Args:
        kind: one of :data:`START_KINDS`.
        imported: the model (``dead`` and ``screened`` run it).
        domain: the raw input box and preprocessing.
        targets: the units.
        restarts: starts per unit.
        seed: seeds every random choice.
        init_scale: noise of the ``random`` start, as a fraction of half the range.
        screen: candidates per restart of the ``screened`` and ``hedged`` starts.

    Raises:
        SettingsError: unknown ``kind``, or a screening start with ``screen < 1``.
    """
    if kind not in START_KINDS:
        raise SettingsError(f"unknown start {kind!r}; choose from {', '.join(START_KINDS)}")
    shape = imported.input.sample_shape
    if kind == "dead":
        return _dead_starts(imported, domain, targets, restarts, seed, init_scale)
    first = SCREENING_FROM.get(kind, restarts)
    simple = "random" if kind == "hedged" else kind  # the start of the unscreened restarts
    starts = torch.empty((len(targets), restarts, *shape))
    for t, target in enumerate(targets):
        for r in range(first):
            generator = torch.Generator().manual_seed(row_seed(seed, target.name, r))
            starts[t, r] = simple_start(simple, shape, domain, generator, init_scale)
    if first < restarts:
        screened = range(first, restarts)
        starts[:, first:] = screened_starts(imported, domain, targets, screened, seed, screen)
    return starts


def screening_forwards(kind: str, restarts: int, screen: int) -> int:
    """Forward passes a start of ``kind`` spends screening candidates (0 for most kinds)."""
    return max(0, restarts - SCREENING_FROM.get(kind, restarts)) * screen


def simple_start(
    kind: str,
    shape: Sequence[int],
    domain: InputDomain,
    generator: torch.Generator,
    init_scale: float = 0.1,
) -> torch.Tensor:
    """One start of a kind that needs no model (all but ``dead``)."""
    half = (domain.high - domain.low) / 2
    if kind == "lower":
        return torch.full(tuple(shape), domain.low)
    if kind == "upper":
        return torch.full(tuple(shape), domain.high)
    if kind == "mid":
        return torch.full(tuple(shape), domain.mid)
    if kind == "random_corner":
        bits = torch.randint(0, 2, tuple(shape), generator=generator).float()
        return domain.low + bits * (domain.high - domain.low)
    noise = torch.rand(tuple(shape), generator=generator) * 2 - 1
    return domain.project(domain.mid + init_scale * half * noise)


def screened_starts(
    imported: ImportedModel,
    domain: InputDomain,
    targets: Sequence[Target],
    restarts: int | range,
    seed: int = 0,
    screen: int = SCREEN_CANDIDATES,
) -> torch.Tensor:
    """Per (target, restart): the candidate of that restart's pool (``screen`` random
    corners, :func:`screen_pool`) where the target's value is highest; ties go to the
    earlier candidate. ``restarts``: a count, or the range of restart indices to screen
    (shape ``[targets, len(restarts), *sample]``).

    Raises:
        SettingsError: ``screen < 1``.
    """
    if screen < 1:
        raise SettingsError(f"a screened start needs at least 1 candidate, got {screen}")
    restarts = range(restarts) if isinstance(restarts, int) else restarts
    shape = imported.input.sample_shape
    starts = torch.empty((len(targets), len(restarts), *shape))
    for i, r in enumerate(restarts):
        pool = screen_pool(shape, domain, seed, r, screen)
        values = screen_values(imported, domain, targets, pool)
        starts[:, i] = pool[values.argmax(dim=1)]
    return starts


def screen_pool(
    shape: Sequence[int], domain: InputDomain, seed: int, restart: int, count: int
) -> torch.Tensor:
    """``count`` random corners of the box, seeded by ``(seed, restart)`` only."""
    generator = torch.Generator().manual_seed(row_seed(seed, "screened", restart))
    bits = torch.randint(0, 2, (count, *shape), generator=generator).float()
    return domain.low + bits * (domain.high - domain.low)


def screen_values(
    imported: ImportedModel, domain: InputDomain, targets: Sequence[Target], pool: torch.Tensor
) -> torch.Tensor:
    """Every target's value on every candidate, ``[targets, candidates]``, float64; forward
    passes of the original network in batches of :data:`SCREEN_BATCH`; NaN counts as -inf."""
    names = list(dict.fromkeys(t.tensor for t in targets))
    parts = []
    with torch.no_grad():
        for i in range(0, len(pool), SCREEN_BATCH):
            x = domain.to_model(pool[i : i + SCREEN_BATCH], imported.input)
            values = dict(zip(names, imported.run(x, names), strict=True))
            parts.append(torch.stack([t.value(values[t.tensor]).double().cpu() for t in targets]))
    return torch.cat(parts, dim=1).nan_to_num(nan=-torch.inf)


def _dead_starts(imported, domain, targets, restarts, seed, init_scale) -> torch.Tensor:
    starts = torch.empty((len(targets), restarts, *imported.input.sample_shape))
    ranked: dict[str, torch.Tensor] = {}
    for t, target in enumerate(targets):
        if target.tensor not in ranked:
            ranked[target.tensor] = rank_dead_candidates(
                imported, domain, target.tensor, seed, init_scale
            )
        candidates = ranked[target.tensor]
        for r in range(restarts):
            starts[t, r] = candidates[r % len(candidates)]
    return starts


def rank_dead_candidates(
    imported: ImportedModel,
    domain: InputDomain,
    tensor: str,
    seed: int = 0,
    init_scale: float = 0.1,
) -> torch.Tensor:
    """Candidate starts ordered from fewest to most active rectifiers upstream of ``tensor``."""
    candidates = _candidates(imported.input.sample_shape, domain, seed, init_scale)
    names = upstream_rectifier_outputs(imported, tensor)
    if not names:
        return candidates
    activity = active_fraction(imported, domain, candidates, names)
    order = sorted(range(len(candidates)), key=lambda i: (float(activity[i]), i))
    return candidates[order]


def _candidates(shape, domain: InputDomain, seed: int, init_scale: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(row_seed(seed, "dead", 0))
    fixed = [simple_start(kind, shape, domain, generator) for kind in ("lower", "upper", "mid")]
    randoms = [
        simple_start("random", shape, domain, generator, init_scale) for _ in range(DEAD_CANDIDATES)
    ]
    flipped = [domain.project(2 * domain.mid - x) for x in randoms]
    corners = [
        simple_start("random_corner", shape, domain, generator) for _ in range(DEAD_CANDIDATES)
    ]
    return torch.stack(fixed + randoms + flipped + corners)


def upstream_rectifier_outputs(imported: ImportedModel, tensor: str) -> list[str]:
    """Output tensors of the rectifier nodes that ``tensor`` depends on (prepared model)."""
    from onnx_am.passes import plan_rewrites

    rectifiers = {record.node: record.output for record in plan_rewrites(imported)[0]}
    producers = {out: node for node in imported.prepared.graph.node for out in node.output}
    found, stack, seen = [], [tensor], set()
    while stack:
        name = stack.pop()
        node = producers.get(name)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.name in rectifiers and rectifiers[node.name] in imported.tensor_map:
            found.append(rectifiers[node.name])
        stack.extend(node.input)
    return found


def active_fraction(
    imported: ImportedModel, domain: InputDomain, x: torch.Tensor, names: list[str]
) -> torch.Tensor:
    """Per row of the raw batch ``x``: the fraction of positive elements over ``names``."""
    with torch.no_grad():
        values = imported.run(domain.to_model(x, imported.input), names)
    active = torch.stack([(v > 0).flatten(1).sum(1).double() for v in values]).sum(0)
    total = sum(v[0].numel() for v in values)
    return active / total
