"""Files written whole or not at all, and never through a link.

A model directory can come from elsewhere (a colleague, a hub), and ``learn`` (and the service's
retrain) writes its reports and records into it: written with ``Path.write_text``, a link planted
at ``eval.json`` or ``corrections/.learnt.json.partial`` sent the write to whatever it named (a
user's ``~/.bashrc``). :func:`replace_file` writes a fresh file of a random name beside the target
(``O_EXCL``: never an existing one, never a link's target) and renames it over the target, which
replaces a link there, not what it points to.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_file(path: Path, data: bytes, mode: int = 0o666) -> None:
    """``path`` holds ``data``, or what it held before where the writer is stopped midway."""
    handle, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(handle, mode & ~_umask())
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(scratch, path)
    finally:
        Path(scratch).unlink(missing_ok=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
