"""``onnx-am``: the click group. Commands live in their own modules; errors are rendered here.

The library raises :class:`onnx_am.OnnxAmError` with a one-line message and an exit code;
this front end prints ``onnx-am: error: <message>`` on stderr and exits with that code.
``--verbose`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import click

from onnx_am.errors import OnnxAmError


class OnnxAmGroup(click.Group):
    """A click group that turns library errors into one line and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OnnxAmError as exc:
            if _verbose(ctx):
                raise
            click.echo(f"onnx-am: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except MemoryError:
            if _verbose(ctx):
                raise
            click.echo("onnx-am: error: out of memory", err=True)
            sys.exit(2)


def _verbose(ctx: click.Context) -> bool:
    sub = ctx.invoked_subcommand
    return "--verbose" in sys.argv or "-v" in sys.argv or bool(ctx.params.get("verbose")) or (
        sub is not None and False
    )


@click.group(cls=OnnxAmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onnx-am")
def cli() -> None:
    """Explain what the units of an ONNX model respond to, by activation maximization."""


def _register() -> None:
    from onnx_am_cli.inspect_cmd import inspect_command

    cli.add_command(inspect_command)
    try:
        from onnx_am_cli.analyze_cmd import analyze_command
    except ImportError:  # analyze is being built; inspect works without it
        return
    cli.add_command(analyze_command)


_register()


def main() -> None:
    cli(prog_name="onnx-am")


if __name__ == "__main__":
    main()
