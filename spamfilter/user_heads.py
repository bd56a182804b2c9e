"""Per-user heads: a user's corrections train that user's head on top of the shared one (no torch).

The trunk of the model is shared; a user's head is the shared head retrained on that user's
corrections (:func:`spamfilter.head.teach`, anchored to the training messages as the shared
retrain is), and scores that user's mail from the same pooled features (the exported graph's
``features`` output): one model in memory, a few kilobytes per user.

Layout, inside the model directory: ``users/<key>/`` with ``user.json`` (the name, for listing),
``corrections/spam|ham/`` (as the shared ``corrections/``) and ``head.npz`` (the head, the
threshold it is used at and the fingerprint of the trunk it was trained on). ``<key>`` is a digest
of the name: a user name is never a path. Names are still validated (``valid_user``) so that what
a client sends is refused with a clear reason rather than silently hashed.

Bounds: at most ``max_users`` users with a head or corrections (a new one beyond is refused), at
most ``max_corrections`` corrections per user, and at most ``max_loaded`` heads held in memory
(least recently used dropped; each is 2 x (C + 1) float32: 6 KB for gpt2-small).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .corrections import Corrections, Quota, read_correction
from .errors import SpamfilterError, UsageError
from .head import Head, apply_head, teach
from .lockfile import private_folder
from .mail.mailboxes import read_folder_file
from .replacefile import replace_file
from .windows import combine, discounted

USERS_DIR = "users"
HEAD_FILE = "head.npz"
USER_RECORD = "user.json"
MAX_USER_LENGTH = 128
MAX_USERS = 10_000
MAX_LOADED = 1_000
MAX_CORRECTIONS = 1_000
# Bytes of corrections one user may keep: 1,000 corrections of up to 512 KB each were 512 MB per
# account (ten times what one TELL peer may keep of the shared model's corrections).
MAX_CORRECTION_BYTES = 20_000_000
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=-]*")


class UserLimitReached(SpamfilterError):
    """A new user beyond ``max_users``."""


def valid_user(name: str) -> str:
    """``name`` if it may name a user: 1 to 128 characters of letters, digits and ``._@+=-``,
    starting with a letter or digit (a mail address or a login; never ``..``, ``/``, NUL or a
    control character); else ``UsageError`` saying why."""
    if not isinstance(name, str) or not name:
        raise UsageError("a user name must not be empty")
    if len(name) > MAX_USER_LENGTH:
        raise UsageError(f"a user name is at most {MAX_USER_LENGTH} characters, not {len(name)}")
    if not _USER.fullmatch(name) or ".." in name:
        raise UsageError(
            f"user name {name[:40]!r} refused: letters, digits and . _ @ + = - only, starting with a "
            "letter or digit, no '..'"
        )
    return name


def user_key(name: str) -> str:
    """The folder of a user: a digest of the (valid) name, never the name itself."""
    return hashlib.sha256(valid_user(name).encode()).hexdigest()[:32]


def trunk_fingerprint(train_features: np.ndarray) -> str:
    """Which trunk a head was trained for: a digest of the training split's features (they change
    only when the model is trained again)."""
    return hashlib.sha256(np.ascontiguousarray(train_features, dtype=np.float32).tobytes()).hexdigest()[:32]


@dataclass(frozen=True)
class UserHead:
    head: Head
    threshold: float
    trunk: str


def score_with_head(
    head: Head, features: np.ndarray, owners: np.ndarray, count: int, log_odds_off: np.ndarray | None = None
) -> np.ndarray:
    """P(spam) of ``count`` messages from their windows' pooled features, as the filter combines
    them: a message's highest row, less ``log_odds_off`` (per message, what the filter takes off
    for the windows it read: ``learn.WindowFeatures.discounts``; none where not given)."""
    highest = combine(apply_head(head, features), np.asarray(owners, dtype=np.int64), count)
    return highest if log_odds_off is None else discounted(highest, log_odds_off)


class UserHeads:
    """The user heads of a model directory, bounded; safe to share between threads."""

    def __init__(
        self,
        model_dir: Path,
        *,
        max_users: int = MAX_USERS,
        max_loaded: int = MAX_LOADED,
        max_corrections: int = MAX_CORRECTIONS,
        max_correction_bytes: int = MAX_CORRECTION_BYTES,
        trunk: str | None = None,
    ) -> None:
        self.root = Path(model_dir) / USERS_DIR
        self.model_dir = Path(model_dir)
        self.max_users, self.max_loaded, self.max_corrections = max_users, max_loaded, max_corrections
        self.max_correction_bytes = max_correction_bytes
        self.trunk = trunk  # the current trunk's fingerprint: heads of another are not used
        self._loaded: OrderedDict[str, UserHead | None] = OrderedDict()
        self._lock = threading.Lock()

    def folder(self, user: str) -> Path:
        return self.root / user_key(user)

    def users(self) -> list[str]:
        names = []
        for record in sorted(self.root.glob(f"*/{USER_RECORD}")):
            try:
                names.append(str(json.loads(record.read_text())["user"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return names

    def corrections(self, user: str) -> Corrections:
        return Corrections(self.folder(user))

    def add(self, user: str, raw: bytes, label: int) -> bool:
        """Keep ``raw`` as ``label`` among ``user``'s corrections (bounded: ``max_corrections`` and
        ``max_correction_bytes`` per user, ``max_users`` users); False when it was kept as that
        already."""
        folder = self._claim(user)
        quota = Quota(self.max_corrections, self.max_correction_bytes)
        return Corrections(folder).add(raw, label, teacher=user, quota=quota)

    def remove(self, user: str, raw: bytes) -> bool:
        folder = self.folder(user)
        return folder.is_dir() and Corrections(folder).remove(raw)

    def _claim(self, user: str) -> Path:
        folder = self.folder(user)
        if folder.is_dir():
            return folder
        with self._lock:
            count = sum(1 for entry in self.root.iterdir() if entry.is_dir()) if self.root.is_dir() else 0
            if count >= self.max_users:
                raise UserLimitReached(
                    f"{count} users have their own head or corrections, the most allowed: "
                    f"{user[:40]!r} gets the shared model"
                )
            private_folder(folder)
            _write_atomically(folder / USER_RECORD, json.dumps({"user": user}).encode() + b"\n")
        return folder

    def head(self, user: str) -> UserHead | None:
        """``user``'s head, or None (no head, a damaged file, or one for another trunk): the
        shared model's verdict then. Held in memory, at most ``max_loaded`` heads."""
        key = user_key(user)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        found = _read_head(self.root / key / HEAD_FILE)
        if found is not None and self.trunk is not None and found.trunk != self.trunk:
            found = None
        with self._lock:
            self._loaded[key] = found
            self._loaded.move_to_end(key)
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
        return found

    def save(self, user: str, head: UserHead) -> None:
        folder = self._claim(user)
        _write_atomically(folder / HEAD_FILE, _head_bytes(head))
        with self._lock:
            self._loaded.pop(user_key(user), None)

    def invalidate(self, user: str | None = None) -> None:
        """Drop ``user``'s head (every user's without one) from memory: the next ``head()`` reads
        the file again (after a retrain in another process, or a SIGHUP)."""
        with self._lock:
            if user is None:
                self._loaded.clear()
            else:
                self._loaded.pop(user_key(user), None)

    @property
    def loaded(self) -> int:
        """Heads (or their absence) held in memory now: for a metrics gauge."""
        return len(self._loaded)

    def forget_head(self, user: str) -> None:
        (self.folder(user) / HEAD_FILE).unlink(missing_ok=True)
        with self._lock:
            self._loaded.pop(user_key(user), None)


def train_user_head(model_dir: Path, user: str, heads: UserHeads | None = None) -> UserHead | None:
    """Train ``user``'s head from the shared head in use and the user's corrections, save it, and
    return it (None, and the file removed, when the user has no corrections left). The user's
    threshold is the shared one: the head moves, so that every user's verdicts keep the meaning
    of the shared calibration."""
    from .learn import current_head, read_features, training_anchor, window_features
    from .modeldir import open_model_directory
    from .pipeline import message_text

    heads = heads or UserHeads(model_dir)
    directory = open_model_directory(Path(model_dir))
    kept = list(heads.corrections(user)) if heads.folder(user).is_dir() else []
    if heads.folder(user).is_dir():
        heads.corrections(user).remember_all()  # the user's memory, in step with their files
    if not kept:
        heads.forget_head(user)
        return None
    saved = read_features(Path(model_dir))
    anchor, class_weight = training_anchor(saved)
    shared = current_head(directory)
    texts = [message_text(read_correction(path)) for _, _, path in kept]
    read = window_features(directory, texts)
    features, owners = read.features, read.owners
    labels = np.asarray([label for _, label, _ in kept], dtype=np.int64)
    current = apply_head(shared, features)
    rows: list[int] = []
    for message, label in enumerate(labels):
        mine = np.flatnonzero(owners == message)
        rows.extend(mine.tolist() if label == 0 else [int(mine[np.argmax(current[mine])])])
    taught = np.asarray(rows, dtype=np.int64)
    row_labels = labels[owners[taught]]
    threshold = directory.threshold
    result = teach(
        shared,
        features[taught],
        row_labels,
        threshold,
        anchor,
        owners[taught],
        class_weight[row_labels],
        discounts=read.discounts,
    )
    head = UserHead(result.head, threshold, trunk_fingerprint(saved["train_features"]))
    heads.save(user, head)
    return head


def _head_bytes(head: UserHead) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(
        buffer,
        weight=head.head.weight,
        bias=head.head.bias,
        threshold=np.float64(head.threshold),
        trunk=np.array(head.trunk),
    )
    return buffer.getvalue()


MAX_HEAD_FILE_BYTES = 16 << 20  # a head file read at most (gpt2-small's is 7 KB)


def _read_head(path: Path) -> UserHead | None:
    """A user's head, or None for a damaged one. The file is read whole first, and only a regular
    file of at most ``MAX_HEAD_FILE_BYTES`` (a FIFO there held the filter, deaf to SIGTERM; an
    array header claiming 30 GB asked for them)."""
    raw = read_folder_file(path, MAX_HEAD_FILE_BYTES)
    if raw is None:
        return None
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            head = UserHead(Head(data["weight"], data["bias"]), float(data["threshold"]), str(data["trunk"]))
    except (OSError, ValueError, KeyError, TypeError, EOFError, MemoryError, zipfile.BadZipFile):
        return None  # a damaged file: the shared verdict, never an error in the scoring worker
    if not (np.isfinite(head.head.weight).all() and np.isfinite(head.head.bias).all()):
        return None
    return head if 0.0 <= head.threshold <= 1.0 else None


def _write_atomically(path: Path, data: bytes) -> None:
    """``path`` holds the old bytes or ``data``, whatever instant the writer is killed, flushed to
    disk (the rename too); private to the service's user, as mkstemp made them before."""
    replace_file(path, data, mode=0o600, durable=True)
