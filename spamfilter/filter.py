"""The filter pipeline: read messages, classify them in batches, write them out in order.

Every format streams: memory is bounded by one batch whatever the size of the input, and every
message read is written out, in input order.
"""

from __future__ import annotations

import csv
import io
import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Full, Queue
from typing import BinaryIO, TextIO

import numpy as np

from . import __version__, interrupts
from .mail import (
    extract_text,
    insert_spam_headers,
    looks_like_email,
    looks_like_mbox,
    mail_folder_files,
    split_mbox,
)
from .runtime import Classifier

LABEL_COLUMN = "label"
PROBABILITY_COLUMN = "spam_probability"
DEFAULT_TEXT_COLUMN = "Text"
VERSION_TAG = f"spamfilter-{__version__}"
PIPELINE_SIZE_CAP = 512 * 1024  # as spamc: larger messages are classified from their beginning
CHUNK = 256  # messages per classification call: bounds memory, keeps batches full

csv.field_size_limit(1 << 28)  # whole emails in one CSV field are normal here


class FilterInputError(Exception):
    """Input the filter cannot process (a missing column, an unknown format)."""


class ClassificationError(Exception):
    """The model failed mid-run; the messages of the failed batch were written out unchanged."""


class FilterInterrupted(Exception):
    """A stop signal (Ctrl-C, SIGTERM) ended the run. Every message read was written out: those of
    the chunk being classified untagged; the rest of the input was not read."""

    def __init__(self, signum: int, summary: Summary) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.summary = summary


@dataclass
class Summary:
    messages: int = 0
    spam: int = 0
    passed_through: int = 0  # written unchanged (not a message, e.g. bytes before the first From_)
    untagged: int = 0  # messages written unchanged because the run stopped before they were classified
    seconds: float = 0.0
    provider: str = ""
    variant: str = ""  # which ONNX model of the directory ran: fp32 or int8
    on_progress: Callable[[int], None] | None = field(default=None, repr=False)  # messages so far

    @property
    def not_spam(self) -> int:
        return self.messages - self.spam

    def line(self) -> str:
        rate = self.messages / self.seconds if self.seconds > 0 else 0.0
        extra = f"; {self.untagged} written untagged" if self.untagged else ""
        extra += f"; {self.passed_through} non-message chunks passed through" if self.passed_through else ""
        return (
            f"{self.messages} messages: {self.spam} spam, {self.not_spam} not spam in {self.seconds:.2f} s "
            f"({rate:.1f}/s), {self.variant} on {self.provider}{extra}"
        )


def detect_format(head: bytes, text_column: str = DEFAULT_TEXT_COLUMN) -> str:
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


def looks_like_csv(head: bytes, text_column: str = DEFAULT_TEXT_COLUMN) -> bool:
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


IDLE_FLUSH_SECONDS = 0.25  # a slow stream's messages are classified after this long without a new one
_POLL_SECONDS = 0.1  # how often a wait for input looks for a stop request
_END = object()


def _read_ahead(items: Iterator, queue: Queue, done: threading.Event) -> None:
    """The reader thread: items into ``queue`` (bounded, so memory stays bounded), then ``_END`` with
    the error that ended the input, if any."""
    error: BaseException | None = None
    try:
        for item in items:
            if not _put(queue, (item, None), done):
                return
    except BaseException as raised:  # handed to the main thread, which raises it in order
        error = raised
    _put(queue, (_END, error), done)


def _put(queue: Queue, entry: tuple, done: threading.Event) -> bool:
    while not done.is_set():
        try:
            queue.put(entry, timeout=_POLL_SECONDS)
            return True
        except Full:
            continue
    return False


def _chunks(items: Iterable, size: int = CHUNK, flush_after: float | None = None) -> Iterator[list]:
    """Lists of ``size`` items, read on a helper thread so that this one never blocks in a read:
    a stop signal is seen within a fraction of a second even while a terminal or a slow pipe sends
    nothing. A shorter list (possibly empty) as soon as a stop is requested, so that what was read
    goes out (untagged, see ``_classify``) at once; with ``flush_after``, also after that many
    seconds without a new item, so that a slow stream's messages are not held back for a full chunk."""
    queue: Queue = Queue(maxsize=size)
    done = threading.Event()
    reader = threading.Thread(
        target=_read_ahead, args=(iter(items), queue, done), name="spamfilter-reader", daemon=True
    )
    reader.start()
    batch: list = []
    waited = 0.0
    try:
        while True:
            if interrupts.requested() is not None:
                yield batch  # what was read; the caller's model call raises the stop
                batch = []
                continue
            try:
                item, error = queue.get(timeout=_POLL_SECONDS)
            except Empty:
                waited += _POLL_SECONDS
                if batch and flush_after is not None and waited >= flush_after:
                    yield batch
                    batch, waited = [], 0.0
                continue
            waited = 0.0
            if item is _END:
                if batch:
                    yield batch
                if error is not None:
                    raise error
                return
            batch.append(item)
            if len(batch) == size:
                yield batch
                batch = []
    finally:
        done.set()


def _classify(classifier: Classifier, texts: list[str]) -> np.ndarray:
    """P(spam) for one chunk; the only step a stop signal cuts short (raising ``Interrupted``)."""
    with interrupts.interruptible():
        return classifier.spam_probability(texts)


def _stopped(error: BaseException, summary: Summary, untagged: int, what: str) -> Exception:
    """The exception that ends a run whose current chunk (``untagged`` messages) went out as it came
    in; ``what`` says what became of it."""
    summary.untagged += untagged
    if isinstance(error, interrupts.Interrupted):
        return FilterInterrupted(error.signum, summary)
    return ClassificationError(f"classification failed; {what}: {error}")


def _stop_if_requested(summary: Summary) -> None:
    """Between chunks, when everything read has been written: end the run on a stop request."""
    signum = interrupts.requested()
    if signum is not None:
        raise FilterInterrupted(signum, summary)


def _summary(classifier: Classifier, on_progress: Callable[[int], None] | None) -> Summary:
    return Summary(provider=classifier.provider, variant=classifier.variant, on_progress=on_progress)


def _tally(summary: Summary, probabilities: Iterable[float], threshold: float) -> list[bool]:
    verdicts = [p >= threshold for p in probabilities]
    summary.messages += len(verdicts)
    summary.spam += sum(verdicts)
    if summary.on_progress is not None:
        summary.on_progress(summary.messages)
    return verdicts


def filter_csv(
    source: TextIO,
    sink: TextIO,
    classifier: Classifier,
    threshold: float,
    text_column: str = DEFAULT_TEXT_COLUMN,
    on_progress: Callable[[int], None] | None = None,
    flush_after: float | None = None,
) -> Summary:
    """CSV in, the same CSV out with ``label`` and ``spam_probability`` set on every row."""
    summary = _summary(classifier, on_progress)
    reader = csv.reader(source)
    header = next(reader, None)
    if header is None:
        return summary
    column = _find_column(header, text_column)
    out_header = list(header)
    for name in (LABEL_COLUMN, PROBABILITY_COLUMN):
        if name not in out_header:
            out_header.append(name)
    label_at, probability_at = out_header.index(LABEL_COLUMN), out_header.index(PROBABILITY_COLUMN)
    # RFC 4180 line ends: with CRLF as the terminator a cell holding a lone CR is quoted too.
    writer = csv.writer(sink, lineterminator="\r\n")
    writer.writerow(out_header)
    for rows in _chunks(reader, flush_after=flush_after):
        texts = [row[column] if column < len(row) else "" for row in rows]
        try:
            probabilities = _classify(classifier, texts)
        except (Exception, interrupts.Interrupted) as error:
            writer.writerows(
                row + [""] * (len(out_header) - len(row)) for row in rows
            )  # unlabelled, not lost
            sink.flush()
            raise _stopped(error, summary, len(rows), f"{len(rows)} rows written unlabelled") from error
        for row, p, spam in zip(rows, probabilities, _tally(summary, probabilities, threshold), strict=True):
            row = row + [""] * (len(out_header) - len(row))
            row[label_at] = "spam" if spam else "not spam"
            row[probability_at] = f"{p:.6f}"
            writer.writerow(row)
        sink.flush()
        _stop_if_requested(summary)
    return summary


def _find_column(header: list[str], wanted: str) -> int:
    cleaned = [h.strip().lstrip("\ufeff") for h in header]
    if wanted in cleaned:
        return cleaned.index(wanted)
    lowered = [h.lower() for h in cleaned]
    if wanted.lower() in lowered:
        return lowered.index(wanted.lower())
    raise FilterInputError(
        f"no column {wanted!r} in the CSV header ({', '.join(cleaned)}); use --text-column"
    )


def filter_text(
    source: TextIO,
    sink: TextIO,
    classifier: Classifier,
    threshold: float,
    on_progress: Callable[[int], None] | None = None,
    flush_after: float | None = None,
) -> Summary:
    """One message per line in; ``label<TAB>spam_probability<TAB>line`` out."""
    summary = _summary(classifier, on_progress)
    for lines in _chunks(source, flush_after=flush_after):
        texts = [line.rstrip("\r\n") for line in lines]
        try:
            probabilities = _classify(classifier, texts)
        except (Exception, interrupts.Interrupted) as error:
            sink.writelines(f"\t\t{text}\n" for text in texts)  # unlabelled, not lost
            sink.flush()
            raise _stopped(error, summary, len(texts), f"{len(texts)} lines written unlabelled") from error
        for text, p, spam in zip(
            texts, probabilities, _tally(summary, probabilities, threshold), strict=True
        ):
            sink.write(f"{'spam' if spam else 'not spam'}\t{p:.6f}\t{text}\n")
        sink.flush()
        _stop_if_requested(summary)
    return summary


def filter_mbox(
    source: BinaryIO,
    sink: BinaryIO,
    classifier: Classifier,
    threshold: float,
    spam_sink: BinaryIO | None = None,
    on_progress: Callable[[int], None] | None = None,
    flush_after: float | None = None,
) -> Summary:
    """mbox in, mbox out: each message's bytes with the two spam headers added, in order.

    With ``spam_sink`` spam goes there and the rest to ``sink`` (``--spam-output``).
    """
    summary = _summary(classifier, on_progress)
    for messages in _chunks(split_mbox(source), flush_after=flush_after):
        mails = [m for m in messages if m.startswith(b"From ")]
        try:
            scores = _classify(classifier, [extract_text(m) for m in mails])
        except (Exception, interrupts.Interrupted) as error:
            # Messages already read are never lost: they go out untagged before the run stops.
            for raw in messages:
                sink.write(raw)
            sink.flush()
            raise _stopped(error, summary, len(mails), f"{len(mails)} messages passed untagged") from error
        verdicts = iter(zip(scores, _tally(summary, scores, threshold), strict=True))
        for raw in messages:
            if not raw.startswith(b"From "):
                sink.write(raw)  # bytes before the first From_ line: not a message, kept as they are
                summary.passed_through += 1
                continue
            p, spam = next(verdicts)
            target = spam_sink if (spam and spam_sink is not None) else sink
            target.write(insert_spam_headers(raw, spam, float(p), threshold, VERSION_TAG))
        sink.flush()
        if spam_sink is not None:
            spam_sink.flush()
        _stop_if_requested(summary)
    return summary


def filter_folder(
    source: Path,
    target: Path,
    classifier: Classifier,
    threshold: float,
    on_progress: Callable[[int], None] | None = None,
) -> Summary:
    """A Maildir or a folder of .eml files in; the same files, tagged, under ``target`` with the
    same relative paths (the input folder is never changed)."""
    summary = _summary(classifier, on_progress)
    try:
        files = mail_folder_files(source)
    except ValueError as error:
        raise FilterInputError(str(error)) from None
    for paths in _chunks(files):
        raws = [path.read_bytes() for path in paths]
        try:
            probabilities = _classify(classifier, [extract_text(raw) for raw in raws])
        except (Exception, interrupts.Interrupted) as error:
            # the input folder is never changed: its unclassified files are simply not copied
            raise _stopped(error, summary, 0, f"{len(raws)} files not copied") from error
        for path, raw, p, spam in zip(
            paths, raws, probabilities, _tally(summary, probabilities, threshold), strict=True
        ):
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(insert_spam_headers(raw, spam, float(p), threshold, VERSION_TAG))
        _stop_if_requested(summary)
    return summary


def classify_email(
    raw: bytes, classifier: Classifier, threshold: float, size_cap: int = PIPELINE_SIZE_CAP
) -> tuple[bytes, bool, float]:
    """One RFC 822 message: (message with headers, is spam, P(spam)). Larger than ``size_cap``:
    classified from its first ``size_cap`` bytes; the whole message is still written out."""
    p = float(_classify(classifier, [extract_text(raw[:size_cap])])[0])
    spam = p >= threshold
    return insert_spam_headers(raw, spam, p, threshold, VERSION_TAG), spam, p


def timed(summary: Summary, started: float) -> Summary:
    summary.seconds = time.perf_counter() - started
    return summary
