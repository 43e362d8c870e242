"""Tiny torch networks with seeded random weights, exported to ONNX files for tests."""

from __future__ import annotations

import torch


def export_random(
    module: torch.nn.Module, shape: tuple[int, ...], path, seed: int = 0, scale: float = 0.5
) -> str:
    """Give ``module`` seeded N(0, scale^2) weights and export it with a dynamic batch.

    Args:
        module: the network; its input is ``[batch, *shape]``.
        shape: one sample's shape.
        path: where to write the ``.onnx`` file (input ``input``, output ``logits``).

    Returns:
        ``path`` as a string.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    module.eval()
    torch.onnx.export(
        module,
        torch.zeros(1, *shape),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return str(path)
