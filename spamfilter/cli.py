"""The ``spamfilter`` command line: thin click commands over the library.

Heavy imports (torch, pandas) happen inside the commands that need them, so ``filter`` and
``classify`` start fast enough for a mail pipeline.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import click

from . import __version__
from .interrupts import Interrupted, exit_code, stop_on_signals
from .modeldir import ModelDirectoryError, default_model_dir, remember_model_dir, train_output_dir

if TYPE_CHECKING:
    from .filter import FilterInterrupted, Summary
    from .runtime import Classifier

EX_TEMPFAIL = 75  # sysexits.h: the mail system should retry later
CONTEXT = {"help_option_names": ["-h", "--help"]}


def _console():
    from rich.console import Console

    # Off a terminal (logs, cron mail) one record stays on one line: rich would wrap at 80 columns.
    return Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())


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
@click.option(
    "--spam",
    "spam_sources",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Spam to train on: an mbox, a Maildir or a folder of .eml files (repeatable).",
)
@click.option(
    "--ham",
    "ham_sources",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Wanted mail to train on, as --spam (repeatable).",
)
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
    default="last",
    show_default=True,
    help="last: the last padded position (the reference recipe); last-token: each message's last real token.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model directory to write. Default: $SPAMFILTER_MODEL or ~/.local/share/spamfilter/model.",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    default=None,
    help="Also write an int8 model (faster; used by filter when it agrees with fp32 on >= 99%).",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run after its last finished epoch.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A progress bar on stderr. Default: only when stderr is a terminal.",
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
    quantize: str | None,
    resume: bool,
    progress: bool | None,
) -> None:
    """Fine-tune GPT-2 as a spam classifier and export it as a model directory.

    After each epoch the training state is saved in the output directory; if a run is interrupted,
    the same command with --resume continues after the last finished epoch."""
    console = _console()
    from .data import DataError
    from .export import ExportError
    from .recipe import TrainOptions, fine_tune
    from .train import TrainingConfig, epoch_of_step
    from .weights import WeightsError

    if data is not None and (spam_sources or ham_sources):
        raise click.UsageError("give either --data or --spam/--ham, not both")
    if bool(spam_sources) != bool(ham_sources):
        raise click.UsageError("--spam and --ham go together")
    torch_device = _pick_device(device)
    options = TrainOptions(
        model=model,
        weights=weights,
        data=data,
        spam=list(spam_sources),
        ham=list(ham_sources),
        max_length=max_length,
        pooling=pooling,
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
        quantize=quantize,
        resume=resume,
    )
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    display = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
        console=console,
        disable=not (console.is_terminal if progress is None else progress),
    )
    task = display.add_task("training", total=None, loss=float("nan"), visible=False)
    download = display.add_task("downloading data", total=None, loss=float("nan"), visible=False)

    def on_download(done: int, total: int | None) -> None:
        display.update(download, completed=done, total=total, visible=True)

    def on_step(step: int, total: int, loss: float) -> None:
        description = f"epoch {epoch_of_step(step, total, epochs)}/{epochs}"
        display.update(task, description=description, completed=step, total=total, loss=loss, visible=True)

    def on_epoch(record) -> None:  # figures on the whole train and validation splits
        console.print(
            f"epoch {record.epoch}/{epochs}: train loss {record.train_loss:.3f}"
            f" acc {record.train_accuracy:.2%} | validation loss {record.validation_loss:.3f}"
            f" acc {record.validation_accuracy:.2%} ({record.seconds:.1f} s)"
        )

    try:
        with display:
            result = fine_tune(
                options,
                on_step=on_step,
                on_epoch=on_epoch,
                on_stage=lambda s: console.print(f"[dim]{s}…[/dim]"),
                on_download=on_download,
            )
    except (DataError, WeightsError, ExportError, ValueError, OSError) as error:
        _fail(str(error))
    except KeyboardInterrupt:
        console.print(f"interrupted: continue with the same command and --resume (state in {options.out})")
        sys.exit(130)
    test = result.record.test
    console.print(
        f"trainable parameters {result.record.trainable_parameters:,}; max_length {result.max_length}; "
        f"{result.record.seconds:.1f} s\n"
        f"train accuracy {result.record.train_accuracy:.2%} | validation accuracy "
        f"{result.record.validation_accuracy:.2%}\n"
        f"test: accuracy {test['accuracy']:.2%} precision {test['precision']:.2%} "
        f"recall {test['recall']:.2%} "
        f"F1 {test['f1']:.2%} false-positive rate {test['false_positive_rate']:.2%} (n={test['n']})\n"
        f"model directory: {options.out}"
    )
    _report_export(console, options.out, result.manifest)
    remember_model_dir(options.out)


def _pick_device(choice: str) -> str:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available to torch here", param_hint="--device")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


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
    from .export import ExportError, load_checkpoint, write_model_directory
    from .modeldir import CHECKPOINT_FILE

    path = checkpoint / CHECKPOINT_FILE if checkpoint.is_dir() else checkpoint
    target = out or path.parent
    try:
        classifier, data = load_checkpoint(path)
        if "test_input_ids" not in data:
            raise ExportError(f"{path} carries no test messages to verify the export with")
        with console.status("exporting to ONNX and checking it against torch…"):  # shown on a terminal
            manifest = write_model_directory(
                target,
                classifier,
                max_length=data["max_length"],
                test_ids=data["test_input_ids"].numpy(),
                test_labels=data["test_labels"].numpy(),
                manifest=dict(data.get("manifest", {})),
                write_checkpoint=target.resolve() != path.parent.resolve(),
                quantize=quantize,
            )
    except (ExportError, OSError) as error:
        _fail(str(error))
    except KeyError as error:
        _fail(f"{path} is not a spamfilter checkpoint: no {error}")
    _report_export(console, target, manifest)


def _report_export(console: Any, target: Path, manifest: dict[str, Any]) -> None:
    evaluation = manifest["onnx_evaluation"]
    console.print(
        f"exported {target / manifest['onnx']['file']}: max |logit difference| vs torch "
        f"{manifest['onnx']['parity_max_abs_diff']:.1e}; fp32 test accuracy {evaluation['fp32_accuracy']:.2%}"
    )
    int8 = manifest["variants"].get("int8")
    if int8:
        console.print(
            f"int8: {target / int8['file']}: test accuracy {int8['accuracy']:.2%}, "
            f"verdicts agree with fp32 on "
            f"{int8['agreement_with_fp32']:.2%} of {evaluation['n']} test messages; default variant "
            f"{manifest['default_variant']}"
        )


# --------------------------------------------------------------------------- filter / classify


# A GPU is only busy with many messages per call; on the CPU small batches lose nothing.
CPU_BATCH = 8
GPU_BATCH = 64


def _load_classifier(
    model: Path | None, gpu: bool, batch_size: int | None = None, variant: str | None = None
) -> Classifier:
    from .runtime import Classifier

    return Classifier.load(
        model or default_model_dir(),
        gpu=gpu,
        batch_size=batch_size or (GPU_BATCH if gpu else CPU_BATCH),
        variant=variant,
        warn=lambda m: click.echo(f"spamfilter: {m}", err=True),
    )


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
    help="Model directory. Default: $SPAMFILTER_MODEL or the one 'spamfilter train' wrote.",
)
gpu_option = click.option("--gpu", is_flag=True, help="Run on CUDA (falls back to the CPU with a warning).")
variant_option = click.option(
    "--variant",
    type=click.Choice(["fp32", "int8"]),
    default=None,
    help="Which ONNX model of the directory to run. Default: the directory's default_variant.",
)


@cli.command(name="filter", context_settings=CONTEXT)
@click.argument("input_path", metavar="[INPUT]", default="-", type=click.Path(allow_dash=True))
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
    type=click.Path(allow_dash=True, dir_okay=False),
    default="-",
    help="Where results go (default stdout).",
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
@gpu_option
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=None,
    help=f"Messages per model call.  [default: {CPU_BATCH}; {GPU_BATCH} with --gpu]",
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
@_stopping_on_signals
def filter_command(
    input_path: str,
    model: Path | None,
    input_format: str,
    output: str,
    spam_output: str | None,
    text_column: str,
    threshold: float | None,
    gpu: bool,
    batch_size: int | None,
    variant: str | None,
    strict: bool,
    verdict_exit: bool,
    quiet: bool,
    progress: bool | None,
) -> None:
    """Tag every message in INPUT (a file, a Maildir or .eml folder, or - for stdin) as spam or not spam.

    \b
    mbox   -> mbox with X-Spam-Flag / X-Spam-Status added to each message
    email  -> one message with the headers added (pipeline mode: fail-safe)
    csv    -> the CSV with label and spam_probability columns added
    text   -> one message per line; label<TAB>probability<TAB>line
    folder -> a Maildir or .eml folder: tagged copies under -o DIR, same relative paths
    """
    from . import filter as pipeline

    if input_path != "-" and Path(input_path).is_dir():
        _filter_folder(Path(input_path), output, model, threshold, gpu, batch_size, variant, quiet, progress)
        return

    try:
        with contextlib.ExitStack() as stack:
            source = _open_input(input_path, stack)
            fmt = input_format
            if fmt == "auto":
                # --strict and --exit-code only mean something for one message: a message that procmail
                # hands over with its mbox From_ line must not be taken for a mailbox.
                single = strict or verdict_exit
                fmt = "email" if single else pipeline.detect_format(_peek(source), text_column)
                if fmt == "text" and _given(click.get_current_context(), "text_column"):
                    fmt = "csv"  # a text column was named: the input is a CSV, whatever its shape
                if fmt == "binary":
                    raise click.UsageError(
                        f"{input_path} is binary (NUL bytes at its start), not mail, CSV or text; "
                        "use --format text to classify its lines anyway"
                    )
            if fmt == "email":
                _pipeline_mode(
                    source, _open_output(output, stack), model, threshold, gpu, variant, strict, verdict_exit
                )
                return
            if spam_output and fmt != "mbox":
                raise click.BadParameter("only mbox output can be split", param_hint="--spam-output")
            for target, hint in ((output, "--output"), (spam_output, "--spam-output")):
                if _same_file(input_path, target):
                    raise click.BadParameter(
                        "is the input file: write elsewhere, then move it over the input", param_hint=hint
                    )
            try:
                classifier = _load_classifier(model, gpu, batch_size, variant)
            except ModelDirectoryError as error:
                _fail(str(error))
            cut = classifier.threshold if threshold is None else threshold
            started = time.perf_counter()
            sink = _open_output(output, stack)
            on_progress = _progress_display(stack, progress, source)
            try:
                # A pipe or a terminal may pause: what has arrived is classified after a short wait.
                flush_after = None if _is_regular_file(source) else pipeline.IDLE_FLUSH_SECONDS
                if fmt == "mbox":
                    spam_sink = _open_output(spam_output, stack, append=True) if spam_output else None
                    summary = pipeline.filter_mbox(
                        source, sink, classifier, cut, spam_sink, on_progress, flush_after
                    )
                else:
                    summary = _filter_text_format(
                        fmt, source, sink, classifier, cut, text_column, on_progress, flush_after
                    )
                sink.flush()
            except pipeline.FilterInputError as error:
                raise click.UsageError(str(error)) from None
            except pipeline.FilterInterrupted as stop:
                _interrupted(stop, started)
            except pipeline.ClassificationError as error:
                _fail(str(error))
    except BrokenPipeError:
        _quiet_broken_pipe()
    except Interrupted as stop:  # while waiting for the first bytes: nothing was read
        click.echo(f"spamfilter: interrupted by {stop} before any input arrived", err=True)
        sys.exit(exit_code(stop.signum))
    except OSError as error:  # a full disk, an output that went away: say so, no traceback
        _fail(f"cannot write the output: {error.strerror or error}")
    if not quiet:
        click.echo(f"spamfilter: {pipeline.timed(summary, started).line()}", err=True)


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
    threshold: float | None,
    gpu: bool,
    batch_size: int | None,
    variant: str | None,
    quiet: bool,
    progress: bool | None,
) -> None:
    from . import filter as pipeline

    if output == "-":
        raise click.UsageError("a folder as INPUT needs -o DIR for the tagged copies")
    target = Path(output)
    if target.resolve() == source.resolve() or target.resolve().is_relative_to(source.resolve()):
        raise click.BadParameter("must be outside the input folder", param_hint="--output")
    try:
        classifier = _load_classifier(model, gpu, batch_size, variant)
    except ModelDirectoryError as error:
        _fail(str(error))
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        try:
            cut = classifier.threshold if threshold is None else threshold
            summary = pipeline.filter_folder(
                source, target, classifier, cut, _progress_display(stack, progress)
            )
        except pipeline.FilterInputError as error:
            raise click.UsageError(str(error)) from None
        except pipeline.FilterInterrupted as stop:
            _interrupted(stop, started)
        except pipeline.ClassificationError as error:
            _fail(str(error))
        except OSError as error:
            _fail(f"cannot write the output: {error.strerror or error}")
    if not quiet:
        click.echo(f"spamfilter: {pipeline.timed(summary, started).line()}", err=True)


def _interrupted(stop: FilterInterrupted, started: float) -> NoReturn:
    """Ctrl-C or SIGTERM: every message read is in the output; say how far the run got."""
    from .filter import timed

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


def _filter_text_format(
    fmt: str,
    source: BinaryIO,
    sink: BinaryIO,
    classifier: Classifier,
    threshold: float,
    text_column: str,
    on_progress: Callable[[int], None] | None,
    flush_after: float | None,
) -> Summary:
    from . import filter as pipeline

    # surrogateescape: bytes that are not UTF-8 pass through to the output unchanged.
    text_in = io.TextIOWrapper(source, encoding="utf-8", errors="surrogateescape", newline="")
    text_out = io.TextIOWrapper(
        sink, encoding="utf-8", errors="surrogateescape", newline="", write_through=True
    )
    try:
        if fmt == "csv":
            return pipeline.filter_csv(
                text_in, text_out, classifier, threshold, text_column, on_progress, flush_after
            )
        return pipeline.filter_text(text_in, text_out, classifier, threshold, on_progress, flush_after)
    finally:
        text_out.flush()
        # Detach so that the wrappers never close the streams underneath their owner.
        text_in.detach()
        text_out.detach()


def _open_input(path: str, stack: contextlib.ExitStack) -> io.BufferedReader:
    if path == "-":
        stdin = sys.stdin.buffer
        return stdin if isinstance(stdin, io.BufferedReader) else io.BufferedReader(stdin)  # type: ignore[arg-type]
    try:
        return stack.enter_context(open(path, "rb"))
    except OSError as error:
        raise click.BadParameter(f"cannot read {path}: {error.strerror}", param_hint="INPUT") from None


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
    sys.exit(141)


def _pipeline_mode(
    source: BinaryIO,
    sink: BinaryIO,
    model: Path | None,
    threshold: float | None,
    gpu: bool,
    variant: str | None,
    strict: bool,
    verdict_exit: bool,
) -> None:
    """One message: fail-safe like spamc. On any failure the original bytes go out unchanged and the
    exit code is 0, or 75 with --strict so that the mail system retries."""
    from . import filter as pipeline

    raw = source.read()
    if not raw.strip():
        click.echo("spamfilter: empty input: no message to tag", err=True)
        _write_all(sink, raw)
        sys.exit(EX_TEMPFAIL if strict else 0)
    try:
        classifier = _load_classifier(model, gpu, variant=variant)
        cut = classifier.threshold if threshold is None else threshold
        tagged, spam, _ = pipeline.classify_email(raw, classifier, cut)
    except (Exception, Interrupted) as error:  # fail-safe: never lose the message
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if isinstance(error, Interrupted):
            reason = f"interrupted by {error}"
        if strict:
            click.echo(
                f"spamfilter: message not tagged, exit {EX_TEMPFAIL} to retry later: {reason}", err=True
            )
            sys.exit(EX_TEMPFAIL)
        click.echo(f"spamfilter: message passed through untagged: {reason}", err=True)
        _write_all(sink, raw)
        sys.exit(0)
    _write_all(sink, tagged)
    sys.exit(1 if (verdict_exit and spam) else 0)


def _write_all(sink: BinaryIO, data: bytes) -> None:
    """Pipeline output. If it cannot be written the message would be lost: exit 75 so that the
    mail system keeps it and retries."""
    try:
        sink.write(data)
        sink.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
    except OSError as error:
        click.echo(
            f"spamfilter: cannot write the message ({error.strerror or error}); exit 75 to retry", err=True
        )
        sys.exit(EX_TEMPFAIL)


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
    try:
        classifier = _load_classifier(model, gpu, variant=variant)
    except ModelDirectoryError as error:
        _fail(str(error))
    items = [sys.stdin.read() if t == "-" else t for t in texts]
    for (label, p), text in zip(classifier.classify(items, threshold), items, strict=True):
        click.echo(f"{label}\t{p:.4f}\t{_one_line_preview(text)}")


def _one_line_preview(text: str, width: int = 60) -> str:
    """A text on one output line: line breaks shown as spaces, long texts cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


@cli.command(name="eval", context_settings=CONTEXT)
@click.argument("data", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_option
@click.option(
    "--spam",
    "spam_sources",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Spam mailbox (mbox, Maildir, .eml folder), repeatable; with --ham instead of DATA.",
)
@click.option("--ham", "ham_sources", multiple=True, type=click.Path(exists=True, path_type=Path))
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
    from .data import DataError, read_labelled, read_mail
    from .evaluate import evaluate, format_report, write_report
    from .metrics import DEFAULT_TARGET_FPRS

    if (data is None) == (not (spam_sources or ham_sources)):
        raise click.UsageError("give DATA or --spam/--ham mailboxes (one of them)")
    if (spam_sources or ham_sources) and not (spam_sources and ham_sources):
        raise click.UsageError("--spam and --ham go together")
    try:
        frame = read_labelled(data) if data is not None else read_mail(list(spam_sources), list(ham_sources))
        classifier = _load_classifier(model, gpu, variant=variant)
    except (DataError, ModelDirectoryError) as error:
        _fail(str(error))
    result = evaluate(
        classifier,
        frame["Text"].tolist(),
        frame["Label"].tolist(),
        threshold,
        target_fprs or DEFAULT_TARGET_FPRS,
    )
    click.echo(format_report(result))
    if report is None:  # never over the test report that train wrote into the model directory
        click.echo("spamfilter: no files written; --report DIR keeps eval.json and roc.png", err=True)
        return
    try:
        record, plot = write_report(result, report)
    except OSError as error:
        _fail(f"cannot write the report: {error}")
    click.echo(f"spamfilter: wrote {record} and {plot}", err=True)


def main() -> None:
    try:
        cli(prog_name="spamfilter")
    except KeyboardInterrupt:  # outside click's own handling (e.g. while writing): no traceback
        click.echo("spamfilter: interrupted", err=True)
        sys.exit(130)
