"""Mailboxes: mbox streams, Maildirs and folders of messages, and telling the input formats apart.

``split_mbox`` yields every byte of its input, message by message; the format guesses look at the
first bytes only and never raise.
"""

from __future__ import annotations

import csv
import io
import itertools
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path

from .headers import FIELD_NAME


def looks_like_mbox(head: bytes) -> bool:
    """Whether the first bytes of a file are those of an mbox: a 'From ' separator line."""
    return head.startswith(b"From ")


def looks_like_email(head: bytes) -> bool:
    """Whether the first bytes of a file are those of a single RFC 822 message: the first line
    is a header field such as "Received: ..." or "Return-Path: <...>" (and not an mbox)."""
    return not looks_like_mbox(head) and FIELD_NAME.match(head.split(b"\n", 1)[0]) is not None


def split_mbox(stream: typing.BinaryIO, max_message_bytes: int | None = None) -> Iterator[bytes]:
    """Stream an mbox (mboxo/mboxrd) from a non-seekable binary stream, yielding each message's
    exact bytes, including its leading 'From ' separator line. b''.join(all yielded) == input
    bytes exactly.

    Separator rule: a line starting with "From " begins a new message when it is the first line
    of the input or follows an empty line (LF or CRLF). That is where every mbox writer puts
    them, so a "From " line inside a body that a sloppy writer forgot to escape does not split
    the message as Python's mailbox module would (it splits at every "From " line). Escaped
    ">From " lines are ordinary body lines and are left as they are. The empty line before a
    separator stays with the message it ends.

    Input that does not start with "From " is yielded up to the first separator as one
    "message", so that nothing is lost; the caller decides what to do with it.

    The stream is read line by line and only the current message is held in memory. With
    `max_message_bytes`, a message growing past it raises ValueError instead of being held.
    """
    message = bytearray()
    follows_empty_line = True  # the start of the input counts as a message boundary
    number = 1
    for line in iter(stream.readline, b""):
        if follows_empty_line and message and line.startswith(b"From "):
            yield bytes(message)
            message.clear()
            number += 1
        message += line
        if max_message_bytes is not None and len(message) > max_message_bytes:
            raise ValueError(f"mbox message {number} is larger than {max_message_bytes} bytes")
        follows_empty_line = line in (b"\n", b"\r\n")
    if message:
        yield bytes(message)


def _iter_mbox_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        yield from split_mbox(stream)


def _iter_files(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        yield path.read_bytes()


def iter_mail_source(path: Path) -> Iterator[bytes]:
    """Messages from an mbox file, a Maildir (cur/ and new/ subfolders), or a folder of .eml
    files (sorted by name, for reproducibility). Raises ValueError with a one-line message for a
    path that is none of these.

    A single file holding one RFC 822 message is accepted too, and an empty file is an empty
    mbox. Maildir messages come from cur/ then new/, each sorted by name (Maildir names start
    with the delivery time); tmp/ holds deliveries in progress and is left alone. The path is
    checked when this is called, not when the first message is read.
    """
    path = Path(path)
    if path.is_file():
        with path.open("rb") as stream:
            head = stream.read(4096)
        kind = detect_format(head) if head else "mbox"  # an empty file is an empty mbox
        if kind == "mbox":
            return _iter_mbox_file(path)
        if kind == "email":
            return iter([path.read_bytes()])
        raise ValueError(f"{path}: neither an mbox nor an RFC 822 message")
    if path.is_dir():
        return _iter_files(mail_folder_files(path))
    raise ValueError(f"{path}: no such file or folder")


def mail_folder_files(path: Path) -> list[Path]:
    """The message files of a Maildir (cur/ then new/, each sorted by name) or of a folder of
    .eml files (sorted by name). Raises ValueError for a folder that is neither."""
    subfolders = [path / "cur", path / "new"]
    if any(folder.is_dir() for folder in subfolders):
        return [
            entry
            for folder in subfolders
            if folder.is_dir()
            for entry in sorted(folder.iterdir())
            if entry.is_file() and not entry.name.startswith(".")
        ]
    files = sorted(entry for entry in path.iterdir() if entry.is_file())
    emls = [entry for entry in files if entry.suffix.lower() == ".eml"]
    if emls:
        return emls
    raise ValueError(f"{path}: a folder that is neither a Maildir nor holds .eml files")


# --- telling the formats apart --------------------------------------------------------------


def detect_format(head: bytes, text_column: str = "Text") -> str:
    """Guess the input format from its first bytes: ``mbox``, ``email``, ``csv``, ``text``, or
    ``binary`` (NUL bytes: no kind of mail or text this filter reads). Never raises."""
    if looks_like_mbox(head):
        return "mbox"
    if looks_like_email(head):
        return "email"
    if b"\0" in head:
        return "binary"
    return "csv" if looks_like_csv(head, text_column) else "text"


CSV_SAMPLE_ROWS = 6


def looks_like_csv(head: bytes, text_column: str = "Text") -> bool:
    """A header row naming ``text_column``, or the shape of a CSV export: a header of two or more
    distinct, short names (no leading space, as prose after a comma has) and rows with as many
    fields. Line ends may be LF, CRLF or CR alone."""
    text = head.decode("utf-8", "replace").lstrip("\ufeff")
    try:
        rows = list(itertools.islice(csv.reader(io.StringIO(text, newline="")), CSV_SAMPLE_ROWS))
    except csv.Error:
        return False
    if not rows:
        return False
    header = rows[0]
    if any(name.strip().lower() == text_column.lower() for name in header):
        return True
    if not text.endswith(("\n", "\r")) and len(rows) > 1:
        rows.pop()  # the last row may be cut off where the peek ended
    names = [name.strip() for name in header]
    return (
        len(header) >= 2
        and all(names)
        and len(set(names)) == len(names)
        and not any(name[:1].isspace() or len(name) > 64 for name in header)
        and all(len(row) == len(header) for row in rows[1:])
    )


def check_sources(
    data: object | None, spam: Sequence[object], ham: Sequence[object], data_name: str, required: bool
) -> None:
    """Labelled messages come from one place: a file of them (``data_name``: DATA or --data), or
    spam and ham mailboxes together. ``required``: one of them must be given."""
    from ..errors import UsageError

    if data is not None and (spam or ham):
        raise UsageError(f"give either {data_name} or --spam/--ham mailboxes, not both")
    if bool(spam) != bool(ham):
        raise UsageError("--spam and --ham go together")
    if required and data is None and not spam:
        raise UsageError(f"give {data_name} or --spam/--ham mailboxes")
