"""Lock files that only the service's own user (and group) can open.

Any process that can open a file can ``flock`` it, read-only or not. A lock file readable by
every local user let any of them hold the lock and so hang every correction the service was told
(TELL), or every retrain. Lock files are therefore created 0660 (less under the umask), never
through a symbolic link, and one that an earlier release created readable by others loses those
bits when the service's user owns it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import SpamfilterError

PRIVATE_FOLDER = 0o770  # for folders of corrections and the like: never open to other users
_OPEN = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def private_folder(path: Path) -> None:
    """``path`` and its missing parents created without access for other users."""
    path.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)


@contextlib.contextmanager
def locked(path: Path, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the lock file ``path`` (created if missing). Without
    ``wait``, a lock held elsewhere raises ``BlockingIOError`` at once.

    An old lock file open to other users is replaced by a new one, not just closed by its mode:
    whoever opened it before keeps their descriptor, and their ``flock`` on it then holds nothing.
    The lock taken is on the file that is at ``path`` once it is held."""
    while True:
        descriptor = _open(path)
        try:
            status = os.fstat(descriptor)
            if status.st_mode & 0o007 and status.st_uid == os.geteuid():
                _replace(path)
                continue  # (the finally closes the old one)
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            try:
                current = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if (current.st_dev, current.st_ino) != (status.st_dev, status.st_ino):
                continue  # replaced while this one waited: lock the new file
            yield  # closing the descriptor releases the lock
            return
        finally:
            os.close(descriptor)


def _open(path: Path) -> int:
    try:
        descriptor = os.open(path, _OPEN, 0o660)
    except OSError as error:  # a symbolic link (ELOOP), a folder, a missing parent...
        raise SpamfilterError(f"cannot open the lock file {path}: {error.strerror}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise SpamfilterError(f"the lock file {path} is not a regular file")
    return descriptor


def _replace(path: Path) -> None:
    """A new, private lock file renamed over ``path`` (atomic: every later opener gets the new one)."""
    fresh = path.with_name(f".{path.name}.{os.getpid()}.new")
    with contextlib.suppress(FileNotFoundError):
        fresh.unlink()
    os.close(os.open(fresh, _OPEN | os.O_EXCL, 0o660))
    os.replace(fresh, path)
