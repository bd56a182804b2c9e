"""spamd's wire protocol (SpamAssassin's ``spamd/PROTOCOL``), as the real spamd speaks it.

A request is a command line (``PROCESS SPAMC/1.5``), header lines (``Content-length``, ``User``,
``Compress``, TELL's ``Message-class``/``Set``/``Remove``), a blank line and the message. A reply
is a status line, header lines and a body whose shape depends on the client's protocol version:
Exim sends ``REPORT SPAMC/1.2`` and accepts only the 1.2 shape (no ``Content-length``), so every
reply is built by the rules of ``spamd.raw``'s ``check()``.

Reading is bounded everywhere: the line length (the stream's limit), 255 header lines and
``HEADER_BYTES`` for the request line and headers together, the message size (``max_size``, also
after zlib inflation, which runs off the event loop) and, by the caller, the time.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from dataclasses import dataclass, field

# sysexits.h, as spamd's %resphash names them (the one table is errors.py's)
from ..errors import (  # noqa: E402, F401 - re-exported for the service's modules
    EX_CANTCREAT,
    EX_NOPERM,
    EX_OK,
    EX_PROTOCOL,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_TIMEOUT,
    EX_UNAVAILABLE,
)
from ..verdict import RULE_NAME, Verdict

CHECKING = ("CHECK", "SYMBOLS", "REPORT", "REPORT_IFSPAM", "PROCESS", "HEADERS")
COMMANDS = (*CHECKING, "TELL", "PING", "SKIP")
MAX_HEADER_LINES = 255  # as spamd: a bound against a client that never ends its headers
HEADER_BYTES = 16 * 1024  # request line and headers; spamc sends under 200 bytes
MAX_LENGTH_DIGITS = 18  # Content-length: more digits is no size (and past 4300 int() refuses it)

_REQUEST_LINE = re.compile(rb"^([A-Z_]+) SPAMC/(\d{1,3}\.\d{1,3})\r?\n$")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_USER = re.compile(r"^[\x20-\x7e\x80-\xff]*$")


class RequestError(Exception):
    """A request answered with an error status line, spamd style; ``code`` from sysexits.h."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text

    def reply(self) -> bytes:
        return error_reply(self.code, self.text)


def protocol_error(detail: str) -> RequestError:
    return RequestError(EX_PROTOCOL, f"Bad header line: {detail}")


def unavailable(detail: str) -> RequestError:
    return RequestError(EX_UNAVAILABLE, f"Service Unavailable: {detail}")


def error_reply(code: int, text: str) -> bytes:
    """spamd's one-line error reply; the connection closes after it."""
    line = " ".join(text.split())  # never a line break: the client reads one line
    return f"SPAMD/1.0 {code} {line}\r\n".encode("utf-8", "replace")


@dataclass
class Request:
    command: str
    version: float
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased, last one wins
    message: bytes = b""

    @property
    def user(self) -> str:
        return self.headers.get("user", "")


async def read_request(
    reader: asyncio.StreamReader, max_size: int, line: bytes | None = None
) -> Request | None:
    """One request from the stream (``line``: its request line, already read); None when the
    client closed before sending a command line. Raises ``RequestError`` for anything spamd would
    refuse; a message over ``max_size`` bytes (compressed or inflated) is refused before more of
    it is read."""
    if line is None:
        line = await read_line(reader)
    if not line:
        return None
    matched = _REQUEST_LINE.match(line)
    if matched is None:
        raise protocol_error(_printable(line))
    command = matched.group(1).decode("ascii")
    version = float(matched.group(2))
    if command not in COMMANDS:
        raise protocol_error(_printable(line))
    request = Request(command, version)
    # Version 1.0 clients send no headers; PING and SKIP only from 1.5 on (spamd bug 6187).
    has_headers = version >= 1.5 if command in ("PING", "SKIP") else version > 1.0
    if has_headers:
        request.headers = await _read_headers(reader, HEADER_BYTES - len(line))
    if command in ("PING", "SKIP"):
        return request
    request.message = await _read_body(reader, request.headers, max_size)
    return request


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """A line, with its end; b"" when the stream ends before a byte of it."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as partial:
        if partial.partial:
            raise protocol_error("(closed in the middle of a line)") from None
        return b""
    except asyncio.LimitOverrunError:
        raise protocol_error("(line too long)") from None


async def _read_headers(reader: asyncio.StreamReader, room: int) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES + 1):
        line = await read_line(reader)
        if not line:
            raise protocol_error("(EOF during headers)")
        room -= len(line)
        if room < 0:
            raise protocol_error(f"(headers over {HEADER_BYTES} bytes)")
        text = line.rstrip(b"\r\n").decode("latin-1")
        if not text:
            return headers
        name, colon, value = text.partition(":")
        if not colon or not name or " " in name:
            raise protocol_error("(header not in 'Name: value' format)")
        _check_header(name.lower(), value.strip())
        headers[name.lower()] = value.strip()
    raise protocol_error("(too many headers)")


def _check_header(name: str, value: str) -> None:
    if name == "content-length" and not (value.isascii() and value.isdigit()):
        raise protocol_error("(Content-Length contains non-numeric bytes)")
    if name == "content-length" and len(value.lstrip("0")) > MAX_LENGTH_DIGITS:
        raise protocol_error("(Content-Length too large)")
    if name == "compress" and value.lower() != "zlib":
        raise protocol_error(f"(compression type not supported: {_printable(value.encode())})")
    if name == "user" and not _USER.match(value):
        raise protocol_error("(User header contains control chars)")
    if name == "message-class" and value.lower() not in ("spam", "ham"):
        raise protocol_error("(Message-class header contains invalid class)")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], max_size: int) -> bytes:
    declared = headers.get("content-length")
    # Leading zeros are no size (spamd reads the number): stripped before int(), which refuses
    # more than 4300 digits (a ValueError, that was an internal error's 70).
    length = int(declared.lstrip("0") or "0") if declared is not None else None
    compressed = "compress" in headers
    if compressed and length is None:
        raise unavailable("Compress requires Content-length header")
    if length is not None and length > max_size:
        raise too_large(length, max_size)
    if length is None:  # spamc before 1.2, and hand-written clients: the message ends at EOF
        body = await reader.read(max_size + 1)
        while len(body) <= max_size:
            more = await reader.read(max_size + 1 - len(body))
            if not more:
                break
            body += more
        if len(body) > max_size:
            raise too_large(len(body), max_size)
    else:
        try:
            body = await reader.readexactly(length)
        except asyncio.IncompleteReadError as short:
            raise protocol_error(
                f"(Content-Length mismatch: Expected {length} bytes, got {len(short.partial)} bytes)"
            ) from None
    if not compressed:
        return body
    # Inflating up to max_size takes seconds for a large --max-size: not on the event loop.
    return await asyncio.get_running_loop().run_in_executor(None, inflate, body, max_size)


def inflate(data: bytes, max_size: int) -> bytes:
    """A zlib body, refused beyond ``max_size`` bytes inflated (a small bomb stays small)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_size + 1)
    except zlib.error as error:
        raise unavailable(f"zlib: {error}") from None
    if len(out) > max_size:
        raise too_large(len(out), max_size, "inflated ")
    if not inflater.eof:
        raise unavailable("zlib: failed to find end of zlib stream")
    return out


def too_large(size: int, max_size: int, what: str = "") -> RequestError:
    return unavailable(f"{what}message of {size} bytes is over the server's --max-size of {max_size} bytes")


def _printable(raw: bytes, limit: int = 80) -> str:
    text = raw.rstrip(b"\r\n").decode("latin-1")
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text[:limit] + ("..." if len(text) > limit else "")


# --------------------------------------------------------------------------- scores and replies


def check_reply(request: Request, verdict: Verdict, tagged: bytes, explained: str | None = None) -> bytes:
    """The reply to CHECK, SYMBOLS, REPORT, REPORT_IFSPAM, PROCESS or HEADERS, shaped by the
    client's protocol version exactly as spamd shapes it; ``tagged`` is the message as ``filter
    --format email`` writes it; ``explained``: REPORT's body where the verdict is explained
    (``serve --explain``: :func:`spamfilter.explain.spamd_report`)."""
    score, required = verdict.score, verdict.required
    if request.command == "REPORT_IFSPAM":
        answer = "Yes" if verdict.spam else "No"
    else:
        answer = "True" if verdict.spam else "False"
    spam_header = f"Spam: {answer} ; {score:.1f} / {required:.1f}".encode("ascii")
    version = request.version
    if request.command in ("PROCESS", "HEADERS"):
        body = tagged if request.command == "PROCESS" else headers_only(tagged)
        if version >= 1.3:
            head = b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\n%s\r\n\r\n" % (len(body), spam_header)
        elif version >= 1.2:
            head = b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\n\r\n" % len(body)
        else:
            head = b"SPAMD/1.0 0 EX_OK\r\n"
        return head + body
    if request.command == "CHECK":
        return b"SPAMD/1.1 0 EX_OK\r\n" + spam_header + b"\r\n\r\n"
    if request.command == "SYMBOLS":
        body = RULE_NAME.encode("ascii") + (b"\r\n" if version < 1.3 else b"")
    elif request.command == "REPORT" or verdict.spam:
        text = explained if explained is not None else report(verdict, score, required)
        body = text.encode("utf-8")
    else:  # REPORT_IFSPAM for a message that is not spam
        body = b""
    if version >= 1.3:
        return b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\n%s\r\n\r\n" % (len(body), spam_header) + body
    return b"SPAMD/1.1 0 EX_OK\r\n" + spam_header + b"\r\n\r\n" + body


def headers_only(message: bytes) -> bytes:
    """HEADERS: the message up to and including the blank line after its header block (spamd cuts
    at the first ``\r?\n\r?\n``)."""
    blank = _BLANK_LINE.search(message)
    return message if blank is None else message[: blank.end()]


def report(verdict: Verdict, score: float, required: float) -> str:
    """REPORT's text, laid out like SpamAssassin's "Content analysis details" table."""
    summary = "This message is probably spam." if verdict.spam else "This message is probably not spam."
    return (
        f"{summary}\n\n"
        f"Content analysis details:   ({score:.1f} points, {required:.1f} required)\n\n"
        " pts rule name              description\n"
        "---- ---------------------- --------------------------------------------------\n"
        f"{score:4.1f} {RULE_NAME:<22} GPT-2 classifier: P(spam) = {verdict.probability:.3f}, "
        f"threshold {verdict.threshold:.3f}\n"
    )


def tell_reply(did_set: list[str], did_remove: list[str]) -> bytes:
    """TELL's reply as spamd writes it (its header block is followed by two line ends, not one);
    spamc -L reads DidSet/DidRemove to say whether the message was learnt or already known."""
    head = b"".join(
        b"%s: %s\r\n" % (name, ",".join(values).encode("ascii"))
        for name, values in ((b"DidSet", did_set), (b"DidRemove", did_remove))
        if values
    )
    return b"SPAMD/1.1 0 EX_OK\r\n" + head + b"\r\n\r\n"


def tell_targets(request: Request) -> tuple[set[str], set[str]]:
    """The databases a TELL sets and removes the message in (local, remote), checked as spamd does."""
    sets = {part.strip().lower() for part in request.headers.get("set", "").split(",") if part.strip()}
    removes = {part.strip().lower() for part in request.headers.get("remove", "").split(",") if part.strip()}
    for where in ("local", "remote"):
        if where in sets and where in removes:
            raise protocol_error(f"Unable to set {where} and remove {where} in the same operation.")
    if sets and "message-class" not in request.headers:
        raise protocol_error("(Message-class header required to set)")
    return sets, removes


def ping_reply() -> bytes:
    return b"SPAMD/1.5 0 PONG\r\n"
