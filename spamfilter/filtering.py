"""A ``filter`` run: the job (what to read, where to write, with which model and decision, on which
engine) and the one function that runs it: a folder, a stream, pipeline mode (one message) or the
Ray engine. What the run has to say goes through a ``Terminal``, so that the command line alone
decides how it is shown."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from . import formats, interrupts
from .errors import EX_BROKEN_PIPE, EX_OK, InstallError, SpamfilterError, UsageError
from .interrupts import Interrupted, exit_code
from .modeldir import default_model_dir, open_model_directory
from .verdict import Decision

if TYPE_CHECKING:
    from .pipeline import FilterInterrupted, Summary
    from .runtime import Classifier

ENGINES = ("local", "ray")
RAY_WORKERS = 1  # scoring workers of the Ray engine
RAY_GPUS_PER_WORKER = 0.0  # 0: the workers run on CPUs


@dataclass(frozen=True)
class FilterJob:
    """One ``filter`` run, as the options describe it. ``inputs``: paths (URLs too for the Ray
    engine), ``-`` or none for stdin; the local engine reads one. ``output``: ``-`` for stdout, a
    folder for a folder input and for the Ray engine. ``text_column`` None: the default CSV column,
    which format detection may replace. ``progress`` None: only when stderr is a terminal."""

    inputs: tuple[str, ...] = ()
    output: str = "-"
    spam_output: str | None = None
    input_format: str = "auto"
    text_column: str | None = None
    model: Path | None = None
    variant: str | None = None
    decision: Decision = field(default_factory=Decision)
    user: str | None = None
    engine: str = "local"
    gpu: bool = False
    batch_size: int | None = None
    ray_address: str | None = None
    workers: int = RAY_WORKERS
    gpus_per_worker: float = RAY_GPUS_PER_WORKER
    strict: bool = False  # pipeline mode: exit 75 on failure instead of passing the message through
    verdict_exit: bool = False  # pipeline mode: exit 1 for spam
    quiet: bool = False
    progress: bool | None = None


def _silent(message: str) -> None:
    pass


@dataclass(frozen=True)
class Terminal:
    """Where a run's words go: ``say`` one line (a warning, a summary); ``model_used`` names the
    model that ran for a summary; ``progress`` makes a live display on ``stack`` (``wanted`` as
    ``FilterJob.progress``; ``source`` the input, for how far through it the run is) and returns
    what to call with the count of messages done, or None. The default says nothing."""

    say: Callable[[str], None] = _silent
    model_used: Callable[[Path, str | None], str] = lambda directory, variant: f"model: {directory}"
    progress: Callable[[contextlib.ExitStack, bool | None, BinaryIO | None], Callable[[int], None] | None] = (
        lambda stack, wanted, source: None
    )


class BadOption(UsageError):
    """An option's value that cannot work, worded as the command line words a bad value."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"Invalid value for {option}: {message}")


class OutputError(SpamfilterError):
    """An output that cannot be written: a full disk, a file or folder that went away."""


def run_filter(job: FilterJob, terminal: Terminal = Terminal()) -> int:
    """Run ``job``; the exit code (0, the pipeline mode's, 128 + a stop signal's number) or one of
    the package's errors."""
    if job.engine == "ray":
        return _filter_with_ray(job, terminal)
    input_path = job.inputs[0] if job.inputs else "-"
    if input_path != "-" and Path(input_path).is_dir():
        # an output folder that exists (a cron job's second run) gets its copies replaced
        return _filter_folder(job, terminal, Path(input_path))
    if job.output != "-" and Path(job.output).is_dir():  # as click's own check said before -o took folders
        raise BadOption(
            "'-o' / '--output'", f"{job.output!r} is a folder: a folder is the output of a folder INPUT"
        )
    return _filter_stream(job, terminal, input_path)


def _filter_stream(job: FilterJob, terminal: Terminal, input_path: str) -> int:
    """mbox, CSV or text from a file or stdin; one message (pipeline mode) where that is the format."""
    from . import pipeline

    if input_path == "-" and sys.stdin is None:  # started with stdin closed (`<&-`): Python has none
        no_input = "no input: stdin is closed (give INPUT, or - with the input on stdin)"
        if job.strict:  # pipeline mode's promise: any failure is 75, the mail system retries
            raise pipeline.DeliveryError(f"{no_input}; exit 75 to retry")
        if job.verdict_exit:  # 1 would read as spam: a failure is 0 there, as pipeline mode's others
            terminal.say(no_input)
            return EX_OK
        raise SpamfilterError(no_input)
    try:
        with contextlib.ExitStack() as stack:
            source = _open_input(input_path, stack)
            fmt = formats.choose_format(
                job.input_format,
                lambda: _peek(source),
                job.text_column or formats.DEFAULT_TEXT_COLUMN,
                text_column_given=job.text_column is not None,
                single_message=job.strict or job.verdict_exit,
            )
            if fmt == "email":
                return _pipeline_mode(source, _open_output(job.output, stack), job, terminal)
            if job.spam_output and fmt != "mbox":
                raise BadOption("--spam-output", "only mbox output can be split")
            for target, hint in ((job.output, "--output"), (job.spam_output, "--spam-output")):
                if _same_file(input_path, target):
                    raise BadOption(hint, "is the input file: write elsewhere, then move it over the input")
            if _one_file(job.output, job.spam_output):  # both writers on one file: each overwrote the other
                raise BadOption("--spam-output", "is the --output file: give each a file of its own")
            classifier = _load_classifier(job, terminal)
            if fmt == "mbox" and not job.quiet:
                _warn_if_not_for_mail(classifier, terminal)
            started = time.perf_counter()
            try:
                summary = pipeline.filter_stream(
                    fmt,
                    source,
                    _open_output(job.output, stack),
                    classifier,
                    job.decision.for_model(classifier.threshold),
                    text_column=job.text_column or formats.DEFAULT_TEXT_COLUMN,
                    spam_sink=_open_output(job.spam_output, stack, append=True) if job.spam_output else None,
                    on_progress=terminal.progress(stack, job.progress, source),
                    # A pipe or a terminal may pause: what has arrived is classified after a short wait.
                    flush_after=None if is_regular_file(source) else pipeline.IDLE_FLUSH_SECONDS,
                )
            except pipeline.FilterInterrupted as stop:
                return _interrupted(stop, started, terminal)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except Interrupted as stop:  # while waiting for the first bytes: nothing was read
        terminal.say(f"interrupted by {stop} before any input arrived")
        return exit_code(stop.signum)
    except OSError as error:  # a full disk, an output that went away: say so, no traceback
        raise OutputError(f"cannot write the output: {error.strerror or error}") from None
    if not job.quiet:
        _summary(pipeline.timed(summary, started), classifier, terminal)
    return EX_OK


def _filter_folder(job: FilterJob, terminal: Terminal, source: Path) -> int:
    """A Maildir or a folder of .eml files: tagged copies under ``job.output``."""
    from . import pipeline

    if job.output == "-":
        raise UsageError("a folder as INPUT needs -o DIR for the tagged copies")
    classifier = _load_classifier(job, terminal)
    if not job.quiet:
        _warn_if_not_for_mail(classifier, terminal)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        try:
            bound = job.decision.for_model(classifier.threshold)
            summary = pipeline.filter_folder(
                source, Path(job.output), classifier, bound, terminal.progress(stack, job.progress, None)
            )
        except pipeline.FilterInterrupted as stop:
            return _interrupted(stop, started, terminal)
        except OSError as error:
            raise OutputError(f"cannot write the output: {error.strerror or error}") from None
    if not job.quiet:
        _summary(pipeline.timed(summary, started), classifier, terminal)
    return EX_OK


def _pipeline_mode(source: BinaryIO, sink: BinaryIO, job: FilterJob, terminal: Terminal) -> int:
    """One message: fail-safe like spamc (``pipeline.tag_message``). On any failure the original
    bytes go out unchanged and the exit code is 0; with ``strict`` nothing goes out and the exit
    code is 75, so that the mail system keeps the message and retries.

    Only the first ``PIPELINE_SIZE_CAP`` bytes are held (what the model reads of it): the rest of a
    larger message is copied through after its tagged beginning, so a message of gigabytes costs
    no more memory than one of 512 KiB (spamc streams what it does not send, too). Headers that
    do not end within those bytes leave the message untagged."""
    from .pipeline import deliver, tag_message
    from .runtime import Classifier

    def load() -> Classifier:
        directory = job.model or default_model_dir()
        return Classifier.load(directory, gpu=job.gpu, variant=job.variant, warn=terminal.say).for_user(
            job.user
        )

    cap = formats.PIPELINE_SIZE_CAP
    beginning = _read_up_to(source, cap + 1)
    more = len(beginning) > cap
    # A blank line is where the header block surely ends (scan_headers would also end it at a
    # line cut in two by the cap, which the whole message reads as a field).
    if more and b"\n\n" not in beginning and b"\n\r\n" not in beginning:
        # Never taggable, so never deferred (--strict too): a retry would meet the same headers.
        # spamc passes a message over its -s through the same way.
        terminal.say(f"message passed through untagged: the header block is over {cap} bytes")
        deliver(sink, beginning)
        _deliver_rest(source, sink)
        return EX_OK
    outcome = tag_message(beginning, load, job.decision)  # reads the first ``cap`` bytes
    if outcome.error is not None and job.strict:
        terminal.say(f"message not tagged, exit 75 to retry later: {outcome.error}")
    else:
        if outcome.error is not None:
            terminal.say(f"message passed through untagged: {outcome.error}")
        deliver(sink, outcome.message)  # DeliveryError (exit 75) if it cannot be written
        if more:
            _deliver_rest(source, sink)
    return outcome.exit_code(job.strict, job.verdict_exit)


def _read_up_to(source: BinaryIO, size: int) -> bytes:
    """At most ``size`` bytes: fewer only at the end of the input (a pipe gives what it has)."""
    chunks, left = [], size
    while left and (chunk := source.read(left)):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _deliver_rest(source: BinaryIO, sink: BinaryIO) -> None:
    """The rest of a large message, copied through in chunks; unreadable, it is not all written:
    exit 75, so that the mail system keeps it and retries."""
    from .pipeline import DeliveryError, deliver

    while True:
        try:
            chunk = source.read(1 << 20)
        except OSError as error:
            raise DeliveryError(
                f"cannot read the rest of the message ({error.strerror or error}); exit 75 to retry"
            ) from None
        if not chunk:
            return
        deliver(sink, chunk)


def _filter_with_ray(job: FilterJob, terminal: Terminal) -> int:
    """The Ray engine: its module (and ray) is imported only here."""
    if not job.inputs or "-" in job.inputs:
        raise UsageError("--engine ray reads INPUT paths or URLs, not stdin")
    if job.output == "-":
        raise UsageError("--engine ray needs -o DIR for its outputs")
    if job.input_format == "text":
        raise BadOption("--format", "--engine ray reads mbox, email and csv")
    try:
        from .engines import ray as ray_engine
    except ImportError:
        raise InstallError("--engine ray needs the ray extra: pip install 'spamfilter-gpt2[ray]'") from None
    directory = job.model or default_model_dir()
    run = ray_engine.filter_with_ray(
        job.inputs,
        Path(job.output),
        directory,
        ray_engine.Cluster(job.ray_address, job.workers, job.gpus_per_worker),
        decision=job.decision,
        variant=job.variant,
        batch_size=job.batch_size,
        text_column=job.text_column or formats.DEFAULT_TEXT_COLUMN,
        text_column_given=job.text_column is not None,
        input_format=job.input_format,
        progress=bool(job.progress),
        report=_silent if job.quiet else terminal.say,
    )
    if not job.quiet or run.failed or run.interrupted:
        used = terminal.model_used(directory, job.variant or open_model_directory(directory).default_variant)
        terminal.say(f"{run.line()}; verdicts in {run.verdicts}; {used}")
    if run.interrupted is not None:
        return exit_code(run.interrupted)
    if run.failed:
        failed = ", ".join(run.failed)
        raise ray_engine.InputsFailed(
            f"{len(run.failed)} of {run.inputs} inputs failed ({failed}); the others are complete"
        )
    return EX_OK


def _load_classifier(job: FilterJob, terminal: Terminal) -> Classifier:
    from .runtime import Classifier

    directory = job.model or default_model_dir()
    classifier = Classifier.load(
        directory, gpu=job.gpu, batch_size=job.batch_size, variant=job.variant, warn=terminal.say
    )
    return classifier.for_user(job.user)


def _warn_if_not_for_mail(classifier: Classifier, terminal: Terminal) -> None:
    """The domain guard: once per run over mail (mbox, a folder) with a model trained on SMS.
    Pipeline mode stays silent: each message is a run of its own, and mail logs would fill up."""
    warning = classifier.directory.manifest.mail_warning()
    if warning is not None:
        terminal.say(warning)


def _summary(summary: Summary, classifier: Classifier, terminal: Terminal) -> None:
    used = terminal.model_used(classifier.directory.path, classifier.variant)
    terminal.say(f"{summary.line()}; {used}")


def _interrupted(stop: FilterInterrupted, started: float, terminal: Terminal) -> int:
    """Ctrl-C or SIGTERM: every message read is in the output; say how far the run got."""
    from .pipeline import timed

    terminal.say(f"{stop}: {timed(stop.summary, started).line()}; the rest of the input was not read")
    return exit_code(stop.signum)


def _peek(source: io.BufferedReader) -> bytes:
    """The first bytes, for format detection, without consuming them. Waiting for them (a terminal,
    a quiet pipe) can be cut short by a stop signal: nothing has been read then."""
    with interrupts.interruptible():
        return source.peek(4096)[:4096]


def is_regular_file(stream: BinaryIO) -> bool:
    import stat

    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, io.UnsupportedOperation):  # in-memory streams: no file descriptor
        return False


def _one_file(a: str | None, b: str | None) -> bool:
    """Whether two outputs name one file, existing or not."""
    if not a or not b or "-" in (a, b):
        return False
    return _same_file(a, b) or os.path.realpath(a) == os.path.realpath(b)


def _same_file(a: str | None, b: str | None) -> bool:
    if not a or not b or "-" in (a, b):
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:  # the output does not exist yet
        return False


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
        # Without waiting for a writer: a FIFO nobody writes to held the run for ever, deaf to
        # SIGTERM, in open(). Once open it reads as any pipe (end of input when no writer is left).
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        os.set_blocking(descriptor, True)
        return stack.enter_context(open(descriptor, "rb"))
    except OSError as error:
        raise BadOption("INPUT", f"cannot read {path}: {error.strerror}") from None


def _close_unless_stopping(stream: BinaryIO) -> None:
    if interrupts.requested() is None:
        stream.close()


def _open_output(path: str, stack: contextlib.ExitStack, append: bool = False) -> BinaryIO:
    if path == "-":
        return sys.stdout.buffer
    try:
        return stack.enter_context(open(path, "ab" if append else "wb"))
    except OSError as error:
        raise BadOption("--output", f"cannot write {path}: {error.strerror}") from None


def _quiet_broken_pipe() -> int:
    # The reader went away (e.g. `| head`): stop quietly, as cat does; silence the final flush.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EX_BROKEN_PIPE
