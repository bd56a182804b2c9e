"""``spamfilter filter``: inputs and outputs opened, then the local or the Ray engine, or pipeline mode."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import click

from .. import interrupts
from ..errors import EX_BROKEN_PIPE
from ..formats import DEFAULT_TEXT_COLUMN, FORMATS
from ..interrupts import Interrupted, exit_code
from ..modeldir import default_model_dir, open_model_directory

if TYPE_CHECKING:
    from ..pipeline import FilterInterrupted
    from ..runtime import Classifier
    from ..verdict import Decision

from .common import (
    CONTEXT,
    _classifier_used,
    _console,
    _fail,
    _library_errors,
    _load_classifier,
    _model_used,
    _stopping_on_signals,
    _warn,
    choice_option,
    cli,
    count_option,
    explain_option,
    gpu_option,
    header_prefix_option,
    model_option,
    threshold_option,
    user_option,
    variant_option,
)


@cli.command(name="filter", context_settings=CONTEXT)
@click.argument("input_paths", metavar="[INPUT]...", nargs=-1, type=click.Path(allow_dash=True))
@model_option
@choice_option(
    "--format",
    FORMATS,
    "auto",
    "Input format; auto looks at the first bytes.",
    dest="input_format",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(allow_dash=True),
    default="-",
    help="Where results go (default stdout); a folder for a folder INPUT and for --engine ray.",
)
@click.option(
    "--spam-output",
    type=click.Path(dir_okay=False),
    default=None,
    help="mbox only: write spam to this mailbox instead of --output.",
)
@click.option(
    "--text-column",
    default=DEFAULT_TEXT_COLUMN,
    show_default=True,
    help="CSV column holding the message text.",
)
@threshold_option
@header_prefix_option
@explain_option(
    "mbox, email and folder output: an X-Spam-Report field with the phrases that moved P(spam) most, "
    "for spam verdicts only or for all. Costly: about 0.4-0.9 s a message explained, as much as "
    "classifying some 35 (benchmarks/bench_explain.py).",
    "explain_policy",
)
@gpu_option
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=None,
    help="Messages per model call.  [default: 8; 64 with --gpu]",
)
@variant_option
@click.option(
    "--strict",
    is_flag=True,
    help="Pipeline mode: exit 75 (EX_TEMPFAIL) on failure instead of passing the message through untagged.",
)
@click.option(
    "--exit-code", "verdict_exit", is_flag=True, help="Pipeline mode: exit 1 for spam, 0 for not spam."
)
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A live message count on stderr. Default: only when stderr is a terminal.",
)
@choice_option(
    "--engine",
    ("local", "ray"),
    "local",
    "ray: several INPUTs (mbox, Maildir, .eml folder, CSV; paths or fsspec URLs) into -o DIR on Ray "
    "Data, embedded here or on a cluster.",
)
@click.option(
    "--ray-address",
    envvar="RAY_ADDRESS",
    default=None,
    metavar="ADDR",
    help="--engine ray: join the Ray cluster there ($RAY_ADDRESS). Default: start Ray on this machine.",
)
@count_option("--workers", 1, "--engine ray: scoring workers.")
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(0),
    default=0.0,
    help="--engine ray: GPUs each scoring worker takes (CUDA); 0 runs them on CPUs.",
)
@user_option(
    "Score with NAME's own head (trained by learn --user NAME) where NAME has one; else the shared "
    "model's verdict."
)
@_stopping_on_signals
def filter_command(
    input_paths: tuple[str, ...],
    model: Path | None,
    input_format: str,
    output: str,
    spam_output: str | None,
    text_column: str,
    threshold: float | None,
    header_prefix: str,
    explain_policy: str,
    gpu: bool,
    batch_size: int | None,
    variant: str | None,
    strict: bool,
    verdict_exit: bool,
    quiet: bool,
    progress: bool | None,
    engine: str,
    ray_address: str | None,
    workers: int,
    gpus_per_worker: float,
    user: str | None,
) -> None:
    """Tag every message in INPUT (a file, a Maildir or .eml folder, or - for stdin) as spam or not spam.

    \b
    mbox   -> mbox with X-Spam-Flag / -Status / -Level added to each message
    email  -> one message with the headers added (pipeline mode: fail-safe)
    csv    -> the CSV with label and spam_probability columns added
    text   -> one message per line; label<TAB>probability<TAB>line
    folder -> a Maildir or .eml folder: tagged copies under -o DIR, same relative paths

    With --engine ray: every INPUT's output under -o DIR with the INPUT's name, and DIR/verdicts.parquet.
    """
    from .. import formats, pipeline
    from ..verdict import Decision

    context = click.get_current_context()
    with _library_errors():
        decision = Decision(threshold=threshold, header_prefix=header_prefix, explain=explain_policy)
        if user is not None:
            from ..user_heads import valid_user

            valid_user(user)
    if engine == "ray":
        if user is not None:
            raise click.UsageError("--user goes with the local engine")
        _filter_with_ray(context, input_paths, output, model, decision, batch_size, variant, quiet, progress)
        return
    _local_engine_only(context, input_paths, output)
    input_path = input_paths[0] if input_paths else "-"
    if input_path != "-" and Path(input_path).is_dir():
        folder = Path(input_path)
        _filter_folder(folder, output, model, decision, gpu, batch_size, variant, quiet, progress, user)
        return
    summary = None
    try:
        with contextlib.ExitStack() as stack, _library_errors():
            source = _open_input(input_path, stack)
            fmt = formats.choose_format(
                input_format,
                lambda: _peek(source),
                text_column,
                text_column_given=_given(context, "text_column"),
                single_message=strict or verdict_exit,
            )
            if fmt == "email":
                sink = _open_output(output, stack)
                _pipeline_mode(source, sink, model, decision, gpu, variant, strict, verdict_exit, user)
            if spam_output and fmt != "mbox":
                raise click.BadParameter("only mbox output can be split", param_hint="--spam-output")
            for target, hint in ((output, "--output"), (spam_output, "--spam-output")):
                if _same_file(input_path, target):
                    raise click.BadParameter(
                        "is the input file: write elsewhere, then move it over the input", param_hint=hint
                    )
            classifier = _load_classifier(model, gpu, batch_size, variant).for_user(user)
            if fmt == "mbox" and not quiet:
                _warn_if_not_for_mail(classifier)
            started = time.perf_counter()
            try:
                summary = pipeline.filter_stream(
                    fmt,
                    source,
                    _open_output(output, stack),
                    classifier,
                    decision.for_model(classifier.threshold),
                    text_column=text_column,
                    spam_sink=_open_output(spam_output, stack, append=True) if spam_output else None,
                    on_progress=_progress_display(stack, progress, source),
                    # A pipe or a terminal may pause: what has arrived is classified after a short wait.
                    flush_after=None if _is_regular_file(source) else pipeline.IDLE_FLUSH_SECONDS,
                )
            except pipeline.FilterInterrupted as stop:
                _interrupted(stop, started)
    except BrokenPipeError:
        _quiet_broken_pipe()
    except Interrupted as stop:  # while waiting for the first bytes: nothing was read
        click.echo(f"spamfilter: interrupted by {stop} before any input arrived", err=True)
        sys.exit(exit_code(stop.signum))
    except OSError as error:  # a full disk, an output that went away: say so, no traceback
        _fail(f"cannot write the output: {error.strerror or error}")
    if not quiet and summary is not None:
        used = _classifier_used(model, classifier)
        click.echo(f"spamfilter: {pipeline.timed(summary, started).line()}; {used}", err=True)


RAY_ONLY_OPTIONS = ("ray_address", "workers", "gpus_per_worker")
LOCAL_ONLY_OPTIONS = ("spam_output", "strict", "verdict_exit", "gpu")


def _local_engine_only(context: click.Context, inputs: tuple[str, ...], output: str) -> None:
    """The local engine reads one INPUT; the Ray engine's options are no use to it."""
    if len(inputs) > 1:
        raise click.UsageError("several INPUTs need --engine ray (and -o DIR)")
    for name in RAY_ONLY_OPTIONS:
        if context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError(f"--{name.replace('_', '-')} goes with --engine ray")
    if output != "-" and Path(output).is_dir():  # as click's own check said before -o took folders
        raise click.BadParameter(f"File {output!r} is a directory.", param_hint="'-o' / '--output'")


def _filter_with_ray(
    context: click.Context,
    inputs: tuple[str, ...],
    output: str,
    model: Path | None,
    decision: Decision,
    batch_size: int | None,
    variant: str | None,
    quiet: bool,
    progress: bool | None,
) -> None:
    """--engine ray: the engine's module (and ray) is imported only here."""
    for name in LOCAL_ONLY_OPTIONS:
        if _given(context, name):
            hint = "; use --gpus-per-worker" if name == "gpu" else ""
            raise click.UsageError(f"--{name.replace('_', '-')} goes with the local engine{hint}")
    if not inputs or "-" in inputs:
        raise click.UsageError("--engine ray reads INPUT paths or URLs, not stdin")
    if output == "-":
        raise click.UsageError("--engine ray needs -o DIR for its outputs")
    if context.params["input_format"] == "text":
        raise click.BadParameter("--engine ray reads mbox, email and csv", param_hint="--format")
    try:
        from ..engines import ray as ray_engine
    except ImportError:
        _fail("--engine ray needs the ray extra: pip install 'spamfilter-gpt2[ray]'")
    params = context.params
    cluster = ray_engine.Cluster(params["ray_address"], params["workers"], params["gpus_per_worker"])
    report = _warn if not quiet else (lambda message: None)
    directory = model or default_model_dir()
    with _library_errors():
        run = ray_engine.filter_with_ray(
            inputs,
            Path(output),
            directory,
            cluster,
            decision=decision,
            variant=variant,
            batch_size=batch_size,
            text_column=context.params["text_column"],
            text_column_given=_given(context, "text_column"),
            input_format=context.params["input_format"],
            progress=bool(progress),
            report=report,
        )
        if not quiet or run.failed or run.interrupted:
            used = _model_used(model, directory, variant or open_model_directory(directory).default_variant)
            _warn(f"{run.line()}; verdicts in {run.verdicts}; {used}")
        if run.interrupted is not None:
            sys.exit(exit_code(run.interrupted))
        if run.failed:
            failed = ", ".join(run.failed)
            raise ray_engine.InputsFailed(
                f"{len(run.failed)} of {run.inputs} inputs failed ({failed}); the others are complete"
            )


def _peek(source: io.BufferedReader) -> bytes:
    """The first bytes, for format detection, without consuming them. Waiting for them (a terminal,
    a quiet pipe) can be cut short by a stop signal: nothing has been read then."""
    from ..interrupts import interruptible

    with interruptible():
        return source.peek(4096)[:4096]


def _given(context: click.Context, name: str) -> bool:
    return context.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)


def _is_regular_file(stream: BinaryIO) -> bool:
    import stat

    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, io.UnsupportedOperation):  # in-memory streams: no file descriptor
        return False


def _filter_folder(
    source: Path,
    output: str,
    model: Path | None,
    decision: Decision,
    gpu: bool,
    batch_size: int | None,
    variant: str | None,
    quiet: bool,
    progress: bool | None,
    user: str | None = None,
) -> None:
    from .. import pipeline

    if output == "-":
        raise click.UsageError("a folder as INPUT needs -o DIR for the tagged copies")
    classifier = _load_classifier(model, gpu, batch_size, variant).for_user(user)
    if not quiet:
        _warn_if_not_for_mail(classifier)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack, _library_errors():
        try:
            bound = decision.for_model(classifier.threshold)
            summary = pipeline.filter_folder(
                source, Path(output), classifier, bound, _progress_display(stack, progress)
            )
        except pipeline.FilterInterrupted as stop:
            _interrupted(stop, started)
        except OSError as error:
            _fail(f"cannot write the output: {error.strerror or error}")
    if not quiet:
        used = _classifier_used(model, classifier)
        click.echo(f"spamfilter: {pipeline.timed(summary, started).line()}; {used}", err=True)


def _warn_if_not_for_mail(classifier: Classifier) -> None:
    """The domain guard: once per run over mail (mbox, a folder) with a model trained on SMS.
    Pipeline mode stays silent: each message is a run of its own, and mail logs would fill up."""
    warning = classifier.directory.manifest.mail_warning()
    if warning is not None:
        _warn(warning)


def _interrupted(stop: FilterInterrupted, started: float) -> NoReturn:
    """Ctrl-C or SIGTERM: every message read is in the output; say how far the run got."""
    from ..pipeline import timed

    summary = timed(stop.summary, started).line()
    click.echo(f"spamfilter: {stop}: {summary}; the rest of the input was not read", err=True)
    sys.exit(exit_code(stop.signum))


def _same_file(a: str | None, b: str | None) -> bool:
    if not a or not b or "-" in (a, b):
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:  # the output does not exist yet
        return False


def _progress_display(
    stack: contextlib.ExitStack, wanted: bool | None, source: BinaryIO | None = None
) -> Callable[[int], None] | None:
    """Live progress on stderr (with --progress, or by default when stderr is a terminal): messages
    and their rate; for a file also how far through it the run is, as a bar, a percentage and the
    time left."""
    if wanted is False or (wanted is None and not sys.stderr.isatty()):
        return None
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    size = os.fstat(source.fileno()).st_size if source is not None and _is_regular_file(source) else None
    count = TextColumn("{task.fields[messages]} messages ({task.fields[rate]})")
    columns: list[Any] = [SpinnerColumn(), count]
    if size:
        columns += [BarColumn(), TaskProgressColumn(), TimeRemainingColumn()]
    display = Progress(*columns, TimeElapsedColumn(), console=_console())
    stack.enter_context(display)
    task = display.add_task("filter", total=size or None, messages=0, rate="-")
    started = time.perf_counter()

    def update(done: int) -> None:
        elapsed = time.perf_counter() - started
        rate = f"{done / elapsed:.1f}/s" if elapsed > 0 else "-"
        position = os.lseek(source.fileno(), 0, os.SEEK_CUR) if size and source is not None else None
        display.update(task, completed=position, messages=done, rate=rate)

    return update


def _open_input(path: str, stack: contextlib.ExitStack) -> io.BufferedReader:
    if path == "-":
        stdin = sys.stdin.buffer
        try:
            # A reader of our own on a copy of the descriptor: the reader thread may still be
            # waiting in it when a stop signal ends the run, and Python's own sys.stdin must not
            # be busy then (closing it at exit would abort the process). Nor is this one closed
            # after a stop: closing would wait for that read.
            reader = open(os.dup(stdin.fileno()), "rb")  # noqa: SIM115 - closed by the callback
            stack.callback(_close_unless_stopping, reader)
            return reader
        except (OSError, ValueError, io.UnsupportedOperation):  # an in-memory stdin (tests, embedding)
            return stdin if isinstance(stdin, io.BufferedReader) else io.BufferedReader(stdin)  # type: ignore[arg-type]
    try:
        return stack.enter_context(open(path, "rb"))
    except OSError as error:
        raise click.BadParameter(f"cannot read {path}: {error.strerror}", param_hint="INPUT") from None


def _close_unless_stopping(stream: BinaryIO) -> None:
    if interrupts.requested() is None:
        stream.close()


def _open_output(path: str, stack: contextlib.ExitStack, append: bool = False) -> BinaryIO:
    if path == "-":
        return sys.stdout.buffer
    try:
        return stack.enter_context(open(path, "ab" if append else "wb"))
    except OSError as error:
        raise click.BadParameter(f"cannot write {path}: {error.strerror}", param_hint="--output") from None


def _quiet_broken_pipe() -> NoReturn:
    # The reader went away (e.g. `| head`): stop quietly, as cat does; silence the final flush.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EX_BROKEN_PIPE)


def _pipeline_mode(
    source: BinaryIO,
    sink: BinaryIO,
    model: Path | None,
    decision: Decision,
    gpu: bool,
    variant: str | None,
    strict: bool,
    verdict_exit: bool,
    user: str | None = None,
) -> NoReturn:
    """One message: fail-safe like spamc (``pipeline.tag_message``). On any failure the original
    bytes go out unchanged and the exit code is 0; with --strict nothing goes out and the exit code
    is 75, so that the mail system keeps the message and retries."""
    from ..pipeline import deliver, tag_message
    from ..runtime import Classifier

    def load() -> Classifier:
        directory = model or default_model_dir()
        return Classifier.load(directory, gpu=gpu, variant=variant, warn=_warn).for_user(user)

    outcome = tag_message(source.read(), load, decision)
    if outcome.error is not None and strict:
        click.echo(f"spamfilter: message not tagged, exit 75 to retry later: {outcome.error}", err=True)
    else:
        if outcome.error is not None:
            click.echo(f"spamfilter: message passed through untagged: {outcome.error}", err=True)
        deliver(sink, outcome.message)  # DeliveryError (exit 75) if it cannot be written
    sys.exit(outcome.exit_code(strict, verdict_exit))
