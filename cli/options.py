"""Options shared by the commands, each declared once, and values parsed by the library.

:func:`json_option` and :func:`verbose_option` are ``--json`` and ``--verbose`` (each command
says what they print); :func:`import_options` is what to import (``--input``,
``--input-shape``, ``--feed``, ``--at``, ``--seq-len``, ``--probe-timeout``), the same for
``analyze`` and ``inspect``.
:func:`library_value` turns a library parser into an option callback: a bad value raises the
library's own error (``SettingsError`` for a duration, ``InputSpecError`` for a feed), which
the group prints as one line and exit code 2, as it does every bad value (click's own
included, see :mod:`onnx_am_cli.main`).
"""

from __future__ import annotations

from collections.abc import Callable

import click
from onnx_am_cli.params import PROBE_HELP, PROBE_LIMIT, SHAPE

from onnx_am.errors import InputSpecError
from onnx_am.importer.feeds import FeedValue, parse_feed

FEED_HELP = (
    "Value of an input that is not optimized (repeatable): a number broadcast to its "
    "declared shape (sr=16000, state=0), a number and a shape (state=0:2,1,128), or a .npy "
    "file (state=state.npy). Float inputs not given are fed zeros."
)


def parse_feeds(values: tuple[str, ...]) -> dict[str, FeedValue]:
    """Repeated ``--feed NAME=VALUE`` -> ``{name: FeedValue}`` (a name given twice is an error).

    Raises:
        InputSpecError: a malformed feed, or a name given twice.
    """
    feeds: dict[str, FeedValue] = {}
    for text in values or ():
        feed = parse_feed(text)
        if feed.name in feeds:
            raise InputSpecError(f"--feed {feed.name}=... is given twice")
        feeds[feed.name] = feed
    return feeds


def library_value(parse: Callable) -> Callable:
    """An option callback that parses the value with the library's ``parse`` (its errors are
    the library's, one line each)."""

    def callback(ctx: click.Context, param: click.Parameter, value):
        return parse(value)

    return callback


def json_option(what: str) -> Callable:
    """``--json``: print ``what`` on stdout (and nothing else there)."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} on stdout.")


def verbose_option(what: str) -> Callable:
    """``--verbose`` / ``-v``: tracebacks on errors, and ``what`` more."""
    return click.option("--verbose", "-v", is_flag=True, help=what)


def import_options(command: Callable) -> Callable:
    """``--input``, ``--input-shape``, ``--feed``, ``--at`` and ``--seq-len``: which input is
    optimized, its full shape, the other inputs' values, and the tensor the search starts at
    (with the sequence length of a token model)."""
    decorators = [
        click.option(
            "--input", "input_name", metavar="NAME", help="Input to optimize, if several."
        ),
        click.option(
            "--input-shape",
            type=SHAPE,
            metavar="N,C,H,W",
            help="Full input shape (1,3,32,32 or 1x3x32x32), to fill symbolic dims.",
        ),
        click.option(
            "--feed",
            "feeds",
            multiple=True,
            callback=library_value(parse_feeds),
            metavar="NAME=VALUE",
            help=FEED_HELP,
        ),
        click.option(
            "--at",
            metavar="TENSOR",
            help="Start the search at this ONNX tensor (e.g. an embedding Gather's output): "
            "the graph before it is cut away, the inputs the rest needs are fed (--feed; int "
            "inputs: a mask ones, position ids 0..L-1, others zeros). Default: a model without "
            "float inputs starts at its embedding lookup or one-hot.",
        ),
        click.option(
            "--seq-len",
            type=click.IntRange(min=1),
            default=None,
            metavar="L",
            help="Sequence length when starting at a tensor. Default: the model's, else 16.",
        ),
        click.option(
            "--probe-timeout",
            "probe_limit",
            type=PROBE_LIMIT,
            default="auto",
            metavar="auto|DURATION|none",
            help=PROBE_HELP + " With analyze they also end with the time budget.",
        ),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


__all__ = [
    "FEED_HELP",
    "import_options",
    "json_option",
    "library_value",
    "parse_feeds",
    "verbose_option",
]
