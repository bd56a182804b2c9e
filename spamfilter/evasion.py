"""Spammers' tricks, as functions that change one raw spam message: for benchmarks and training.

Each trick in :data:`TRICKS` takes the raw RFC 822 bytes of a spam (a leading mbox ``From `` line
allowed), a seeded :class:`random.Random` and a pool of ordinary ham paragraphs (see
:func:`ham_paragraphs`), and returns a changed message that a mail client still reads: the header
block is kept byte for byte except the MIME fields a changed body needs (``Content-Type``,
``Content-Transfer-Encoding``, ``MIME-Version``), the line ending (LF or CRLF) is kept, and a
changed body is encoded again (charset and transfer encoding set to match). In a multipart
message the first text/plain and the first text/html part are changed. A message with no text
part to change is returned as it is. The result depends only on the input and the Random's state.

Standard library only; nothing here decides whether a message is spam.
"""

from __future__ import annotations

import base64
import codecs
import email
import html
import quopri
import random
import re
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from email.generator import BytesGenerator
from email.message import Message
from email.policy import compat32
from io import BytesIO

from .mail import extract_text

Trick = Callable[[bytes, random.Random, Sequence[str]], bytes]

#: Latin letters and the Cyrillic or Greek letters drawn like them in common fonts.
HOMOGLYPHS: dict[str, str] = {
    "a": "\u0430", "c": "\u0441", "d": "\u0501", "e": "\u0435", "h": "\u04bb", "i": "\u0456",
    "j": "\u0458", "l": "\u04cf", "o": "\u043e", "p": "\u0440", "q": "\u051b", "s": "\u0455",
    "v": "\u03bd", "w": "\u051d", "x": "\u0445", "y": "\u0443",
    "A": "\u0410", "B": "\u0412", "C": "\u0421", "E": "\u0415", "H": "\u041d", "I": "\u0406",
    "J": "\u0408", "K": "\u041a", "M": "\u041c", "N": "\u039d", "O": "\u041e", "P": "\u0420",
    "S": "\u0405", "T": "\u0422", "X": "\u0425", "Y": "\u03a5", "Z": "\u0396",
}  # fmt: skip

#: Characters that take no space on screen.
ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")

HIDDEN_STYLES = (
    "display:none",
    "font-size:0",
    "color:#ffffff;background-color:#ffffff",
    "visibility:hidden",
)

_WORD = re.compile(r"[^\W\d_]{2,}")
# Runs that a trick must leave alone in text: links and addresses would stop working.
_PROTECTED_TEXT = re.compile(r"(https?://\S+|www\.\S+|\S+@\S+)", re.IGNORECASE)
# ... and in HTML: markup, entities, and the content of style and script elements.
_PROTECTED_HTML = re.compile(
    r"(<(?:style|script)\b.*?</(?:style|script)\s*>|<!--.*?-->|<[^>]*>|&#?\w+;)", re.IGNORECASE | re.DOTALL
)
_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_URL = re.compile(r"""https?://[^\s"'<>()]+""", re.IGNORECASE)
_IMG_SRC = re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
_NAMES = ("Chris", "Dan", "Justin", "Kevin", "Matthias", "Paul", "Rob", "Steve", "Theo", "Tony")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# --------------------------------------------------------------------------- ham material


def ham_paragraphs(raw_ham_messages: Iterable[bytes], min_words: int = 12) -> list[str]:
    """Paragraphs of ordinary prose from ham messages: each message's extracted body split at blank
    lines, keeping paragraphs of at least ``min_words`` words that are not quoted text, links or
    signatures (mostly letters)."""
    paragraphs: list[str] = []
    for raw in raw_ham_messages:
        body = extract_text(raw).partition("\n")[2]
        for block in re.split(r"\n\s*\n", body):
            lines = [line for line in block.splitlines() if not line.lstrip().startswith((">", "|"))]
            paragraph = " ".join(" ".join(lines).split())
            words = paragraph.split()
            letters = sum(ch.isalpha() or ch.isspace() for ch in paragraph)
            if len(words) >= min_words and letters >= 0.85 * len(paragraph) and "://" not in paragraph:
                paragraphs.append(paragraph)
    return paragraphs


_COMMON: dict[int, tuple[Sequence[str], list[str]]] = {}


def _common_words(pool: Sequence[str], top: int = 400) -> list[str]:
    """The pool's most frequent words (cached per pool object: counting is the slow part)."""
    cached = _COMMON.get(id(pool))
    if cached is not None and cached[0] is pool:
        return cached[1]
    counts = Counter(word.lower() for paragraph in pool for word in _WORD.findall(paragraph))
    words = [word for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]]
    if not words:
        raise ValueError("the ham pool has no words")
    _COMMON.clear()
    _COMMON[id(pool)] = (pool, words)
    return words


def _ham_words(pool: Sequence[str], rng: random.Random, n: int = 150) -> list[str]:
    return rng.choices(_common_words(pool), k=n)


def _paragraph(pool: Sequence[str], rng: random.Random) -> str:
    if not pool:
        raise ValueError("the ham pool is empty")
    return pool[rng.randrange(len(pool))]


def _ham_text(pool: Sequence[str], rng: random.Random, chars: int) -> list[str]:
    """Consecutive pool paragraphs from a random start, about ``chars`` characters in all."""
    if not pool:
        raise ValueError("the ham pool is empty")
    start = rng.randrange(len(pool))
    out: list[str] = []
    total = 0
    for i in range(len(pool)):
        if total >= chars:
            break
        paragraph = pool[(start + i) % len(pool)]
        out.append(paragraph)
        total += len(paragraph) + 2
    return out


# --------------------------------------------------------------------------- the message


class _Body:
    """The text parts of one parsed message that a trick may change."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.linesep = "\r\n" if raw.split(b"\n", 1)[0].endswith(b"\r") else "\n"
        self.message = email.message_from_bytes(raw, policy=compat32)
        self.plain: Message | None = None
        self.html: Message | None = None
        for part in self.message.walk():
            if part.is_multipart() or (part.get("Content-Disposition", "").lower().startswith("attachment")):
                continue
            kind = part.get_content_type()
            if kind == "text/plain" and self.plain is None:
                self.plain = part
            elif kind == "text/html" and self.html is None:
                self.html = part
        self._top_fields = {name: self.message.get_all(name) for name in _MIME_FIELDS}

    def parts(self) -> list[Message]:
        return [part for part in (self.plain, self.html) if part is not None]

    def serialize(self) -> bytes:
        """The original header block, its MIME fields brought up to date, and the new body."""
        buffer = BytesIO()
        policy = compat32.clone(linesep=self.linesep, max_line_length=0)
        BytesGenerator(buffer, mangle_from_=False, policy=policy).flatten(self.message)
        generated = buffer.getvalue()
        split = _BLANK_LINE.search(generated)
        body = generated[split.end() :] if split else b""
        original = _BLANK_LINE.search(self.raw)
        head = self.raw[: original.start()] if original else self.raw.rstrip(b"\r\n")
        top_changed = any(self.message.get_all(name) != self._top_fields[name] for name in _MIME_FIELDS)
        if top_changed and "MIME-Version" not in self.message:
            self.message["MIME-Version"] = "1.0"
        for name in _MIME_FIELDS:
            values = self.message.get_all(name)
            if values != self._top_fields[name]:
                head = _replace_field(head, name, values, self.linesep.encode())
        sep = self.linesep.encode()
        return head + sep + sep + body


_MIME_FIELDS = ("MIME-Version", "Content-Type", "Content-Transfer-Encoding")


def _replace_field(head: bytes, name: str, values: list[str] | None, sep: bytes) -> bytes:
    """The header block without any ``name`` field (continuation lines included), the new values
    appended."""
    lines = head.split(sep)
    kept: list[bytes] = []
    dropping = False
    prefix = name.lower().encode() + b":"
    for line in lines:
        if line[:1] in (b" ", b"\t") and dropping:
            continue
        dropping = line.lower().replace(b" :", b":").startswith(prefix)
        if not dropping:
            kept.append(line)
    for value in values or []:
        kept.append(f"{name}: {value}".encode("ascii", "replace"))
    return sep.join(kept)


# Labels that mail uses for a superset, read as mail clients read them.
_CHARSET_ALIASES = {
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
}


def _decode(part: Message) -> str:
    """The part's text: its declared charset (UTF-8 first where that is ASCII or Latin-1, which
    mailers put on UTF-8 all the time), then UTF-8, then cp1252, which cannot fail."""
    data = _payload_bytes(part)
    charset = (part.get_content_charset() or "").strip("\"'")
    declared = _codec(_CHARSET_ALIASES.get(charset, charset))
    candidates = ["utf-8", declared] if declared in (None, "cp1252") else [declared, "utf-8"]
    for codec in candidates:
        try:
            return data.decode(codec or "utf-8")
        except UnicodeDecodeError:
            continue
    return data.decode("cp1252", errors="replace")


def _payload_bytes(part: Message) -> bytes:
    payload = part.get_payload()
    if not isinstance(payload, str):
        return b""
    if str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
        # Spam's base64 is often cut short, which the email package then leaves undecoded.
        alphabet = re.sub(r"[^A-Za-z0-9+/]", "", payload.split("=", 1)[0])
        return base64.b64decode(alphabet[: len(alphabet) // 4 * 4])
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _codec(charset: str | None) -> str | None:
    try:
        return codecs.lookup(charset).name if charset else None
    except LookupError:
        return None


def _encode(part: Message, text: str, subtype: str | None = None, cte: str | None = None) -> None:
    """Set the part's text: its charset kept where it can hold the text (else UTF-8), its transfer
    encoding kept where it is base64 or quoted-printable (else 7bit for short ASCII lines,
    quoted-printable otherwise), unless ``cte`` says which."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    charset = part.get_content_charset() or "us-ascii"
    codec = _codec(charset)
    try:
        if codec is None or "a\n".encode(codec) != b"a\n":
            raise UnicodeEncodeError("ascii", "", 0, 1, "not an ASCII superset")
        data = text.encode(codec)
    except UnicodeEncodeError:
        charset, data = "utf-8", text.encode("utf-8")
    old_cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte is None:
        if old_cte in ("base64", "quoted-printable"):
            cte = old_cte
        elif data.isascii() and max(map(len, data.split(b"\n"))) <= 900:
            cte = "7bit"
        else:
            cte = "quoted-printable"
    if cte == "base64":
        payload = base64.encodebytes(data).decode("ascii")
    elif cte == "quoted-printable":
        payload = quopri.encodestring(data).decode("ascii")
    else:
        payload = data.decode("ascii")
    if subtype is not None and part.get_content_subtype() != subtype:
        part.set_type(f"text/{subtype}")
    if part.get_content_charset() != charset:
        part.set_param("charset", charset)
    if old_cte != cte:
        del part["Content-Transfer-Encoding"]
        part["Content-Transfer-Encoding"] = cte
    part.set_payload(payload)


def _edit(raw: bytes, plain: Callable[[str], str] | None, markup: Callable[[str], str] | None) -> bytes:
    """``raw`` with its first text/plain part changed by ``plain`` and its first text/html part by
    ``markup`` (a function left None leaves that part alone)."""
    body = _Body(raw)
    changed = False
    for part, change in ((body.plain, plain), (body.html, markup)):
        if part is not None and change is not None:
            _encode(part, change(_decode(part)))
            changed = True
    return body.serialize() if changed else raw


def _map_words(text: str, change: Callable[[str], str], markup: bool) -> str:
    """``change`` applied to each word of the visible text (links, addresses, tags and entities
    left alone)."""
    pieces = (_PROTECTED_HTML if markup else _PROTECTED_TEXT).split(text)
    for i in range(0, len(pieces), 2):
        if markup:
            pieces[i] = _map_words(pieces[i], change, markup=False)
        else:
            pieces[i] = _WORD.sub(lambda match: change(match.group()), pieces[i])
    return "".join(pieces)


def _insert_html(markup: str, start: str = "", end: str = "") -> str:
    """``start`` after the <body> tag (or at the top), ``end`` before </body> (or at the bottom)."""
    opening = _BODY_OPEN.search(markup)
    at = opening.end() if opening else 0
    markup = markup[:at] + start + markup[at:]
    closings = list(_BODY_CLOSE.finditer(markup))
    at = closings[-1].start() if closings else len(markup)
    return markup[:at] + end + markup[at:]


def _as_html(text: str) -> str:
    return (
        "<html><body>\n"
        + "<br>\n".join(html.escape(line) for line in text.splitlines())
        + "\n</body></html>\n"
    )


# --------------------------------------------------------------------------- the tricks


def quoted_ham_prefix(raw: bytes, rng: random.Random, pool: Sequence[str]) -> bytes:
    """A quoted paragraph of ordinary mail, with its "On ..., X wrote:" line, before the spam."""
    name = rng.choice(_NAMES)
    date = (
        f"{rng.choice(_DAYS)}, {rng.randint(1, 28)} {rng.choice(_MONTHS)} 2002 "
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
    )
    attribution = f"On {date}, {name} <{name.lower()}@example.com> wrote:"
    quoted = textwrap.wrap(_paragraph(pool, rng), 70)
    plain_quote = attribution + "\n" + "\n".join("> " + line for line in quoted) + "\n\n"
    html_quote = (
        f'<p>{html.escape(attribution)}</p>\n<blockquote type="cite">'
        + "<br>\n".join(html.escape(line) for line in quoted)
        + "</blockquote>\n"
    )
    return _edit(raw, lambda text: plain_quote + text, lambda markup: _insert_html(markup, start=html_quote))


def hidden_html_words(raw: bytes, rng: random.Random, pool: Sequence[str]) -> bytes:
    """150 ham words in elements a client does not show (display:none, zero font size, white on
    white, visibility:hidden), before and after the spam's HTML. Plain-text spam becomes HTML."""
    words = _ham_words(pool, rng)
    chunks = [words[i : i + 25] for i in range(0, len(words), 25)]
    hidden = [
        f'<div style="{HIDDEN_STYLES[i % len(HIDDEN_STYLES)]}">{" ".join(chunk)}</div>\n'
        for i, chunk in enumerate(chunks)
    ]
    half = len(hidden) // 2

    def hide(markup: str) -> str:
        return _insert_html(markup, start="".join(hidden[:half]), end="".join(hidden[half:]))

    body = _Body(raw)
    if body.html is not None:
        _encode(body.html, hide(_decode(body.html)))
    elif body.plain is not None:
        _encode(body.plain, hide(_as_html(_decode(body.plain))), subtype="html")
    else:
        return raw
    return body.serialize()


def ham_words_appended(raw: bytes, rng: random.Random, pool: Sequence[str]) -> bytes:
    """150 common ham words, visible, after the spam."""
    words = " ".join(_ham_words(pool, rng))
    return _edit(
        raw,
        lambda text: text.rstrip("\n") + "\n\n" + textwrap.fill(words, 72) + "\n",
        lambda markup: _insert_html(markup, end=f"<p>{words}</p>\n"),
    )


def zero_width(raw: bytes, rng: random.Random, pool: Sequence[str]) -> bytes:
    """A zero-width character inside every word."""

    def split(word: str) -> str:
        at = rng.randrange(1, len(word))
        return word[:at] + rng.choice(ZERO_WIDTH) + word[at:]

    return _edit(
        raw,
        lambda text: _map_words(text, split, markup=False),
        lambda text: _map_words(text, split, markup=True),
    )


def spelled_out(raw: bytes, rng: random.Random, pool: Sequence[str]) -> bytes:
    """Half the words of three letters or more spelled out letter by letter ("V I A G R A"; two
    such words side by side run on: "F R E E O F F E R")."""

    def spell(word: str) -> str:
        return " ".join(word) if len(word) >= 3 and word.isalpha() and rng.random() < 0.5 else word

    return _edit(
        raw,
        lambda text: _map_words(text, spell, markup=False),
        lambda text: _map_words(text, spell, markup=True),
    )


def homoglyphs(raw: bytes, rng: random.Random, pool: Sequence[str]) -> bytes:
    """In four words of five, Latin letters swapped for Cyrillic or Greek look-alikes."""

    def disguise(word: str) -> str:
        if rng.random() >= 0.8:
            return word
        return "".join(HOMOGLYPHS.get(ch, ch) if rng.random() < 0.7 else ch for ch in word)

    return _edit(
        raw,
        lambda text: _map_words(text, disguise, markup=False),
        lambda text: _map_words(text, disguise, markup=True),
    )


def base64_body(raw: bytes, rng: random.Random, pool: Sequence[str]) -> bytes:
    """The same text, re-encoded as base64."""
    body = _Body(raw)
    for part in body.parts():
        _encode(part, _decode(part), cte="base64")
    return body.serialize() if body.parts() else raw


def long_ham_preamble(raw: bytes, rng: random.Random, pool: Sequence[str]) -> bytes:
    """About 9,000 characters (some 2,000 tokens) of ham text, visible, before the spam."""
    paragraphs = _ham_text(pool, rng, 9000)
    plain = "\n\n".join(textwrap.fill(p, 72) for p in paragraphs) + "\n\n"
    markup = "".join(f"<p>{html.escape(p)}</p>\n" for p in paragraphs)
    return _edit(raw, lambda text: plain + text, lambda text: _insert_html(text, start=markup))


def ham_sandwich(raw: bytes, rng: random.Random, pool: Sequence[str]) -> bytes:
    """About 5,000 characters (some 1,100 tokens) of ham text, visible, before the spam and as
    many after it: the offer in the middle of a long message, where a reader of a few windows
    spread over the text (its first, its last and some between) skips it."""
    before, after = _ham_text(pool, rng, 5000), _ham_text(pool, rng, 5000)
    plain_before = "".join(textwrap.fill(p, 72) + "\n\n" for p in before)
    plain_after = "".join("\n\n" + textwrap.fill(p, 72) for p in after)
    markup_before = "".join(f"<p>{html.escape(p)}</p>\n" for p in before)
    markup_after = "".join(f"<p>{html.escape(p)}</p>\n" for p in after)
    return _edit(
        raw,
        lambda text: plain_before + text + plain_after,
        lambda text: _insert_html(text, start=markup_before, end=markup_after),
    )


FLOOD_LINES = 40  # more than a line-ends reader reads per window (LINE_ENDS_READ)


def short_line_flood(raw: bytes, rng: random.Random, pool: Sequence[str]) -> bytes:
    """Forty short lines of two or three ham words, visible, before the spam. Aimed at a model
    that reads a window at its line ends: every short line is a line end that takes one of the
    reads before the spam's own lines are reached."""
    words = " ".join(_ham_text(pool, rng, 2000)).split()
    lines = []
    for _ in range(FLOOD_LINES):
        at = rng.randrange(max(len(words) - 3, 1))
        lines.append(" ".join(words[at : at + rng.randint(2, 3)]))
    plain = "\n".join(lines) + "\n\n"
    markup = "<p>" + "<br>\n".join(html.escape(line) for line in lines) + "</p>\n"
    return _edit(raw, lambda text: plain + text, lambda text: _insert_html(text, start=markup))


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# not </tr> or </td>: text between table rows is moved before the table by an HTML parser
_LINE_BREAK_TAG = re.compile(r"<br\b[^>]*>|</(?:p|div|li|h[1-6])\s*>", re.IGNORECASE)
_UNSEEN_HTML = re.compile(r"<(style|script)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_QUOTE_PREFIX = re.compile(r"[>\s]*")


def _ham_sentences(pool: Sequence[str], rng: random.Random, n: int) -> list[str]:
    """``n`` sentences of ordinary mail, each cut to at most 14 words, from consecutive paragraphs."""
    sentences = [s for p in _ham_text(pool, rng, 4000) for s in _SENTENCE_END.split(p) if len(s.split()) >= 4]
    if not sentences:
        raise ValueError("the ham pool has no sentences")
    return [" ".join(sentences[i % len(sentences)].split()[:14]) for i in range(n)]


def interleaved_ham_lines(raw: bytes, rng: random.Random, pool: Sequence[str]) -> bytes:
    """A sentence of ordinary mail, visible, after every line of the spam (in HTML, after every
    line break and closing block tag): each line of the offer is read between lines of ham."""

    def plain(text: str) -> str:
        # a quoted line's filler is quoted alike: the writer's own words stay those of the spam
        lines = text.split("\n")
        fillers = iter(_ham_sentences(pool, rng, len(lines)))
        return "\n".join(
            f"{line}\n{_QUOTE_PREFIX.match(line).group()}{next(fillers)}" if line.strip() else line  # type: ignore[union-attr]
            for line in lines
        )

    def markup(text: str) -> str:
        unseen = [match.span() for match in _UNSEEN_HTML.finditer(text)]  # no filler in a script
        breaks = [
            tag
            for tag in _LINE_BREAK_TAG.finditer(text)
            if not any(start <= tag.start() < end for start, end in unseen)
        ]
        fillers = iter(_ham_sentences(pool, rng, len(breaks) + 1))
        pieces, at = [], 0
        for tag in breaks:
            pieces += [text[at : tag.end()], f"\n{html.escape(next(fillers))}<br>"]
            at = tag.end()
        return (
            "".join(pieces) + text[at:]
            if breaks
            else _insert_html(text, end=f"<p>{html.escape(next(fillers))}</p>\n")
        )

    return _edit(raw, plain, markup)


def link_only(raw: bytes, rng: random.Random, pool: Sequence[str]) -> bytes:
    """The spam cut down to its Subject and one or two of its links (and its first image), in a
    single text/html part with no other text. A spam without a link is returned as it is."""
    body = _Body(raw)
    texts = [_decode(part) for part in body.parts()]
    if not texts:
        return raw
    links = list(dict.fromkeys(url.rstrip(".,;") for text in texts for url in _URL.findall(text)))
    images = [src for src in _IMG_SRC.findall(texts[-1]) if src.lower().startswith("http")]
    links = [url for url in links if url not in images][: rng.randint(1, 2)] or images[:1]
    if not links:
        return raw
    markup = "<html><body>\n"
    if images:
        markup += f'<a href="{html.escape(links[0])}"><img src="{html.escape(images[0])}"></a><br>\n'
    for url in links:
        markup += f'<a href="{html.escape(url)}">{html.escape(url)}</a><br>\n'
    markup += "</body></html>\n"
    single = Message()
    single["Content-Type"] = "text/plain"
    _encode(single, markup, subtype="html")
    body.message.set_payload(single.get_payload())
    for name in ("Content-Type", "Content-Transfer-Encoding"):
        del body.message[name]
        body.message[name] = single[name]
    return body.serialize()


TRICKS: dict[str, Trick] = {
    "quoted_ham_prefix": quoted_ham_prefix,
    "hidden_html_words": hidden_html_words,
    "ham_words_appended": ham_words_appended,
    "zero_width": zero_width,
    "homoglyphs": homoglyphs,
    "spelled_out": spelled_out,
    "base64_body": base64_body,
    "long_ham_preamble": long_ham_preamble,
    "ham_sandwich": ham_sandwich,
    "short_line_flood": short_line_flood,
    "interleaved_ham_lines": interleaved_ham_lines,
    "link_only": link_only,
}
