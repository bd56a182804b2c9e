"""Files written whole or not at all, and never through a link.

A model directory can come from elsewhere (a colleague, a hub), and ``learn`` (and the service's
retrain) writes its reports and records into it: written with ``Path.write_text``, a link planted
at ``eval.json`` or ``corrections/.learnt.json.partial`` sent the write to whatever it named (a
user's ``~/.bashrc``). :func:`replace_file` writes a fresh file beside the target (``O_EXCL``:
never an existing one, never a link's target) and renames it over the target, which replaces a
link there, not what it points to.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def scratch_name() -> str:
    """A fresh name of fixed length for a file renamed into place: short beside any name (one
    built from a 250-byte file name passed the file system's 255)."""
    return f".sf-{os.getpid()}-{secrets.token_hex(6)}.tmp"


def new_file(folder: int | None, name: str, mode: int) -> int:
    """A new file ``name`` (in the folder open as ``folder``, or by path), of ``mode`` less the
    process's umask, as the kernel applies it (no umask is set and restored: not thread-safe)."""
    return os.open(name, _NEW, mode, dir_fd=folder)


def replace_file(path: Path, data: bytes, mode: int = 0o666) -> None:
    """``path`` holds ``data``, or what it held before where the writer is stopped midway."""
    scratch = path.parent / scratch_name()
    try:
        with os.fdopen(new_file(None, str(scratch), mode), "wb") as out:
            out.write(data)
        os.replace(scratch, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()
