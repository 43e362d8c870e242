"""A swap search ranked by a decoupled gradient: the gradient is the rewritten module's, every
value the original model's."""

from __future__ import annotations

import pytest
import torch

from onnx_am import import_onnx, unit
from onnx_am.methods import STANDARD, parse_method
from onnx_am.passes import decouple_rectifiers
from onnx_am.tokens.ranking import decoupled_ranking
from onnx_am.tokens.search import swap_search
from onnx_am.tokens.space import Cost, TokenSpace, gradient


class ReluTokenNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.embedding = torch.nn.Embedding(24, 6)
        self.hidden = torch.nn.Linear(6, 10)
        self.head = torch.nn.Linear(10, 2)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.embedding(input_ids))).mean(1))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    net = ReluTokenNet().eval()
    path = tmp_path_factory.mktemp("ranking") / "relu_tokens.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, 5, dtype=torch.long),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input_ids"],
        output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch"}, "logits": {0: "batch"}},
    )
    imported = import_onnx(path, at="auto", seq_len=5)
    space = TokenSpace(torch.from_numpy(imported.cut.lookup.matrix.copy()), 5)
    return net, imported, space, decouple_rectifiers(imported)


def _score(imported, target):
    extractor = imported.extractor([target.tensor])
    return lambda x: target.value(imported.batch.call(extractor, x)[0])


def _hand_gradient(net, x: torch.Tensor, unit_index: int, beta: float) -> torch.Tensor:
    """d logit / d x with the ReLU's backward slope ``beta`` where its input is <= 0."""
    weight, bias = net.hidden.weight.detach(), net.hidden.bias.detach()
    pre = x @ weight.T + bias  # [B, L, H]
    slope = torch.where(pre > 0, 1.0, beta)
    back = slope * net.head.weight.detach()[unit_index] / x.shape[1]
    return back @ weight


def test_decoupled_ranking_is_the_decoupled_gradient_and_undone_after(model):
    net, imported, space, rewrite = model
    assert [r.op_type for r in rewrite.rewritten] == ["Relu"]
    target = unit("logits", 1)
    x = space.embed(torch.randint(0, 24, (3, 5), generator=torch.Generator().manual_seed(0)))
    ranking = decoupled_ranking(imported, target, rewrite, parse_method("decoupled(0.3)"))
    values, grad = gradient(lambda v: ranking(v, 0.0), x, Cost())
    true_values, true_grad = gradient(_score(imported, target), x, Cost())
    torch.testing.assert_close(values, true_values)  # the forward is the original one
    torch.testing.assert_close(grad, _hand_gradient(net, x, 1, 0.3), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(true_grad, _hand_gradient(net, x, 1, 0.0), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(grad, true_grad)  # some hidden unit is off: they differ
    _, after = gradient(lambda v: imported.extractor([target.tensor], rewrite.module)(v)[0][:, 1],
                        x, Cost())  # fmt: skip
    torch.testing.assert_close(after, true_grad)  # slopes unset after the call


def test_annealed_ranking_goes_from_beta_to_the_true_gradient(model):
    net, imported, space, rewrite = model
    target = unit("logits", 0)
    x = space.embed(torch.randint(0, 24, (2, 5), generator=torch.Generator().manual_seed(1)))
    ranking = decoupled_ranking(imported, target, rewrite, parse_method("decoupled(anneal(1.0))"))
    _, first = gradient(lambda v: ranking(v, 0.0), x, Cost())
    _, half = gradient(lambda v: ranking(v, 0.5), x, Cost())
    _, last = gradient(lambda v: ranking(v, 1.0), x, Cost())
    torch.testing.assert_close(first, _hand_gradient(net, x, 0, 1.0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(half, _hand_gradient(net, x, 0, 0.5), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(last, _hand_gradient(net, x, 0, 0.0), atol=1e-5, rtol=1e-4)


def test_swap_search_with_a_ranking_reports_the_original_models_values(model):
    _, imported, space, rewrite = model
    target = unit("logits", 1)
    score = _score(imported, target)
    plain = swap_search(score, space, 512, seed=2)
    same = swap_search(score, space, 512, seed=2,
                       ranking=decoupled_ranking(imported, target, rewrite, STANDARD))  # fmt: skip
    assert same == plain  # the standard method through the rewritten module: the same search
    ranked = swap_search(score, space, 512, seed=2, ranking=decoupled_ranking(
        imported, target, rewrite, parse_method("decoupled(1.0)")))  # fmt: skip
    assert ranked.cost <= 512
    with torch.no_grad():
        value = float(score(space.embed(torch.tensor([ranked.ids]))))
    assert ranked.value == pytest.approx(value, rel=1e-6, abs=1e-6)
