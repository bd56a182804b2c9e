"""The filter pipeline: read messages, classify them in chunks, write every one out, in order; and
one message tagged fail-safely (pipeline mode now, the service next).

Every format streams: memory is bounded by one chunk whatever the size of the input, and every
message read is written out, in input order, tagged or (when the run stops or the model fails)
as it came in. How each format is read and written is ``formats``' (shared with the Ray engine);
this module is the streaming around it.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TextIO

import numpy as np

from . import interrupts
from .errors import EX_TEMPFAIL, ClassificationError, SpamfilterError, UsageError, first_line

# DEFAULT_TEXT_COLUMN, mbox_items and message_text are also named here, where the Ray engine, the
# service, learning and the benchmarks import them.
from .formats import DEFAULT_TEXT_COLUMN as DEFAULT_TEXT_COLUMN
from .formats import (
    FORMATS,
    PIPELINE_SIZE_CAP,
    CsvWriter,
    FolderWriter,
    Item,
    MailWriter,
    TextWriter,
    csv_items,
    folder_files,
    folder_item,
    text_items,
    text_stream,
)
from .formats import mbox_items as mbox_items
from .formats import message_text as message_text
from .verdict import Decision, Verdict

if TYPE_CHECKING:
    from .explain import Explanation

CHUNK = 256  # messages per classification call: bounds memory, keeps batches full
IDLE_FLUSH_SECONDS = 0.25  # a slow stream's messages are classified after this long without a new one
_POLL_SECONDS = 0.1  # how often a wait for input looks for a stop request


class Scorer(Protocol):
    """What the pipeline needs of a classifier (``runtime.Classifier``, or a test's stand-in)."""

    @property
    def provider(self) -> str: ...

    @property
    def variant(self) -> str: ...

    @property
    def threshold(self) -> float: ...

    def spam_probability(self, texts: Sequence[str]) -> np.ndarray: ...


class DeliveryError(SpamfilterError):
    """Pipeline mode could not write the message out: the mail system must keep it and retry."""

    exit_code = EX_TEMPFAIL


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
    windows: int = 0  # model rows run: more than the messages where long ones are read in windows

    @property
    def not_spam(self) -> int:
        return self.messages - self.spam

    def line(self) -> str:
        rate = self.messages / self.seconds if self.seconds > 0 else 0.0
        extra = f"; {self.untagged} written untagged" if self.untagged else ""
        extra += f"; {self.passed_through} non-message chunks passed through" if self.passed_through else ""
        extra += f"; {self.windows} windows read" if self.windows > self.messages else ""
        return (
            f"{self.messages} messages: {self.spam} spam, {self.not_spam} not spam in {self.seconds:.2f} s "
            f"({rate:.1f}/s), {self.variant} on {self.provider}{extra}"
        )


def timed(summary: Summary, started: float) -> Summary:
    summary.seconds = time.perf_counter() - started
    return summary


# --------------------------------------------------------------------------- reading ahead


_END = object()


def _read_ahead(items: Iterator, queue: Queue, room: threading.Semaphore, done: threading.Event) -> None:
    """The reader thread: an item is read only when the queue has room for it (memory stays
    bounded) and is put there at once, so that every item read is in the queue; then ``_END`` with
    the error that ended the input, if any."""
    error: BaseException | None = None
    try:
        while True:
            while not room.acquire(timeout=_POLL_SECONDS):
                if done.is_set():
                    return
            if done.is_set():
                return
            try:
                item = next(items)
            except StopIteration:
                break
            queue.put((item, None))  # unbounded: never blocks
    except BaseException as raised:  # handed to the main thread, which raises it in order
        error = raised
    queue.put((_END, error))


def _chunks(items: Iterable, size: int = CHUNK, flush_after: float | None = None) -> Iterator[list]:
    """Lists of ``size`` items, read (and reduced to text) on a helper thread, so that this one
    never blocks in a read: a stop signal is seen within a fraction of a second even while a
    terminal or a slow pipe sends nothing, and reading overlaps the model calls. As soon as a stop
    is requested, everything read so far comes as one last list (possibly empty; the caller's
    model call then raises the stop, and the list goes out untagged); with ``flush_after``, a list
    also comes after that many seconds without a new item, so that a slow stream's messages are not
    held back for a full chunk."""
    queue: Queue = Queue()
    room = threading.Semaphore(size)
    done = threading.Event()
    reader = threading.Thread(
        target=_read_ahead, args=(iter(items), queue, room, done), name="spamfilter-reader", daemon=True
    )
    reader.start()
    batch: list = []
    waited = 0.0
    try:
        while True:
            if interrupts.requested() is not None:
                yield batch + _everything_read(queue, reader, done)
                return
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
            room.release()
            batch.append(item)
            if len(batch) == size:
                yield batch
                batch = []
    finally:
        done.set()


def _everything_read(queue: Queue, reader: threading.Thread, done: threading.Event) -> list:
    """On a stop: the items the reader thread has read and not yet handed over. It reads no more
    once ``done`` is set; an item it is still putting away arrives within moments, while a read
    still waiting for input has read no whole item."""
    done.set()
    reader.join(timeout=0.5)
    items: list = []
    while True:
        try:
            item, _ = queue.get_nowait()
        except Empty:
            return items
        if item is not _END:
            items.append(item)


# --------------------------------------------------------------------------- the chunk loop


def _classify(classifier: Scorer, texts: list[str]) -> np.ndarray:
    """P(spam) for one chunk; the only step a stop signal cuts short (raising ``Interrupted``)."""
    with interrupts.interruptible():
        probabilities = classifier.spam_probability(texts)
    if not np.all(np.isfinite(probabilities)):  # a damaged head (NaN): each verdict was a traceback
        raise ValueError("the model answered a P(spam) that is not a number")
    return probabilities


@dataclass
class _Format:
    """How one format is read and written in the chunk loop: ``items`` are ``formats.Item``s (a
    text of None is not a message, written as it came); the writers are the format's own."""

    items: Iterable[Item]
    write_tagged: Callable[..., object]  # (item, verdict), plus the explanation where ``explains``
    write_untagged: Callable[[Any], object]  # as it came in: when the run stops before classifying it
    flush: Callable[[], None]
    untagged_note: str  # what became of a failed chunk's messages: "messages passed untagged"
    keeps_failed_chunk: bool = True  # False: the failed chunk is not written (folder mode)
    explains: bool = False  # True: a format that writes headers (mbox, folder) takes explanations


def _run(
    fmt: _Format,
    classifier: Scorer,
    decision: Decision,
    on_progress: Callable[[int], None] | None,
    flush_after: float | None,
) -> Summary:
    """The one chunk loop of every format: classify a chunk, write it out in order, then stop if
    asked to. A chunk whose model call fails or is interrupted goes out as it came in."""
    summary = Summary(provider=classifier.provider, variant=classifier.variant)
    windows_before = getattr(classifier, "windows_scored", 0)  # a Classifier counts its windows
    for chunk in _chunks(fmt.items, flush_after=flush_after):
        texts = [text for _, text in chunk if text is not None]
        try:
            probabilities = _classify(classifier, texts)
        except (Exception, interrupts.Interrupted) as error:
            if fmt.keeps_failed_chunk:
                for item, _ in chunk:
                    fmt.write_untagged(item)  # never lost
                fmt.flush()
                summary.untagged += len(texts)
            note = f"{len(texts)} {fmt.untagged_note}"
            if isinstance(error, interrupts.Interrupted):
                raise FilterInterrupted(error.signum, summary) from error
            raise ClassificationError(f"classification failed; {note}: {first_line(error)}") from error
        verdicts = [decision.verdict(float(p)) for p in probabilities]
        summary.messages += len(verdicts)
        summary.spam += sum(verdict.spam for verdict in verdicts)
        summary.windows = getattr(classifier, "windows_scored", 0) - windows_before
        scored = iter(verdicts)
        for item, text in chunk:
            if text is None:
                fmt.write_untagged(item)
                summary.passed_through += 1
            elif fmt.explains:
                verdict = next(scored)
                fmt.write_tagged(item, verdict, explanation_for(classifier, decision, verdict, text))
            else:
                fmt.write_tagged(item, next(scored))
        fmt.flush()
        if on_progress is not None:
            on_progress(summary.messages)
        signum = interrupts.requested()  # between chunks everything read has been written
        if signum is not None:
            raise FilterInterrupted(signum, summary)
    return summary


# --------------------------------------------------------------------------- the formats


def filter_mbox(
    source: BinaryIO,
    sink: BinaryIO,
    classifier: Scorer,
    decision: Decision,
    spam_sink: BinaryIO | None = None,
    on_progress: Callable[[int], None] | None = None,
    flush_after: float | None = None,
) -> Summary:
    """mbox in, mbox out: each message's bytes with the two spam headers added, in order.

    With ``spam_sink`` spam goes there and the rest to ``sink`` (``--spam-output``).
    """
    out = MailWriter(sink, decision, spam_sink)
    fmt = _Format(
        mbox_items(source), out.tagged, out.untagged, out.flush, "messages passed untagged", explains=True
    )
    return _run(fmt, classifier, decision, on_progress, flush_after)


def filter_csv(
    source: TextIO,
    sink: TextIO,
    classifier: Scorer,
    decision: Decision,
    text_column: str = DEFAULT_TEXT_COLUMN,
    on_progress: Callable[[int], None] | None = None,
    flush_after: float | None = None,
) -> Summary:
    """CSV in, the same CSV out with ``label`` and ``spam_probability`` set on every row."""
    read = csv_items(source, text_column)
    if read is None:
        return Summary(provider=classifier.provider, variant=classifier.variant)
    layout, items = read
    out = CsvWriter(sink, layout)
    out.header()
    fmt = _Format(items, out.tagged, out.untagged, out.flush, "rows written unlabelled")
    return _run(fmt, classifier, decision, on_progress, flush_after)


def filter_text(
    source: TextIO,
    sink: TextIO,
    classifier: Scorer,
    decision: Decision,
    on_progress: Callable[[int], None] | None = None,
    flush_after: float | None = None,
) -> Summary:
    """One message per line in; ``label<TAB>spam_probability<TAB>line`` out."""
    out = TextWriter(sink)
    fmt = _Format(text_items(source), out.tagged, out.untagged, out.flush, "lines written unlabelled")
    return _run(fmt, classifier, decision, on_progress, flush_after)


def filter_stream(
    fmt: str,
    source: BinaryIO,
    sink: BinaryIO,
    classifier: Scorer,
    decision: Decision,
    *,
    text_column: str = DEFAULT_TEXT_COLUMN,
    spam_sink: BinaryIO | None = None,
    on_progress: Callable[[int], None] | None = None,
    flush_after: float | None = None,
) -> Summary:
    """A byte stream of ``fmt`` (``mbox``, ``csv`` or ``text``) in, the tagged stream out."""
    if fmt == "mbox":
        return filter_mbox(source, sink, classifier, decision, spam_sink, on_progress, flush_after)
    if spam_sink is not None:
        raise UsageError("only mbox output can be split (--spam-output)")
    if fmt not in ("csv", "text"):
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    text_in, text_out = text_stream(source), text_stream(sink)
    try:
        if fmt == "csv":
            return filter_csv(text_in, text_out, classifier, decision, text_column, on_progress, flush_after)
        return filter_text(text_in, text_out, classifier, decision, on_progress, flush_after)
    finally:
        text_out.flush()
        # Detach so that the wrappers never close the streams underneath their owner. After a stop
        # the reader thread may still wait in a read holding the input's lock: that one is left be.
        if interrupts.requested() is None:
            text_in.detach()
        text_out.detach()


def filter_folder(
    source: Path,
    target: Path,
    classifier: Scorer,
    decision: Decision,
    on_progress: Callable[[int], None] | None = None,
) -> Summary:
    """A Maildir or a folder of .eml files in; the same files, tagged, under ``target`` with the
    same relative paths (the input folder is never changed; the files of a chunk whose
    classification failed are not copied)."""
    resolved_source, resolved_target = source.resolve(), target.resolve()
    if resolved_target == resolved_source or resolved_target.is_relative_to(resolved_source):
        raise UsageError("the output folder must be outside the input folder")
    try:
        files = folder_files(source)
    except ValueError as error:
        raise UsageError(str(error)) from None
    out = FolderWriter(target, decision)
    fmt = _Format(
        (folder_item(source, relative) for relative in files),
        out.tagged,
        lambda item: None,
        lambda: None,
        "files not copied",
        keeps_failed_chunk=False,
        explains=True,
    )
    return _run(fmt, classifier, decision, on_progress, None)


# --------------------------------------------------------------------------- one message


@dataclass(frozen=True)
class Tagged:
    """What became of one message: ``message`` is what goes out (tagged, or as it came in)."""

    message: bytes
    verdict: Verdict | None = None  # None: not classified, see ``error``
    error: str | None = None

    @property
    def spam(self) -> bool | None:
        return None if self.verdict is None else self.verdict.spam

    @property
    def probability(self) -> float | None:
        return None if self.verdict is None else self.verdict.probability

    def exit_code(self, strict: bool = False, verdict_exit: bool = False) -> int:
        """spamc's convention: 0, or 75 (retry later) for a failure with ``strict``; with
        ``verdict_exit`` 1 for spam."""
        if self.error is not None:
            return EX_TEMPFAIL if strict else 0
        return 1 if (verdict_exit and self.spam) else 0


def tag_message(
    raw: bytes,
    load: Callable[[], Scorer],
    decision: Decision | None = None,
    size_cap: int = PIPELINE_SIZE_CAP,
) -> Tagged:
    """One RFC 822 message, fail-safe: never raises (a stop signal included); on any failure the
    message comes back unchanged with the reason. ``load`` gives the classifier (loading it is part
    of what may fail); ``decision`` is bound to its threshold (default: the model's own, default
    headers). A message over ``size_cap`` bytes is classified from its beginning and written out
    whole."""
    if not raw.strip():
        return Tagged(raw, error=EMPTY_MESSAGE)
    try:
        classifier = load()
        bound = (decision or Decision()).for_model(classifier.threshold)
        text = message_text(raw, size_cap)
        p = float(_classify(classifier, [text])[0])
        explanation = explanation_for(classifier, bound, bound.verdict(p), text)
    except interrupts.Interrupted as stop:
        return Tagged(raw, error=f"interrupted by {stop}")
    except Exception as error:  # fail-safe: the message is never lost
        return Tagged(raw, error=first_line(error))
    return tagged_message(raw, p, bound, explanation)


EMPTY_MESSAGE = "empty input: no message to tag"


def tagged_message(
    raw: bytes, probability: float, decision: Decision, explanation: Explanation | None = None
) -> Tagged:
    """One classified message with its headers: the same bytes wherever it was classified (the
    Report field where the decision explains its verdict and ``explanation`` is given)."""
    verdict = decision.verdict(probability)
    return Tagged(decision.tag(raw, verdict, explanation), verdict)


def explanation_for(
    classifier: Any, decision: Decision, verdict: Verdict, text: str, user: str | None = None
) -> Explanation | None:
    """The explanation of one message's verdict where the decision's policy asks for one, else
    None. One message per call, so that its phrases and effects do not depend on what else was
    in the batch: filter, pipeline mode, the service and the Ray engine write the same bytes.
    The cost: tens of times the message's classification (benchmarks/bench_explain.py)."""
    if not decision.explains(verdict):
        return None
    from .explain import explain_batch  # the explanation's code only where one is asked for

    try:
        return explain_batch(classifier, [text], threshold=verdict.threshold, users=[user])[0]
    except Exception:  # an explanation is an extra: its failure never costs the message its verdict
        return None


def deliver(sink: BinaryIO, data: bytes) -> None:
    """Write pipeline mode's message. A failure would lose it: ``DeliveryError`` (exit 75) makes
    the mail system keep it and retry. A reader that went away raises ``BrokenPipeError``.

    A real file is written with ``os.write``, past Python's buffer: a write that fails leaves
    nothing behind for a later flush to fail on again (and turn exit 75 into another code)."""
    try:
        sink.flush()
        try:
            descriptor = sink.fileno()
        except (OSError, ValueError, io.UnsupportedOperation):  # an in-memory stream
            sink.write(data)
            sink.flush()
            return
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    except BrokenPipeError:
        raise
    except OSError as error:
        raise DeliveryError(
            f"cannot write the message ({error.strerror or error}); exit 75 to retry"
        ) from None
