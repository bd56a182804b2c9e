"""Files written whole or not at all, and never through a link: the one way the package replaces
a file in a model directory (reports, correction records, user heads).

A model directory can come from elsewhere (a colleague, a hub): written with ``Path.write_text``,
a link planted at ``eval.json`` or a correction record sent the write to whatever it named (a
user's ``~/.bashrc``). :func:`replace_file` writes a fresh file beside the target (``O_EXCL``:
never an existing one, never a link's target) and renames it over the target, which replaces a
link there, not what it points to. Scratch files of writers that were killed (named with their
process id) are removed by the next write into the same folder.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

SCRATCH_PREFIX = ".new-"
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def scratch_name() -> str:
    """A fresh name of fixed length for a file renamed into place: short beside any name (one
    built from a 250-byte file name passed the file system's 255)."""
    return f"{SCRATCH_PREFIX}{os.getpid()}-{secrets.token_hex(6)}.tmp"


def new_file(folder: int | None, name: str, mode: int) -> int:
    """A new file ``name`` (in the folder open as ``folder``, or by path), of ``mode`` less the
    process's umask, as the kernel applies it (no umask is set and restored: not thread-safe)."""
    return os.open(name, _NEW, mode, dir_fd=folder)


def replace_file(path: Path, data: bytes, mode: int = 0o666, durable: bool = False) -> None:
    """``path`` holds ``data``, or what it held before, whatever instant the writer is stopped.
    ``durable``: the bytes and the rename are flushed to disk, to outlive a power cut."""
    remove_dead_scratch(path.parent)
    scratch = path.parent / scratch_name()
    try:
        with os.fdopen(new_file(None, str(scratch), mode), "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(scratch, path)
        if durable:
            _fsync_folder(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_dead_scratch(folder: Path) -> None:
    """Scratch files of writers no longer running (a killed ``learn``, a service killed
    mid-retrain); a live writer's, and names not of this form, are left alone."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if not entry.name.startswith(SCRATCH_PREFIX) or not pid.isdigit() or _alive(int(pid)):
            continue
        if entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be writing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
