"""What ranks a swap search's candidate swaps: the gradient of another graph than the scored one.

:func:`~onnx_am.tokens.search.swap_search` ranks single-token swaps by the gradient at the
current sequences. By default that is the gradient of the scorer itself (the original model).
A :data:`~onnx_am.tokens.space.Ranking` replaces that gradient only: every value the search
compares, keeps and returns is still the scorer's, so the ids it returns are judged by the
original model. :func:`decoupled_ranking` makes one from the decoupling pass's rewritten
module (:func:`~onnx_am.passes.decouple_rectifiers`): its forward is the original model's, its
backward through the rewritten rectifiers / GELUs uses a :class:`~onnx_am.methods.GradientMethod`
(``decoupled(0.3)``; ``decoupled(anneal(1.0))`` anneals over the search's budget).
"""

from __future__ import annotations

import torch

from onnx_am.importer.model import ImportedModel
from onnx_am.methods import GradientMethod
from onnx_am.objectives import Target
from onnx_am.passes.decouple import RewriteResult
from onnx_am.tokens.space import Ranking

#: Steps a schedule is evaluated on: the budget's fraction spent, rounded to 1 / (STEPS - 1).
SCHEDULE_STEPS = 1001


def decoupled_ranking(
    imported: ImportedModel, target: Target, rewrite: RewriteResult, method: GradientMethod
) -> Ranking:
    """A ranking whose gradient is ``method``'s through ``rewrite.module``.

    Args:
        imported: the model (cut at the searched tensor) ``rewrite`` was made from.
        target: the objective whose gradient ranks the swaps.
        rewrite: the decoupling pass's result (its slopes are set for each call and unset
            after it, also on error).
        method: the gradient method; a schedule runs over the fraction of the budget spent.

    Returns:
        ``ranking(x, spent) -> values [B]``: the objective on ``x`` ``[B, L, D]`` through the
        rewritten module, whose backward is ``method``'s at ``spent`` (0..1).
    """
    extractor = imported.extractor([target.tensor], module=rewrite.module)
    rowwise = imported.batch.mode == "rowwise"  # the extractor then sees one row at a time

    def ranking(x: torch.Tensor, spent: float) -> torch.Tensor:
        step = round(min(max(spent, 0.0), 1.0) * (SCHEDULE_STEPS - 1))
        rows = [method] * (1 if rowwise else x.shape[0])
        with rewrite.control.rows(rows, step, SCHEDULE_STEPS):
            return target.value(imported.batch.call(extractor, x)[0])

    return ranking
