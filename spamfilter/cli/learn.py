"""``spamfilter learn``: corrections recorded, and the head retrained on them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

from ..errors import first_line
from ..modeldir import default_model_dir, open_model_directory
from .common import (
    CONTEXT,
    _fail,
    _library_errors,
    _model_used,
    _warn,
    cli,
    count_option,
    mail_sources_options,
    model_option,
    user_option,
)

# --------------------------------------------------------------------------- learn


@cli.command(context_settings=CONTEXT)
@model_option
@mail_sources_options("Messages that are spam", "Messages that are not spam", stdin=True)
@count_option(
    "--retrain-after", 1, "Retrain once this many corrections are waiting; until then they are only kept."
)
@click.option("--retrain", "retrain_now", is_flag=True, help="Retrain now on every correction kept.")
@user_option(
    "The corrections are NAME's: they train NAME's own head (serve --per-user, filter --user), "
    "not the shared model."
)
def learn(
    model: Path | None,
    spam_sources: tuple[Path, ...],
    ham_sources: tuple[Path, ...],
    retrain_after: int,
    retrain_now: bool,
    user: str | None,
) -> None:
    """Correct the model, as sa-learn and bogofilter -s/-n do: the messages are kept in the model
    directory (corrections/), and the model's head is retrained on them and the training messages.
    A retrain that makes the held-out split worse is refused (exit 3) and the model stays as it was.
    With --user NAME, the corrections are NAME's and train NAME's head only."""
    if not (spam_sources or ham_sources or retrain_now):
        raise click.UsageError("give --spam or --ham MESSAGES, or --retrain")
    directory = model or default_model_dir()
    try:
        if user is not None:
            _learn_user(directory, user, spam_sources, ham_sources, retrain_after, retrain_now)
        else:
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
    from ..learn import Corrections, retrain

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


def _learn_user(
    directory: Path,
    user: str,
    spam_sources: tuple[Path, ...],
    ham_sources: tuple[Path, ...],
    retrain_after: int,
    retrain_now: bool,
) -> None:
    """A user's corrections kept under users/ and that user's head retrained on them (the shared
    model untouched). A running service reads the new head after SIGHUP."""
    from ..learn import read_features
    from ..user_heads import UserHeads, train_user_head, trunk_fingerprint, valid_user

    with _library_errors():
        valid_user(user)
        open_model_directory(directory)
        trunk = trunk_fingerprint(read_features(directory)["train_features"])
        heads = UserHeads(directory, trunk=trunk)
        kept = {1: 0, 0: 0}
        for label, sources in ((1, spam_sources), (0, ham_sources)):
            for raw in _read_messages(sources):
                kept[label] += heads.add(user, raw, label)
        if spam_sources or ham_sources:
            click.echo(
                f"spamfilter: kept {kept[1]} new spam and {kept[0]} new ham corrections of {user}", err=True
            )
        if not retrain_now and kept[0] + kept[1] < retrain_after:
            return
        trained = train_user_head(directory, user, heads)
    if trained is None:
        click.echo(f"{user}: no corrections kept; the shared model scores their mail")
    else:
        count = len(list(heads.corrections(user)))
        click.echo(f"{user}: head retrained on {count} corrections (threshold {trained.threshold:.4f})")


def _read_messages(sources: tuple[Path, ...]) -> Iterator[bytes]:
    """Every message of the given files and mail sources; - is one message on stdin."""
    from collections import Counter

    from ..corrections import MAX_CORRECTION_BYTES
    from ..errors import DataError
    from ..mail import describe_skipped, iter_mail_source

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
