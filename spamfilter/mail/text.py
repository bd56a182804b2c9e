"""The text the model sees of an email: decoded Subject and readable body.

Mail is full of wrong charsets, broken MIME and 8-bit headers: ``extract_text`` never raises and
bounds its work on hostile input. HTML is rendered as a mail client shows it (:mod:`.render`), Unicode
disguises undone (:mod:`.normalise`) and quoted replies weighed (:mod:`.quotes`).
"""

from __future__ import annotations

import binascii
import codecs
import email.message
import re
from dataclasses import dataclass
from itertools import islice

from .headers import field_values, first_values, header_start, is_blank_line, scan_headers
from .normalise import normalise
from .quotes import drop_quoted
from .render import LITERAL_MARK, visible_text

# Bounds for extract_text. Real mail stays far below them; hostile mail must not be able to turn
# one message into seconds of CPU or hundreds of megabytes of memory.
_MAX_PARTS = 1000  # MIME parts looked at per message
_MAX_DEPTH = 64  # nesting of multipart/message parts followed; real mail rarely exceeds 5
_MAX_HEADER_FIELDS = 10_000  # header fields parsed per part before we just look for the body
_PLAIN_BYTES_PER_CHAR = 4  # the most bytes one character takes in UTF-8 (or UTF-16/32)
_HTML_BYTES_PER_CHAR = 16  # markup is verbose: allow for tags, styles and entities
# HTML tags parsed per message, all parts together. An HTML parser's tree construction scans the
# stack of open elements for many tags, so thousands of unclosed <div>, <ul> or <select> cost time
# quadratic in their number: 80,000 "<dl>" (320 KB) took 7.6 s of the model worker's time. The
# corpus's largest HTML part has 1,648 tags; at this cap the worst pattern costs about 0.2 s.
_MAX_HTML_TAGS = 8192
_FIRST_SUBJECTS = 3  # Subject fields read from the top of a message that has several (and its last)
# A tag as the parser's tokenizer reads it: from "<" and a letter (or / ! ?) to the next ">", so
# "<a<a<a" is one tag; counts no fewer tags than the parser builds elements from.
_TAG_START = re.compile(r"<[A-Za-z/!?][^>]*>?")
# Plain text that starts as an HTML document does: only document-level tags, so that a message
# about HTML that begins with a snippet of it is not mistaken for one.
_HTML_DOCUMENT = re.compile(r"\s*<(?:!doctype\s+html|html|head|body)[\s>]", re.IGNORECASE)
# A tag, or a comment's opening or closing mark (its text stays). Bounded, and no '<' inside: one
# scan per '<', linear in the text.
_TAG = re.compile(r"<!--|-->|<[A-Za-z/!?][^<>]{0,1000}>")
_SPACES = re.compile(r"[ \t]+")


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

    UTF-8 with a few invalid bytes is UTF-8 (:func:`_mostly_utf8`): a browser replaces each bad
    byte and shows the rest, where reading the whole part as cp1252 turned every zero-width space
    and look-alike letter into visible mojibake that normalisation no longer undoes.
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
    mostly = _mostly_utf8(data, final, declared == "utf-8")
    return mostly if mostly is not None else data.decode("cp1252", errors="replace")


_REPLACEMENT_BYTES = "\ufffd".encode()


def _mostly_utf8(data: bytes, final: bool, declared: bool) -> str | None:
    """``data`` read as UTF-8 with each invalid sequence replaced, where it is mostly UTF-8: it
    holds more valid multi-byte characters than invalid sequences, or any where UTF-8 is declared
    (a browser reads declared UTF-8 so whatever it holds; Latin-1 mislabelled as UTF-8 has no valid
    multi-byte character at all, and stays cp1252). None where it is not."""
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(data, final)
    genuine = data.count(_REPLACEMENT_BYTES)  # replacement characters that the text itself holds
    invalid = text.count("\ufffd") - genuine
    multibyte = len(text) - len(text.encode("ascii", errors="ignore")) - invalid
    return text if multibyte > invalid or (declared and multibyte > 0) else None


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


_BLANK_LINES = re.compile(r"\n{3,}")


def _clean_plain(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _BLANK_LINES.sub("\n\n", text).strip()


# text/enriched (RFC 1896; text/richtext, its older form, is read alike): one pass over its commands,
# line breaks and "<<", so that no input makes the reading cost more than its length.
_ENRICHED = ("text/enriched", "text/richtext")
_ENRICHED_TOKEN = re.compile(r"<<|<(/?)([A-Za-z0-9-]{1,60})>|\r?\n(?:\r?\n)*")


def _enriched_text(text: str) -> str:
    """text/enriched as a client draws it (Thunderbird and Apple Mail do): formatting commands out,
    what ``<param>`` holds out, ``<<`` a ``<``, a lone line break a space and n breaks n - 1."""
    out: list[str] = []
    at = hidden = 0
    for token in _ENRICHED_TOKEN.finditer(text):
        piece = token.group(0)
        if not hidden:
            out.append(text[at : token.start()])
            if piece == "<<":
                out.append("<")
            elif token.group(2) is None:  # line breaks
                breaks = piece.count("\n")
                out.append(" " if breaks == 1 else "\n" * (breaks - 1))
        if token.group(2) is not None and token.group(2).lower() == "param":
            hidden = max(0, hidden - 1) if token.group(1) else hidden + 1
        at = token.end()
    if not hidden:
        out.append(text[at:])
    return _clean_plain("".join(out))


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
    flowed: str = ""  # format=flowed text/plain (RFC 3676): "yes" where delsp=yes, else "no"; "" not flowed


@dataclass
class _Budget:
    """What extract_text may still spend, shared by all parts of one message."""

    chars: int  # characters of text still wanted
    decoded_bytes: int  # payload bytes that may still be decoded and converted to text
    parts: int  # MIME parts that may still be looked at
    tags: int = 0  # HTML tags that may still be parsed (_MAX_HTML_TAGS a message)


_PART_FIELDS = {b"content-type", b"content-transfer-encoding", b"content-disposition"}


def _boundary(headers: email.message.Message) -> str | None:
    """The multipart boundary. An RFC 2231 value names its charset (``boundary*=idna''b1``), and
    the email package decodes it with that codec, raising for those that cannot decode (idna,
    punycode): the message was then read as one raw text, its base64 body undecoded. The
    boundary is ASCII in every mailer; its characters are taken as they are."""
    try:
        return headers.get_boundary()
    except (UnicodeError, LookupError):
        value = headers.get_param("boundary")
        text = value[2] if isinstance(value, tuple) else value
        return str(text).strip() or None if text else None


def _read_part(raw: bytes, start: int, end: int, default_type: str = "text/plain") -> _Part:
    """The headers of the message or MIME part in raw[start:end] that decide how to read it."""
    block = scan_headers(raw, start, end, _MAX_HEADER_FIELDS)
    values = first_values(raw, block, _PART_FIELDS)
    # Parameter parsing (quoting, RFC 2231 continuations) is delegated to the email package.
    # Latin-1 maps bytes to characters one to one, so a boundary survives the round trip.
    headers = email.message.Message()
    headers.set_default_type(default_type)
    if b"content-type" in values:
        headers["Content-Type"] = values[b"content-type"].decode("latin-1")
    content_type = headers.get_content_type()
    boundary = None
    if content_type.startswith("multipart/"):
        param = _boundary(headers)
        if param:
            boundary = param.encode("latin-1", errors="replace")
    disposition = values.get(b"content-disposition", b"").split(b";", 1)[0].strip().lower()
    body_start = block.end
    if is_blank_line(raw, body_start, end):
        body_start = raw.find(b"\n", body_start, end) + 1
    flowed = ""
    if content_type == "text/plain" and str(headers.get_param("format") or "").strip().lower() == "flowed":
        flowed = "yes" if str(headers.get_param("delsp") or "").strip().lower() == "yes" else "no"
    return _Part(
        flowed=flowed,
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


# Attachments that mail clients show below the body (Thunderbird and Apple Mail show text and
# attached messages inline) or that the recipient opens to read (an HTML "invoice"): read in their
# place, as a spammer could put the offer there behind a body of a few harmless words. Other
# attachments (pictures, documents, archives, CSV and patches by their types) are not read.
_SHOWN_ATTACHMENTS = frozenset({"text/plain", "text/html", "message/rfc822"})


def _choose_alternatives(parts: list[_Part]) -> list[_Part]:
    """The parts of a multipart/alternative to read: its plain text, if it has one, and the last
    readable part, which is what mail clients show (RFC 2046: the richest last), where that is
    another (:func:`_alternatives_read` decides what of them is read)."""
    readable = [part for part in parts if not part.is_attachment]
    plain = next((part for part in readable if part.content_type == "text/plain"), None)
    # the last that this reader can read (a text/calendar invitation or a text/watch-html last
    # leaves the HTML before it as the body a client shows)
    shown = [
        part
        for part in readable
        if part.content_type in _SHOWN_TYPES or part.content_type.startswith("multipart/")
    ]
    shown = shown[-1:] or readable[-1:]
    if plain is None or shown[0] is plain:
        return shown
    return [plain, shown[0]]


_SHOWN_TYPES = ("text/html", "text/plain", *_ENRICHED)
_READ_TYPES = frozenset(_SHOWN_TYPES)
_WORDS = re.compile(r"\w+")
_NEW_PAIRS_A_LINE = 3  # word pairs of a shown line that the plain text lacks: the line says something new


def _word_pairs(text: str) -> list[tuple[str, str]]:
    words = _WORDS.findall(text.lower())
    return list(zip(words, words[1:], strict=False))


def _alternatives_read(plain: str, shown: str) -> list[str]:
    """What is read of an alternative: its plain text, and before it the lines of the part a mail
    client shows (the HTML) that say something the plain text does not (at least
    ``_NEW_PAIRS_A_LINE`` word pairs of their own: pairs, in order, so that an offer cannot pass
    as known by scattering its words through the plain part).

    Most alternatives are one message written twice, and are read as the plain text alone (what
    the model has always been trained on: the HTML of commercial newsletters reads as spam to it,
    RESULTS.md section 39), with the few lines that the HTML adds (a footer, a sponsor's line). A
    spam whose HTML holds the offer behind a plain part of newsletter text, or repeats the plain
    part and adds the offer (every client shows the HTML), is read with the offer's lines first,
    where no length of plain text can push them past the reader's caps; a plain part that is only
    "view this in HTML" leaves the HTML read whole. The plain part's quotations count as known
    (an HTML reply shows the same quotation, often in markup not recognised as one)."""
    if not shown.strip():
        return [plain] if plain else []
    if not plain.strip():
        return [shown]
    # compared as they are read (disguises undone), not as they are written; the plain part's
    # quotations count as known: an HTML reply quotes them too
    known = set(_word_pairs(normalise(plain)))
    # the shown text normalised once (as extract_text normalises all it reads), then line by line
    new_lines = [
        line
        for line in normalise(shown).split("\n")
        if sum(pair not in known for pair in _word_pairs(line)) >= _NEW_PAIRS_A_LINE
    ]
    return ["\n".join(new_lines), plain] if new_lines else [plain]


_UUENCODED = frozenset({"x-uuencode", "uuencode", "x-uue"})


def _decode_uu(data: bytes) -> bytes:
    """uuencoded data (``Content-Transfer-Encoding: x-uuencode``, which mailers still send and
    clients decode), tolerating a missing ``begin`` or ``end`` line and lines cut or padded
    wrong (each decoded as far as its length byte says); a line that is not uuencode is skipped."""
    decoded = []
    lines = data.split(b"\n")
    begin = next((n for n, line in enumerate(lines[:50]) if line.startswith(b"begin ")), -1)
    for line in lines[begin + 1 :]:
        line = line.rstrip(b"\r")
        if line.strip() == b"end":
            break
        if not line:
            continue
        try:
            decoded.append(binascii.a2b_uu(line))
        except binascii.Error:
            size = (((line[0] - 32) & 63) * 4 + 5) // 3  # the characters its length byte promises
            try:
                decoded.append(binascii.a2b_uu(line[:size]))
            except binascii.Error:
                continue
    return b"".join(decoded)


def _unflowed(text: str, delsp: bool) -> str:
    """format=flowed text (RFC 3676) as its clients show it: a line that ends in a space goes on
    in the next line of the same quotation depth (the space itself deleted where ``delsp``, so
    that ``Vi `` and ``agra`` are one word), space-stuffing undone; the signature line stays."""
    out: list[str] = []
    paragraph: str | None = None
    depth_of = 0
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        body = line[depth:]
        body = body[1:] if body.startswith(" ") else body  # space-stuffed (and "> " quoted)
        if paragraph is not None and depth != depth_of:
            out.append(paragraph)  # a flowed line before a change of depth ends its paragraph
            paragraph = None
        flowed = body.endswith(" ") and body != "-- "
        if flowed and delsp:
            body = body[:-1]
        if paragraph is None:
            paragraph, depth_of = (">" * depth + " " if depth else "") + body, depth
        else:
            paragraph += body
        if not flowed:
            out.append(paragraph)
            paragraph = None
    if paragraph is not None:
        out.append(paragraph)
    return "\n".join(out)


def _payload(raw: bytes, part: _Part, limit: int) -> tuple[bytes, bool]:
    """At most `limit` decoded bytes of the part's body, and whether that is all of it.

    Only a prefix of the encoded body is decoded: a 50 MB base64 attachment that is declared
    text costs as much as the few kilobytes the model can use.
    """
    if part.encoding == "base64" or part.encoding in _UUENCODED:
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
    elif part.encoding in _UUENCODED:
        data = _decode_uu(encoded)
    else:
        data = encoded
    complete = encoded_end == part.end and len(data) <= limit
    return data[:limit], complete


def _without_tags(markup: str) -> str:
    """Markup read as a plain-text client shows it: every character but the tags."""
    lines = _SPACES.sub(" ", _TAG.sub(" ", markup)).split("\n")
    return _clean_plain("\n".join(line.strip() for line in lines))


def _html_text(markup: str, budget: _Budget) -> str:
    """The visible text of an HTML part, its first ``budget.tags`` tags rendered. Past the
    message's tag budget the markup is read without its tags, every other character kept (hidden
    text too: beyond the cap nothing a reader sees can be hidden from the model either)."""
    starts = [found.start() for found in islice(_TAG_START.finditer(markup), budget.tags + 1)]
    used = min(len(starts), budget.tags)
    cut = starts[used] if len(starts) > used else len(markup)
    budget.tags -= used
    rendered = visible_text(markup[:cut], marked=True) if cut else ""
    if cut == len(markup):
        return rendered
    return "\n".join(piece for piece in (rendered, _without_tags(markup[cut:])) if piece)


def _part_text(raw: bytes, part: _Part, budget: _Budget) -> str:
    is_html = part.content_type == "text/html"
    per_char = _HTML_BYTES_PER_CHAR if is_html else _PLAIN_BYTES_PER_CHAR
    limit = min(budget.decoded_bytes, budget.chars * per_char + 1024)
    data, complete = _payload(raw, part, limit)
    budget.decoded_bytes -= len(data)
    # NULs go after decoding: in UTF-16 text they are half of every ASCII character.
    text = _decode_bytes(data, part.charset, final=complete).replace("\x00", "")
    if is_html:
        text = _html_text(text, budget)
    elif part.content_type in _ENRICHED:
        text = _enriched_text(text)
    elif _HTML_DOCUMENT.match(text):
        # An HTML document sent as text/plain (a mailer that labels its HTML alternative wrongly):
        # its tags are not words (read as words, they made a newsletter score as spam), but a
        # plain-text client shows everything else, hidden elements and comments included, so
        # all of that is read: rendering it would let a spammer hide an offer from the model
        # that the reader still sees.
        text = _without_tags(text)
    elif part.flowed == "yes":
        # delsp=yes: a word may be cut across lines ("Vi " / "agra"), which its clients join; other
        # flowed text breaks lines at spaces only, and is read as it is (its words are whole)
        text = _clean_plain(_unflowed(text.replace("\r\n", "\n"), delsp=True))
    else:
        text = _clean_plain(text)
    budget.chars -= len(text)
    return text


def _body_texts(raw: bytes, start: int, budget: _Budget) -> list[str]:
    """The readable text parts of the message starting at `start`, in reading order.

    The MIME tree is walked with an explicit stack, not recursion, so that no nesting depth can
    raise RecursionError; parts nested deeper than _MAX_DEPTH are skipped. Parts are offset
    ranges into `raw`: nothing is copied but the prefixes actually decoded.
    """
    # Each stack entry: a part, its depth, and where it stands in a multipart/alternative whose
    # plain part and shown part are both read (its number and "plain" or "shown"; None else).
    read: list[tuple[str, tuple[int, str] | None]] = []
    stack: list[tuple[_Part, int, tuple[int, str] | None]] = [(_read_part(raw, start, len(raw)), 0, None)]
    budget.parts -= 1
    groups = 0
    while stack and budget.chars > 0 and budget.decoded_bytes > 0:
        part, depth, group = stack.pop()
        if part.is_attachment and part.content_type not in _SHOWN_ATTACHMENTS:
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
                roles: list[tuple[int, str] | None] = [group] * len(children)
                if part.content_type == "multipart/alternative":
                    children = _choose_alternatives(children)
                    groups += 1
                    paired: list[tuple[int, str] | None] = [(groups, "plain"), (groups, "shown")]
                    roles = paired if len(children) == 2 else [group] * len(children)
                pairs = list(zip(children, roles, strict=True))
                stack.extend((child, depth + 1, role) for child, role in reversed(pairs))
                continue
            # Not one delimiter, not even a guessed one: the body is likely still readable text,
            # which beats returning nothing.
            part = _Part("text/plain", None, part.charset, "", False, part.body_start, part.end)
        if part.content_type == "message/rfc822":
            # A forwarded message shown inline is part of what the recipient reads.
            if depth < _MAX_DEPTH and budget.parts > 0:
                budget.parts -= 1
                stack.append((_read_part(raw, part.body_start, part.end), depth + 1, group))
        elif part.content_type in _READ_TYPES or (depth == 0 and part.content_type.startswith("text/")):
            # a message that is one text part of a type this reader does not know is shown as plain
            # text (RFC 2046 4.1.4), as its clients show it
            text = _part_text(raw, part, budget)
            if text:
                read.append((text, group))
    return _with_alternatives_read(read)


def _with_alternatives_read(read: list[tuple[str, tuple[int, str] | None]]) -> list[str]:
    """The texts in reading order, each alternative's plain and shown texts as
    :func:`_alternatives_read` reads them (at the place of the first of them)."""
    texts: list[str] = []
    done: set[int] = set()
    for text, group in read:
        if group is None:
            texts.append(text)
        elif group[0] not in done:
            done.add(group[0])
            plain = "\n\n".join(t for t, g in read if g == (group[0], "plain"))
            shown = "\n\n".join(t for t, g in read if g == (group[0], "shown"))
            texts.extend(_alternatives_read(plain, shown))
    return texts


# How much of a message the model reads, each cap owned here once (ARCHITECTURE.md "Reading caps"):
# 1. a message handed over alone (pipeline mode, the service, the milter) is read from its first
#    MESSAGE_BYTES_READ bytes, as spamc sends at most 500 KB (formats.message_text);
# 2. its text (Subject, newline, readable body) is at most TEXT_CHARS_READ characters (extract_text);
# 3. a text from any format is cut to chars_kept(max_length) characters before tokenizing (at least
#    TEXT_CHARS_READ; more for a model whose windows hold more), which bounds BPE's work; a model's
#    ModelRecipe.chars_kept is this, and the runtime reads it from the recipe;
# 4. its tokens are read in at most ModelRecipe.max_windows windows of max_length (windows.py).
# Training reads mail through the same extract_text, so it sees what the filter sees.
MESSAGE_BYTES_READ = 512 * 1024
TEXT_CHARS_READ = 20_000
CHARS_PER_TOKEN_KEPT = 64  # far above GPT-2's longest tokens: the first max_length tokens are intact


def chars_kept(max_length: int) -> int:
    """Characters of a text tokenized at most for a model reading ``max_length`` tokens a window
    (cap 3 above): a bounded prefix keeps a huge text from stalling BPE (or from filling the Ray
    engine's object store); within it, windows (:mod:`spamfilter.windows`) read the beginning and
    the end."""
    return max(TEXT_CHARS_READ, CHARS_PER_TOKEN_KEPT * max_length)


def extract_text(raw: bytes, max_chars: int = TEXT_CHARS_READ) -> str:
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
    start = header_start(raw)
    block = scan_headers(raw, start, len(raw), _MAX_HEADER_FIELDS)
    # A message has one Subject; one with several shows the first in some clients and the last in
    # others, so the first few and the last are read (each once), in order, as one line.
    subjects = field_values(raw, block, b"subject", _FIRST_SUBJECTS)
    read = (" ".join(normalise(_decode_rfc2047(value).replace("\x00", "")).split()) for value in subjects)
    subject = " ".join(line for line in dict.fromkeys(read) if line)
    budget = _Budget(
        chars=max_chars, decoded_bytes=32 * max_chars + 2**20, parts=_MAX_PARTS, tags=_MAX_HTML_TAGS
    )
    body = "\n\n".join(_body_texts(raw, start, budget)).replace("\x00", "")
    # quotations are plain text's ">" lines and HTML's quotation markup, never HTML's own text
    # that begins with ">" (render marks it)
    body = drop_quoted(normalise(body)).replace(LITERAL_MARK, "")
    return f"{subject}\n{body}"[:max_chars]
