"""LSTM, GRU and RNN (opsets 7, 14, 22): the ONNX equations, step by step, in torch.

onnx2torch has no recurrent converters. ``torch.nn.LSTM`` / ``nn.GRU`` differ from ONNX in
gate order, GRU's ``linear_before_reset``, activations, ``clip``, peepholes and
``sequence_lens``, so one module computes the ONNX definition directly: every direction
(forward, reverse, bidirectional), ``layout`` 0 and 1, optional initial states, peepholes,
per-batch ``sequence_lens`` (outputs past a sequence's end are zero, ``Y_h`` is its last valid
state), ``clip`` and the activation attributes. W, R, B, P stay graph inputs of the module, so
weights computed upstream (a dequantized int8 weight) work as well as initializers.

The decoupled-rectifier pass leaves these gates alone (they are sigmoids and tanhs inside one
module); it reports the node as untouched.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxToTorchModule,
    OperationConverterResult,
    onnx_mapping_from_node,
)
from torch import nn

from onnx_am.importer.converters._registry import register

#: ONNX activation name -> (function of x, alpha, beta; default alpha; default beta).
ACTIVATIONS = {
    "Sigmoid": (lambda x, a, b: torch.sigmoid(x), None, None),
    "Tanh": (lambda x, a, b: torch.tanh(x), None, None),
    "Relu": (lambda x, a, b: torch.relu(x), None, None),
    "Softsign": (lambda x, a, b: F.softsign(x), None, None),
    "Softplus": (lambda x, a, b: F.softplus(x), None, None),
    "LeakyRelu": (lambda x, a, b: F.leaky_relu(x, a), 0.01, None),
    "ThresholdedRelu": (lambda x, a, b: torch.where(x > a, x, torch.zeros_like(x)), 1.0, None),
    "Elu": (lambda x, a, b: F.elu(x, a), 1.0, None),
    "HardSigmoid": (lambda x, a, b: torch.clamp(a * x + b, 0.0, 1.0), 0.2, 0.5),
    "Affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "ScaledTanh": (lambda x, a, b: a * torch.tanh(b * x), 1.0, 1.0),
}

#: cell -> (number of gates, default activations of one direction)
CELLS = {
    "LSTM": (4, ("Sigmoid", "Tanh", "Tanh")),
    "GRU": (3, ("Sigmoid", "Tanh")),
    "RNN": (1, ("Tanh",)),
}


class Activation(nn.Module):
    """One ONNX recurrent activation with its alpha and beta."""

    def __init__(
        self,
        name: str,
        alpha: float | None = None,
        beta: float | None = None,
        table: Mapping[str, tuple] = ACTIVATIONS,
    ):
        super().__init__()
        function, default_alpha, default_beta = table[name]
        self.name = name
        self.function = function
        self.alpha = default_alpha if alpha is None else alpha
        self.beta = default_beta if beta is None else beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.function(x, self.alpha, self.beta)


class OnnxRecurrent(nn.Module, OnnxToTorchModule):
    """An ONNX ``LSTM`` / ``GRU`` / ``RNN`` node.

    Called with the node's inputs in ONNX order (``X, W, R, B, sequence_lens, initial_h,
    initial_c, P``; absent ones are ``None``); returns the node's listed outputs.

    Attributes:
        cell: ``"LSTM"``, ``"GRU"`` or ``"RNN"``.
        directions: ``["forward"]``, ``["reverse"]`` or both.
        activations: per direction, the cell's activations.
        layout: 0 (time first) or 1 (batch first).
        outputs: how many outputs the node lists.
    """

    def __init__(
        self,
        cell: str,
        hidden_size: int,
        direction: str,
        activations: list[list[Activation]],
        layout: int = 0,
        clip: float | None = None,
        input_forget: bool = False,
        linear_before_reset: bool = False,
        outputs: int = 1,
    ):
        super().__init__()
        self.cell = cell
        self.hidden_size = hidden_size
        self.directions = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        self.activations = nn.ModuleList(nn.ModuleList(acts) for acts in activations)
        self.layout = layout
        self.clip = clip
        self.input_forget = input_forget
        self.linear_before_reset = linear_before_reset
        self.outputs = outputs

    def forward(  # noqa: D102
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        r: torch.Tensor,
        b: torch.Tensor | None = None,
        sequence_lens: torch.Tensor | None = None,
        initial_h: torch.Tensor | None = None,
        initial_c: torch.Tensor | None = None,
        p: torch.Tensor | None = None,
    ):
        directions = range(len(self.directions))
        return self._run(
            x, [w[d] for d in directions], [r[d] for d in directions], b, sequence_lens,
            initial_h, initial_c, p,
        )  # fmt: skip

    def _run(self, x, ws, rs, b, sequence_lens, initial_h, initial_c, p):
        """The node's outputs from per-direction weights ``ws`` / ``rs`` (whatever the
        projections :meth:`_project_inputs` / :meth:`_preactivation` take)."""
        if self.layout == 1:
            x = x.transpose(0, 1)
            initial_h = None if initial_h is None else initial_h.transpose(0, 1)
            initial_c = None if initial_c is None else initial_c.transpose(0, 1)
        batch = x.shape[1]
        size = self.hidden_size
        zeros = x.new_zeros(len(self.directions), batch, size)
        h0 = zeros if initial_h is None else initial_h
        c0 = zeros if initial_c is None else initial_c
        lengths = None if sequence_lens is None else sequence_lens.to(torch.long)
        ys, hs, cs = [], [], []
        for d, direction in enumerate(self.directions):
            y, h, c = self._direction(
                x, ws[d], rs[d], None if b is None else b[d], h0[d], c0[d],
                None if p is None else p[d], lengths, direction == "reverse", d,
            )  # fmt: skip
            ys.append(y)
            hs.append(h)
            cs.append(c)
        y = torch.stack(ys, 1)  # [T, dirs, B, H]
        y_h, y_c = torch.stack(hs), torch.stack(cs)  # [dirs, B, H]
        if self.layout == 1:
            y = y.permute(2, 0, 1, 3)
            y_h, y_c = y_h.transpose(0, 1), y_c.transpose(0, 1)
        results = (y, y_h, y_c)[: self.outputs]
        return results[0] if self.outputs == 1 else results

    def _direction(self, x, w, r, b, h, c, p, lengths, reverse, index):
        gates = CELLS[self.cell][0] * self.hidden_size
        wb, rb = (None, None) if b is None else (b[:gates], b[gates:])
        xw = self._project_inputs(x, w, lengths)
        if wb is not None:
            xw = xw + wb
        acts = list(self.activations[index])
        order = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
        y = [None] * x.shape[0]
        for t in order:
            new_h, new_c = self._step(xw[t], h, c, r, rb, p, acts)
            if lengths is not None:
                valid = (t < lengths).to(x.dtype).unsqueeze(1)
                new_h = valid * new_h + (1 - valid) * h
                new_c = valid * new_c + (1 - valid) * c
                y[t] = valid * new_h
            else:
                y[t] = new_h
            h, c = new_h, new_c
        return torch.stack(y), h, c

    def _project_inputs(self, x, w, lengths):
        """``x @ W^T`` for every step at once (``x``: ``[T, B, input]``)."""
        return torch.matmul(x, w.t())

    def _preactivation(self, xw_t, h, r, rb):
        """``xw_t + (h @ R^T + Rb)``: the gates' input at one step (``h``: ``[B, hidden]``)."""
        hr = torch.matmul(h, r.t())
        if rb is not None:
            hr = hr + rb
        return xw_t + hr

    def _pre(self, value: torch.Tensor) -> torch.Tensor:
        return value if self.clip is None else torch.clamp(value, -self.clip, self.clip)

    def _step(self, xw_t, h, c, r, rb, p, acts):
        size = self.hidden_size
        if self.cell == "GRU":
            return self._gru_step(xw_t, h, r, rb, acts), c
        pre = self._preactivation(xw_t, h, r, rb)
        if self.cell == "RNN":
            return acts[0](self._pre(pre)), c
        f_act, g_act, h_act = acts
        i, o, f, cand = pre.split(size, dim=-1)
        if p is not None:
            p_i, p_o, p_f = p.split(size)
            i, f = i + p_i * c, f + p_f * c
        i = f_act(self._pre(i))
        f = 1 - i if self.input_forget else f_act(self._pre(f))
        new_c = f * c + i * g_act(self._pre(cand))
        if p is not None:
            o = o + p_o * new_c
        o = f_act(self._pre(o))
        return o * h_act(new_c), new_c

    def _gru_step(self, xw_t, h, r, rb, acts):
        size = self.hidden_size
        f_act, g_act = acts
        x_z, x_r, x_h = xw_t.split(size, dim=-1)
        r_zr, r_h = r[: 2 * size], r[2 * size :]
        rb_zr, rb_h = (None, None) if rb is None else (rb[: 2 * size], rb[2 * size :])
        hzr = torch.matmul(h, r_zr.t())
        if rb_zr is not None:
            hzr = hzr + rb_zr
        h_z, h_r = hzr.split(size, dim=-1)
        z = f_act(self._pre(x_z + h_z))
        reset = f_act(self._pre(x_r + h_r))
        if self.linear_before_reset:
            hh = torch.matmul(h, r_h.t())
            if rb_h is not None:
                hh = hh + rb_h
            candidate = x_h + reset * hh
        else:
            candidate = x_h + torch.matmul(reset * h, r_h.t())
            if rb_h is not None:
                candidate = candidate + rb_h
        candidate = g_act(self._pre(candidate))
        return (1 - z) * candidate + z * h


def _activations(
    node: OnnxNode, cell: str, directions: int, table: Mapping[str, tuple]
) -> list[list[Activation]]:
    """The activations per direction, with alpha/beta consumed in order by those taking them."""
    defaults = CELLS[cell][1]
    names = node.attributes.get("activations")
    names = [n.decode() if isinstance(n, bytes) else n for n in names] if names else []
    if not names:
        names = list(defaults) * directions
    if len(names) != len(defaults) * directions:
        raise NotImplementedError(f"{cell} with activations={names} for {directions} direction(s)")
    alphas = list(node.attributes.get("activation_alpha", []))
    betas = list(node.attributes.get("activation_beta", []))
    built = []
    for name in names:
        if name not in table:
            raise NotImplementedError(f"{cell} with activation {name!r} is not supported")
        _, default_alpha, default_beta = table[name]
        alpha = alphas.pop(0) if default_alpha is not None and alphas else None
        beta = betas.pop(0) if default_beta is not None and betas else None
        built.append(Activation(name, alpha, beta, table))
    per = len(defaults)
    return [built[d * per : (d + 1) * per] for d in range(directions)]


def recurrent_options(node: OnnxNode, cell: str, table: Mapping[str, tuple] = ACTIVATIONS) -> dict:
    """The keyword arguments of :class:`OnnxRecurrent` that a node's attributes give, the
    activations taken from ``table`` (name -> function, default alpha, default beta).

    Raises:
        NotImplementedError: an unknown direction or activation, or no ``hidden_size``.
    """
    direction = node.attributes.get("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "reverse", "bidirectional"):
        raise NotImplementedError(f"{cell} with direction={direction!r} is not supported")
    hidden_size = node.attributes.get("hidden_size")
    if not hidden_size:
        raise NotImplementedError(f"{cell} without hidden_size is not supported")
    directions = 2 if direction == "bidirectional" else 1
    clip = node.attributes.get("clip")
    return {
        "hidden_size": int(hidden_size),
        "direction": direction,
        "activations": _activations(node, cell, directions, table),
        "layout": int(node.attributes.get("layout", 0)),
        "clip": None if clip is None else float(clip),
        "input_forget": bool(node.attributes.get("input_forget", 0)),
        "linear_before_reset": bool(node.attributes.get("linear_before_reset", 0)),
        "outputs": len(node.output_values),
    }


def _converter(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    cell = node.operation_type
    module = OnnxRecurrent(cell, **recurrent_options(node, cell))
    return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))


for _cell in CELLS:
    register(_cell, (7, 14, 22))(_converter)
