"""Header blocks and the X-Spam headers: find fields in raw bytes, and add or remove the spam
headers while every other byte of the message stays as it was.

Standard library only: this sits on the cold-start path of mail pipelines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

_MAX_VALUE_BYTES = 16_384  # read of one header value (Subject, Content-Type, ...)

# RFC 5322 field name: printable ASCII except ':'. 8-bit bytes are accepted too, as broken
# mailers emit them and the field is still a header to any reader. Whitespace before the colon
# is obsolete syntax that old mailers still emit. The length bound keeps a megabyte-long line
# without a colon from costing more than a bounded match.
_NAME = rb"([!-9;-~\x80-\xff]{1,998})"
FIELD_NAME = re.compile(_NAME + rb"[ \t]*:")
_FROM_FIELD = re.compile(rb"From[ \t]*:")  # a 'From:' header, not an mbox 'From ' line
# One line of a header block, its newline included: a continuation (leading space or tab), or a
# field, whose name is group 1 and whose space and colon before the value are group 2.
_HEADER_LINE = re.compile(rb"(?:[ \t]|" + _NAME + rb"([ \t]*:))[^\n]*\n?")


# --- header blocks --------------------------------------------------------------------------


class _Field(NamedTuple):  # a tuple: a message has many, and scanning is on every filter's path
    name: bytes | None  # lower-cased; None for indented lines with no field above them
    start: int  # offset of the field's first line
    value_start: int  # offset just after the colon


@dataclass(frozen=True)
class _HeaderBlock:
    fields: list[_Field]  # field i runs from fields[i].start to fields[i + 1].start or `end`
    end: int  # offset of the first byte after the header block (blank line or first body line)

    def field_end(self, index: int) -> int:
        return self.fields[index + 1].start if index + 1 < len(self.fields) else self.end


def is_blank_line(raw: bytes, pos: int, stop: int) -> bool:
    return raw.startswith(b"\n", pos, stop) or raw.startswith(b"\r\n", pos, stop)


def _find_blank_line(raw: bytes, pos: int, stop: int) -> int:
    """Offset of the first empty line at or after the line starting at `pos`, or `stop`."""
    if is_blank_line(raw, pos, stop):
        return pos
    ends = (raw.find(b"\n\n", pos, stop), raw.find(b"\n\r\n", pos, stop))
    return min((i + 1 for i in ends if i >= 0), default=stop)


def scan_headers(raw: bytes, start: int, stop: int, max_fields: int | None = None) -> _HeaderBlock:
    """The header block of the message (or MIME part) in raw[start:stop].

    The block ends at the first empty line (LF or CRLF), which is not part of it. A message with
    no empty line at all, or with body text straight after its headers, ends its block at the
    first line that is neither a field ("Name: value") nor a continuation (leading space or
    tab): that line is the first body line. This is how the header functions find where to
    stop, and how extract_text finds the body of sloppy mail.
    """
    fields: list[_Field] = []
    pos = start
    while pos < stop:
        # One C-level match per line: a continuation (group 1 empty), a field (its name), or
        # neither (a blank line or body text ends the block).
        line = _HEADER_LINE.match(raw, pos, stop)
        if line is None:
            break
        name = line.group(1)
        if name is None:
            if not fields:
                # An indented line with no field above it: keep it as a nameless field so that
                # it stays inside the block (see remove_spam_headers for why that matters).
                fields.append(_Field(None, pos, pos))
        else:
            if max_fields is not None and len(fields) >= max_fields:
                # Enough fields to know what the part is; don't walk a million more lines in
                # Python when a C-level search can find where the body starts.
                return _HeaderBlock(fields, _find_blank_line(raw, pos, stop))
            fields.append(_Field(name.lower(), pos, line.end(2)))
        pos = line.end()
    return _HeaderBlock(fields, pos)


def header_start(raw: bytes) -> int:
    """Offset where the header block starts: after the mbox 'From ' lines, if there are any.

    A message saved with its own envelope line into another mbox starts with two of them; neither
    is a header, and reading the second as one would turn the whole header block into body text.
    A 'From ' line only counts when it ends in a newline; inserting headers after an
    unterminated one would glue them onto it.
    """
    start = 0
    while raw.startswith(b"From ", start) and not _FROM_FIELD.match(raw, start):
        newline = raw.find(b"\n", start)
        if newline < 0:
            break
        start = newline + 1
    return start


def _field_value(raw: bytes, block: _HeaderBlock, index: int, limit: int | None = None) -> bytes:
    """The unfolded value of one field: line breaks of the folding dropped, outer space stripped."""
    field = block.fields[index]
    end = block.field_end(index)
    if limit is not None:
        end = min(end, field.value_start + limit)
    value = raw[field.value_start : end]
    return value.replace(b"\r", b"").replace(b"\n", b"").strip(b" \t")


def first_values(raw: bytes, block: _HeaderBlock, names: set[bytes]) -> dict[bytes, bytes]:
    """The first occurrence of each wanted field, as mail parsers use the first one too."""
    values: dict[bytes, bytes] = {}
    for index, field in enumerate(block.fields):
        if field.name in names and field.name not in values:
            values[field.name] = _field_value(raw, block, index, _MAX_VALUE_BYTES)
            if len(values) == len(names):
                break
    return values


def field_values(raw: bytes, block: _HeaderBlock, name: bytes, first: int) -> list[bytes]:
    """The values of one field where a message has it several times: the ``first`` of them and the
    last (some clients show the first, some the last; the header block's field count bounds it)."""
    found = [index for index, field in enumerate(block.fields) if field.name == name]
    chosen = found if len(found) <= first + 1 else found[:first] + found[-1:]
    return [_field_value(raw, block, index, _MAX_VALUE_BYTES) for index in chosen]


# --- X-Spam headers ---------------------------------------------------------------------------


def spam_field_names(prefix: str = "X-Spam") -> tuple[str, ...]:
    """The fields SpamAssassin writes under ``prefix``, which a verdict replaces (see verdict.py)."""
    return tuple(f"{prefix}-{field}" for field in ("Flag", "Status", "Level", "Report", "Checker-Version"))


SPAM_HEADER_NAMES: tuple[str, ...] = spam_field_names()


def _lowered(names: tuple[str, ...]) -> frozenset[bytes]:
    return frozenset(name.lower().encode("ascii") for name in names)


def remove_spam_headers(raw: bytes, prefix: str = "X-Spam") -> bytes:
    """raw without its ``prefix``-Flag / Status / Level / Report / Checker-Version fields (any
    letter case, folded lines too).

    Only whole header lines are removed; every other byte is kept. One malformed case is also
    dropped: indented lines at the very top of the header block, which belong to no field. Once
    replace_fields has put its fields above them they read as continuation lines of the last new
    field, so treating them alike here is what makes ``remove_spam_headers(tagged) ==
    remove_spam_headers(m)`` hold for all input. Real mail never starts its header block with an
    indented line.
    """
    return _drop_fields(raw, _lowered(spam_field_names(prefix)), drop_stray_lines=True)


def _drop_fields(raw: bytes, names: frozenset[bytes], drop_stray_lines: bool) -> bytes:
    start = header_start(raw)
    block = scan_headers(raw, start, len(raw))
    drop = [
        index
        for index, field in enumerate(block.fields)
        if field.name in names or (field.name is None and drop_stray_lines)
    ]
    if not drop:
        return raw
    pieces = []
    kept_from = 0
    for index in drop:
        pieces.append(raw[kept_from : block.fields[index].start])
        kept_from = block.field_end(index)
    pieces.append(raw[kept_from:])
    return b"".join(pieces)


def replace_fields(raw: bytes, removed: frozenset[bytes], fields: list[tuple[bytes, bytes]]) -> bytes:
    """raw without its fields named in ``removed`` (lower case) and with ``fields`` (name, value)
    at the top of its header block.

    The new fields go right after the mbox 'From ' line when the message starts with one, else at
    the very start, and end in the message's own line ending: CRLF when its first line ends in
    CRLF, LF otherwise. The message is never re-serialised: nothing else changes, byte for byte.
    """
    newline = raw.find(b"\n")
    eol = b"\r\n" if newline > 0 and raw[newline - 1] == 0x0D else b"\n"
    new_fields = b"".join(name + b": " + value + eol for name, value in fields)
    # The insertion point comes from raw, not from the cleaned copy: removing fields can leave
    # a 'From ' body line at the top, which must not turn into an mbox separator line.
    start = header_start(raw)
    cleaned = _drop_fields(raw, removed, drop_stray_lines=False)  # keeps raw[:start] as it is
    return cleaned[:start] + new_fields + cleaned[start:]
