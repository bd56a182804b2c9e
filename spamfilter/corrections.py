"""Corrections kept with a model directory: the messages a user (``spamfilter learn``, or a spamd
client's TELL) filed as spam or as ham, for the next retrain of the head (:mod:`spamfilter.learn`).

No torch here: the service keeps corrections in a filter-only install and leaves retraining to
``spamfilter learn``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .labelled import message_key
from .lockfile import locked, private_folder
from .mail.mailboxes import plain_file
from .replacefile import replace_file

CORRECTIONS_DIR = "corrections"
LEARNT_RECORD = "learnt.json"  # in CORRECTIONS_DIR: the corrections the current head was trained with
CLASS_FOLDERS = {1: "spam", 0: "ham"}
MAX_CORRECTION_BYTES = 512_000  # as the service's --max-size: what the filter reads of a message
LOCK_FILE = ".lock"  # in CORRECTIONS_DIR: one change at a time, so a message ends up in one class
TEACHERS_DIR = ".teachers"  # in CORRECTIONS_DIR: which corrections each TELL peer stored


@dataclass(frozen=True)
class Quota:
    """The most corrections (and bytes of them) one teacher may keep stored."""

    count: int
    bytes: int


class QuotaExceeded(DataError):
    """A teacher at its quota tried to store one more correction."""


class Corrections:
    """``corrections/spam`` and ``corrections/ham`` of a model directory: one file per message, named
    by :func:`message_key`, so a message corrected twice is kept once, under its latest class."""

    def __init__(self, model_dir: Path) -> None:
        self.root = model_dir / CORRECTIONS_DIR

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Changes one at a time (across threads and processes): the same message told as spam
        and as ham at once ends up in one class, the one told last."""
        private_folder(self.root)
        with locked(self.root / LOCK_FILE):
            yield

    def add(self, raw: bytes, label: int, teacher: str | None = None, quota: Quota | None = None) -> bool:
        """Keep ``raw`` as ``label`` (1 spam, 0 ham); False when it was already kept as that.
        With ``teacher`` and ``quota``: a new message beyond the teacher's quota raises
        ``QuotaExceeded`` (a message already kept, by anyone, costs nothing more)."""
        key = message_key(raw).hex()
        kept = raw[:MAX_CORRECTION_BYTES]
        with self._locked():
            target = self.root / CLASS_FOLDERS[label] / f"{key}.eml"
            other = self.root / CLASS_FOLDERS[1 - label] / f"{key}.eml"
            if target.is_file():
                other.unlink(missing_ok=True)
                return False
            if teacher is not None and quota is not None and not other.is_file():
                self._charge(teacher, quota, key, len(kept))
            private_folder(target.parent)
            handle, scratch = tempfile.mkstemp(prefix=".new-", dir=target.parent)
            with os.fdopen(handle, "wb") as out:
                out.write(kept)
            os.replace(scratch, target)
            other.unlink(missing_ok=True)  # after: a reader sees the message in a class throughout
            self._remember(key, label, kept)
            return True

    def remove(self, raw: bytes) -> bool:
        """Forget ``raw`` whichever class it was kept as; False when it was not kept."""
        key = message_key(raw).hex()
        with self._locked():
            found = [self.root / folder / f"{key}.eml" for folder in CLASS_FOLDERS.values()]
            kept = [path for path in found if path.is_file()]
            for path in kept:
                path.unlink(missing_ok=True)
            if kept:
                self._forget(key)
            return bool(kept)

    # The memory of near-duplicates (memory.py) changes with the corrections, under the same lock:
    # a correction takes effect on the next message scored, before any retrain.

    def _remember(self, key: str, label: int, raw: bytes) -> None:
        from .formats import message_text
        from .memory import read_memory, write_memory

        memory = read_memory(self.root)
        with contextlib.suppress(OSError):  # the correction is kept: learn's rebuild remembers it
            write_memory(self.root, memory.with_entry(key, label, message_text(raw), time.time()))

    def _forget(self, key: str) -> None:
        from .memory import read_memory, write_memory

        memory = read_memory(self.root)
        if key in memory.keys:
            with contextlib.suppress(OSError):  # learn's rebuild forgets it
                write_memory(self.root, memory.without(key))

    def remember_all(self) -> int:
        """The memory rebuilt from the corrections kept (``learn`` does this: files added or removed
        by hand, a memory file damaged or from an older release); how many it holds."""
        from .formats import message_text
        from .memory import Memory, write_memory

        with self._locked():
            entries = []
            for key, label, path in self:
                try:
                    when = path.stat().st_mtime
                except OSError:  # removed by hand meanwhile: not remembered
                    continue
                entries.append((key, label, message_text(read_correction(path)), when))
            memory = Memory.of(entries)
            write_memory(self.root, memory)
            return len(memory)

    def _charge(self, teacher: str, quota: Quota, key: str, size: int) -> None:
        """Count a new correction against ``teacher`` (the lock held). Its record lists what it
        stored; corrections forgotten or removed since no longer count."""
        record = self.root / TEACHERS_DIR / f"{hashlib.sha256(teacher.encode()).hexdigest()[:32]}.json"
        try:
            stored = {str(k): int(v) for k, v in json.loads(record.read_text())["stored"].items()}
        except (OSError, ValueError, KeyError, AttributeError, TypeError, RecursionError):
            stored = {}
        stored = {k: v for k, v in stored.items() if any(self._path(k, label).is_file() for label in (0, 1))}
        if len(stored) + 1 > quota.count or sum(stored.values()) + size > quota.bytes:
            raise QuotaExceeded(
                f"{teacher} keeps {len(stored)} corrections ({sum(stored.values())} bytes): "
                f"the most allowed is {quota.count} ({quota.bytes} bytes)"
            )
        stored[key] = size
        private_folder(record.parent)
        replace_file(
            record, (json.dumps({"teacher": teacher, "stored": stored}, sort_keys=True) + "\n").encode()
        )
        self._disown(key, record)

    def _disown(self, key: str, owner: Path) -> None:
        """Take ``key`` out of every teacher's record but ``owner``'s (the lock held): a record of a
        message forgotten and stored again by another would still name its first teacher, who could
        then move or forget the new one (the service lets only the teacher who stored a message)."""
        for record in (self.root / TEACHERS_DIR).glob("*.json"):
            if record == owner or not plain_file(record):
                continue
            try:
                found = json.loads(record.read_text())
                if not isinstance(found, dict) or not isinstance(found.get("stored"), dict):
                    continue
                if key in found["stored"]:
                    del found["stored"][key]
                    replace_file(record, (json.dumps(found, sort_keys=True) + "\n").encode())
            except (OSError, ValueError, RecursionError):  # a damaged record lists nothing it could use
                continue

    def _path(self, key: str, label: int) -> Path:
        return self.root / CLASS_FOLDERS[label] / f"{key}.eml"

    def __iter__(self) -> Iterator[tuple[str, int, Path]]:
        """(key, label, file) of every correction, in a stable order: regular files only (a FIFO
        planted among them held every retrain, a link to /dev/zero read until memory ran out)."""
        for label, folder in CLASS_FOLDERS.items():
            for path in sorted((self.root / folder).glob("*.eml")):
                if plain_file(path):
                    yield path.stem, label, path

    def learnt(self) -> dict[str, int]:
        try:
            return {str(k): int(v) for k, v in json.loads((self.root / LEARNT_RECORD).read_text()).items()}
        except (OSError, ValueError, AttributeError, TypeError, RecursionError):  # damaged: none learnt
            return {}

    def pending(self) -> int:
        """Corrections the current head does not reflect: new ones, ones that changed class, and
        forgotten ones it was trained with."""
        learnt = self.learnt()
        kept = {key: label for key, label, _ in self}
        changed = sum(1 for key, label in kept.items() if learnt.get(key) != label)
        forgotten = sum(1 for key in learnt if key not in kept)  # the head still carries them
        return changed + forgotten

    def mark_learnt(self, keys: dict[str, int]) -> None:
        private_folder(self.root)
        replace_file(self.root / LEARNT_RECORD, (json.dumps(keys, indent=1, sort_keys=True) + "\n").encode())


def read_correction(path: Path) -> bytes:
    """A kept correction's bytes (those this package wrote are at most ``MAX_CORRECTION_BYTES``);
    nothing for one that is gone, is not a regular file, or is larger than any it writes."""
    from .mail.mailboxes import read_folder_file

    raw = read_folder_file(path)
    return raw[:MAX_CORRECTION_BYTES] if raw is not None else b""
