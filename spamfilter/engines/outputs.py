"""The Ray engine's output folder: what is written where, and when an input counts as done.

    DIR/<input name>                 the tagged mbox / CSV / message, or the folder of tagged copies
    DIR/verdicts.parquet             every message of this run's inputs: source, position, ...
    DIR/.spamfilter-ray/<name>/      an input in progress: one file per chunk (and its verdicts)
    DIR/.spamfilter-ray/done/<name>  .json: the record that it is complete; .parquet: its verdicts
    DIR/.spamfilter-ray/done/scoring/  a marker per chunk being scored (<input>.<chunk>.<unique>):
                                     one left behind is a chunk whose scoring worker died

An input's output appears only whole: its chunks are joined into a temporary file (or folder) that
is renamed into place, and only then is its record written. A rerun skips an input whose record
matches (same source, model and options) and redoes any other from scratch.

The records are also what the engine owns: an input's record is written (as a claim, without a
fingerprint) before anything of it is, so ``DIR/<name>`` is replaced only when a record says this
engine wrote it. Anything else there is the user's, and the run is refused before it starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

WORK = ".spamfilter-ray"
VERDICTS = "verdicts.parquet"
RESERVED_NAMES = (WORK, VERDICTS)
ROW_GROUP = 65_536  # rows per Parquet row group: the pieces (a chunk, an input) are often far smaller


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("source", pa.string()),
            ("position", pa.int64()),  # of the message among its input's messages, from 0
            ("path", pa.string()),  # a folder's message file, relative to the folder
            ("message_id", pa.string()),
            ("label", pa.string()),
            ("spam_probability", pa.float64()),
        ]
    )


class LinkFound(ValueError):
    """A symbolic link where the engine would write or remove: it follows none inside -o DIR."""


# A file the engine creates is a new one, never a link's target: a link (or anything else) planted
# at its name fails the creation rather than being written through.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _new_file(path: Path) -> BinaryIO:
    """A new file at ``path``, open for writing (``FileExistsError`` where anything is there, a
    link included)."""
    return os.fdopen(os.open(path, _CREATE, 0o666), "wb")


def create_file(path: Path, data: bytes) -> None:
    with _new_file(path) as out:
        out.write(data)


def _temporary(path: Path) -> Path:
    """A fresh name beside ``path`` for a file renamed onto it; a leftover of the same name (an
    earlier run of the same process id) is removed, never followed."""
    # fixed length: a mail file's 250-byte name plus a suffix passed the file system's 255
    digest = hashlib.sha256(path.name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    temporary = path.with_name(f".{digest}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)  # unlink removes a link itself, not what it points to
    return temporary


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file that is either absent or whole, whatever stops the writer."""
    temporary = _temporary(path)
    create_file(temporary, data)
    os.replace(temporary, path)  # replaces a link at ``path`` itself, not its target


class OutputFolder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / WORK
        self.done = self.work / "done"
        self.inputs = self.work / "inputs"  # one working folder per input: no name clashes with done/
        self.markers = self.done / "scoring"  # in done/, where no input's name can clash with it

    def check_links(self) -> None:
        """``LinkFound`` for a symbolic link anywhere in the engine's working tree, or at the verdict
        table: what the engine writes or removes there is always its own, never where a link
        points (one planted in DIR would send its writes and removals elsewhere)."""
        for path in (self.work, self.root / VERDICTS):
            if path.is_symlink():
                raise LinkFound(path)
        if not self.work.is_dir():
            return
        for folder, folders, files in os.walk(self.work):  # never descends through links
            for name in folders + files:
                if os.path.islink(os.path.join(folder, name)):
                    raise LinkFound(os.path.join(folder, name))

    def prepare(self) -> None:
        self.done.mkdir(parents=True, exist_ok=True)

    def clear_markers(self) -> None:
        shutil.rmtree(self.markers, ignore_errors=True)
        self.markers.mkdir(parents=True)

    def killers(self, deaths: int) -> set[int]:
        """The inputs (their indexes) of chunks whose scoring workers died at least ``deaths`` times
        while scoring them: their markers left behind."""
        counts: dict[tuple[str, str], int] = {}
        for marker in self.markers.glob("*.*.*"):
            index, number, _ = marker.name.split(".", 2)
            counts[index, number] = counts.get((index, number), 0) + 1
        return {int(index) for (index, _), count in counts.items() if count >= deaths}

    def output(self, name: str) -> Path:
        return self.root / name

    def chunk_file(self, name: str, number: int) -> Path:
        return self.inputs / name / f"{number:09d}"

    def verdicts_file(self, name: str, number: int) -> Path:
        return self.inputs / name / f"{number:09d}.parquet"

    def tree(self, name: str) -> Path:
        """Where a folder input's tagged copies go until the folder is complete."""
        return self.inputs / name / "tree"

    # ----------------------------------------------------------------------- an input's life

    def is_complete(self, name: str, fingerprint: dict[str, Any]) -> bool:
        try:
            record = json.loads((self.done / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return (
            record.get("fingerprint") == fingerprint
            and self.output(name).exists()
            and (self.done / f"{name}.parquet").is_file()
        )

    def owns(self, name: str) -> bool:
        """Whether ``DIR/<name>`` is absent, or a record says this engine wrote it (a claim made
        before writing, or the record of a complete input)."""
        if not os.path.lexists(self.output(name)):
            return True
        try:
            record = json.loads((self.done / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(record, dict) and "fingerprint" in record

    def start(self, name: str) -> None:
        """Forget an earlier, unfinished (or outdated) attempt at this input, and claim its output
        name: a record without a fingerprint (never complete) that says the output is the engine's."""
        write_atomically(self.done / f"{name}.json", json.dumps({"fingerprint": None}).encode())
        shutil.rmtree(self.inputs / name, ignore_errors=True)
        (self.inputs / name).mkdir(parents=True)

    def abandon(self, name: str) -> None:
        """An input that failed: its work goes, and its claim too where it wrote no output."""
        self.discard(name)
        if not os.path.lexists(self.output(name)):
            (self.done / f"{name}.json").unlink(missing_ok=True)

    def discard(self, name: str) -> None:
        shutil.rmtree(self.inputs / name, ignore_errors=True)

    def finish(
        self, name: str, kind: str, chunks: int, fingerprint: dict[str, Any], totals: dict[str, int]
    ) -> None:
        """Put a complete input's output in place, then record it as complete."""
        target = self.output(name)
        if kind == "folder":
            joined = self.tree(name)
            joined.mkdir(parents=True, exist_ok=True)  # a chunk-less folder still gets its (empty) output
        else:
            joined = self.inputs / name / "joined"
            with _new_file(joined) as out:
                for number in range(chunks):
                    with open(self.chunk_file(name, number), "rb") as part:
                        shutil.copyfileobj(part, out, 1 << 20)
        _put_in_place(joined, target, self.inputs / name / "replaced")
        pieces = [self.verdicts_file(name, number) for number in range(chunks)]
        _join_tables(pieces, self.done / f"{name}.parquet")
        record = {"fingerprint": fingerprint, **totals}
        write_atomically(self.done / f"{name}.json", json.dumps(record, indent=1).encode())
        self.discard(name)

    def write_verdict_table(self, names: Sequence[str]) -> Path:
        """DIR/verdicts.parquet: the verdicts of these (complete) inputs, in this order."""
        target = self.root / VERDICTS
        _join_tables([self.done / f"{name}.parquet" for name in names], target)
        return target


def write_verdicts(path: Path, columns: dict[str, list[Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    temporary = _temporary(path)
    with _new_file(temporary) as out:
        pq.write_table(pa.table(columns, schema=_schema()), out)
    os.replace(temporary, path)


def _join_tables(pieces: Iterable[Path], target: Path) -> None:
    """One Parquet file of many, read a piece at a time (memory: one row group)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    temporary = _temporary(target)
    group: list[Any] = []
    with _new_file(temporary) as out, pq.ParquetWriter(out, _schema()) as writer:
        for piece in pieces:
            group.append(pq.read_table(piece, schema=_schema()))
            if sum(table.num_rows for table in group) >= ROW_GROUP:
                writer.write_table(pa.concat_tables(group))
                group = []
        writer.write_table(pa.concat_tables(group) if group else _schema().empty_table())
    os.replace(temporary, target)


def _put_in_place(source: Path, target: Path, aside: Path) -> None:
    """Rename ``source`` (a file or a folder) to ``target``. A ``target`` already there (an earlier
    run's: the caller checked) that a rename cannot replace at once (a folder, or a file where a
    folder goes) is moved aside first and removed after, so that ``target`` is never half old, half
    new."""
    if os.path.lexists(target) and (source.is_dir() or (target.is_dir() and not target.is_symlink())):
        os.replace(target, aside)
    os.replace(source, target)
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)
