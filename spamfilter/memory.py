"""A memory of the mail users corrected: near-duplicates of a reported spam or ham (no torch).

Statistical filters learn a campaign from one reported copy; the model's head, retrained on the
corrections, moves a few hundred weights for all mail at once. rspamd's fuzzy storage, Razor and
Pyzor remember reported mail instead, and so does this module: every correction kept (``learn``,
spamd's TELL, a user's own) leaves a sketch of its text here, and every message scored after it
is compared with the sketches (``bench_replay``'s memory rows, RESULTS.md section 38).

- A text's **shingles** are its runs of ``SHINGLE_WORDS`` consecutive words (lower case), each
  hashed to 64 bits the same way in every process and on every machine.
- A correction's **sketch** is the ``SKETCH_SIZE`` smallest of its shingles' hashes (a uniform
  sample of them: the hashes are mixed) and how many shingles it had.
- **Spam evidence**: the largest share of a reported spam's sketch found among the message's
  shingles (containment: a spam padded with any amount of ham, before, after or between its
  lines, still contains all of its offer). Only the spam's own runs count: one that a reported
  ham holds too (a mailing list's footer) does not, and a spam of fewer than
  ``MIN_SPAM_SHINGLES`` shingles is not used (twelve words were contained in too much mail).
- **Ham evidence**: the largest Jaccard resemblance to a reported ham (resemblance, not
  containment: a spam that carries a known newsletter whole resembles it much less than the
  newsletter's next issue does).

The message's spam log-odds rise by ``WEIGHT * max(0, spam - ham)``: +10 for a copy of a reported
spam, however much ham surrounds it, less as far as the message resembles a reported ham. The
memory never lowers a verdict: with a memory of the training mail, a version that did (``WEIGHT *
(spam - ham)``) let a spam behind a preamble of known ham through 16-17 points more often on two
of three splits (RESULTS.md section 38), and a sender who knows a newsletter someone filed as ham
could do the same. A ham correction counts through the retrained head, and here against a reported
spam's evidence. What it does not stop: a spam reworded in every five words is left to the model.

Layout: ``memory.npz`` beside the corrections it remembers (``corrections/`` of the model
directory, ``users/<key>/corrections/`` of a user), rewritten whenever a correction is kept or
forgotten; bounded by the corrections' own quotas.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .mail.mailboxes import read_folder_file
from .mail.text import TEXT_CHARS_READ
from .replacefile import replace_file

MEMORY_FILE = "memory.npz"
TRAINING_KEY = "train-"  # the keys of train --remember-training's entries (a correction's: a digest)
SHINGLE_WORDS = 5
SKETCH_SIZE = 64  # hashes kept per correction (measured: no loss against all of a message's)
MIN_SPAM_SHINGLES = 16  # a reported spam of fewer shingles (20 words) is not used as evidence
WEIGHT = 10.0  # log-odds per unit of evidence (RESULTS.md section 38)
MAX_ENTRIES = 100_000  # corrections one memory file may hold (the quotas keep it far below)
MAX_MEMORY_FILE_BYTES = 64 << 20
_WORD = re.compile(r"\w+")
_MULTIPLIER = np.uint64(0x100000001B3)  # a run's hash: its word hashes combined in order


def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8", "replace"), digest_size=8).digest(), "little")


# Words recur from message to message: their hashes are kept (two thirds of a message's cost was
# hashing its words again). Cleared when full, so that mail of made-up words cannot grow it.
_KNOWN_WORDS: dict[str, int] = {}
MAX_KNOWN_WORDS = 200_000


def _word_hashes(words: list[str]) -> np.ndarray:
    known = _KNOWN_WORDS
    if len(known) > MAX_KNOWN_WORDS:
        known.clear()
    mine: dict[str, int] = {}  # this message's own: another thread may clear the shared one meanwhile
    for word in set(words):
        value = known.get(word)
        if value is None:
            value = known[word] = _word_hash(word)
        mine[word] = value
    return np.fromiter((mine[word] for word in words), dtype=np.uint64, count=len(words))


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: the run hashes spread uniformly, so the smallest are a fair sample."""
    z = values ^ (values >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def shingles(text: str) -> np.ndarray:
    """The sorted unique hashes (uint64) of the text's runs of ``SHINGLE_WORDS`` words, read from its
    first ``TEXT_CHARS_READ`` characters (what the filter reads of a message); a shorter text's one
    run of all its words; none for a text without words."""
    words = _WORD.findall(text[:TEXT_CHARS_READ].lower())
    if not words:
        return np.empty(0, dtype=np.uint64)
    hashes = _word_hashes(words)
    runs = max(1, len(words) - SHINGLE_WORDS + 1)
    combined = np.zeros(runs, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for offset in range(min(SHINGLE_WORDS, len(words))):
            combined = combined * _MULTIPLIER + hashes[offset : offset + runs]
        return np.unique(_mix(combined))


@dataclass(frozen=True)
class Match:
    """The remembered correction a message is closest to: its class (1 spam, 0 ham), how much of it
    the message holds (spam: containment) or how alike they are (ham: resemblance), its key (the
    correction's file name) and when it was reported (a POSIX time)."""

    label: int
    share: float
    key: str
    when: float


@dataclass(frozen=True)
class Evidence:
    """What the memory says of one message: its nearest reported spam and ham (None: nothing shared)."""

    spam: Match | None = None
    ham: Match | None = None

    @property
    def shift(self) -> float:
        """The log-odds this evidence adds to the model's: never below zero (see the module)."""
        spam = self.spam.share if self.spam else 0.0
        return WEIGHT * max(0.0, spam - (self.ham.share if self.ham else 0.0))

    def strongest(self, other: Evidence) -> Evidence:
        """The nearest spam and the nearest ham of two memories (the shared one and a user's)."""

        def nearest(a: Match | None, b: Match | None) -> Match | None:
            return b if a is None or (b is not None and b.share > a.share) else a

        return Evidence(nearest(self.spam, other.spam), nearest(self.ham, other.ham))

    def lines(self) -> list[str]:
        """What moved the verdict, for people: ``+8.40 holds 84% of a spam reported 2026-12-05`` (or
        ``of a training spam``, from the model's memory of its training mail), and where a ham
        took some of that back, ``-1.00 is 10% alike a ham reported ...``."""
        import time

        def which(match: Match, kind: str) -> str:
            if match.key.startswith(TRAINING_KEY):
                return f"a training {kind}"
            return f"a {kind} reported {time.strftime('%Y-%m-%d', time.gmtime(match.when))}"

        if self.spam is None or self.spam.share < 0.05:
            return []
        out = [f"{WEIGHT * self.spam.share:+.2f} holds {self.spam.share:.0%} of {which(self.spam, 'spam')}"]
        if self.ham is not None and self.ham.share >= 0.05:
            taken = WEIGHT * min(self.ham.share, self.spam.share)
            out.append(f"{-taken:+.2f} is {self.ham.share:.0%} alike {which(self.ham, 'ham')}")
        return out


NO_EVIDENCE = Evidence()


@dataclass
class Memory:
    """Sketches of corrected messages. Immutable in use: ``with_entry``/``without`` return new ones."""

    hashes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    owners: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # entry of each hash
    sizes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # shingles per entry
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int8))
    when: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))
    keys: tuple[str, ...] = ()
    _sorted: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __len__(self) -> int:
        return len(self.keys)

    def with_entry(self, key: str, label: int, text: str, when: float) -> Memory:
        """This memory with ``text`` remembered as ``label`` under ``key`` (an earlier entry of the
        same key replaced: a message corrected twice counts once, as its latest class)."""
        kept = self.without(key)
        if len(kept) >= MAX_ENTRIES:
            raise ValueError(f"a memory holds at most {MAX_ENTRIES} corrections")
        found = shingles(text)
        sketch = found[:SKETCH_SIZE]
        entry = len(kept)
        return Memory(
            np.concatenate([kept.hashes, sketch]),
            np.concatenate([kept.owners, np.full(len(sketch), entry, dtype=np.int64)]),
            np.append(kept.sizes, np.int64(len(found))),
            np.append(kept.labels, np.int8(label)),
            np.append(kept.when, np.float64(when)),
            (*kept.keys, key),
        )

    @classmethod
    def of(cls, entries: Iterable[tuple[str, int, str, float]]) -> Memory:
        """A memory of ``(key, label, text, when)`` entries at once (a later entry of a key wins)."""
        latest: dict[str, tuple[int, str, float]] = {}
        for key, label, text, when in entries:
            latest.pop(key, None)
            latest[key] = (label, text, when)
        if len(latest) > MAX_ENTRIES:
            raise ValueError(f"a memory holds at most {MAX_ENTRIES} corrections")
        sketches = [shingles(text) for _, text, _ in latest.values()]
        kept = [found[:SKETCH_SIZE] for found in sketches]
        return cls(
            np.concatenate([np.empty(0, dtype=np.uint64), *kept]),
            np.repeat(np.arange(len(kept), dtype=np.int64), [len(sketch) for sketch in kept]),
            np.asarray([len(found) for found in sketches], dtype=np.int64),
            np.asarray([label for label, _, _ in latest.values()], dtype=np.int8),
            np.asarray([when for _, _, when in latest.values()], dtype=np.float64),
            tuple(latest),
        )

    def without(self, key: str) -> Memory:
        if key not in self.keys:
            return self
        entry = self.keys.index(key)
        keep = self.owners != entry
        owners = self.owners[keep]
        return Memory(
            self.hashes[keep],
            np.where(owners > entry, owners - 1, owners),
            np.delete(self.sizes, entry),
            np.delete(self.labels, entry),
            np.delete(self.when, entry),
            self.keys[:entry] + self.keys[entry + 1 :],
        )

    def evidence(self, found: np.ndarray) -> Evidence:
        """The evidence for a message of shingles ``found`` (:func:`shingles`)."""
        if not len(self) or not len(found):
            return NO_EVIDENCE
        hashes, owners, counted, sampled = self._index()
        left = np.searchsorted(hashes, found, "left")
        counts = np.searchsorted(hashes, found, "right") - left
        # every remembered hash the message holds: a binary search of each of its own
        at = np.repeat(left - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
        hits = np.bincount(owners[at[counted[at]]], minlength=len(self))
        share = np.divide(hits, sampled, out=np.zeros(len(self)), where=sampled > 0)
        spam = (self.labels == 1) & (self.sizes >= MIN_SPAM_SHINGLES) & (hits > 0)
        ham = (self.labels == 0) & (hits > 0)
        shared = share * self.sizes  # the shingles both hold, estimated from the sample
        resemblance = shared / np.maximum(self.sizes + len(found) - shared, 1.0)
        return Evidence(self._best(spam, share), self._best(ham, np.minimum(resemblance, 1.0)))

    def scores(self, probabilities: np.ndarray | Sequence[float], texts: Sequence[str]) -> np.ndarray:
        """``probabilities`` of ``texts`` as the filter gives them with this memory alone (train's
        threshold, the replay); the filter itself combines several memories (``Classifier``)."""
        shifts = np.asarray([self.evidence(shingles(text)).shift for text in texts], dtype=np.float64)
        return shifted(np.asarray(probabilities, dtype=np.float64), shifts)

    def _index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The remembered hashes sorted, their entries, and whether each counts: a reported spam's
        hash that a reported ham holds too does not (a mailing list's footer under a spam sent to
        the list is in every ham of that list; such runs pushed list mail over the threshold in
        the replay, RESULTS.md section 38). Made once per memory (``np.isin`` of the message
        against all of it, each time, cost 2.7 ms a message at 2,000 corrections)."""
        if self._sorted is None:
            order = np.argsort(self.hashes, kind="stable")
            hashes, owners = self.hashes[order], self.owners[order]
            is_ham = self.labels[owners] == 0
            counted = is_ham | ~np.isin(hashes, hashes[is_ham])
            self._sorted = (hashes, owners, counted, np.bincount(owners[counted], minlength=len(self)))
        return self._sorted

    def _best(self, chosen: np.ndarray, share: np.ndarray) -> Match | None:
        if not chosen.any():
            return None
        entry = int(np.flatnonzero(chosen)[np.argmax(share[chosen])])
        return Match(int(self.labels[entry]), float(share[entry]), self.keys[entry], float(self.when[entry]))

    def to_bytes(self) -> bytes:
        """The file's bytes: the index (the hashes sorted, each one's entry and whether it counts)
        as it is used, so that a filter started for one message (pipeline mode) reads it as it is
        instead of sorting it again (with 2,275 messages remembered, sorting made the whole
        process take 20 % more CPU than without a memory; reading it, 4 %: RESULTS.md 38)."""
        hashes, owners, counted, _ = self._index()
        buffer = io.BytesIO()
        np.savez(
            buffer,
            hashes=hashes,
            owners=owners.astype(np.int32),
            counted=counted,
            sizes=self.sizes.astype(np.int32),
            labels=self.labels,
            when=self.when,
            keys=np.asarray([key.encode("ascii", "replace") for key in self.keys], dtype="S64"),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Memory:
        """The memory in ``raw``; ``ValueError`` for anything but a well-formed one."""
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as data:
                hashes = np.asarray(data["hashes"], dtype=np.uint64)
                owners = np.asarray(data["owners"], dtype=np.int64)
                counted = np.asarray(data["counted"], dtype=bool)
                sizes = np.asarray(data["sizes"], dtype=np.int64)
                labels = np.asarray(data["labels"], dtype=np.int8)
                when = np.asarray(data["when"], dtype=np.float64)
                keys = tuple(bytes(key).decode("ascii", "replace") for key in data["keys"])
        except (OSError, KeyError, TypeError, ValueError, EOFError, MemoryError, zipfile.BadZipFile) as error:
            raise ValueError(f"not a memory file: {error}") from None
        entries = len(keys)
        if not (
            entries <= MAX_ENTRIES
            and sizes.shape == labels.shape == when.shape == (entries,)
            and hashes.ndim == 1
            and hashes.shape == owners.shape == counted.shape
            and ((owners >= 0) & (owners < entries)).all()
            and bool(np.all(hashes[1:] >= hashes[:-1]))  # the index: sorted
            and np.isin(labels, (0, 1)).all()
            and (sizes >= 0).all()
        ):
            raise ValueError("a memory file whose arrays do not agree")
        memory = cls(hashes, owners, sizes, labels, when, keys)
        memory._sorted = (hashes, owners, counted, np.bincount(owners[counted], minlength=entries))
        return memory


def read_memory(folder: Path) -> Memory:
    """The memory kept in ``folder``: empty where there is none, and where the file is damaged
    (a memory is an extra: the model's verdict stands without it). Read whole first, and only a
    regular file of at most ``MAX_MEMORY_FILE_BYTES``."""
    raw = read_folder_file(folder / MEMORY_FILE, MAX_MEMORY_FILE_BYTES)
    if raw is None:
        return Memory()
    try:
        return Memory.from_bytes(raw)
    except ValueError:
        return Memory()


def write_memory(folder: Path, memory: Memory) -> None:
    """``folder``'s memory replaced by ``memory`` atomically (old or new, whenever killed)."""
    replace_file(folder / MEMORY_FILE, memory.to_bytes(), mode=0o600, durable=True)


class MemoryFile:
    """A memory file as it is now: read again when it changed on disk (a TELL or ``learn`` in another
    process), checked with one ``stat`` per use."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._seen: tuple[int, int, int] | None = None
        self._memory = Memory()
        self._lock = threading.Lock()  # the service's scoring and explaining threads share it

    def current(self) -> Memory:
        try:
            status = os.stat(self.folder / MEMORY_FILE)
            seen: tuple[int, int, int] | None = (status.st_ino, status.st_size, status.st_mtime_ns)
        except OSError:
            seen = None
        if seen == self._seen:  # unchanged (the common case, and no file at all): no lock taken
            return self._memory
        with self._lock:
            if seen != self._seen:
                self._memory = read_memory(self.folder) if seen is not None else Memory()
                self._seen = seen
            return self._memory


class MemoryFiles:
    """Memory files by folder, at most ``max_loaded`` held (least recently used dropped): one per user
    a service has scored for lately. A user's memory is at most their corrections' quota (1,000:
    about 2 MB in memory with its index), so 64 of them are at most about 130 MB. Safe to share
    between threads."""

    def __init__(self, max_loaded: int = 64) -> None:
        self.max_loaded = max_loaded
        self._files: OrderedDict[Path, MemoryFile] = OrderedDict()
        self._lock = threading.Lock()

    def current(self, folder: Path) -> Memory:
        with self._lock:
            found = self._files.get(folder)
            if found is None:
                found = MemoryFile(folder)
                self._files[folder] = found
                while len(self._files) > self.max_loaded:
                    self._files.popitem(last=False)
            else:
                self._files.move_to_end(folder)
        return found.current()


def shifted(probabilities: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """P(spam) with ``shifts`` added to the log-odds (float64; saturated answers kept finite)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1 - 1e-12)
    return 1.0 / (1.0 + np.exp(-(np.log(p) - np.log1p(-p) + np.asarray(shifts, dtype=np.float64))))
