"""Mailboxes: mbox streams, Maildirs, folders of messages and tar archives of them, and telling the
input formats apart.

``split_mbox`` yields every byte of its input, message by message; the format guesses look at the
first bytes only and never raise.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import stat
import typing
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath

from .headers import FIELD_NAME


def looks_like_mbox(head: bytes) -> bool:
    """Whether the first bytes of a file are those of an mbox: a 'From ' separator line."""
    return head.startswith(b"From ")


def looks_like_email(head: bytes) -> bool:
    """Whether the first bytes of a file are those of a single RFC 822 message: the first line
    is a header field such as "Received: ..." or "Return-Path: <...>" (and not an mbox)."""
    return not looks_like_mbox(head) and FIELD_NAME.match(head.split(b"\n", 1)[0]) is not None


def split_mbox(stream: typing.BinaryIO, max_message_bytes: int | None = None) -> Iterator[bytes]:
    """Stream an mbox (mboxo/mboxrd) from a non-seekable binary stream, yielding each message's
    exact bytes, including its leading 'From ' separator line. b''.join(all yielded) == input
    bytes exactly.

    Separator rule: a line starting with "From " begins a new message when it is the first line
    of the input or follows an empty line (LF or CRLF). That is where every mbox writer puts
    them, so a "From " line inside a body that a sloppy writer forgot to escape does not split
    the message as Python's mailbox module would (it splits at every "From " line). Escaped
    ">From " lines are ordinary body lines and are left as they are. The empty line before a
    separator stays with the message it ends.

    Input that does not start with "From " is yielded up to the first separator as one
    "message", so that nothing is lost; the caller decides what to do with it.

    The stream is read line by line and only the current message is held in memory. With
    `max_message_bytes`, a message growing past it raises ValueError instead of being held.
    """
    message = bytearray()
    follows_empty_line = True  # the start of the input counts as a message boundary
    number = 1
    # With a cap, no line is read past it either: one line of 8 GiB was read whole before the check.
    limit = -1 if max_message_bytes is None else max_message_bytes + 1
    for line in iter(lambda: stream.readline(limit), b""):
        if follows_empty_line and message and line.startswith(b"From "):
            yield bytes(message)
            message.clear()
            number += 1
        message += line
        if max_message_bytes is not None and len(message) > max_message_bytes:
            raise ValueError(f"mbox message {number} is larger than {max_message_bytes} bytes")
        follows_empty_line = line in (b"\n", b"\r\n")
    if message:
        yield bytes(message)


def is_mbox_message(raw: bytes) -> bool:
    """Whether a piece that ``split_mbox`` yields is a message: it begins with a whole 'From '
    line. Bytes before the first separator are not, nor a separator line that the end of the
    file cut off (a truncated mbox): tagging that one put the fields before its 'From ', which
    then no longer followed an empty line, and the message before it took in both."""
    return raw.startswith(b"From ") and b"\n" in raw


def _iter_mbox_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        yield from split_mbox(stream)


MAX_FOLDER_FILE_BYTES = 64 << 20  # a mail folder's file read at most; a larger one is skipped
# A folder's file is opened without following a link (one planted in a shared Maildir copied
# /etc/shadow into the output) and without waiting for a writer (a FIFO held the run for ever).
_READ_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def read_folder_file(path: Path, limit: int = MAX_FOLDER_FILE_BYTES, head: int | None = None) -> bytes | None:
    """A mail folder's file, or None for one that is not there any more (a mail client moved it),
    cannot be read, is a link or anything but a regular file, or is larger than
    ``limit``: such a file is skipped and counted, and the run goes on. ``head``: only its first
    bytes (a plain folder's files are told from other files by them)."""
    try:
        descriptor = os.open(path, _READ_FILE)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as stream:
        try:
            status = os.fstat(stream.fileno())
            if not stat.S_ISREG(status.st_mode) or status.st_size > limit:
                return None
            raw = stream.read(limit + 1 if head is None else head)
        except OSError:
            return None
    return raw if len(raw) <= limit else None  # longer: it grew while it was read


def _iter_files(paths: list[Path], skipped: Counter[str] | None = None) -> Iterator[bytes]:
    for path in paths:
        raw = read_folder_file(path)
        if raw is not None:
            yield raw
        elif skipped is not None:
            skipped[SKIPPED_UNREADABLE] += 1


# Limits for reading a tar archive of messages (a tar bomb stops with an error, not a full disk or
# memory: nothing is extracted, and one member at most is held in memory).
MAX_MEMBER_BYTES = 10 << 20  # a larger member is skipped and counted
MAX_ARCHIVE_MEMBERS = 1_000_000  # more members than this: the archive is refused
MAX_ARCHIVE_BYTES = 4 << 30  # more message bytes than this: the archive is refused
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")

# The reasons a file or member is skipped, as counted in ``skipped``.
SKIPPED_NOT_MAIL = "not a message"
SKIPPED_TOO_LARGE = f"larger than {MAX_MEMBER_BYTES >> 20} MiB"
SKIPPED_NOT_REGULAR = "a link or special file"
SKIPPED_UNSAFE_PATH = "an absolute or '..' path"
SKIPPED_UNREADABLE = f"gone, unreadable or larger than {MAX_FOLDER_FILE_BYTES >> 20} MiB"
SKIPPED_UNREADABLE_FOLDER = "a Maildir folder (cur/ or new/) that cannot be read, its messages unread"


def looks_like_message(head: bytes) -> bool:
    """Whether the first bytes of a file are those of one message: RFC 822 header fields, possibly
    after an mbox 'From ' line (the SpamAssassin corpus files start with one)."""
    return detect_format(head) in ("mbox", "email")


def looks_like_tar(path: Path, head: bytes) -> bool:
    """A tar archive, plain or compressed (gzip, bzip2, xz), by its name or its first bytes."""
    return (
        path.name.lower().endswith(TAR_SUFFIXES)
        or head.startswith(_COMPRESSED_MAGIC)
        or head[257:262] == b"ustar"
    )


def _read_head(path: Path, size: int = 4096) -> bytes:
    try:
        with path.open("rb") as stream:
            return stream.read(size)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None


def iter_mail_source(path: Path, skipped: Counter[str] | None = None) -> Iterator[bytes]:
    """Messages from an mbox file, a Maildir (cur/ and new/ subfolders), a folder of message files
    (sorted by name, for reproducibility), or a tar archive of message files (``.tar``, ``.tar.gz``
    / ``.tgz``, ``.tar.bz2``, ``.tar.xz``, read as a stream without extracting anything). Raises
    ValueError with a one-line message for a path that is none of these.

    A single file holding one RFC 822 message is accepted too, and an empty file is an empty
    mbox. Maildir messages come from cur/ then new/, each sorted by name (Maildir names start
    with the delivery time); tmp/ holds deliveries in progress and is left alone. In a plain
    folder and in an archive, a file is a message by its content (:func:`looks_like_message`),
    whatever its name; other files (the corpus's ``cmds``, a README) are skipped and counted in
    ``skipped`` by reason, as are archive members that are links, special files, have an absolute
    or '..' path, or are larger than :data:`MAX_MEMBER_BYTES`. The path is checked when this is
    called, not when the first message is read; a corrupt or truncated archive raises ValueError
    while it is read.
    """
    path = Path(path)
    counts: Counter[str] = Counter() if skipped is None else skipped
    if path.is_file():
        head = _read_head(path, 4096)
        if looks_like_tar(path, head):
            return _iter_tar(path, counts)
        kind = detect_format(head) if head else "mbox"  # an empty file is an empty mbox
        if kind == "mbox":
            return _iter_mbox_file(path)
        if kind == "email":
            return iter([path.read_bytes()])
        raise ValueError(f"{path}: neither an mbox, an RFC 822 message nor a tar archive")
    if path.is_dir():
        return _iter_files(mail_folder_files(path, counts), counts)
    raise ValueError(f"{path}: no such file or folder")


def mail_folder_files(path: Path, skipped: Counter[str] | None = None) -> list[Path]:
    """The message files of a Maildir (cur/ then new/, each sorted by name) or of a folder (sorted
    by name): its ``.eml`` files if it has any (other files then left alone, as ever), else every
    file whose first bytes are those of a message whatever its name (the SpamAssassin corpus's
    ``00001.7c53…``); the other files are skipped and counted in ``skipped``. Hidden files are
    ignored. Raises ValueError for a folder that holds no messages, or a file that cannot be read.
    A Maildir's cur/ or new/ that cannot be listed is skipped and counted in ``skipped`` (as an
    unreadable file is); without ``skipped`` (filter, which would leave its messages out of the
    output) it is a ValueError naming it."""
    subfolders = [folder for folder in (path / "cur", path / "new") if _real_folder(folder)]
    if subfolders:
        found = [entry for folder in subfolders for entry in _listed(folder, skipped)]
        kept = [entry for entry in found if plain_file(entry) and not entry.name.startswith(".")]
        _count_links(found, skipped)
        return kept
    entries = _listed(path, None)
    _count_links(entries, skipped)
    files = [entry for entry in entries if plain_file(entry) and not entry.name.startswith(".")]
    emls = [entry for entry in files if entry.suffix.lower() == ".eml"]
    if emls:  # a folder of .eml files, as before: other files in it are left alone
        return emls
    heads = {entry: read_folder_file(entry, MAX_FOLDER_FILE_BYTES, head=1024) for entry in files}
    messages = [entry for entry in files if looks_like_message(heads[entry] or b"")]
    if skipped is not None:  # gone or unreadable since it was listed: skipped, as in a Maildir
        unreadable = sum(1 for head in heads.values() if head is None)
        if unreadable:
            skipped[SKIPPED_UNREADABLE] += unreadable
        if len(files) - unreadable > len(messages):
            skipped[SKIPPED_NOT_MAIL] += len(files) - unreadable - len(messages)
    if messages:
        return messages
    raise ValueError(f"{path}: a folder that is neither a Maildir nor holds mail files")


def _listed(folder: Path, skipped: Counter[str] | None) -> list[Path]:
    """A folder's entries, sorted by name; one that cannot be listed (``chmod 000 Maildir/new``) is
    counted in ``skipped`` where it is given, else a ValueError naming it: a read error, never
    reported as the output's."""
    try:
        return sorted(folder.iterdir())
    except OSError as error:
        if skipped is None:
            raise ValueError(f"cannot read {folder}: {error.strerror or error}") from None
        skipped[SKIPPED_UNREADABLE_FOLDER] += 1
        return []


def plain_file(entry: Path) -> bool:
    """A regular file, not a link to one (one ``lstat``): a link in a shared Maildir (to
    /etc/shadow, or to another user's mail) is not a message of the folder, and copying it to the
    output leaked what it named."""
    return _kind(entry, stat.S_ISREG)


def _kind(entry: Path, test: Callable[[int], bool]) -> bool:
    try:
        return test(entry.lstat().st_mode)
    except OSError:
        return False


def _count_links(entries: list[Path], skipped: Counter[str] | None) -> None:
    links = sum(1 for entry in entries if entry.is_symlink())
    if links and skipped is not None:
        skipped[SKIPPED_NOT_REGULAR] += links


def _real_folder(entry: Path) -> bool:
    return _kind(entry, stat.S_ISDIR)


def _unsafe_member_name(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return name.startswith(("/", "\\")) or ".." in parts or (bool(parts) and parts[0].endswith(":"))


def _iter_tar(path: Path, skipped: Counter[str]) -> Iterator[bytes]:
    """The message members of a tar archive in archive order, streamed ("r|*": no seeking, nothing
    written to disk, one member in memory at a time). Raises ValueError for a corrupt or truncated
    archive, or one past :data:`MAX_ARCHIVE_MEMBERS` / :data:`MAX_ARCHIVE_BYTES`."""
    import lzma  # here, not at the top: the mail pipelines' cold start never needs them
    import tarfile
    import zlib

    members = 0
    total = 0
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for info in archive:
                members += 1
                if members > MAX_ARCHIVE_MEMBERS:
                    raise ValueError(f"{path}: more than {MAX_ARCHIVE_MEMBERS} archive members, not read on")
                if info.isdir():
                    continue
                if not info.isreg():
                    skipped[SKIPPED_NOT_REGULAR] += 1
                    continue
                if _unsafe_member_name(info.name):
                    skipped[SKIPPED_UNSAFE_PATH] += 1
                    continue
                if info.size > MAX_MEMBER_BYTES:
                    skipped[SKIPPED_TOO_LARGE] += 1
                    continue
                total += info.size
                if total > MAX_ARCHIVE_BYTES:
                    raise ValueError(f"{path}: more than {MAX_ARCHIVE_BYTES} bytes of members, not read on")
                member = archive.extractfile(info)
                raw = member.read() if member is not None else b""
                if len(raw) != info.size:
                    raise ValueError(f"{path}: truncated archive (member {info.name!r} cut short)")
                if not looks_like_message(raw[:1024]):
                    skipped[SKIPPED_NOT_MAIL] += 1
                    continue
                yield raw
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: corrupt or truncated archive ({detail})") from None
    except OSError as error:  # bz2 reports bad data as OSError
        raise ValueError(f"{path}: corrupt or truncated archive ({error.strerror or error})") from None


def describe_skipped(skipped: Counter[str]) -> str:
    """'3 files skipped: 2 not a message, 1 a link or special file' (empty when nothing was)."""
    total = sum(skipped.values())
    if not total:
        return ""
    reasons = ", ".join(f"{count} {reason}" for reason, count in skipped.most_common())
    return f"{total} {'file' if total == 1 else 'files'} skipped: {reasons}"


# --- telling the formats apart --------------------------------------------------------------


def detect_format(head: bytes, text_column: str = "Text") -> str:
    """Guess the input format from its first bytes: ``mbox``, ``email``, ``csv``, ``text``, or
    ``binary`` (NUL bytes: no kind of mail or text this filter reads). Never raises."""
    if looks_like_mbox(head):
        return "mbox"
    if looks_like_email(head):
        return "email"
    if b"\0" in head:
        return "binary"
    return "csv" if looks_like_csv(head, text_column) else "text"


CSV_SAMPLE_ROWS = 6


def looks_like_csv(head: bytes, text_column: str = "Text") -> bool:
    """A header row naming ``text_column``, or the shape of a CSV export: a header of two or more
    distinct, short names (no leading space, as prose after a comma has) and rows with as many
    fields. Line ends may be LF, CRLF or CR alone."""
    text = head.decode("utf-8", "replace").lstrip("\ufeff")
    try:
        rows = list(itertools.islice(csv.reader(io.StringIO(text, newline="")), CSV_SAMPLE_ROWS))
    except csv.Error:
        return False
    if not rows:
        return False
    header = rows[0]
    if any(name.strip().lower() == text_column.lower() for name in header):
        return True
    if not text.endswith(("\n", "\r")) and len(rows) > 1:
        rows.pop()  # the last row may be cut off where the peek ended
    names = [name.strip() for name in header]
    return (
        len(header) >= 2
        and all(names)
        and len(set(names)) == len(names)
        and not any(name[:1].isspace() or len(name) > 64 for name in header)
        and all(len(row) == len(header) for row in rows[1:])
    )


def check_sources(
    data: object | None, spam: Sequence[object], ham: Sequence[object], data_name: str, required: bool
) -> None:
    """Labelled messages come from one place: a file of them (``data_name``: DATA or --data), or
    spam and ham mailboxes together. ``required``: one of them must be given."""
    from ..errors import UsageError

    if data is not None and (spam or ham):
        raise UsageError(f"give either {data_name} or --spam/--ham mailboxes, not both")
    if bool(spam) != bool(ham):
        raise UsageError("--spam and --ham go together")
    if required and data is None and not spam:
        raise UsageError(f"give {data_name} or --spam/--ham mailboxes")
