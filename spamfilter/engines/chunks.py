"""The Ray engine's unit of work, without Ray: an input cut into chunks, the text the model reads of
each, and each chunk's tagged output.

A chunk is exactly one chunk of the local engine (``pipeline.CHUNK`` consecutive items of one input,
an mbox's bytes before its first From_ line counting as an item), and its texts go to the model as
one call, as the local engine's do. That is what makes the verdicts the same bit for bit: where the
model's answer depends on its batch (int8 dynamic quantization scales by the whole batch), the
batches are the same ones.

Inputs are recognised, read and written through ``formats`` (the local engine's readers and writers,
``formats.choose_format``) and tagged by ``verdict.Decision``, so the bytes written are the local
engine's. What is this module's own is the planning: byte ranges of an mbox, files of a folder, rows
of a CSV, so many to a chunk.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .. import formats
from ..errors import UsageError, first_line
from ..formats import CsvLayout, Item
from ..mail import is_mbox_message, split_mbox
from ..mail.headers import first_values, header_start, scan_headers
from ..pipeline import CHUNK
from ..verdict import Decision, Verdict
from .outputs import write_atomically

KINDS = ("mbox", "csv", "email", "folder")
_HEAD_BYTES = 4096  # as much as the local engine looks at to tell the formats apart
_MAX_HEADER_FIELDS = 10_000  # header fields looked through for the Message-ID


class InputError(ValueError):
    """An input that cannot be filtered (missing, unreadable, not mail or CSV); one line naming it."""


@dataclass(frozen=True)
class Input:
    source: str  # a local path (absolute) or an fsspec URL
    name: str  # of its output under the output folder
    kind: str  # one of KINDS


@dataclass
class Chunk:
    """One chunk of one input, carried from stage to stage (pickled: texts may hold lone surrogates,
    which an Arrow string column refuses)."""

    input: int  # index into the run's inputs
    number: int  # 0, 1, ... within the input
    first_message: int  # messages of the input before this chunk: the position of its first one
    count: int  # items
    last: bool = False  # the input's last chunk
    offset: int = 0  # mbox: where its bytes are in the file
    length: int = 0
    paths: list[str] = field(default_factory=list)  # folder: its files, relative to the folder
    rows: list[list[str]] = field(default_factory=list)  # CSV: its rows
    layout: CsvLayout | None = None  # CSV: the output header, written before chunk 0's rows
    is_message: list[bool] = field(default_factory=list)  # per item; False: passed through as it came
    # folder: the sha256 of each file's bytes as read and scored; the write stage reads the file
    # again, and a file changed in between (renamed over by another version) is not copied with
    # a verdict that was not its own
    digests: list[bytes] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # of its messages, in order: what the model reads
    # per message, where the run explains verdicts (--explain): an Explanation or None; empty: none
    explanations: list[Any] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)  # of its messages, in order
    error: str | None = None


def is_url(source: str) -> bool:
    return "://" in source


def open_source(source: str) -> BinaryIO:
    """A local file, or any URL an installed fsspec filesystem reads (``s3://`` with s3fs, ...)."""
    if not is_url(source):
        return open(source, "rb")  # noqa: SIM115 - the caller closes it
    import fsspec

    return fsspec.open(source, "rb").open()


def output_name(source: str) -> str:
    """The name of a source's output under the output folder: its last path component. Raises
    ``UsageError`` where that is no name (``s3://bucket/..``, a root): it would write over, or
    above, the output folder."""
    path = source.split("://", 1)[1] if is_url(source) else source
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        raise UsageError(f"{source}: {name or '/'!r} cannot name its output; give the file or folder itself")
    return name


def describe_input(source: str, requested: str, text_column: str, text_column_given: bool) -> Input:
    """What an input is, from its first bytes as the local engine decides (``--format auto``), or as
    ``requested``. Raises ``InputError`` for one this engine cannot filter."""
    if not is_url(source):
        # Absolute as given, links not followed: a linked input keeps its own name for its output
        # and in the verdict table (resolving would name them after the link's target).
        absolute = os.path.abspath(source)
        if Path(absolute).is_dir():
            return Input(absolute, output_name(absolute), "folder")
        source = absolute
    name = output_name(source)  # before reading it: a source that names no output is a usage error
    try:
        with open_source(source) as stream:
            head = stream.read(_HEAD_BYTES)
    except (OSError, ValueError, ImportError) as error:
        raise InputError(f"{source}: cannot read it ({_reason(error)})") from None
    try:
        kind = formats.choose_format(requested, lambda: head, text_column, text_column_given)
    except formats.BinaryInput:
        kind = "binary"
    if requested == "auto" and not head:  # an empty file: an empty mbox (the local engine writes nothing)
        kind = "mbox"
    if kind not in KINDS:
        found = "binary (NUL bytes at its start)" if kind == "binary" else "plain text"
        raise InputError(f"{source}: {found}, not an mbox, a message, a mail folder or a CSV file")
    return Input(source, name, kind)


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or first_line(error)


# --------------------------------------------------------------------------- planning


def plan(index: int, item: Input, text_column: str) -> Iterator[Chunk]:
    """The input's chunks in order, the last one marked; one chunk with ``error`` set if the input
    cannot be read (after any chunks already planned: the driver then drops the input whole)."""
    try:
        yield from _PLANNERS[item.kind](index, item, text_column)
    except Exception as error:  # a reader's failure (OSError, csv.Error, a missing column) is the input's
        yield Chunk(index, 0, 0, 0, last=True, error=f"{item.source}: {_reason(error)}")


def _plan_mbox(index: int, item: Input, _text_column: str) -> Iterator[Chunk]:
    """Chunk boundaries only (byte ranges): the read stage reads and extracts them in parallel."""
    number = start = first_message = count = messages = position = 0
    with open_source(item.source) as stream:
        for raw in split_mbox(stream):
            if count == CHUNK:
                yield Chunk(index, number, first_message, count, offset=start, length=position - start)
                number, start, first_message, count = number + 1, position, messages, 0
            count += 1
            messages += is_mbox_message(raw)
            position += len(raw)
    yield Chunk(index, number, first_message, count, last=True, offset=start, length=position - start)


def _plan_folder(index: int, item: Input, _text_column: str) -> Iterator[Chunk]:
    files = formats.folder_files(Path(item.source))
    if not files:  # a Maildir with nothing in cur/ and new/: complete, with an empty folder as its output
        yield Chunk(index, 0, 0, 0, last=True)
        return
    starts = range(0, len(files), CHUNK)
    for number, first in enumerate(starts):
        paths = files[first : first + CHUNK]
        yield Chunk(index, number, first, len(paths), last=number == len(starts) - 1, paths=paths)


def _plan_csv(index: int, item: Input, text_column: str) -> Iterator[Chunk]:
    """A CSV is read here whole (rows cannot be found by byte offset): its text is a column, so
    there is nothing to extract in parallel."""
    with open_source(item.source) as binary, formats.text_stream(binary) as text:  # (the view closed too)
        read = formats.csv_items(text, text_column)
        if read is None:  # an empty file: the local engine writes nothing either
            yield Chunk(index, 0, 0, 0, last=True)
            return
        layout, items = read
        number, rows = 0, list[Item]()
        for row in items:
            if len(rows) == CHUNK:
                yield _csv_chunk(index, number, rows, layout)
                number, rows = number + 1, []
            rows.append(row)
        yield _csv_chunk(index, number, rows, layout, last=True)


def _csv_chunk(index: int, number: int, items: list[Item], layout: CsvLayout, last: bool = False) -> Chunk:
    return Chunk(
        index,
        number,
        number * CHUNK,
        len(items),
        last=last,
        rows=[row for row, _ in items],
        layout=layout,
        is_message=[True] * len(items),
        texts=[text for _, text in items if text is not None],  # (a row's text is never None)
    )


def _plan_email(index: int, item: Input, _text_column: str) -> Iterator[Chunk]:
    yield Chunk(index, 0, 0, 1, last=True)


_PLANNERS = {"mbox": _plan_mbox, "folder": _plan_folder, "csv": _plan_csv, "email": _plan_email}


# --------------------------------------------------------------------------- reading


def read(chunk: Chunk, item: Input, chars_kept: int) -> Chunk:
    """The chunk with the text the model reads of each message (cut to what the model reads, so
    that a huge message does not travel whole to the scoring workers)."""
    if chunk.error is not None or item.kind == "csv":  # a CSV's texts came with its rows
        chunk.texts = [text[:chars_kept] for text in chunk.texts]
        return chunk
    try:
        if item.kind == "mbox":
            items = list(formats.mbox_items(io.BytesIO(_mbox_bytes(chunk, item))))
        elif item.kind == "folder":
            items = [formats.folder_item(Path(item.source), relative) for relative in chunk.paths]
        else:
            items = [formats.message_item(raw) for raw in _email_bytes(item)]
    except (OSError, ValueError) as error:
        chunk.error = f"{item.source}: {_reason(error)}"
        return chunk
    chunk.is_message = [text is not None for _, text in items]
    if item.kind == "folder":
        chunk.digests = [hashlib.sha256(raw).digest() if raw is not None else b"" for (_, raw), _ in items]
    chunk.texts = [text[:chars_kept] for _, text in items if text is not None]
    return chunk


def _mbox_bytes(chunk: Chunk, item: Input) -> bytes:
    with open_source(item.source) as stream:
        stream.seek(chunk.offset)
        data = stream.read(chunk.length)
    if len(data) != chunk.length:
        raise ValueError("the file got shorter while it was read")
    return data


def _email_bytes(item: Input) -> list[bytes]:
    with open_source(item.source) as stream:
        return [stream.read()]


# --------------------------------------------------------------------------- writing


VERDICT_COLUMNS = ("source", "position", "path", "message_id", "label", "spam_probability")


def write(chunk: Chunk, item: Input, decision: Decision, target: Path) -> dict[str, list[Any]]:
    """Write the chunk's output at ``target`` (a file of its bytes; a folder's chunk: its tagged
    copies under ``target``, at their relative paths) and return its verdicts, column by column."""
    verdicts: dict[str, list[Any]] = {name: [] for name in VERDICT_COLUMNS}
    scores = iter(chunk.probabilities)
    explained = iter(chunk.explanations or [None] * len(chunk.probabilities))
    explanation: Any = None  # of the message last decided

    def verdict(raw: bytes | None, path: str | None) -> Verdict:
        nonlocal explanation
        p = next(scores)
        explanation = next(explained)
        decided = decision.verdict(p)
        position = chunk.first_message + len(verdicts["position"])
        verdicts["source"].append(item.source)
        verdicts["position"].append(position)
        # a file name that is not UTF-8 (bytes kept as surrogates) in a form the table can hold
        verdicts["path"].append(
            None
            if path is None
            else path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        )
        verdicts["message_id"].append(message_id(raw) if raw is not None else None)
        verdicts["label"].append(decided.label)
        verdicts["spam_probability"].append(p)
        return decided

    if item.kind == "folder":
        folder = formats.FolderWriter(target, decision, write_atomically)
        root = Path(item.source)
        for relative, is_message, digest in zip(chunk.paths, chunk.is_message, chunk.digests, strict=True):
            if not is_message:  # skipped when read (a link, special, gone, too large): not copied
                continue
            raw = formats.read_folder_file(root / relative)
            decided = verdict(raw, relative)
            if raw is not None and hashlib.sha256(raw).digest() == digest:  # gone or changed: not copied
                folder.tagged((relative, raw), decided, explanation)
        return verdicts
    out = io.BytesIO()
    if item.kind == "csv":
        text = formats.text_stream(out)
        if chunk.layout is not None:  # None: an empty file, nothing to write
            rows = formats.CsvWriter(text, chunk.layout)
            if chunk.number == 0:
                rows.header()
            for row in chunk.rows:
                rows.tagged(row, verdict(None, None))
        text.detach()
    else:
        raws = (
            _email_bytes(item) if item.kind == "email" else split_mbox(io.BytesIO(_mbox_bytes(chunk, item)))
        )
        mail = formats.MailWriter(out, decision)
        for raw, is_message in zip(raws, chunk.is_message, strict=True):
            if is_message:
                decided = verdict(raw, None)
                mail.tagged(raw, decided, explanation)
            else:
                mail.untagged(raw)
    write_atomically(target, out.getvalue())  # (a retried chunk writes it again)
    return verdicts


def message_id(raw: bytes) -> str | None:
    """The first Message-ID header's value, for the verdict table."""
    block = scan_headers(raw, header_start(raw), len(raw), _MAX_HEADER_FIELDS)
    value = first_values(raw, block, {b"message-id"}).get(b"message-id")
    return value.decode("utf-8", "replace") if value else None
