"""``onnx-am inspect``: what onnx-am sees in a model, and whether torch matches onnxruntime.

Exit codes: 0 importable and parity passed; 2 user or input error (unsupported ops
included: the summary is still printed); 3 parity failed.
"""

from __future__ import annotations

import json

import click
from onnx_am_cli import JSON_EMITTED_KEY
from onnx_am_cli.options import import_options, json_option, verbose_option

from onnx_am.audit.inspection import InspectReport, inspect_model, inspect_unimportable
from onnx_am.audit.options import ImportSettings
from onnx_am.audit.pipeline import import_model
from onnx_am.errors import ImportFailedError, ParityError, UnsupportedOpError
from onnx_am.importer.feeds import FeedValue
from onnx_am.importer.limits import ProbeLimit
from onnx_am.importer.loading import load_model


@click.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
@json_option("one JSON object")
@import_options
@click.option("--no-parity", is_flag=True, help="Skip the onnxruntime comparison.")
@verbose_option("Tracebacks on errors.")
def inspect_command(
    model: str,
    as_json: bool,
    input_name: str | None,
    input_shape: tuple[int, ...] | None,
    feeds: dict[str, FeedValue],
    at: str | None,
    seq_len: int | None,
    probe_limit: ProbeLimit,
    no_parity: bool,
    verbose: bool,
) -> None:
    """Summarize MODEL: inputs, outputs, rectifiers, batch support, parity with onnxruntime."""
    original = load_model(model)
    try:
        settings = ImportSettings.given(input_name, input_shape, feeds, at, seq_len, probe_limit)
        imported = import_model(original, settings)
    except (UnsupportedOpError, ImportFailedError) as exc:
        _emit(inspect_unimportable(original, exc), as_json, verbose)
        raise
    report = inspect_model(imported, parity=not no_parity)
    _emit(report, as_json, verbose)
    if report.parity is not None and not report.parity["passed"]:
        parity = report.parity
        raise ParityError(
            f"{parity['summary']} (tolerance {parity['tolerance']:.1g} relative) on {model}"
        )


def _emit(report: InspectReport, as_json: bool, verbose: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict(), default=float))
        click.get_current_context().meta[JSON_EMITTED_KEY] = True
    else:
        click.echo(render_text(report, verbose))


def render_text(report: InspectReport, verbose: bool = False) -> str:
    """The human-readable summary; ``verbose`` lists every unsupported node, not only the
    counts per op type."""
    producer = " ".join(v for v in report.producer.values() if v) or "unknown"
    opsets = ", ".join(f"{domain} {version}" for domain, version in report.opsets.items())
    lines = [f"producer: {producer}", f"opsets:   {opsets} (IR {report.ir_version})", "inputs:"]
    for value in report.inputs:
        layout = f"  layout {value['layout']}" if "layout" in value else ""
        fed = {None: "", "optimized": "  optimized"}.get(
            value.get("fed"), f"  fed {value.get('fed')}"
        )
        if value.get("fed_shape") not in (None, value["shape"]):
            fed += f" as {value['fed_shape']}"
        lines.append(f"  {value['name']}  {value['shape']}  {value['dtype']}{layout}{fed}")
    lines.append("outputs:")
    lines += [f"  {v['name']}  {v['shape']}  {v['dtype']}" for v in report.outputs]
    counts = ", ".join(f"{op} {n}" for op, n in report.node_counts.items())
    lines.append(f"nodes:    {sum(report.node_counts.values())} ({counts})")
    lines.append(f"rectifiers: {len(report.rectifiers)}")
    for r in report.rectifiers:
        lines.append(f"  {r['node']}  {r['op_type']}  alpha={_alpha(r['alpha'])}  -> {r['output']}")
    if report.other_nonlinearities:
        others = ", ".join(
            f"{o['node']} ({o['op_type']}{': ' + o['reason'] if o.get('reason') else ''})"
            for o in report.other_nonlinearities
        )
        lines.append(f"other non-linearities: {others}")
    if report.unsupported_ops:
        lines.append(f"unsupported ops: {len(report.unsupported_ops)}")
        if verbose:
            lines += [
                f"  {u['node']}  {u['op_type']}  ({u['domain']}, opset {u['opset']})"
                for u in report.unsupported_ops
            ]
        else:
            lines += [f"  {line}" for line in _unsupported_by_op(report.unsupported_ops)]
    if report.batch is not None:
        lines.append(f"batch:    {report.batch['mode']} ({report.batch['note']})")
    if report.parity is not None:
        verdict = "passed" if report.parity["passed"] else "FAILED"
        lines.append(
            f"parity:   {verdict}: max abs diff {report.parity['max_abs_diff']:.3g}, "
            f"max rel diff {report.parity['max_rel_diff']:.3g}"
            f" (tolerance {report.parity['tolerance']:.2g} relative"
            + (
                f": {report.parity['tolerance_note']})"
                if report.parity.get("tolerance_note")
                else ")"
            )
        )
    lines += [f"note:     {note}" for note in report.prepass_notes]
    return "\n".join(lines)


def _unsupported_by_op(unsupported: list[dict], first: int = 3) -> list[str]:
    """One line per op type: count and the first node names (``--verbose`` lists all)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for u in unsupported:
        groups.setdefault((u["domain"], u["op_type"]), []).append(u["node"])
    lines = []
    for (domain, op), names in sorted(groups.items(), key=lambda item: -len(item[1])):
        more = f", +{len(names) - first} more" if len(names) > first else ""
        lines.append(f"{op} x{len(names)} ({domain}): {', '.join(names[:first])}{more}")
    return lines


def _alpha(alpha) -> str:
    if isinstance(alpha, list):
        return f"per-channel[{len(alpha)}]"
    return f"{alpha:g}"
