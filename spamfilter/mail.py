"""Mail handling for the filter: what text the model sees, mbox splitting and the X-Spam headers.

Standard library only, on purpose: this module sits on the cold-start path of mail pipelines
(procmail, maildrop, ``formail -s``), where importing torch or pandas would cost more than the
classification itself.

Everything here works on raw bytes. Mail is full of wrong charsets, broken MIME and 8-bit
headers, and a filter must deliver every message it is given: ``extract_text`` never raises and
bounds its work on hostile input, while ``split_mbox`` and the header functions change nothing
but what they are documented to change, byte for byte.
"""

from __future__ import annotations

import binascii
import codecs
import email.message
import html
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SPAM_HEADER_NAMES",
    "extract_text",
    "insert_spam_headers",
    "iter_mail_source",
    "looks_like_email",
    "looks_like_mbox",
    "remove_spam_headers",
    "spam_status_value",
    "split_mbox",
]

SPAM_HEADER_NAMES: tuple[str, ...] = ("X-Spam-Flag", "X-Spam-Status")
_SPAM_NAMES = frozenset(name.lower().encode("ascii") for name in SPAM_HEADER_NAMES)

# Bounds for extract_text. Real mail stays far below them; hostile mail must not be able to turn
# one message into seconds of CPU or hundreds of megabytes of memory.
_MAX_PARTS = 1000  # MIME parts looked at per message
_MAX_DEPTH = 64  # nesting of multipart/message parts followed; real mail rarely exceeds 5
_MAX_HEADER_FIELDS = 10_000  # header fields parsed per part before we just look for the body
_MAX_VALUE_BYTES = 16_384  # read of one header value (Subject, Content-Type, ...)
_PLAIN_BYTES_PER_CHAR = 4  # the most bytes one character takes in UTF-8 (or UTF-16/32)
_HTML_BYTES_PER_CHAR = 16  # markup is verbose: allow for tags, styles and entities

# RFC 5322 field name: printable ASCII except ':'. 8-bit bytes are accepted too, as broken
# mailers emit them and the field is still a header to any reader. Whitespace before the colon
# is obsolete syntax that old mailers still emit. The length bound keeps a megabyte-long line
# without a colon from costing more than a bounded match.
_FIELD_NAME = re.compile(rb"([!-9;-~\x80-\xff]{1,998})[ \t]*:")
_FROM_FIELD = re.compile(rb"From[ \t]*:")  # a 'From:' header, not an mbox 'From ' line


# --- header blocks --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: bytes | None  # lower-cased; None for indented lines with no field above them
    start: int  # offset of the field's first line
    value_start: int  # offset just after the colon


@dataclass(frozen=True)
class _HeaderBlock:
    fields: list[_Field]  # field i runs from fields[i].start to fields[i + 1].start or `end`
    end: int  # offset of the first byte after the header block (blank line or first body line)

    def field_end(self, index: int) -> int:
        return self.fields[index + 1].start if index + 1 < len(self.fields) else self.end


def _is_blank_line(raw: bytes, pos: int, stop: int) -> bool:
    return raw.startswith(b"\n", pos, stop) or raw.startswith(b"\r\n", pos, stop)


def _find_blank_line(raw: bytes, pos: int, stop: int) -> int:
    """Offset of the first empty line at or after the line starting at `pos`, or `stop`."""
    if _is_blank_line(raw, pos, stop):
        return pos
    ends = (raw.find(b"\n\n", pos, stop), raw.find(b"\n\r\n", pos, stop))
    return min((i + 1 for i in ends if i >= 0), default=stop)


def _scan_headers(raw: bytes, start: int, stop: int, max_fields: int | None = None) -> _HeaderBlock:
    """The header block of the message (or MIME part) in raw[start:stop].

    The block ends at the first empty line (LF or CRLF), which is not part of it. A message with
    no empty line at all, or with body text straight after its headers, ends its block at the
    first line that is neither a field ("Name: value") nor a continuation (leading space or
    tab): that line is the first body line. This is how the header functions find where to
    stop, and how extract_text finds the body of sloppy mail.
    """
    fields: list[_Field] = []
    pos = start
    while pos < stop:
        newline = raw.find(b"\n", pos, stop)
        line_end = stop if newline < 0 else newline + 1
        first = raw[pos]
        if first in b" \t":
            if not fields:
                # An indented line with no field above it: keep it as a nameless field so that
                # it stays inside the block (see remove_spam_headers for why that matters).
                fields.append(_Field(None, pos, pos))
        elif _is_blank_line(raw, pos, line_end):
            break
        else:
            match = _FIELD_NAME.match(raw, pos, line_end)
            if match is None:
                break
            if max_fields is not None and len(fields) >= max_fields:
                # Enough fields to know what the part is; don't walk a million more lines in
                # Python when a C-level search can find where the body starts.
                return _HeaderBlock(fields, _find_blank_line(raw, pos, stop))
            fields.append(_Field(match.group(1).lower(), pos, match.end()))
        pos = line_end
    return _HeaderBlock(fields, pos)


def _header_start(raw: bytes) -> int:
    """Offset where the header block starts: after an mbox 'From ' line, if there is one.

    The 'From ' line only counts when it ends in a newline; inserting headers after an
    unterminated one would glue them onto it.
    """
    if raw.startswith(b"From ") and not _FROM_FIELD.match(raw):
        newline = raw.find(b"\n")
        if newline >= 0:
            return newline + 1
    return 0


def _field_value(raw: bytes, block: _HeaderBlock, index: int, limit: int | None = None) -> bytes:
    """The unfolded value of one field: line breaks of the folding dropped, outer space stripped."""
    field = block.fields[index]
    end = block.field_end(index)
    if limit is not None:
        end = min(end, field.value_start + limit)
    value = raw[field.value_start : end]
    return value.replace(b"\r", b"").replace(b"\n", b"").strip(b" \t")


def _first_values(raw: bytes, block: _HeaderBlock, names: set[bytes]) -> dict[bytes, bytes]:
    """The first occurrence of each wanted field, as mail parsers use the first one too."""
    values: dict[bytes, bytes] = {}
    for index, field in enumerate(block.fields):
        if field.name in names and field.name not in values:
            values[field.name] = _field_value(raw, block, index, _MAX_VALUE_BYTES)
            if len(values) == len(names):
                break
    return values


# --- X-Spam headers ---------------------------------------------------------------------------


def spam_status_value(is_spam: bool, score: float, threshold: float, version: str = "") -> str:
    """The X-Spam-Status value, SpamAssassin style, so that existing procmail/Sieve rules such as
    ``^X-Spam-Status: Yes`` keep working, e.g.
    ``Yes, score=0.973 required=0.500 tests=GPT2_SPAM_CLASSIFIER version=spamfilter-0.1.0``.

    `version` is written as given (pass e.g. ``f"spamfilter-{__version__}"``); empty leaves the
    ``version=`` item out.
    """
    if any(ch.isspace() or not ch.isprintable() for ch in version):
        # A line break here would let the caller inject headers; any space would break the
        # "key=value" items that rules parse.
        raise ValueError(f"version must not contain whitespace or control characters: {version!r}")
    value = f"{'Yes' if is_spam else 'No'}, score={score:.3f} required={threshold:.3f}"
    value += " tests=GPT2_SPAM_CLASSIFIER"
    if version:
        value += f" version={version}"
    return value


def remove_spam_headers(raw: bytes) -> bytes:
    """raw without its X-Spam-Flag / X-Spam-Status fields (any letter case, folded lines too).

    Only whole header lines are removed; every other byte is kept. One malformed case is also
    dropped: indented lines at the very top of the header block, which belong to no field. Once
    insert_spam_headers has put its fields above them they read as continuation lines of
    X-Spam-Status, so treating them alike here is what makes
    ``remove_spam_headers(insert_spam_headers(m, ...)) == remove_spam_headers(m)`` hold for all
    input. Real mail never starts its header block with an indented line.
    """
    return _drop_spam_fields(raw, drop_stray_lines=True)


def _drop_spam_fields(raw: bytes, drop_stray_lines: bool) -> bytes:
    start = _header_start(raw)
    block = _scan_headers(raw, start, len(raw))
    names = [field.name for field in block.fields]
    drop = [
        index
        for index, name in enumerate(names)
        if name in _SPAM_NAMES or (name is None and drop_stray_lines)
    ]
    if not drop:
        return raw
    pieces = []
    kept_from = 0
    for index in drop:
        pieces.append(raw[kept_from : block.fields[index].start])
        kept_from = block.field_end(index)
    pieces.append(raw[kept_from:])
    return b"".join(pieces)


def insert_spam_headers(
    raw: bytes, is_spam: bool, score: float, threshold: float, version: str = ""
) -> bytes:
    """raw with fresh X-Spam-Flag and X-Spam-Status fields at the top of its header block.

    Existing X-Spam-Flag / X-Spam-Status fields are removed first so a message filtered twice
    carries one verdict. The new fields go right after the mbox 'From ' line when the message
    starts with one, else at the very start, and end in the message's own line ending: CRLF when
    its first line ends in CRLF, LF otherwise. The message is never re-serialised: nothing else
    changes, byte for byte.
    """
    newline = raw.find(b"\n")
    eol = b"\r\n" if newline > 0 and raw[newline - 1] == 0x0D else b"\n"
    flag = b"YES" if is_spam else b"NO"
    status = spam_status_value(is_spam, score, threshold, version).encode("ascii")
    new_fields = b"X-Spam-Flag: " + flag + eol + b"X-Spam-Status: " + status + eol
    # The insertion point comes from raw, not from the cleaned copy: removing fields can leave
    # a 'From ' body line at the top, which must not turn into an mbox separator line.
    start = _header_start(raw)
    cleaned = _drop_spam_fields(raw, drop_stray_lines=False)  # keeps raw[:start] as it is
    return cleaned[:start] + new_fields + cleaned[start:]


# --- charsets and transfer encodings ----------------------------------------------------------

# Codecs that Python accepts by name but that are no mail charset: some are slow on crafted input
# (punycode is quadratic) and the escapes would turn "\n" sequences in spam into line breaks.
_REFUSED_CODECS = frozenset({"idna", "punycode", "unicode-escape", "raw-unicode-escape"})
# Mailers label UTF-8 text as ASCII or Latin-1 all the time, and valid multi-byte UTF-8 is
# practically never what a Latin-1 text really means, so for these labels UTF-8 is tried first.
_OFTEN_MISLABELLED = frozenset({"ascii", "latin-1", "iso8859-1", "cp1252"})
# Labels that mail uses for what is really a superset (as browsers read them too), or that
# Python spells differently. Latin-1 text that uses cp1252's quotes and euro sign is common.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "windows-874": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "x-mac-roman": "mac-roman",
}
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(b for b in range(256) if b not in _BASE64_ALPHABET + b"=")


def _codec_name(charset: str | None) -> str | None:
    """The Python codec for a declared charset, or None for missing, unknown or unfit ones."""
    if not charset:
        return None
    # RFC 2231 lets a language tag follow the charset ("utf-8*en"); quotes are common breakage.
    label = charset.split("*", 1)[0].strip().strip("\"'").lower()
    if not label or len(label) > 64:
        return None
    try:
        name = codecs.lookup(_CHARSET_ALIASES.get(label, label)).name
        # Bytes-to-bytes codecs (zlib, base64, ...) raise LookupError here; empty input would
        # not do, Python returns "" for it without asking the codec.
        b"x".decode(name)
    except UnicodeError:
        pass  # a text codec that just cannot decode "x" on its own, such as UTF-16
    except (LookupError, ValueError, TypeError):
        return None
    return None if name in _REFUSED_CODECS else name


def _decode_bytes(data: bytes, charset: str | None, final: bool = True) -> str:
    """Text from bytes in a declared charset that may be wrong, unknown or missing.

    Tried in turn: the declared charset, UTF-8, and finally cp1252 with replacement characters,
    which cannot fail. With final=False the data is a prefix cut anywhere, so a multi-byte
    character cut in half at the end is dropped rather than counted as a decoding error.
    """
    declared = _codec_name(charset)
    candidates = [declared, "utf-8"]
    if declared in _OFTEN_MISLABELLED:
        candidates.reverse()
    for name in candidates:
        if name is None:
            continue
        try:
            return codecs.getincrementaldecoder(name)("strict").decode(data, final)
        except (UnicodeError, ValueError, LookupError):
            continue
    return data.decode("cp1252", errors="replace")


def _decode_base64(data: bytes) -> bytes:
    """Base64 that tolerates junk characters, missing padding and a cut at any point.

    Padding in the middle is kept as a chunk end: some mailers concatenate separately encoded
    chunks, and each must be decoded on its own for the bits to line up.
    """
    decoded = []
    for chunk in data.translate(None, _NOT_BASE64).split(b"="):
        if len(chunk) % 4 == 1:
            chunk = chunk[:-1]  # a lone trailing character holds no whole byte
        if chunk:
            decoded.append(binascii.a2b_base64(chunk + b"=" * (-len(chunk) % 4)))
    return b"".join(decoded)


_ENCODED_WORD = re.compile(r"=\?([^?\s]*)\?([bBqQ])\?([^?\s]*)\?=")
_BASE64_WORD = re.compile(r"[A-Za-z0-9+/]*=*")  # padding may be missing, junk may not


def _decode_rfc2047(value: bytes) -> str:
    """A header value with RFC 2047 encoded words decoded, tolerating every kind of breakage.

    Raw 8-bit bytes (RFC 6532 UTF-8 headers, or just sloppy mailers) are decoded like a body
    without charset. Whitespace between two encoded words is dropped as the RFC says, and
    adjacent words in one charset are joined before decoding, since mailers split multi-byte
    characters across words. Malformed encoded words are left as they are.
    """
    text = _decode_bytes(value, None)
    pieces: list[str] = []
    pending = b""  # bytes of adjacent encoded words in one charset, not decoded yet
    pending_charset = ""
    pos = 0
    for match in _ENCODED_WORD.finditer(text):
        charset, encoding, payload = match.groups()
        if encoding in "bB" and not _BASE64_WORD.fullmatch(payload):
            continue  # not base64 at all: the literal text says more than decoded noise
        between = text[pos : match.start()]
        if pos == 0 or between.strip(" \t"):
            pieces.append(_decode_bytes(pending, pending_charset) if pending else "")
            pieces.append(between)
            pending = b""
        elif charset.lower() != pending_charset:
            pieces.append(_decode_bytes(pending, pending_charset))
            pending = b""
        data = payload.encode("ascii", errors="ignore")
        pending += _decode_base64(data) if encoding in "bB" else binascii.a2b_qp(data, header=True)
        pending_charset = charset.lower()
        pos = match.end()
    if pending:
        pieces.append(_decode_bytes(pending, pending_charset))
    pieces.append(text[pos:])
    return "".join(pieces)


# --- HTML -------------------------------------------------------------------------------------

# html.parser is not used: on the CPython releases this project supports it can be quadratic on
# unclosed constructs (on 3.11, 320 KB of "<a" took 73 s), and spam is exactly where such HTML
# turns up. This tokenizer is linear: each step searches forward once and never rescans. Its one
# simplification, a '>' inside a quoted attribute ending the tag early, costs a few stray
# characters of text at worst.
_TAG_START = re.compile(r"<(!--|[!?]|/?[A-Za-z])")
_TAG_NAME = re.compile(r"</?([A-Za-z][A-Za-z0-9:-]*)")
_IMG_ALT = re.compile(r"""\salt\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_SKIPPED_CONTENT = {
    name: re.compile(rf"</{name}\s*>", re.IGNORECASE) for name in ("script", "style", "template")
}
_BLOCK_TAGS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "br", "center", "dd", "div", "dl", "dt"),
        *("fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5"),
        *("h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table"),
        *("tbody", "tfoot", "thead", "title", "tr", "ul"),
    }
)
_CELL_TAGS = frozenset({"td", "th"})
_BLANK_LINES = re.compile(r"\n{3,}")


def _html_to_text(markup: str) -> str:
    """Readable text from HTML: tags and comments dropped, script/style content dropped, block
    elements and <br> as line breaks, image alt text kept, entities unescaped, whitespace
    collapsed."""
    out: list[str] = []
    pos = 0
    while True:
        match = _TAG_START.search(markup, pos)
        if match is None:
            out.append(markup[pos:])
            break
        out.append(markup[pos : match.start()])
        if match.group(1) == "!--":
            close = markup.find("-->", match.end())
            if close < 0:
                break  # an unclosed comment hides the rest, as in a browser
            pos = close + 3
            continue
        close = markup.find(">", match.end())
        if close < 0:
            break  # a tag cut off at the end shows nothing
        tag = markup[match.start() : close + 1]
        pos = close + 1
        name_match = _TAG_NAME.match(tag)
        name = name_match.group(1).lower() if name_match else ""
        if name in _SKIPPED_CONTENT and not tag.startswith("</") and not tag.endswith("/>"):
            end_tag = _SKIPPED_CONTENT[name].search(markup, pos)
            pos = end_tag.end() if end_tag else len(markup)
            out.append("\n")
        elif name in _BLOCK_TAGS:
            out.append("\n")
        elif name in _CELL_TAGS:
            out.append(" ")
        elif name == "img" and (alt := _IMG_ALT.search(tag)):
            out.append(" " + next(group for group in alt.groups() if group is not None) + " ")
    text = html.unescape("".join(out))
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _clean_plain(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _BLANK_LINES.sub("\n\n", text).strip()


# --- MIME -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    content_type: str  # lower-case "type/subtype"
    boundary: bytes | None
    charset: str | None
    encoding: str  # Content-Transfer-Encoding, lower case
    is_attachment: bool
    body_start: int
    end: int


@dataclass
class _Budget:
    """What extract_text may still spend, shared by all parts of one message."""

    chars: int  # characters of text still wanted
    decoded_bytes: int  # payload bytes that may still be decoded and converted to text
    parts: int  # MIME parts that may still be looked at


_PART_FIELDS = {b"content-type", b"content-transfer-encoding", b"content-disposition"}


def _read_part(raw: bytes, start: int, end: int, default_type: str = "text/plain") -> _Part:
    """The headers of the message or MIME part in raw[start:end] that decide how to read it."""
    block = _scan_headers(raw, start, end, _MAX_HEADER_FIELDS)
    values = _first_values(raw, block, _PART_FIELDS)
    # Parameter parsing (quoting, RFC 2231 continuations) is delegated to the email package.
    # Latin-1 maps bytes to characters one to one, so a boundary survives the round trip.
    headers = email.message.Message()
    headers.set_default_type(default_type)
    if b"content-type" in values:
        headers["Content-Type"] = values[b"content-type"].decode("latin-1")
    content_type = headers.get_content_type()
    boundary = None
    if content_type.startswith("multipart/"):
        param = headers.get_boundary()
        if param:
            boundary = param.encode("latin-1", errors="replace")
    disposition = values.get(b"content-disposition", b"").split(b";", 1)[0].strip().lower()
    body_start = block.end
    if _is_blank_line(raw, body_start, end):
        body_start = raw.find(b"\n", body_start, end) + 1
    return _Part(
        content_type=content_type,
        boundary=boundary,
        charset=headers.get_content_charset(),
        encoding=values.get(b"content-transfer-encoding", b"").strip().lower().decode("latin-1"),
        is_attachment=disposition == b"attachment",
        body_start=body_start,
        end=end,
    )


_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?:\r?\n|\r?\Z)")


def _split_multipart(
    raw: bytes,
    start: int,
    end: int,
    boundary: bytes,
    limit: int,
) -> list[tuple[int, int]]:
    """The (start, end) offsets of at most `limit` body parts of the multipart body raw[start:end].

    A delimiter is "--boundary" at the start of a line, optionally followed by "--" (the close
    delimiter) and spaces. The line break before a delimiter belongs to it. A missing close
    delimiter ends the last part at the end of the body, as the email package does; text before
    the first and after the last delimiter (preamble and epilogue) is ignored.
    """
    delimiter = b"--" + boundary
    parts: list[tuple[int, int]] = []
    part_start: int | None = None  # None until the first delimiter
    pos = start
    while len(parts) < limit:
        found = raw.find(delimiter, pos, end)
        if found < 0:
            break
        pos = found + len(delimiter)
        tail = _DELIMITER_TAIL.match(raw, pos, end)
        if (found > start and raw[found - 1] != 0x0A) or tail is None:
            continue  # inside a line, or a longer boundary that merely starts the same
        if part_start is not None:
            part_end = found - 1  # the LF before the delimiter
            if raw[part_end - 1] == 0x0D:
                part_end -= 1
            parts.append((part_start, max(part_start, part_end)))
        pos = tail.end()
        if tail.group(1):
            return parts
        part_start = pos
    if part_start is not None and len(parts) < limit:
        parts.append((part_start, end))
    return parts


_DELIMITER_LIKE = re.compile(rb"^--([!-~]{1,200}?)[ \t]*\r?$", re.MULTILINE)
_BOUNDARY_GUESS_WINDOW = 65536


def _multipart_ranges(raw: bytes, part: _Part, limit: int) -> list[tuple[int, int]]:
    """The body parts of a multipart part, guessing the boundary when the declared one is
    missing or never used (mangled by a relay, or a careless spammer's template): the first line
    that looks like a delimiter near the top of the body is taken as one."""
    if part.boundary:
        ranges = _split_multipart(raw, part.body_start, part.end, part.boundary, limit)
        if ranges:
            return ranges
    window_end = min(part.end, part.body_start + _BOUNDARY_GUESS_WINDOW)
    guess = _DELIMITER_LIKE.search(raw, part.body_start, window_end)
    if guess is None:
        return []
    boundary = guess.group(1).removesuffix(b"--")
    return _split_multipart(raw, part.body_start, part.end, boundary, limit)


def _choose_alternative(parts: list[_Part]) -> list[_Part]:
    """The one part of a multipart/alternative to read: plain text is what the sender wrote for
    humans and is cheaper to read than HTML; failing both, the last (richest) one."""
    readable = [part for part in parts if not part.is_attachment]
    for wanted in ("text/plain", "text/html"):
        for part in readable:
            if part.content_type == wanted:
                return [part]
    return readable[-1:]


def _payload(raw: bytes, part: _Part, limit: int) -> tuple[bytes, bool]:
    """At most `limit` decoded bytes of the part's body, and whether that is all of it.

    Only a prefix of the encoded body is decoded: a 50 MB base64 attachment that is declared
    text costs as much as the few kilobytes the model can use.
    """
    if part.encoding == "base64":
        encoded_limit = limit * 2 + 16  # 4 characters per 3 bytes, plus line breaks
    elif part.encoding == "quoted-printable":
        encoded_limit = limit * 3 + 16  # at most "=XX" per byte
    else:
        encoded_limit = limit
    encoded_end = min(part.end, part.body_start + encoded_limit)
    encoded = raw[part.body_start : encoded_end]
    if part.encoding == "base64":
        data = _decode_base64(encoded)
    elif part.encoding == "quoted-printable":
        data = binascii.a2b_qp(encoded)
    else:
        data = encoded
    complete = encoded_end == part.end and len(data) <= limit
    return data[:limit], complete


def _part_text(raw: bytes, part: _Part, budget: _Budget) -> str:
    is_html = part.content_type == "text/html"
    per_char = _HTML_BYTES_PER_CHAR if is_html else _PLAIN_BYTES_PER_CHAR
    limit = min(budget.decoded_bytes, budget.chars * per_char + 1024)
    data, complete = _payload(raw, part, limit)
    budget.decoded_bytes -= len(data)
    # NULs go after decoding: in UTF-16 text they are half of every ASCII character.
    text = _decode_bytes(data, part.charset, final=complete).replace("\x00", "")
    text = _html_to_text(text) if is_html else _clean_plain(text)
    budget.chars -= len(text)
    return text


def _body_texts(raw: bytes, start: int, budget: _Budget) -> list[str]:
    """The readable text parts of the message starting at `start`, in reading order.

    The MIME tree is walked with an explicit stack, not recursion, so that no nesting depth can
    raise RecursionError; parts nested deeper than _MAX_DEPTH are skipped. Parts are offset
    ranges into `raw`: nothing is copied but the prefixes actually decoded.
    """
    texts: list[str] = []
    stack = [(_read_part(raw, start, len(raw)), 0)]
    budget.parts -= 1
    while stack and budget.chars > 0 and budget.decoded_bytes > 0:
        part, depth = stack.pop()
        if part.is_attachment:
            continue
        if part.content_type.startswith("multipart/"):
            if depth >= _MAX_DEPTH or budget.parts <= 0:
                continue
            ranges = _multipart_ranges(raw, part, budget.parts)
            if ranges:
                # Parts of a multipart/digest are messages unless they say otherwise (RFC 2046).
                digest = part.content_type == "multipart/digest"
                default = "message/rfc822" if digest else "text/plain"
                children = [_read_part(raw, begin, end, default) for begin, end in ranges]
                budget.parts -= len(children)
                if part.content_type == "multipart/alternative":
                    children = _choose_alternative(children)
                stack.extend((child, depth + 1) for child in reversed(children))
                continue
            # Not one delimiter, not even a guessed one: the body is likely still readable text,
            # which beats returning nothing.
            part = _Part("text/plain", None, part.charset, "", False, part.body_start, part.end)
        if part.content_type == "message/rfc822":
            # A forwarded message shown inline is part of what the recipient reads.
            if depth < _MAX_DEPTH and budget.parts > 0:
                budget.parts -= 1
                stack.append((_read_part(raw, part.body_start, part.end), depth + 1))
        elif part.content_type in ("text/plain", "text/html"):
            text = _part_text(raw, part, budget)
            if text:
                texts.append(text)
    return texts


def extract_text(raw: bytes, max_chars: int = 20000) -> str:
    """The text the model sees from an RFC 822 message: decoded Subject, a newline, then the
    readable body.

    The body is the text/plain parts (HTML reduced to text where a part has no plain version),
    in order, separated by blank lines; attachments and non-text parts are skipped. The result
    is at most `max_chars` characters and contains no NUL characters. A leading mbox 'From '
    line is skipped. This function never raises: on input it cannot make sense of at all it
    returns a lenient decoding of the raw bytes.
    """
    max_chars = max(max_chars, 0)
    try:
        return _extract_text(raw, max_chars)
    except Exception:
        # Defence in depth only (the tests check _extract_text itself never raises): a mail
        # filter must deliver mail even if this module has a bug.
        fallback = raw[: max_chars * _PLAIN_BYTES_PER_CHAR].decode("utf-8", errors="replace")
        return fallback.replace("\x00", "")[:max_chars]


def _extract_text(raw: bytes, max_chars: int) -> str:
    start = _header_start(raw)
    block = _scan_headers(raw, start, len(raw), _MAX_HEADER_FIELDS)
    subject_value = _first_values(raw, block, {b"subject"}).get(b"subject", b"")
    subject = " ".join(_decode_rfc2047(subject_value).replace("\x00", "").split())
    budget = _Budget(chars=max_chars, decoded_bytes=32 * max_chars + 2**20, parts=_MAX_PARTS)
    body = "\n\n".join(_body_texts(raw, start, budget)).replace("\x00", "")
    return f"{subject}\n{body}"[:max_chars]


# --- mailboxes --------------------------------------------------------------------------------


def looks_like_mbox(head: bytes) -> bool:
    """Whether the first bytes of a file are those of an mbox: a 'From ' separator line."""
    return head.startswith(b"From ")


def looks_like_email(head: bytes) -> bool:
    """Whether the first bytes of a file are those of a single RFC 822 message: the first line
    is a header field such as "Received: ..." or "Return-Path: <...>" (and not an mbox)."""
    return not looks_like_mbox(head) and _FIELD_NAME.match(head.split(b"\n", 1)[0]) is not None


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
    for line in iter(stream.readline, b""):
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


def _iter_mbox_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        yield from split_mbox(stream)


def _iter_files(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        yield path.read_bytes()


def iter_mail_source(path: Path) -> Iterator[bytes]:
    """Messages from an mbox file, a Maildir (cur/ and new/ subfolders), or a folder of .eml
    files (sorted by name, for reproducibility). Raises ValueError with a one-line message for a
    path that is none of these.

    A single file holding one RFC 822 message is accepted too, and an empty file is an empty
    mbox. Maildir messages come from cur/ then new/, each sorted by name (Maildir names start
    with the delivery time); tmp/ holds deliveries in progress and is left alone. The path is
    checked when this is called, not when the first message is read.
    """
    path = Path(path)
    if path.is_file():
        with path.open("rb") as stream:
            head = stream.read(4096)
        if not head or looks_like_mbox(head):
            return _iter_mbox_file(path)
        if looks_like_email(head):
            return iter([path.read_bytes()])
        raise ValueError(f"{path}: neither an mbox nor an RFC 822 message")
    if path.is_dir():
        return _iter_files(mail_folder_files(path))
    raise ValueError(f"{path}: no such file or folder")


def mail_folder_files(path: Path) -> list[Path]:
    """The message files of a Maildir (cur/ then new/, each sorted by name) or of a folder of
    .eml files (sorted by name). Raises ValueError for a folder that is neither."""
    subfolders = [path / "cur", path / "new"]
    if any(folder.is_dir() for folder in subfolders):
        return [
            entry
            for folder in subfolders
            if folder.is_dir()
            for entry in sorted(folder.iterdir())
            if entry.is_file() and not entry.name.startswith(".")
        ]
    files = sorted(entry for entry in path.iterdir() if entry.is_file())
    emls = [entry for entry in files if entry.suffix.lower() == ".eml"]
    if emls:
        return emls
    raise ValueError(f"{path}: a folder that is neither a Maildir nor holds .eml files")
