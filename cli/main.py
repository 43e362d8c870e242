"""``onnx-am``: the click group. Commands live in their own modules; errors are rendered here.

The library raises :class:`onnx_am.OnnxAmError` with a one-line message and an exit code;
this front end prints ``onnx-am: error: <message>`` on stderr (with ``--json`` also
``{"error": {"type", "message", "exit_code"}}`` on stdout, unless the command already printed
its JSON object) and exits with that code.
``--verbose`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator

import click
from onnx_am_cli import JSON_EMITTED_KEY

from onnx_am.errors import OnnxAmError, one_line

#: ``ctx.meta`` key: whether ``--verbose``/``-v`` was given to the subcommand.
VERBOSE_KEY = "onnx_am.verbose"
#: ``ctx.meta`` key: whether ``--json`` was given (errors then also go to stdout as JSON).
JSON_KEY = "onnx_am.json"
#: Longest error message printed (long lists are summarized where they are built).
MAX_ERROR_LINE = 300


class OnnxAmGroup(click.Group):
    """A click group that turns library errors into one line and an exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[VERBOSE_KEY] = asks_verbose(args)
        ctx.meta[JSON_KEY] = "--json" in args
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        with _library_logs_hidden(not _verbose(ctx)):
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OnnxAmError as exc:
            if _verbose(ctx):
                raise
            _fail(ctx, type(exc).__name__, str(exc), exc.exit_code)
        except MemoryError:
            if _verbose(ctx):
                raise
            _fail(ctx, "MemoryError", "out of memory", 2)
        except click.UsageError as exc:  # a bad value click checked: one line, as ours
            if _verbose(ctx) or exc.ctx is None:
                raise
            _fail(ctx, "UsageError", exc.format_message(), exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug or an input we did not foresee
            if _verbose(ctx):
                raise
            message = " ".join(str(exc).splitlines())[:300]
            click.echo(
                f"onnx-am: internal error: {type(exc).__name__}: {message} "
                "(run again with --verbose for the traceback)",
                err=True,
            )
            sys.exit(1)


def _fail(ctx: click.Context, kind: str, message: str, code: int) -> None:
    """One line on stderr (and, with ``--json``, an error object on stdout); exit ``code``."""
    line = one_line(message, MAX_ERROR_LINE)
    if ctx.meta.get(JSON_KEY) and not ctx.meta.get(JSON_EMITTED_KEY):
        error = {"type": kind, "message": line, "exit_code": code}
        click.echo(json.dumps({"error": error}))
    click.echo(f"onnx-am: error: {line}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def _library_logs_hidden(hidden: bool) -> Iterator[None]:
    """The libraries we call (onnx_ir, onnxscript, ...) log warnings about a model; with no
    handler Python prints them on stderr, where an error must be one line. While ``hidden``, a
    null handler takes them (``--verbose`` shows them)."""
    if not hidden:
        yield
        return
    handler = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def asks_verbose(args: list[str]) -> bool:
    """Whether ``--verbose`` / ``-v`` is among the arguments (read before click parses them)."""
    return any(
        arg == "--verbose" or (arg.startswith("-") and not arg.startswith("--") and "v" in arg)
        for arg in args
    )


def _verbose(ctx: click.Context) -> bool:
    """``--verbose`` among the arguments (read before the subcommand parsed them)."""
    return bool(ctx.meta.get(VERBOSE_KEY))


@click.group(cls=OnnxAmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onnx-am")
def cli() -> None:
    """Explain what the units of an ONNX model respond to, by activation maximization."""


def _register() -> None:
    from onnx_am_cli.analyze_cmd import analyze_command
    from onnx_am_cli.inspect_cmd import inspect_command

    cli.add_command(inspect_command)
    cli.add_command(analyze_command)


_register()


def main() -> None:
    import onnx_am_cli

    # the command's deadline starts when this program did: loading torch counts too
    cli(prog_name="onnx-am", obj={onnx_am_cli.START_KEY: onnx_am_cli.STARTED})


if __name__ == "__main__":
    main()
