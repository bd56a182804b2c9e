"""The ``spamfilter`` command line: thin click commands over the library.

Heavy imports (torch, pandas) happen inside the commands that need them, so ``filter`` and
``classify`` start fast enough for a mail pipeline.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import click

from . import __version__, interrupts
from .errors import EX_BROKEN_PIPE, EX_INTERRUPTED, EX_USAGE, SpamfilterError, first_line
from .interrupts import Interrupted, exit_code, stop_on_signals
from .modeldir import default_model_dir, open_model_directory, remember_model_dir, train_output_dir

if TYPE_CHECKING:
    from .pipeline import FilterInterrupted
    from .runtime import Classifier
    from .verdict import Decision

CONTEXT = {"help_option_names": ["-h", "--help"]}
TRAIN_EXTRA_HINT = (
    "training needs the train extra: pip install 'spamfilter-gpt2[train]' "
    "(in a clone: pip install '.[train]')"
)


def _console():
    from rich.console import Console

    # Off a terminal (logs, cron mail) one record stays on one line: rich would wrap at 80 columns.
    return Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())


class _LibraryError(click.ClickException):
    """A library error shown as click shows errors: ``Error: <sentence>``, with the error's exit code."""

    def __init__(self, error: SpamfilterError) -> None:
        super().__init__(str(error))
        self.code = error.exit_code

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return self.code


@contextlib.contextmanager
def _library_errors() -> Iterator[None]:
    """The one mapping from the library's errors to exit codes: usage errors 2 (with click's usage
    line), the others their own code (1 unless they say otherwise)."""
    try:
        yield
    except SpamfilterError as error:
        if error.exit_code == EX_USAGE:
            raise click.UsageError(str(error)) from None
        raise _LibraryError(error) from None


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="spamfilter")
def cli() -> None:
    """Fine-tune GPT-2 to tell spam from mail, export it to ONNX, and filter mail with it.

    \b
    spamfilter train                       fine-tune on the SMS Spam Collection
    spamfilter filter inbox.mbox > out     tag every message (X-Spam-Flag / X-Spam-Status)
    cat inbox.csv | spamfilter filter      add label and spam_probability columns
    spamfilter classify "WIN a prize!"     a quick look at one text
    """


# --------------------------------------------------------------------------- train / export


def mail_sources_options(spam: str, ham: str, stdin: bool = False) -> Callable[[Any], Any]:
    """``--spam`` and ``--ham`` as train, eval and learn take them: mail sources, repeatable; with
    ``stdin``, ``-`` is one message on standard input."""
    kinds = "a message file, an mbox, a Maildir, a folder of message files or a .tar/.tar.gz/.tar.bz2"
    where = f"{kinds} of them" + (", or - for one message on stdin" if stdin else "")
    path = click.Path(allow_dash=True, path_type=Path) if stdin else click.Path(exists=True, path_type=Path)

    def add(command: Any) -> Any:
        for name, what in (("--ham", ham), ("--spam", spam)):  # the last applied is listed first
            command = click.option(
                name, f"{name[2:]}_sources", multiple=True, type=path, help=f"{what}: {where} (repeatable)."
            )(command)
        return command

    return add


@cli.command(context_settings=CONTEXT)
@click.option(
    "--model",
    default=None,
    help="gpt2-small|gpt2-medium|gpt2-large|gpt2-xl, or a Hugging Face config.json for another shape. "
    "Default: the shape of --weights PATH, else gpt2-small.",
)
@click.option(
    "--weights",
    default=None,
    help="Pretrained weights: a folder with config.json + model.safetensors, a .safetensors file, or "
    "'random'. Default: download --model from the Hugging Face hub.",
)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Labelled messages: the UCI SMSSpamCollection file or a CSV/TSV with label and text columns. "
    "Default: download the SMS Spam Collection.",
)
@mail_sources_options("Spam to train on", "Wanted mail to train on")
@click.option("--epochs", type=click.IntRange(1), default=5, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=5e-5, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(0), default=0.1, show_default=True)
@click.option("--seed", type=int, default=123, show_default=True)
@click.option(
    "--max-length",
    type=click.IntRange(1),
    default=None,
    help="Padded length in tokens. Default: the longest training message.",
)
@click.option(
    "--trainable",
    type=click.Choice(["last-block", "last-two-blocks", "all", "head"]),
    default="last-block",
    show_default=True,
    help="What is fine-tuned besides the new head.",
)
@click.option(
    "--pooling",
    type=click.Choice(["last", "last-token"]),
    default="last-token",
    show_default=True,
    help="last-token: each message's last real token (measured at least as good, and faster: shorter "
    "inputs); last: the last padded position, the reference recipe exactly.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model directory to write. Default: $SPAMFILTER_MODEL or ~/.local/share/spamfilter/model.",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--balance",
    type=click.Choice(["undersample", "weight"]),
    default=None,
    help="undersample: drop ham down to the spam count (the SMS recipe); weight: keep every message "
    "and weight the loss by class.  [default: weight for --spam/--ham, else undersample]",
)
@click.option(
    "--keep-best/--keep-last",
    default=None,
    help="Keep the epoch with the lowest validation loss, stopping after 2 epochs without a better one; "
    "or the last epoch (the SMS recipe).  [default: keep-best for --spam/--ham]",
)
@click.option(
    "--augment/--no-augment",
    default=None,
    help="Also train on two copies of each training spam with ordinary ham text before and after "
    "its body, and on every window of long ham, so that padding around an offer does not hide it "
    "(measured: it cost recall at low false-positive rates).  [default: no-augment]",
)
@click.option(
    "--target-fpr",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="Choose the threshold on the validation split so that at most this share of ham is marked "
    "spam.  [default: 0.005 for --spam/--ham; else the threshold is 0.5]",
)
@click.option(
    "--quantize",
    type=click.Choice(["int8", "none"]),
    default="int8",
    show_default=True,
    help="Also write an int8 model: the default variant where its verdicts agree with fp32's on >= 99% "
    "of the test split (model.onnx stays; --variant fp32 selects it).",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run after its last finished epoch.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress within each epoch on stderr: a live bar on a terminal, else (a log) a line a minute. "
    "Phases and each epoch's figures are printed either way.  [default: progress]",
)
def train(
    model: str | None,
    weights: str | None,
    data: Path | None,
    spam_sources: tuple[Path, ...],
    ham_sources: tuple[Path, ...],
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    max_length: int | None,
    trainable: str,
    pooling: str,
    out: Path | None,
    device: str,
    balance: str | None,
    keep_best: bool | None,
    augment: bool | None,
    target_fpr: float | None,
    quantize: str,
    resume: bool,
    progress: bool | None,
) -> None:
    """Fine-tune GPT-2 as a spam classifier and export it as a model directory.

    After each epoch the training state is saved in the output directory; if a run is interrupted,
    the same command with --resume continues after the last finished epoch."""
    console = _console()
    try:
        from .export import describe_export
        from .finetune import TrainOptions, describe_result, fine_tune, resolve_device
        from .train_loop import TrainingConfig
    except ImportError as error:  # a base (filter-only) install
        _fail(f"{TRAIN_EXTRA_HINT} ({error})")
    from .mail import check_sources

    with _library_errors():
        check_sources(data, spam_sources, ham_sources, "--data", required=False)
        torch_device = resolve_device(device)
    # Every input that is missing, named at once before anything loads (offline: data and weights).
    from .train_inputs import describe, missing_inputs

    missing = missing_inputs(data, spam_sources, ham_sources, weights, model)
    if missing:
        _fail(describe(missing))
    options = TrainOptions(
        model=model,
        weights=weights,
        data=data,
        spam=list(spam_sources),
        ham=list(ham_sources),
        max_length=max_length,
        pooling=pooling,
        balance=balance,
        keep_best=keep_best,
        augment=augment,
        target_fpr=target_fpr,
        training=TrainingConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            seed=seed,
            trainable=trainable,
        ),
        out=out or train_output_dir(),
        device=torch_device,
        quantize=None if quantize == "none" else quantize,
        resume=resume,
    )
    from .train_progress import TrainingProgress

    display = TrainingProgress(console, epochs, steps=progress is not False)
    try:
        with _library_errors(), display:
            result = fine_tune(
                options,
                on_step=display.step,
                on_epoch=display.epoch,
                on_stage=display.stage,
                on_download=display.download,
                on_warning=display.warn,
            )
    except OSError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        console.print(f"interrupted: continue with the same command and --resume (state in {options.out})")
        sys.exit(EX_INTERRUPTED)
    for line in [*describe_result(result, options.out), *describe_export(options.out, result.manifest)]:
        console.print(line)
    remember_model_dir(options.out)


@cli.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model directory to write. Default: the checkpoint's own directory.",
)
@click.option("--quantize", type=click.Choice(["int8"]), default=None, help="Also write an int8 model.")
def export(checkpoint: Path, out: Path | None, quantize: str | None) -> None:
    """Export a checkpoint (model.pt, or a model directory) to ONNX again."""
    console = _console()
    try:
        from .export import describe_export, reexport
    except ImportError as error:  # a base (filter-only) install
        _fail(f"{TRAIN_EXTRA_HINT} ({error})")
    try:
        with _library_errors(), console.status("exporting to ONNX and checking it against torch…"):
            target, manifest = reexport(checkpoint, out, quantize)
    except OSError as error:
        _fail(str(error))
    for line in describe_export(target, manifest):
        console.print(line)


# --------------------------------------------------------------------------- filter / classify


def _load_classifier(
    model: Path | None, gpu: bool, batch_size: int | None = None, variant: str | None = None
) -> Classifier:
    from .runtime import Classifier

    with _library_errors():
        return Classifier.load(
            model or default_model_dir(), gpu=gpu, batch_size=batch_size, variant=variant, warn=_warn
        )


def _warn(message: str) -> None:
    click.echo(f"spamfilter: {message}", err=True)


def _stopping_on_signals(command: Callable[..., None]) -> Callable[..., None]:
    """Ctrl-C and SIGTERM end a filter run between messages, never halfway through writing one."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        with stop_on_signals():
            command(*args, **kwargs)

    return run


model_option = click.option(
    "-m",
    "--model",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model directory. Default: $SPAMFILTER_MODEL if set, else the model this user trained last "
    "(recorded in $XDG_DATA_HOME/spamfilter/last-model, ~/.local/share/spamfilter/last-model without "
    "XDG_DATA_HOME), which the next 'spamfilter train' repoints: pin one with -m DIR or "
    "SPAMFILTER_MODEL=DIR. The summary on stderr names the model that ran.",
)


def _model_used(model: Path | None, directory: Path, variant: str | None = None) -> str:
    """``model: PATH (VARIANT)`` for a summary, and how PATH was chosen when -m was not given: the
    default follows whatever was trained last, so a run names what it used."""
    chosen = None
    if model is None:
        chosen = "$SPAMFILTER_MODEL" if os.environ.get("SPAMFILTER_MODEL") else "the last one trained"
    details = "; ".join(part for part in (variant, chosen) if part)
    return f"model: {directory.resolve()}" + (f" ({details})" if details else "")


def _classifier_used(model: Path | None, classifier: Classifier) -> str:
    return _model_used(model, classifier.directory.path, classifier.variant)


gpu_option = click.option("--gpu", is_flag=True, help="Run on CUDA (falls back to the CPU with a warning).")
header_prefix_option = click.option(
    "--header-prefix",
    default="X-Spam",
    show_default=True,
    metavar="NAME",
    help="Names of the tagged fields: NAME-Flag, NAME-Status, NAME-Level. Earlier fields of these names "
    "(and NAME-Report, NAME-Checker-Version) are removed; another prefix, e.g. X-Spamfilter, leaves "
    "SpamAssassin's X-Spam-* fields as they are.",
)
variant_option = click.option(
    "--variant",
    type=click.Choice(["fp32", "int8"]),
    default=None,
    help="Which ONNX model of the directory to run. Default: the directory's default_variant.",
)


@cli.command(name="filter", context_settings=CONTEXT)
@click.argument("input_paths", metavar="[INPUT]...", nargs=-1, type=click.Path(allow_dash=True))
@model_option
@click.option(
    "--format",
    "input_format",
    type=click.Choice(["auto", "mbox", "email", "csv", "text"]),
    default="auto",
    show_default=True,
    help="Input format; auto looks at the first bytes.",
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
@click.option("--text-column", default="Text", show_default=True, help="CSV column holding the message text.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="P(spam) at or above which a message is spam. Default: the model's (spamfilter.json).",
)
@header_prefix_option
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
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: several INPUTs (mbox, Maildir, .eml folder, CSV; paths or fsspec URLs) into -o DIR on Ray "
    "Data, embedded here or on a cluster.",
)
@click.option(
    "--ray-address",
    envvar="RAY_ADDRESS",
    default=None,
    metavar="ADDR",
    help="--engine ray: join the Ray cluster there ($RAY_ADDRESS). Default: start Ray on this machine.",
)
@click.option(
    "--workers", type=click.IntRange(1), default=1, show_default=True, help="--engine ray: scoring workers."
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(0),
    default=0.0,
    help="--engine ray: GPUs each scoring worker takes (CUDA); 0 runs them on CPUs.",
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
    from . import pipeline
    from .verdict import Decision

    context = click.get_current_context()
    with _library_errors():
        decision = Decision(threshold=threshold, header_prefix=header_prefix)
    if engine == "ray":
        _filter_with_ray(context, input_paths, output, model, decision, batch_size, variant, quiet, progress)
        return
    _local_engine_only(context, input_paths, output)
    input_path = input_paths[0] if input_paths else "-"
    if input_path != "-" and Path(input_path).is_dir():
        _filter_folder(Path(input_path), output, model, decision, gpu, batch_size, variant, quiet, progress)
        return
    summary = None
    try:
        with contextlib.ExitStack() as stack, _library_errors():
            source = _open_input(input_path, stack)
            fmt = pipeline.choose_format(
                input_format,
                lambda: _peek(source),
                text_column,
                text_column_given=_given(context, "text_column"),
                single_message=strict or verdict_exit,
            )
            if fmt == "email":
                sink = _open_output(output, stack)
                _pipeline_mode(source, sink, model, decision, gpu, variant, strict, verdict_exit)
            if spam_output and fmt != "mbox":
                raise click.BadParameter("only mbox output can be split", param_hint="--spam-output")
            for target, hint in ((output, "--output"), (spam_output, "--spam-output")):
                if _same_file(input_path, target):
                    raise click.BadParameter(
                        "is the input file: write elsewhere, then move it over the input", param_hint=hint
                    )
            classifier = _load_classifier(model, gpu, batch_size, variant)
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
        from .engines import ray as ray_engine
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
    from .interrupts import interruptible

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
) -> None:
    from . import pipeline

    if output == "-":
        raise click.UsageError("a folder as INPUT needs -o DIR for the tagged copies")
    classifier = _load_classifier(model, gpu, batch_size, variant)
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
    from .pipeline import timed

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
) -> NoReturn:
    """One message: fail-safe like spamc (``pipeline.tag_message``). On any failure the original
    bytes go out unchanged and the exit code is 0; with --strict nothing goes out and the exit code
    is 75, so that the mail system keeps the message and retries."""
    from .pipeline import deliver, tag_message
    from .runtime import Classifier

    def load() -> Classifier:
        return Classifier.load(model or default_model_dir(), gpu=gpu, variant=variant, warn=_warn)

    outcome = tag_message(source.read(), load, decision)
    if outcome.error is not None and strict:
        click.echo(f"spamfilter: message not tagged, exit 75 to retry later: {outcome.error}", err=True)
    else:
        if outcome.error is not None:
            click.echo(f"spamfilter: message passed through untagged: {outcome.error}", err=True)
        deliver(sink, outcome.message)  # DeliveryError (exit 75) if it cannot be written
    sys.exit(outcome.exit_code(strict, verdict_exit))


@cli.command(context_settings=CONTEXT)
@click.argument("texts", nargs=-1, required=True)
@model_option
@click.option("--threshold", type=click.FloatRange(0, 1), default=None)
@gpu_option
@variant_option
def classify(
    texts: tuple[str, ...], model: Path | None, threshold: float | None, gpu: bool, variant: str | None
) -> None:
    """Classify each TEXT ('-' reads one text from stdin): prints label and P(spam)."""
    classifier = _load_classifier(model, gpu, variant=variant)
    items = [sys.stdin.read() if t == "-" else t for t in texts]
    from .verdict import Decision

    decision = Decision(classifier.threshold, threshold)
    for (label, p), text in zip(classifier.classify(items, decision), items, strict=True):
        click.echo(f"{label}\t{p:.4f}\t{_one_line_preview(text)}")
    click.echo(f"spamfilter: {_classifier_used(model, classifier)}", err=True)


def _one_line_preview(text: str, width: int = 60) -> str:
    """A text on one output line: line breaks shown as spaces, long texts cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


@cli.command(name="eval", context_settings=CONTEXT)
@click.argument("data", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_option
@mail_sources_options("Spam (with --ham, instead of DATA)", "Wanted mail")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="Default: the model's.")
@click.option(
    "--target-fpr",
    "target_fprs",
    multiple=True,
    type=click.FloatRange(0, 1),
    help="False-positive rates to find thresholds for (repeatable). Default: 0.1% 0.5% 1% 2% 5%.",
)
@click.option(
    "--report",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write eval.json and roc.png to. Default: none written (the model directory keeps "
    "its training record).",
)
@gpu_option
@variant_option
def eval_command(
    data: Path | None,
    model: Path | None,
    spam_sources: tuple[Path, ...],
    ham_sources: tuple[Path, ...],
    threshold: float | None,
    target_fprs: tuple[float, ...],
    report: Path | None,
    gpu: bool,
    variant: str | None,
) -> None:
    """Measure a model on labelled messages: DATA (the UCI file, or CSV/TSV with label and text
    columns) or --spam/--ham mailboxes. Prints accuracy, precision, recall, F1, the false-positive
    rate, the confusion matrix, ROC AUC and which --threshold gives a chosen false-positive rate."""
    from .evaluate import evaluate, format_report, write_report
    from .labelled import read_labelled_texts, read_mail_texts
    from .mail import check_sources
    from .metrics import DEFAULT_TARGET_FPRS
    from .verdict import Decision

    with _library_errors():
        check_sources(data, spam_sources, ham_sources, "DATA", required=True)
        if data is not None:
            texts, labels = read_labelled_texts(data)
        else:
            texts, labels = read_mail_texts(spam_sources, ham_sources, _warn)
    classifier = _load_classifier(model, gpu, variant=variant)
    decision = Decision(classifier.threshold, threshold)
    result = evaluate(classifier, texts, labels, decision, target_fprs or DEFAULT_TARGET_FPRS)
    click.echo(format_report(result))
    click.echo(f"spamfilter: {_classifier_used(model, classifier)}", err=True)
    if report is None:  # never over the test report that train wrote into the model directory
        click.echo("spamfilter: no files written; --report DIR keeps eval.json and roc.png", err=True)
        return
    try:
        written = write_report(result, report)
    except OSError as error:
        _fail(f"cannot write the report: {error}")
    click.echo(f"spamfilter: wrote {' and '.join(map(str, written))}", err=True)


# --------------------------------------------------------------------------- learn


@cli.command(context_settings=CONTEXT)
@model_option
@mail_sources_options("Messages that are spam", "Messages that are not spam", stdin=True)
@click.option(
    "--retrain-after",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Retrain once this many corrections are waiting; until then they are only kept.",
)
@click.option("--retrain", "retrain_now", is_flag=True, help="Retrain now on every correction kept.")
def learn(
    model: Path | None,
    spam_sources: tuple[Path, ...],
    ham_sources: tuple[Path, ...],
    retrain_after: int,
    retrain_now: bool,
) -> None:
    """Correct the model, as sa-learn and bogofilter -s/-n do: the messages are kept in the model
    directory (corrections/), and the model's head is retrained on them and the training messages.
    A retrain that makes the held-out split worse is refused (exit 3) and the model stays as it was."""
    try:
        import torch  # noqa: F401 - the train extra's: retraining needs it
    except ImportError as error:  # a base (filter-only) install
        _fail(f"{TRAIN_EXTRA_HINT} ({error})")
    if not (spam_sources or ham_sources or retrain_now):
        raise click.UsageError("give --spam or --ham MESSAGES, or --retrain")
    directory = model or default_model_dir()
    try:
        _learn(directory, spam_sources, ham_sources, retrain_after, retrain_now)
    except OSError as error:  # a read-only model directory, a full disk, a correction not readable
        where = f" ({error.filename})" if error.filename else ""
        _fail(f"cannot update {directory}: {error.strerror or error}{where}")
    click.echo(f"spamfilter: {_model_used(model, directory)}", err=True)


def _learn(
    directory: Path,
    spam_sources: tuple[Path, ...],
    ham_sources: tuple[Path, ...],
    retrain_after: int,
    retrain_now: bool,
) -> None:
    from .learn import Corrections, retrain

    with _library_errors():
        open_model_directory(directory)
        corrections = Corrections(directory)
        kept = {1: 0, 0: 0}
        for label, sources in ((1, spam_sources), (0, ham_sources)):
            for raw in _read_messages(sources):
                kept[label] += corrections.add(raw, label)
        pending = corrections.pending()
        if spam_sources or ham_sources:
            click.echo(
                f"spamfilter: kept {kept[1]} new spam and {kept[0]} new ham corrections; "
                f"{pending} waiting to be learnt",
                err=True,
            )
        if not retrain_now and pending < retrain_after:
            return
        if pending == 0 and not retrain_now:
            return
        result = retrain(directory, on_stage=lambda stage: click.echo(f"spamfilter: {stage}…", err=True))
    for line in result.lines():
        click.echo(line)
    if result.unlearnt:
        _warn(f"{result.unlearnt} corrections are still scored against their class by the retrained head")


def _read_messages(sources: tuple[Path, ...]) -> Iterator[bytes]:
    """Every message of the given files and mail sources; - is one message on stdin."""
    from collections import Counter

    from .corrections import MAX_CORRECTION_BYTES
    from .errors import DataError
    from .mail import describe_skipped, iter_mail_source

    for source in sources:
        if str(source) == "-":
            message = sys.stdin.buffer.read(MAX_CORRECTION_BYTES + 1)
            if not message.strip():
                raise click.UsageError("no message on stdin")
            if len(message) > MAX_CORRECTION_BYTES:
                _warn(
                    f"the message on stdin is kept to its first {MAX_CORRECTION_BYTES} bytes, "
                    "as filter reads it"
                )
            yield message[:MAX_CORRECTION_BYTES]
            continue
        skipped: Counter[str] = Counter()
        try:
            yield from iter_mail_source(source, skipped)
        except (OSError, ValueError) as error:
            raise DataError(f"cannot read mail from {source}: {first_line(error)}") from None
        if sum(skipped.values()):
            _warn(f"{source}: {describe_skipped(skipped)}")


# --------------------------------------------------------------------------- serve


def _octal_mode(_context: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        mode = int(value, 8)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an octal mode such as 0660") from None
    if not 0 <= mode <= 0o777:
        raise click.BadParameter(f"{value!r} is not a mode between 0000 and 0777")
    return mode


@cli.command(context_settings=CONTEXT)
@model_option
@click.option(
    "-l",
    "--listen",
    "listen",
    multiple=True,
    metavar="ADDR",
    help="HOST:PORT, [IPv6]:PORT or unix:PATH; repeatable. Default: 127.0.0.1:11783 (783 needs root).",
)
@click.option(
    "--milter",
    "milter",
    multiple=True,
    metavar="ADDR",
    help="Also (or only) speak the milter protocol here, for Postfix and Sendmail: HOST:PORT or unix:PATH.",
)
@click.option(
    "--reject-above",
    type=float,
    default=None,
    metavar="SCORE",
    help="Milter: refuse mail scoring at or above this (SpamAssassin's scale, 5.0-10.0: 5.0 is the "
    "model's threshold) with a 550 during SMTP.",
)
@click.option(
    "--quarantine-above",
    type=float,
    default=None,
    metavar="SCORE",
    help="Milter: put mail scoring at or above this (5.0-10.0) in the MTA's quarantine (hold queue).",
)
@click.option(
    "--milter-error",
    type=click.Choice(["accept", "tempfail"]),
    default="accept",
    show_default=True,
    help="Milter: what the MTA is told when a message cannot be classified (accept it untagged, or 4xx).",
)
@gpu_option
@variant_option
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="Default: the model's.")
@header_prefix_option
@click.option(
    "--batch-max",
    type=click.IntRange(1),
    default=None,
    help="Most messages per model call. Default: 32, with --gpu 128.",
)
@click.option(
    "--batch-wait-ms",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="How long a batch waits for more messages once its first has come.",
)
@click.option(
    "--max-size",
    type=click.IntRange(1),
    default=512_000,
    show_default=True,
    help="Largest message in bytes (spamc's -s default); larger ones get an error reply and spamc "
    "delivers them untagged.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1),
    default=30.0,
    show_default=True,
    help="Seconds a client has to send its whole request, and to take its reply.",
)
@click.option("--max-connections", type=click.IntRange(1), default=64, show_default=True)
@click.option(
    "--max-per-peer",
    type=click.IntRange(1),
    default=None,
    help="Connections one client address (one uid on a unix socket) may have served at once. "
    "Default: three quarters of --max-connections.",
)
@click.option(
    "-A",
    "--allow",
    multiple=True,
    metavar="NETS",
    help="Client addresses or networks allowed over TCP (comma-separated, repeatable). Default: loopback.",
)
@click.option("--socket-mode", callback=_octal_mode, default=None, help="Mode of unix sockets, e.g. 0660.")
@click.option("--socket-owner", default=None, metavar="USER[:GROUP]", help="Owner of unix sockets.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --tls-cert: TCP listeners speak TLS (spamc -S).",
)
@click.option(
    "--metrics", default=None, metavar="HOST:PORT", help="Serve Prometheus /metrics and /health here."
)
@click.option(
    "--syslog",
    "syslog_address",
    is_flag=False,
    flag_value="/dev/log",
    default=None,
    metavar="[SOCKET|HOST:PORT]",
    help="Also log to syslog, facility mail (default socket /dev/log).",
)
@click.option(
    "--log-interval",
    type=click.FloatRange(0),
    default=0.0,
    help="Log a summary every this many seconds instead of one line per request.",
)
@click.option(
    "--allow-tell",
    is_flag=True,
    help="Accept TELL (spamc -L spam|ham|forget): file the message under the model's corrections/.",
)
@click.option(
    "--tell-allow",
    multiple=True,
    metavar="NETS",
    help="With --allow-tell: TCP clients that may TELL (comma-separated, repeatable). Default: loopback.",
)
@click.option(
    "--tell-users",
    multiple=True,
    metavar="NAMES",
    help="With --allow-tell: users (or @groups) that may TELL over a unix socket, by the peer's "
    "uid/gid (comma-separated, repeatable). Default: the service's own user and root.",
)
@click.option(
    "--tell-max",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Corrections one teacher (client address, or uid on a unix socket) may keep stored; "
    "beyond, TELL is refused with 73.",
)
@click.option(
    "--tell-max-bytes",
    type=click.IntRange(1),
    default=50_000_000,
    show_default=True,
    help="Bytes of corrections one teacher may keep stored.",
)
@click.option(
    "--learn-after",
    type=click.IntRange(0),
    default=50,
    show_default=True,
    help="With --allow-tell: retrain (spamfilter learn --retrain) once this many corrections wait, and "
    "load the result; 0: never (run spamfilter learn --retrain yourself, e.g. from cron).",
)
def serve(
    model: Path | None,
    listen: tuple[str, ...],
    milter: tuple[str, ...],
    reject_above: float | None,
    quarantine_above: float | None,
    milter_error: str,
    gpu: bool,
    variant: str | None,
    threshold: float | None,
    header_prefix: str,
    batch_max: int | None,
    batch_wait_ms: float,
    max_size: int,
    timeout: float,
    max_connections: int,
    max_per_peer: int | None,
    allow: tuple[str, ...],
    socket_mode: int | None,
    socket_owner: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    metrics: str | None,
    syslog_address: str | None,
    log_interval: float,
    allow_tell: bool,
    tell_allow: tuple[str, ...],
    tell_users: tuple[str, ...],
    tell_max: int,
    tell_max_bytes: int,
    learn_after: int,
) -> None:
    """Serve the model to spamd clients (spamc, Exim's spam condition, ...) and milter MTAs until
    SIGTERM.

    Speaks spamd's protocol: PROCESS returns the message as `filter` tags it; CHECK and friends
    report the score on SpamAssassin's scale, the threshold reading 5.0 (10 x P at threshold 0.5).
    Concurrent messages are classified together. SIGHUP reloads the model directory (a broken one
    is refused).
    """
    from .corrections import Quota
    from .service.access import DEFAULT_LISTEN, parse_address, parse_networks, parse_users, tls_context
    from .service.milter import MilterPolicy
    from .service.observe import setup_logging
    from .service.server import ServiceSettings
    from .service.server import serve as run_service
    from .verdict import Decision

    directory = model or default_model_dir()
    # A reload asked for while the model loads would otherwise kill the process (SIGHUP's default).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with _library_errors():
        tell_uids, tell_gids = parse_users(tell_users)
        settings = ServiceSettings(
            # The spamd listener by default, unless only milter listeners are asked for.
            listen=[parse_address(text) for text in (listen or (() if milter else (DEFAULT_LISTEN,)))],
            milter=[parse_address(text, "--milter") for text in milter],
            milter_policy=MilterPolicy(milter_error),
            allow=parse_networks(allow),
            max_size=max_size,
            timeout=timeout,
            max_connections=max_connections,
            max_per_peer=max_per_peer or 0,
            batch_max=batch_max or (128 if gpu else 32),
            batch_wait=batch_wait_ms / 1000,
            decision=Decision(
                threshold=threshold,
                header_prefix=header_prefix,
                reject_above=reject_above,
                quarantine_above=quarantine_above,
            ),
            socket_mode=socket_mode,
            socket_owner=socket_owner,
            tls=tls_context(tls_cert, tls_key),
            metrics=parse_address(metrics, "--metrics", tcp_only=True) if metrics else None,
            log_interval=log_interval,
            model_name=str(directory),
            corrections=directory if allow_tell else None,
            learn_after=learn_after if allow_tell else 0,
            tell_allow=parse_networks(tell_allow, "--tell-allow"),
            tell_quota=Quota(tell_max, tell_max_bytes),
            tell_uids=tell_uids,
            tell_gids=tell_gids,
            learn_command=[sys.executable, "-m", "spamfilter", "learn", "--retrain", "-m", str(directory)],
        )
        logger = setup_logging(syslog_address)

        def load() -> Classifier:
            from .runtime import Classifier

            return Classifier.load(
                directory, gpu=gpu, variant=variant, batch_size=settings.batch_max, warn=logger.warning
            )

        def loaded(scorer: Classifier) -> None:
            logger.info("model %s: %s on %s", directory, scorer.variant, scorer.provider)
            warning = scorer.directory.manifest.mail_warning()
            if warning is not None:
                logger.warning(warning)

        # The listeners are bound first, so that a busy port fails before the model loads.
        run_service(settings, None, load, logger, loaded)  # type: ignore[arg-type]


def main() -> None:
    try:
        cli(prog_name="spamfilter")
    except KeyboardInterrupt:  # outside click's own handling (e.g. while writing): no traceback
        click.echo("spamfilter: interrupted", err=True)
        sys.exit(EX_INTERRUPTED)
