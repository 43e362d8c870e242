"""``onnx-am inspect``: placeholder until the inspect command lands."""

from __future__ import annotations

import click


@click.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
def inspect_command(model: str) -> None:
    """Summarize MODEL: inputs, outputs, rectifiers, parity with onnxruntime."""
    from onnx_am import check_parity, import_onnx

    imported = import_onnx(model)
    click.echo(f"input {imported.input.name} {list(imported.input.shape)}; parity {check_parity(imported).passed}")
