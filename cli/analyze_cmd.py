"""``onnx-am analyze MODEL``: the zero-config audit. Parses options, calls
:func:`onnx_am.audit.analyze.analyze`, prints the plan, shows progress (:mod:`.progress`),
stops cleanly on SIGINT, SIGTERM and SIGHUP (:mod:`.signals`) and prints a summary."""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import click
from onnx_am_cli import START_KEY
from onnx_am_cli.options import import_options, json_option, library_value, verbose_option
from onnx_am_cli.params import FLOATS, REQUIREMENT
from onnx_am_cli.progress import LINE_INTERVAL, ProgressBar, ProgressLines
from onnx_am_cli.signals import GracefulStop

from onnx_am.audit.analyze import (
    DEFAULT_INPUT_RANGE,
    DEFAULT_LR,
    DEFAULT_MAX_UNITS,
    DEFAULT_METHODS,
    DEFAULT_RESTARTS,
    DEFAULT_SEED,
    DEFAULT_STEP_RULE,
    DEFAULT_STEPS,
    STEP_RULES,
    AnalyzeOptions,
    AnalyzeProgress,
    analyze,
    default_out_dir,
    estimate_analysis,
)
from onnx_am.audit.budget import DEFAULT_TIME_BUDGET, format_duration, parse_duration
from onnx_am.audit.gate import REQUIREMENT_EXIT_CODE, check_requirements
from onnx_am.audit.kept import what_was_kept
from onnx_am.audit.many import DEFAULT_ROOT, analyze_many
from onnx_am.audit.options import DEFAULT_LR_SCHEDULE, DEFAULT_RACING
from onnx_am.audit.overview import INDEX_HTML, INDEX_JSON
from onnx_am.audit.report import HTML_FILE, REPORT_FILE
from onnx_am.audit.summary import summary_lines
from onnx_am.domain import PRESETS
from onnx_am.engine.checkpoint import CHECKPOINT_INTERVAL
from onnx_am.engine.deadline import Deadline
from onnx_am.engine.pace import pace_text
from onnx_am.engine.parameterizations import PARAMETERIZATIONS
from onnx_am.engine.racing import RacingSettings
from onnx_am.engine.schedules import LR_SCHEDULES
from onnx_am.engine.starts import DEFAULT_START, SCREEN_CANDIDATES, START_KINDS
from onnx_am.methods import expand_methods

#: The race --racing runs (the default's settings, or RacingSettings' own when racing is off).
_RACE = DEFAULT_RACING or RacingSettings()

#: Exit code after Ctrl-C (the shell convention 128 + SIGINT; SIGTERM 143, SIGHUP 129).
EXIT_INTERRUPTED = 130
#: Test-only, not for users: ``UNITS:STEP`` holds ``analyze`` at the first optimize event
#: with at least UNITS units done and chunk step STEP or later, until a stop signal comes
#: (or a kill), so that tests stop or kill a run at a known step instead of racing the clock.
TEST_HOLD_ENV = "ONNX_AM_TEST_HOLD_AT"


@click.command("analyze")
@click.argument("models", nargs=-1, required=True, type=click.Path(), metavar="MODEL...")
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="TENSOR[:UNITS]",
    help="Unit(s) to maximize, e.g. logits:3, conv3:0-7 (repeatable). "
    f"Default: every unit of the first output, at most {DEFAULT_MAX_UNITS}.",
)
@click.option(
    "--layer",
    "layers",
    multiple=True,
    metavar="TENSOR",
    help="Also maximize every channel of this intermediate ONNX tensor (repeatable).",
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    metavar="METHOD",
    help="Gradient method (repeatable): standard, decoupled(0.3), proxy(0.6), best, "
    "decoupled(anneal(1.0)), best(anneal(0.3)). Default: "
    + " + ".join(plan.label for plan in expand_methods(DEFAULT_METHODS))
    + ".",
)
@click.option(
    "--backward-slope",
    type=FLOATS,
    metavar="B[,B...]",
    help="Backward slope(s) for bare decoupled/proxy; a list makes a sweep, e.g. 0.1,0.3,1.0.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=DEFAULT_STEPS,
    show_default=True,
    help="Gradient steps per start.",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help=f"Step size in raw-input units. Default: {DEFAULT_LR:g} for -1..1, scaled by "
    "(high - low) / 2 for other --input-range values.",
)
@click.option(
    "--restarts",
    type=click.IntRange(min=1),
    default=DEFAULT_RESTARTS,
    show_default=True,
    help="Random starts per unit and method; the best is kept.",
)
@click.option(
    "--seed",
    type=int,
    default=DEFAULT_SEED,
    show_default=True,
    help="Seed of the starts; the same seed gives the same report, also after --resume.",
)
@import_options
# --- tokens (issue 22): the search over token ids ---
@click.option(
    "--fix",
    "fix",
    multiple=True,
    metavar="POS=ID",
    help="Hold token POS at id ID in the token search, e.g. 0=101 (repeatable).",
)
@click.option(
    "--vocab",
    type=click.Path(),
    metavar="FILE",
    help="tokenizer.json (needs onnx-am[text]), vocab.txt or a JSON token->id map: show "
    "token results as text. Without one: ids, and bytes for a 256-token vocabulary.",
)
@click.option(
    "--token-search",
    "token_methods",
    multiple=True,
    type=click.Choice(["greedy", "beam", "relaxed"]),
    help="Token search (repeatable): greedy or beam gradient-guided swaps, relaxed "
    "(softmax over the vocabulary annealed to one-hot). Default: greedy.",
)
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default=None,
    help="Input convention: imagenet (0..1, ImageNet mean/std), imagenet-255 (0..255, same "
    "in pixel units), unit (0..1), symmetric (-1..1). --input-range/--mean/--std override "
    "its parts.",
)
@click.option(
    "--input-range",
    default=None,
    metavar="LOW..HIGH",
    help="Raw input box: -1..1, 0..1, 0..255, ... Default: what the model's metadata "
    f"records, else {DEFAULT_INPUT_RANGE} (said on stderr).",
)
@click.option(
    "--mean",
    type=FLOATS,
    metavar="M[,M...]",
    help="Per-channel mean the model expects subtracted (raw units).",
)
@click.option(
    "--std",
    type=FLOATS,
    metavar="S[,S...]",
    help="Per-channel std the model expects divided by (raw units).",
)
@click.option(
    "--max-units",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_UNITS,
    show_default=True,
    help="At most this many units per tensor.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    metavar="auto|cpu|cuda[:N]",
    help="Where the engine runs; auto: CUDA when torch sees a GPU, else cpu. onnxruntime "
    "cross-checks run on the CPU (or its CUDA provider when installed).",
)
@click.option(
    "--time-budget",
    default=format_duration(DEFAULT_TIME_BUDGET),
    show_default=True,
    callback=library_value(parse_duration),
    metavar="DURATION",
    help="Wall time the whole run may take: 90s, 10m, 2h, 1h30m, or none. To fit, the plan "
    "cuts units (down to 8, always keeping every method), then restarts, then steps (down to "
    "64), then units and steps further; what was cut is printed and kept in the report.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Import, time a few steps, print the plan (what would be cut, estimated time, peak "
    "memory) and exit 0 without writing anything.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Rows (units x methods x restarts) per optimization step. Default: as many as fit "
    "in a fixed share of the machine's memory, at most 64. Results do not depend on it (up "
    "to float rounding).",
)
@click.option(
    "--step-rule",
    type=click.Choice(list(STEP_RULES)),
    default=DEFAULT_STEP_RULE,
    show_default=True,
    help="normalized: projected ascent with each gradient scaled to unit RMS (works for "
    "logits and early channels alike); raw: the paper's x <- clip(x + lr * grad); adam.",
)
@click.option(
    "--lr-schedule",
    type=click.Choice(LR_SCHEDULES),
    default=DEFAULT_LR_SCHEDULE,
    show_default=True,
    help="How the step size changes over the steps: constant (as in the paper), or a decay "
    "to 5 % of --lr (linear, cosine; cosine-restarts: 4 cosine decays).",
)
@click.option(
    "--start",
    type=click.Choice(START_KINDS),
    default=DEFAULT_START,
    show_default=True,
    help="Start inputs: random (box centre plus 10 % noise), screened (each restart starts "
    "from the best of --screen random corners of the box, found by forward passes only), "
    "hedged (restart 0 random, later restarts screened), lower, upper, mid, random_corner, "
    "dead.",
)
@click.option(
    "--screen",
    type=click.IntRange(min=1),
    default=SCREEN_CANDIDATES,
    show_default=True,
    help="Candidates per screened restart of --start screened / hedged (each costs about a "
    "third of a step).",
)
@click.option(
    "--racing/--no-racing",
    default=DEFAULT_RACING is not None,
    show_default=True,
    help=f"Racing restarts (default): each unit starts {_RACE.candidates} candidates per "
    f"method ({_RACE.candidates - _RACE.corners} box-centre starts, the {_RACE.corners} best of "
    f"{_RACE.screen} screened corners) and keeps the best {_RACE.keep:.0%} at each of "
    f"{_RACE.rungs} stage boundaries, the survivors taking the freed steps"
    + (
        f", the last stage's lr decaying by the race's own {_RACE.lr_schedule} schedule (in "
        "place of --lr-schedule)"
        if _RACE.lr_schedule
        else ""
    )
    + "; same row-steps as --restarts x --steps (the screen paid from them). --no-racing: "
    "plain restarts, every row runs every step.",
)
@click.option(
    "--regularizer",
    "regularizers",
    multiple=True,
    metavar="NAME(S)",
    help="Image prior (repeatable): jitter(8), pad(12), scale(0.1), rotate(10) transform "
    "the input of each gradient step; tv(0.1), l2(0.01) penalize; blur(0.5) smooths. "
    "Reported activations stay those of the untransformed input.",
)
@click.option(
    "--robust",
    is_flag=True,
    help="Transformation robustness as in lucid/lucent: pad(12), jitter(8), scale(0.1), "
    "rotate(10), jitter(4); results also show the mean activation under them.",
)
@click.option(
    "--parameterization",
    type=click.Choice(PARAMETERIZATIONS),
    default="pixel",
    show_default=True,
    help="What is optimized: the raw pixels (as in the paper), or a 1/f-scaled Fourier "
    "spectrum squashed into the input range (smoother pictures; image inputs; "
    "+decorrelated: RGB only). --lr is then in parameter units.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Run the chunks on N Ray workers (a local Ray instance started and stopped for the "
    "run; with --ray, workers on that cluster). Needs onnx-am[ray]. Default: this process.",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Join a running Ray cluster (auto, HOST:6379, ray://HOST:10001). Default workers: "
    "one per GPU with --device cuda, else one per CPU.",
)
@click.option(
    "--worker-threads",
    type=click.IntRange(min=1),
    default=None,
    metavar="T",
    help="Torch threads (and Ray CPUs) per worker. Default: the cores divided among local "
    "workers; 1 on a cluster.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Report directory. Default: ./onnx-am-report/<model stem>/. With several models (or "
    "a directory): the folder of index.html, a report folder per model inside "
    "(default ./onnx-am-report/).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing report.")
@click.option(
    "--require",
    "requirements",
    type=REQUIREMENT,
    multiple=True,
    metavar="EXPR",
    help="A condition the audit must meet, for CI: FIELD OP NUMBER, e.g. 'white <= 0.2', "
    "'agrees == 1', 'beats_trivial >= 0.99', 'decoupled.rescued == 0' (fields: units, "
    "results, parity, shares agrees / beats_trivial / white / saturated, also per method "
    "kind as standard.white; counts decoupled.better / worse / tie / rescued / "
    "white_cleared / white_caused). Repeatable; when one fails the report is still "
    f"written and the exit code is {REQUIREMENT_EXIT_CODE}.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted report (same settings).")
@json_option("report.json (only that)")
@click.option("--quiet", "-q", is_flag=True, help="No plan, no progress, no summary.")
@verbose_option("Phases on stderr; tracebacks on errors.")
@click.option(
    "--checkpoint-interval",
    type=click.FloatRange(min=0),
    default=CHECKPOINT_INTERVAL,
    hidden=True,
    help="Seconds between checkpoints of a running chunk.",
)
@click.option(
    "--progress-interval",
    type=click.FloatRange(min=0.01),
    default=LINE_INTERVAL,
    hidden=True,
    help="Seconds between progress lines off a terminal.",
)
def analyze_command(
    models,
    out,
    as_json,
    quiet,
    verbose,
    dry_run,
    progress_interval,
    workers,
    ray_address,
    worker_threads,
    requirements,
    **kwargs,
) -> None:
    """Audit MODEL: maximize its units with standard and decoupled gradients, cross-check
    with onnxruntime, and write a report directory (report.json, index.html, images, plots).
    Several models, or a directory of them: a report each and an index.html across them;
    --workers N or --ray ADDRESS run the chunks on Ray workers (no checkpoints there: a chunk
    stopped midway runs again on --resume).

    Before optimizing it times a few real steps and prints the plan; the work is cut to fit
    --time-budget (default 15m). Off a terminal a progress line goes to stderr every 30 s.
    SIGINT, SIGTERM and SIGHUP finish the current step, keep it in a checkpoint, and exit;
    the running chunk is also checkpointed every minute, so even a kill loses at most about
    a minute; --resume continues exactly where it stopped.

    Exit codes: 0 ok; 2 usage or input error, or a budget too small for one unit; 3
    onnxruntime disagrees (report still written); 4 a --require failed (report still
    written); 130 / 143 / 129 stopped by SIGINT / SIGTERM / SIGHUP (continue with
    --resume). With several models, 2 also when one could not be audited.
    """
    kwargs["backward_slopes"] = kwargs.pop("backward_slope") or ()
    kwargs["racing"] = _RACE if kwargs["racing"] else None
    for name in ("targets", "layers", "methods", "regularizers", "fix", "token_methods"):
        kwargs[name] = tuple(kwargs[name])
    options = AnalyzeOptions.of(**kwargs)
    deadline = _deadline(options.budget.time_budget)  # the one deadline of the whole command
    many = len(models) > 1 or Path(models[0]).is_dir()
    out_dir = out or (DEFAULT_ROOT if many else default_out_dir(models[0]))
    if dry_run:
        if many:
            raise click.UsageError("--dry-run takes one model")
        _dry_run(models[0], options, deadline, as_json, quiet, verbose)
        return
    # The default (one model, no --workers/--ray): main's checkpointed path, no executor.
    # --workers/--ray/several models: the executor path of issue 13, without checkpoints.
    executor = _executor(workers, ray_address, worker_threads, options.optimize.device)
    stop = GracefulStop()
    bar = ProgressBar() if not quiet and sys.stderr.isatty() else None
    lines = None
    if not quiet and bar is None:
        lines = ProgressLines(progress_interval, started=deadline.start)
    progress = _progress(bar, lines, verbose, quiet, stop)
    try:
        with stop, lines or nullcontext(), executor or nullcontext():
            if many:
                outcome = analyze_many(
                    models, options, out_dir, progress, executor, deadline=deadline
                )
            else:
                outcome = analyze(
                    models[0], options, out_dir, progress, executor, deadline=deadline
                )
    except KeyboardInterrupt:
        if bar:
            bar.clear()
        kept = what_was_kept(out_dir)
        click.echo(f"onnx-am: stopped by {stop.name}; {kept.describe()}", err=True)
        sys.exit(stop.exit_code)
    finally:
        if bar:
            bar.clear()
    if many:
        gate_failed = any(
            _gate(report.doc, requirements, name) for name, report in outcome.reports.items()
        )
        _finish_many(outcome, as_json, quiet)
    else:
        gate_failed = _gate(outcome.doc, requirements, None)
        _finish_one(outcome, as_json, quiet)
    if gate_failed:
        sys.exit(REQUIREMENT_EXIT_CODE)


def _gate(doc: dict, requirements, name: str | None) -> bool:
    """Print each failed requirement (one line each, also with --quiet); True if any did."""
    failed = [c for c in check_requirements(requirements, doc) if not c.passed]
    for check in failed:
        where = f"{name}: " if name else ""
        click.echo(f"onnx-am: {where}requirement {check.describe()}", err=True)
    return bool(failed)


def _deadline(budget: float | None) -> Deadline:
    """The command's deadline: from when the program started (``main`` passes it), else
    from now."""
    start = (click.get_current_context().find_root().obj or {}).get(START_KEY)
    return Deadline.starting_now(budget, start=start)


def _executor(workers: int | None, address: str | None, threads: int | None, device: str):
    """Where the chunks run: None (this process, checkpointed; several models get a
    :class:`LocalExecutor` from :func:`analyze_many`), or Ray workers (imported only when
    asked for)."""
    if workers is None and address is None:
        if threads is not None:
            raise click.UsageError("--worker-threads needs --workers or --ray")
        return None
    from onnx_am.audit.ray_executor import RayExecutor

    return RayExecutor(workers, address, device, threads)


def _finish_one(report, as_json: bool, quiet: bool) -> None:
    if report.doc.get("pace"):  # nothing is cut silently, not even with --quiet
        click.echo(f"onnx-am: {pace_text(report.doc['pace'])}", err=True)
    if (report.doc.get("tokens") or {}).get("cut_text"):  # tokens (issue 22)
        click.echo(f"onnx-am: {report.doc['tokens']['cut_text']}", err=True)
    if as_json:
        click.echo((report.out_dir / REPORT_FILE).read_text(encoding="utf-8"), nl=False)
    elif not quiet:
        _summary(report)
    if report.exit_code:
        reasons = [] if report.parity.passed else ["parity check failed"]
        if report.disagreements:
            reasons.append(f"{len(report.disagreements)} result(s) not reproduced by onnxruntime")
        click.echo(
            f"onnx-am: warning: onnxruntime disagrees ({'; '.join(reasons)}); "
            f"see {report.out_dir / HTML_FILE}",
            err=True,
        )
        sys.exit(report.exit_code)


def _finish_many(outcome, as_json: bool, quiet: bool) -> None:
    if as_json:
        click.echo((outcome.root / INDEX_JSON).read_text(encoding="utf-8"), nl=False)
    elif not quiet:
        for name, report in outcome.reports.items():
            parity = "passed" if report.parity.passed else "FAILED"
            click.echo(f"{name}: {len(report.results)} result(s); parity {parity}")
        click.echo(f"index: {outcome.root / INDEX_HTML}")
    for name, report in outcome.reports.items():  # nothing is cut silently
        if report.doc.get("pace"):
            click.echo(f"onnx-am: {name}: {pace_text(report.doc['pace'])}", err=True)
        if (report.doc.get("tokens") or {}).get("cut_text"):  # tokens (issue 22)
            click.echo(f"onnx-am: {name}: {report.doc['tokens']['cut_text']}", err=True)
    for name, error in outcome.errors.items():
        click.echo(f"onnx-am: {name}: could not be audited: {error}", err=True)
    disagree = [n for n, r in outcome.reports.items() if r.exit_code]
    if disagree:
        click.echo(
            f"onnx-am: warning: onnxruntime disagrees on {', '.join(disagree)}; "
            f"see {outcome.root / INDEX_HTML}",
            err=True,
        )
    if outcome.exit_code:
        sys.exit(outcome.exit_code)


def _summary(report) -> None:
    results = report.results
    beaten = sum(1 for r in results if r.beats_trivial)
    click.echo(
        f"{len(results)} result(s); {beaten} beat every trivial input; parity "
        f"{'passed' if report.parity.passed else 'FAILED'}"
    )
    for line in summary_lines(report.doc.get("summary", {})):
        click.echo(line)
    for entry in (report.doc.get("tokens") or {}).get("results", []):  # tokens (issue 22)
        shown = entry["text"] if entry.get("text") is not None else entry["ids"]
        click.echo(
            f"{entry['target']} {entry['method']}: {shown!r} value {entry['value']:.4g} "
            f"(onnxruntime{'' if entry['agrees'] else ', DISAGREES with torch'}; embedding "
            f"reference {entry['embedding_value']:.4g})"
        )
    cuts = (report.doc.get("plan") or {}).get("cuts") or []
    if cuts:
        text = ", ".join(f"{c['what']} {c['from']} -> {c['to']}" for c in cuts)
        click.echo(f"cut to fit the time budget: {text} (--time-budget none for all)")
    click.echo(f"report: {report.out_dir / HTML_FILE}")


def _dry_run(
    model, options: AnalyzeOptions, deadline: Deadline, as_json: bool, quiet: bool, verbose: bool
) -> None:
    progress = _progress(None, None, verbose, quiet, stop=None)  # prints notes and the plan
    plan = estimate_analysis(model, options, progress=progress, deadline=deadline)
    if as_json:
        click.echo(json.dumps(plan.to_dict(), indent=1))


def _progress(bar, lines, verbose: bool, quiet: bool, stop: GracefulStop | None):
    """The callback: stop between steps after a signal, print the defaults' notes and the
    plan, feed the progress."""
    last_phase = [None]
    hold = _test_hold()

    def progress(event: AnalyzeProgress) -> None:
        if stop is not None:
            stop.check()  # a signal that came during the last step
            stop.deferring = event.phase == "optimize"
        if not quiet:
            for note in event.notes:
                click.echo(f"onnx-am: {note}", err=True)
        if verbose and event.phase != last_phase[0]:
            if bar:
                bar.clear()
            click.echo(f"onnx-am: {event.phase}", err=True)
        last_phase[0] = event.phase
        if event.phase == "plan" and event.plan is not None:
            _print_plan(event.plan, bar, quiet)
        if bar and event.phase == "optimize":
            bar.update(event)
        if lines is not None:
            lines.update(event)
        if hold and stop is not None and event.phase == "optimize":
            units, step = hold[0]
            if event.units_done >= units and event.steps_done >= step:
                hold.clear()
                _hold_until_signal(stop)

    return progress


def _test_hold() -> list[tuple[int, int]]:
    """``[(units, step)]`` from :data:`TEST_HOLD_ENV`, or ``[]`` (not set)."""
    text = os.environ.get(TEST_HOLD_ENV)
    if not text:
        return []
    units, step = text.split(":")
    return [(int(units), int(step))]


def _hold_until_signal(stop: GracefulStop) -> None:
    """Test-only (:data:`TEST_HOLD_ENV`): wait here, after the step, for a stop signal."""
    click.echo(f"onnx-am: test hold ({TEST_HOLD_ENV})", err=True)
    while stop.signum is None:
        time.sleep(0.01)
    stop.check()


def _print_plan(plan, bar, quiet: bool) -> None:
    if bar:
        bar.clear()
    if not quiet:
        for line in plan.lines():
            click.echo(f"onnx-am: plan: {line}", err=True)
    elif plan.cuts:  # nothing is cut silently, not even with --quiet
        click.echo(f"onnx-am: plan: cut to fit the time budget: {plan.cut_text()}", err=True)
