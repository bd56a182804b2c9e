"""Labelled messages as plain lists, for ``eval`` and training alike: the UCI SMS file, CSV/TSV
files with a label and a text column, and spam / ham mail sources (mailboxes, folders, tar archives).

Standard library only, on purpose: ``eval`` runs in the base install (onnxruntime, no torch, no
pandas). :mod:`spamfilter.data` builds its DataFrames from these readers, so there is one parser.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from .errors import DataError, UsageError, first_line
from .mail import describe_skipped, extract_text, iter_mail_source

LABEL_WORDS = {"ham": 0, "not spam": 0, "0": 0, "spam": 1, "1": 1}
LABEL_COLUMNS = ("label", "labels", "class", "category")
TEXT_COLUMNS = ("text", "message", "body", "content")

csv.field_size_limit(max(csv.field_size_limit(), 1 << 28))  # whole emails in one CSV field are normal


class LabelledTexts(NamedTuple):
    """Messages and their labels (0 not spam, 1 spam), in the order of the source."""

    texts: list[str]
    labels: list[int]


def read_labelled_texts(path: Path) -> LabelledTexts:
    """Messages from the UCI file (``ham<TAB>text`` per line, no header) or from a CSV/TSV file
    with a header that names a label and a text column (any case; labels ham / spam / not spam /
    0 / 1).

    The UCI file is read without quoting: its texts contain stray double quotes that CSV quoting
    would use to merge lines, so all 5,574 messages are kept. Blank lines are skipped; bytes that
    are not UTF-8 are replaced. Every failure is a :class:`DataError` with a one-line message, but for
    a header without a label or a text column: a :class:`UsageError`.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
            first_line = handle.readline()
            handle.seek(0)
            first_field = first_line.split("\t", 1)[0].strip().lower()
            if "\t" in first_line and first_field in ("ham", "spam"):
                pairs = list(_uci_rows(handle, path))
            else:
                sep = "\t" if first_line.count("\t") > first_line.count(",") else ","
                pairs = list(_header_rows(handle, path, sep))
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    except csv.Error as error:
        raise DataError(f"cannot parse {path}: {str(error).splitlines()[0]}") from None
    texts, labels = [], []
    for label, text in pairs:
        number = LABEL_WORDS.get(label.strip().lower())
        if number is None:
            raise DataError(f"{path}: unknown label {label!r} (use spam / ham / not spam / 1 / 0)")
        labels.append(number)
        texts.append(text)
    return LabelledTexts(texts, labels)


def _uci_rows(handle: Iterable[str], path: Path) -> Iterator[tuple[str, str]]:
    """``label<TAB>text`` lines; quotes are ordinary characters."""
    reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
    for row in reader:
        if not row:
            continue
        if len(row) > 2:
            raise DataError(f"cannot parse {path}: line {reader.line_num} has {len(row)} fields, expected 2")
        yield row[0], row[1] if len(row) == 2 else ""


def _header_rows(handle: Iterable[str], path: Path, sep: str) -> Iterator[tuple[str, str]]:
    """(label, text) of a CSV/TSV file whose header names the two columns; other columns are ignored."""
    reader = csv.reader(handle, delimiter=sep)
    header = next((row for row in reader if row), None)
    if header is None:
        raise DataError(f"{path}: empty; needs a header with a label column and a text column")
    by_lower: dict[str, int] = {}
    for index, name in enumerate(header):
        by_lower.setdefault(name.strip().lower(), index)
    label = next((by_lower[n] for n in LABEL_COLUMNS if n in by_lower), None)
    text = next((by_lower[n] for n in TEXT_COLUMNS if n in by_lower), None)
    if label is None or text is None:
        # a usage error (exit 2), as filter's missing text column: the file is fine, the columns named wrong
        raise UsageError(f"{path}: needs a label column and a text column; found {header}")
    for row in reader:
        if not row:
            continue
        if len(row) > len(header) or max(label, text) >= len(row):  # as filter refuses them
            raise DataError(
                f"cannot parse {path}: line {reader.line_num} has {len(row)} fields, the header {len(header)}"
            )
        yield row[label], row[text]


def read_mail_texts(
    spam: Iterable[Path], ham: Iterable[Path], warn: Callable[[str], None] | None = None
) -> LabelledTexts:
    """Messages from spam and ham mail sources (mbox, Maildir, a folder of message files, or a
    tar archive of them: see :func:`spamfilter.mail.iter_mail_source`), spam first, each reduced
    to the text the filter sees (:func:`spamfilter.mail.extract_text`, the same function).

    ``warn`` gets one line per source with files that were skipped (not a message, too large, a
    link...), and one line when the same message was given as both spam and ham: every copy of
    it is then dropped from both classes (see :func:`message_key` for what counts as the same).
    Every failure, a corrupt or truncated archive included, is a :class:`DataError`.
    """
    texts: list[str] = []
    labels: list[int] = []
    keys: list[bytes] = []
    for label, paths in ((1, spam), (0, ham)):
        for path in paths:
            skipped: Counter[str] = Counter()
            try:
                for raw in iter_mail_source(Path(path), skipped):
                    keys.append(message_key(raw))
                    texts.append(extract_text(raw))
                    labels.append(label)
            except (OSError, ValueError) as error:
                raise DataError(f"cannot read mail from {path}: {first_line(error)}") from None
            if sum(skipped.values()) and warn is not None:
                warn(f"{path}: {describe_skipped(skipped)}")
    spam_keys = {key for key, label in zip(keys, labels, strict=True) if label == 1}
    both = {key for key, label in zip(keys, labels, strict=True) if label == 0 and key in spam_keys}
    if not both:
        return LabelledTexts(texts, labels)
    keep = [key not in both for key in keys]
    dropped = Counter(label for label, kept in zip(labels, keep, strict=True) if not kept)
    if warn is not None:
        warn(
            f"{len(both)} {'message was' if len(both) == 1 else 'messages were'} given as both spam and ham: "
            f"dropped from both classes ({dropped[1]} spam and {dropped[0]} ham copies)"
        )
    return LabelledTexts(
        [text for text, kept in zip(texts, keep, strict=True) if kept],
        [label for label, kept in zip(labels, keep, strict=True) if kept],
    )


_X_SPAM_FIELD = re.compile(rb"x-spam-[!-9;-~]*[ \t]*:", re.IGNORECASE)


def message_key(raw: bytes) -> bytes:
    """What makes two messages "the same" across classes: the SHA-256 of the bytes without the mbox
    'From ' line (its envelope date differs between two mailboxes holding one message), without
    any X-Spam-* header field (SpamAssassin's and this filter's verdicts, added after delivery),
    with LF line ends and without trailing blank lines (an mbox keeps one before the next 'From ')."""
    data = raw.replace(b"\r\n", b"\n")
    if data.startswith(b"From ") and b"\n" in data and not re.match(rb"From[ \t]*:", data):
        data = data.split(b"\n", 1)[1]
    head, separator, body = data.partition(b"\n\n")
    kept: list[bytes] = []
    dropping = False
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = _X_SPAM_FIELD.match(line) is not None
        if not dropping:
            kept.append(line)
    data = b"\n".join(kept) + separator + body
    return hashlib.sha256(data.rstrip(b"\n")).digest()
