"""``spamfilter filter``: the options become a ``filtering.FilterJob``; ``filtering.run_filter`` runs it."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import click

from ..errors import EX_OK
from ..filtering import (
    ENGINES,
    RAY_GPUS_PER_WORKER,
    RAY_WORKERS,
    FilterJob,
    Terminal,
    is_regular_file,
    run_filter,
)
from ..formats import DEFAULT_TEXT_COLUMN, FORMATS
from ..verdict import Decision
from .common import (
    CONTEXT,
    FiniteFloatRange,
    _console,
    _library_errors,
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
    ENGINES,
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
@count_option("--workers", RAY_WORKERS, "--engine ray: scoring workers.")
@click.option(
    "--gpus-per-worker",
    type=FiniteFloatRange(0),
    default=RAY_GPUS_PER_WORKER,
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
    context = click.get_current_context()
    with _library_errors():
        decision = Decision(threshold=threshold, header_prefix=header_prefix, explain=explain_policy)
        if user is not None:
            from ..user_heads import valid_user

            valid_user(user)
    _engine_options_only(context, engine, input_paths, user)
    _pipeline_options_only(strict, verdict_exit, input_paths, input_format)
    job = FilterJob(
        inputs=input_paths,
        output=output,
        spam_output=spam_output,
        input_format=input_format,
        text_column=text_column if _given(context, "text_column") else None,
        model=model,
        variant=variant,
        decision=decision,
        user=user,
        engine=engine,
        gpu=gpu,
        batch_size=batch_size,
        ray_address=ray_address,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        strict=strict,
        verdict_exit=verdict_exit,
        quiet=quiet,
        progress=progress,
    )
    terminal = Terminal(
        _warn, lambda directory, variant: _model_used(model, directory, variant), _progress_display
    )
    with _library_errors():
        code = run_filter(job, terminal)
    if code != EX_OK:
        sys.exit(code)


RAY_ONLY_OPTIONS = ("ray_address", "workers", "gpus_per_worker")
LOCAL_ONLY_OPTIONS = ("spam_output", "strict", "verdict_exit", "gpu")


def _engine_options_only(
    context: click.Context, engine: str, inputs: tuple[str, ...], user: str | None
) -> None:
    """Options that go with the other engine are refused (the Ray engine's only where given on the
    command line: $RAY_ADDRESS may be set for other runs); the local engine reads one INPUT."""
    _readable_inputs(inputs, ray=engine == "ray")
    if engine == "ray":
        if user is not None:
            raise click.UsageError("--user goes with the local engine")
        for name in LOCAL_ONLY_OPTIONS:
            if _given(context, name):
                hint = "; use --gpus-per-worker" if name == "gpu" else ""
                raise click.UsageError(f"--{name.replace('_', '-')} goes with the local engine{hint}")
        return
    if len(inputs) > 1:
        raise click.UsageError("several INPUTs need --engine ray (and -o DIR)")
    for name in RAY_ONLY_OPTIONS:
        if context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError(f"--{name.replace('_', '-')} goes with --engine ray")


def _pipeline_options_only(
    strict: bool, verdict_exit: bool, inputs: tuple[str, ...], input_format: str
) -> None:
    """--strict and --exit-code are pipeline mode's: one message on stdin, as procmail, maildrop
    and a Postfix pipe hand it over. Given a named file (an mbox, a CSV, a folder) they took it as one
    message: X-Spam fields above a CSV's header, the first of 20 mbox messages tagged; given another
    --format, --exit-code did nothing. Either is a usage error."""
    if not (strict or verdict_exit):
        return
    name = "--strict" if strict else "--exit-code"
    named = [path for path in inputs if path != "-"]
    if named:
        raise click.UsageError(
            f"{name} is for one message on stdin (pipeline mode), not INPUT {named[0]}: "
            f"spamfilter filter {name} < message"
        )
    if input_format not in ("auto", "email"):
        raise click.UsageError(
            f"{name} is for one message on stdin (pipeline mode), not --format {input_format}"
        )


def _readable_inputs(inputs: tuple[str, ...], ray: bool) -> None:
    """A socket named as INPUT is refused (it cannot be opened); so is anything but a file or a
    folder for the Ray engine, which reads its inputs by offsets. The local engine reads a FIFO or
    a process substitution (``<(zcat box.gz)``); it opens them without waiting for a writer."""
    for name in inputs:
        if name == "-" or "://" in name:
            continue
        try:
            mode = os.stat(name).st_mode
        except OSError:
            continue  # a missing INPUT gets its own error where it is read
        if stat.S_ISSOCK(mode) or (ray and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))):
            what = "a file or folder" if ray else "a file, a folder or a pipe"
            raise click.UsageError(f"{name} is not {what}: pipe it to stdin (-)")


def _given(context: click.Context, name: str) -> bool:
    return context.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)


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

    size = os.fstat(source.fileno()).st_size if source is not None and is_regular_file(source) else None
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
