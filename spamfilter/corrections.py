"""Corrections kept with a model directory: the messages a user (``spamfilter learn``, or a spamd
client's TELL) filed as spam or as ham, for the next retrain of the head (:mod:`spamfilter.learn`).

No torch here: the service keeps corrections in a filter-only install and leaves retraining to
``spamfilter learn``."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .labelled import message_key

CORRECTIONS_DIR = "corrections"
LEARNT_RECORD = "learnt.json"  # in CORRECTIONS_DIR: the corrections the current head was trained with
CLASS_FOLDERS = {1: "spam", 0: "ham"}
MAX_CORRECTION_BYTES = 512_000  # as the service's --max-size: what the filter reads of a message


class Corrections:
    """``corrections/spam`` and ``corrections/ham`` of a model directory: one file per message, named
    by :func:`message_key`, so a message corrected twice is kept once, under its latest class."""

    def __init__(self, model_dir: Path) -> None:
        self.root = model_dir / CORRECTIONS_DIR

    def add(self, raw: bytes, label: int) -> bool:
        """Keep ``raw`` as ``label`` (1 spam, 0 ham); False when it was already kept as that."""
        key = message_key(raw).hex()
        target = self.root / CLASS_FOLDERS[label] / f"{key}.eml"
        (self.root / CLASS_FOLDERS[1 - label] / f"{key}.eml").unlink(missing_ok=True)
        if target.is_file():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(prefix=".new-", dir=target.parent)
        with os.fdopen(handle, "wb") as out:
            out.write(raw[:MAX_CORRECTION_BYTES])
        os.replace(scratch, target)
        return True

    def remove(self, raw: bytes) -> bool:
        """Forget ``raw`` whichever class it was kept as; False when it was not kept."""
        key = message_key(raw).hex()
        found = [self.root / folder / f"{key}.eml" for folder in CLASS_FOLDERS.values()]
        kept = [path for path in found if path.is_file()]
        for path in kept:
            path.unlink(missing_ok=True)
        return bool(kept)

    def __iter__(self) -> Iterator[tuple[str, int, Path]]:
        """(key, label, file) of every correction, in a stable order."""
        for label, folder in CLASS_FOLDERS.items():
            for path in sorted((self.root / folder).glob("*.eml")):
                yield path.stem, label, path

    def learnt(self) -> dict[str, int]:
        try:
            return {str(k): int(v) for k, v in json.loads((self.root / LEARNT_RECORD).read_text()).items()}
        except (OSError, ValueError, AttributeError):
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
        self.root.mkdir(parents=True, exist_ok=True)
        scratch = self.root / f".{LEARNT_RECORD}.partial"
        scratch.write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")
        scratch.replace(self.root / LEARNT_RECORD)
