"""The input formats, once: which format an input is, how each one is read into items, and how
an item and its verdict are written back. The local filter (``pipeline``) and the Ray engine's
chunks (``engines/chunks.py``) both read and write through this module, so that they read the same
texts and write the same bytes.

An ``Item`` is what one format read: ``raw``, what is written back (a message's bytes, a CSV row, a
text line, a folder file's relative path and bytes), and ``text``, what the model reads of it (None:
not a message, written as it came, such as the bytes before an mbox's first From_ line).

Mail (mbox, a folder, one message) is written back tagged by ``verdict.Decision.tag``: tagging is
the decision's, reading is this module's. How much of a message is read is ``mail/text.py``'s.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, TextIO

from .errors import DataError, UsageError
from .mail import detect_format, extract_text, is_mbox_message, mail_folder_files, split_mbox
from .mail.mailboxes import read_folder_file
from .mail.text import MESSAGE_BYTES_READ
from .replacefile import new_file, scratch_name
from .verdict import Decision, Verdict

if TYPE_CHECKING:
    from .explain import Explanation

LABEL_COLUMN = "label"
PROBABILITY_COLUMN = "spam_probability"
DEFAULT_TEXT_COLUMN = "Text"
FORMATS = ("auto", "mbox", "email", "csv", "text")
PIPELINE_SIZE_CAP = MESSAGE_BYTES_READ  # as spamc: larger messages are classified from their beginning

csv.field_size_limit(1 << 28)  # whole emails in one CSV field are normal here


class Item(NamedTuple):
    raw: Any  # what is written back: bytes, a CSV row, a text line, (relative path, bytes)
    text: str | None  # what the model reads; None: not a message, written as it came


# --------------------------------------------------------------------------- choosing the format


class BinaryInput(UsageError):
    """NUL bytes at the input's start: no kind of mail or text this filter reads."""


def choose_format(
    requested: str,
    peek: Callable[[], bytes],
    text_column: str = DEFAULT_TEXT_COLUMN,
    text_column_given: bool = False,
    single_message: bool = False,
) -> str:
    """The format to read: ``requested`` unless it is ``auto``; then one message where only one can
    be meant (``single_message``: --strict and --exit-code, as procmail hands a message over with
    its From_ line), else what the first bytes (``peek()``) look like: ``mbox``, ``email``, ``csv``
    or ``text``. A named text column makes the input a CSV whatever its shape. Binary input raises
    ``BinaryInput`` (a usage error)."""
    if requested != "auto":
        return requested
    if single_message:
        return "email"
    found = detect_format(peek(), text_column)
    if found == "text" and text_column_given:
        return "csv"
    if found == "binary":
        raise BinaryInput(
            "the input is binary (NUL bytes at its start), not mail, CSV or text; "
            "use --format text to classify its lines anyway"
        )
    return found


# --------------------------------------------------------------------------- mail


MAX_MBOX_MESSAGE_BYTES = 256 << 20  # one message of an mbox held in memory at most


def mbox_items(source: BinaryIO) -> Iterator[Item]:
    """An mbox's items: each message's bytes with the text the model sees, and bytes before the
    first From_ line (not a message) with None, as a From_ line that the end of the file cut off.
    A message over ``MAX_MBOX_MESSAGE_BYTES`` stops the run with one line (``DataError``): a
    sparse 8 GiB file ended in a MemoryError traceback; the messages before it are written."""
    try:
        for raw in split_mbox(source, MAX_MBOX_MESSAGE_BYTES):
            yield Item(raw, extract_text(raw) if is_mbox_message(raw) else None)
    except ValueError as error:  # split_mbox's: a message over the cap
        raise DataError(
            f"{error}: split it off the mailbox, or filter it alone in pipeline mode (--format email)"
        ) from None


def message_text(raw: bytes, size_cap: int = PIPELINE_SIZE_CAP) -> str:
    """What the model reads of one message handed over alone (pipeline mode, the service): the
    text of its first ``size_cap`` bytes."""
    return extract_text(raw[:size_cap])


def message_item(raw: bytes) -> Item:
    """One message handed over alone."""
    return Item(raw, message_text(raw))


def folder_files(root: Path) -> list[str]:
    """A Maildir's or a folder's message files, relative to it (``ValueError`` for a folder that
    is neither)."""
    return [path.relative_to(root).as_posix() for path in mail_folder_files(root)]


def folder_item(root: Path, relative: str) -> Item:
    """One file of a mail folder: its relative path and bytes, and its text (no bytes and no text
    for a file ``read_folder_file`` skips)."""
    raw = read_folder_file(root / relative)
    return Item((relative, raw), None if raw is None else extract_text(raw))


_FOLDER = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)


def write_private(target: Path, relative: str, data: bytes) -> None:
    """``data`` as the file ``relative`` under ``target``, private to its owner (0600, its new
    folders 0700: mail is), whole or absent. Every folder below ``target`` is opened without
    following a link and the file is made under a fresh name and renamed into place: a link
    planted in the output folder (one in a world-writable folder replaced a root-owned file with
    a tagged message) is replaced, never written through."""
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    *folders, name = Path(relative).parts
    folder = os.open(target, _FOLDER)
    try:
        for part in folders:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=folder)
            inner = os.open(part, _FOLDER | os.O_NOFOLLOW, dir_fd=folder)
            os.close(folder)
            folder = inner
        temporary = scratch_name()
        try:
            with os.fdopen(new_file(folder, temporary, 0o600), "wb") as out:
                out.write(data)
            os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(OSError):  # a full disk: no scratch file left behind
                os.unlink(temporary, dir_fd=folder)
            raise
    finally:
        os.close(folder)


class MailWriter:
    """mbox (and one message) out: each message's bytes tagged by the decision, in order; spam to
    ``spam_sink`` where one is given (``--spam-output``)."""

    def __init__(self, sink: BinaryIO, decision: Decision, spam_sink: BinaryIO | None = None) -> None:
        self.sink, self.decision, self.spam_sink = sink, decision, spam_sink

    def tagged(self, raw: bytes, verdict: Verdict, explanation: Explanation | None = None) -> None:
        target = self.spam_sink if (verdict.spam and self.spam_sink is not None) else self.sink
        target.write(self.decision.tag(raw, verdict, explanation))

    def untagged(self, raw: bytes) -> None:
        self.sink.write(raw)

    def flush(self) -> None:
        self.sink.flush()
        if self.spam_sink is not None:
            self.spam_sink.flush()


class FolderWriter:
    """A mail folder out: each file tagged under ``target`` at its relative path, written by
    ``write`` (the Ray engine writes atomically, as a retried chunk writes it again)."""

    def __init__(
        self, target: Path, decision: Decision, write: Callable[[Path, bytes], object] | None = None
    ) -> None:
        self.target, self.decision, self.write = target, decision, write

    def tagged(
        self, raw: tuple[str, bytes], verdict: Verdict, explanation: Explanation | None = None
    ) -> None:
        relative, data = raw
        tagged = self.decision.tag(data, verdict, explanation)
        if self.write is None:
            write_private(self.target, relative, tagged)
            return
        destination = self.target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        self.write(destination, tagged)


# --------------------------------------------------------------------------- CSV and text


def text_stream(stream: BinaryIO) -> io.TextIOWrapper:
    """CSV and text formats' view of a byte stream. surrogateescape: bytes that are not UTF-8 pass
    through to the output unchanged."""
    return io.TextIOWrapper(
        stream, encoding="utf-8", errors="surrogateescape", newline="", write_through=True
    )


# Where the input has a column of an output's name already (any case: a CSV's ground truth is often
# ``label`` or ``Label``), the outputs are written under these names instead: nothing is overwritten,
# and no two columns differ only in case.
RENAMED_COLUMNS = {
    LABEL_COLUMN: f"spamfilter_{LABEL_COLUMN}",
    PROBABILITY_COLUMN: f"spamfilter_{PROBABILITY_COLUMN}",
}


@dataclass(frozen=True)
class CsvLayout:
    """The CSV out: the input's columns plus ``label`` and ``spam_probability`` (or, where the input
    has a column of either name in any case, ``spamfilter_label`` and ``spamfilter_spam_probability``),
    the text read from the text column. Every row must have the header's number of fields."""

    header: list[str]
    column: int  # of the text
    label_at: int
    probability_at: int

    @classmethod
    def of(cls, header: list[str], text_column: str) -> CsvLayout:
        column = find_column(header, text_column)
        names = output_columns(header)
        out_header = [*header, *names]
        return cls(out_header, column, len(header), len(header) + 1)

    @property
    def fields(self) -> int:
        """Fields of an input row: the header's."""
        return len(self.header) - 2

    def item(self, row: list[str]) -> Item:
        return Item(row, row[self.column] if self.column < len(row) else "")

    def full(self, row: list[str]) -> list[str]:
        return row + [""] * (len(self.header) - len(row))

    def tagged(self, row: list[str], verdict: Verdict) -> list[str]:
        row = self.full(row)
        row[self.label_at], row[self.probability_at] = verdict.label, f"{verdict.probability:.6f}"
        return row


def output_columns(header: list[str]) -> tuple[str, str]:
    """The names of the label and probability columns added to a CSV of this header: ``label`` and
    ``spam_probability``, or the ``RENAMED_COLUMNS`` where the header has either name already (any
    case); a usage error where it has those too."""
    taken = {name.strip().lstrip("\ufeff").lower(): name for name in header}
    if LABEL_COLUMN not in taken and PROBABILITY_COLUMN not in taken:
        return LABEL_COLUMN, PROBABILITY_COLUMN
    for name in RENAMED_COLUMNS.values():
        if name in taken:
            raise UsageError(
                f"the CSV has a column {taken[name]!r} already, where filter would write its "
                f"{name.removeprefix('spamfilter_')} (its own output filtered again?): remove or rename it"
            )
    return RENAMED_COLUMNS[LABEL_COLUMN], RENAMED_COLUMNS[PROBABILITY_COLUMN]


def find_column(header: list[str], wanted: str) -> int:
    """The index of the text column (exact name first, then ignoring case); a usage error that
    lists the columns there are otherwise."""
    cleaned = [h.strip().lstrip("\ufeff") for h in header]
    if wanted in cleaned:
        return cleaned.index(wanted)
    lowered = [h.lower() for h in cleaned]
    if wanted.lower() in lowered:
        return lowered.index(wanted.lower())
    raise UsageError(f"no column {wanted!r} in the CSV header ({', '.join(cleaned)}); use --text-column")


def csv_items(source: TextIO, text_column: str) -> tuple[CsvLayout, Iterator[Item]] | None:
    """A CSV's layout (from its header row) and its rows as items; None for an empty input."""
    reader = csv.reader(source)
    header = next(reader, None)
    if header is None:
        return None
    layout = CsvLayout.of(header, text_column)
    return layout, _csv_rows(reader, layout)


def _csv_rows(reader: Any, layout: CsvLayout) -> Iterator[Item]:
    """Each row as an item. A row with more fields than the header (an unquoted comma), or too few
    to hold the text column (a cut line), stops the run with one line (``DataError``, as ``eval``
    refuses it): its fields would not be the header's columns, or it has no text to score; the rows
    before it are written. A shorter row that holds its text is written with empty fields up to the
    added columns; an empty line is an empty row."""
    for row in reader:
        if len(row) > layout.fields or (row and layout.column >= len(row)):
            raise DataError(
                f"cannot read the CSV: line {reader.line_num} has {len(row)} fields, the header "
                f"{layout.fields}; a row needs its text column and no more fields than the header "
                "(quote a field that holds a comma)"
            )
        yield layout.item(row)


class CsvWriter:
    """CSV out: the header row, then every row with its label and probability (or without, as it
    came in, for a row not classified)."""

    def __init__(self, sink: TextIO, layout: CsvLayout) -> None:
        # RFC 4180 line ends: with CRLF as the terminator a cell holding a lone CR is quoted too.
        self.sink, self.layout = sink, layout
        self.writer = csv.writer(sink, lineterminator="\r\n")

    def header(self) -> None:
        self.writer.writerow(self.layout.header)

    def tagged(self, row: list[str], verdict: Verdict) -> None:
        self.writer.writerow(self.layout.tagged(row, verdict))

    def untagged(self, row: list[str]) -> None:
        self.writer.writerow(self.layout.full(row))

    def flush(self) -> None:
        self.sink.flush()


def text_items(source: TextIO) -> Iterator[Item]:
    """One message per line."""
    return (Item(text, text) for text in (line.rstrip("\r\n") for line in source))


class TextWriter:
    """``label<TAB>spam_probability<TAB>line`` out (two empty fields for a line not classified)."""

    def __init__(self, sink: TextIO) -> None:
        self.sink = sink

    def tagged(self, text: str, verdict: Verdict) -> None:
        self.sink.write(f"{verdict.label}\t{verdict.probability:.6f}\t{text}\n")

    def untagged(self, text: str) -> None:
        self.sink.write(f"\t\t{text}\n")

    def flush(self) -> None:
        self.sink.flush()
