"""What the commands share: the click group, library errors as one-line messages, common options."""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .. import __version__
from ..errors import EX_BROKEN_PIPE, EX_INTERRUPTED, SpamfilterError, printable
from ..interrupts import stop_on_signals
from ..modeldir import default_model_dir
from ..verdict import DEFAULT_PREFIX, EXPLAIN_POLICIES, Decision

if TYPE_CHECKING:
    from ..runtime import Classifier


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
    """A library error shown as click shows errors: ``Error: <sentence>``, on one line (characters
    that are not printable, as a NUL from a CSV header, escaped), with the error's exit code."""

    def __init__(self, error: SpamfilterError) -> None:
        super().__init__(printable(str(error)))
        self.code = error.exit_code

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return self.code


@contextlib.contextmanager
def _library_errors() -> Iterator[None]:
    """The one mapping from the library's errors to exit codes: usage errors (bad input: a missing
    CSV column, a model directory that is not one) 2, the others their own code (1 unless they say
    otherwise); each one line, ``Error: ...`` (click's own errors about the options keep its usage
    lines)."""
    try:
        yield
    except SpamfilterError as error:
        raise _LibraryError(error) from None


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange that also refuses ``nan`` and ``inf`` (a usage error, exit 2): NaN
    compares false with every bound, so FloatRange lets it through, and no probability, rate, size or
    time of these commands means anything at infinity."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


def _echo(text: str) -> None:
    """One line of a command's results on stdout (classify, eval): a reader that went away stops
    the run quietly with 141, as filter's does; an output that cannot be written (a full disk) is
    one line and exit 1, never a traceback."""
    try:
        click.echo(text)
    except BrokenPipeError:
        quiet_stdout()
        sys.exit(EX_BROKEN_PIPE)
    except OSError as error:
        quiet_stdout()  # what is left in stdout's buffer cannot be written at exit either
        _fail(f"cannot write the output: {error.strerror or error}")


def quiet_stdout() -> None:
    """stdout pointed at /dev/null: the interpreter's last flush at exit has nothing to fail on."""
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# The module that defines each command, imported only when that command runs (or help lists it):
# `filter` starts once per message in a mail pipeline, and the service's and training's modules
# are imports it would never use.
COMMAND_MODULES = {
    "adapt": "train",
    "classify": "evaluate",
    "eval": "evaluate",
    "export": "train",
    "filter": "filter",
    "learn": "learn",
    "serve": "serve",
    "train": "train",
}


class _Commands(click.Group):
    """The commands, each module imported on first use; importing it registers its commands. A
    Ctrl-C that a command does not handle itself (eval, learn, classify, export) ends it with one
    line and 130, as train, adapt and filter end (click's own answer is ``Aborted!`` and 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("spamfilter: interrupted", err=True)
            raise click.exceptions.Exit(EX_INTERRUPTED) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | COMMAND_MODULES.keys())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMAND_MODULES:
            importlib.import_module(f"{__package__}.{COMMAND_MODULES[name]}")
        return super().get_command(ctx, name)


@click.group(cls=_Commands, context_settings=CONTEXT)
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


def _load_classifier(
    model: Path | None, gpu: bool, batch_size: int | None = None, variant: str | None = None
) -> Classifier:
    from ..runtime import Classifier

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
    default=DEFAULT_PREFIX,
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
threshold_option = click.option(
    "--threshold",
    type=FiniteFloatRange(0, 1),
    default=None,
    help="P(spam) at or above which a message is spam. Default: the model's (spamfilter.json).",
)


def explain_option(help: str, dest: str = "explain") -> Callable[[Any], Any]:
    """``--explain off|spam|all``: which verdicts carry their phrases (``Decision.explain``); what
    that shows depends on the command, hence its ``help``."""
    return choice_option("--explain", EXPLAIN_POLICIES, Decision.explain, help, dest=dest)


def user_option(help: str) -> Callable[[Any], Any]:
    """``--user NAME``: whose head scores or learns (per-user heads); ``help`` says which."""
    return click.option("--user", default=None, metavar="NAME", help=help)


def choice_option(
    name: str, choices: Sequence[str], default: str, help: str | None = None, dest: str | None = None
) -> Callable[[Any], Any]:
    """One of ``choices``, with its default shown."""
    names = (name, dest) if dest else (name,)
    return click.option(*names, type=click.Choice(choices), default=default, show_default=True, help=help)


def count_option(name: str, default: int, help: str | None = None, minimum: int = 1) -> Callable[[Any], Any]:
    """A whole number of at least ``minimum`` with its default shown: the limits and sizes most
    commands take."""
    return click.option(name, type=click.IntRange(minimum), default=default, show_default=True, help=help)
