"""The spammers' tricks of ``spamfilter.evasion`` on real corpus spam: each result is a well-formed
message whose reader still sees the spam, with the trick plainly there."""

from __future__ import annotations

import email
import html
import random
import re
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from spamfilter.evasion import FLOOD_LINES, HIDDEN_STYLES, HOMOGLYPHS, TRICKS, ZERO_WIDTH, ham_paragraphs
from spamfilter.mail import extract_text, split_mbox

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "spamassassin"
_MIME_FIELD = re.compile(rb"(?i)(content-|mime-version)")
# Tricks whose spam keeps every visible word (a word spelled out letter by letter is no word to
# the plain word split of these tests: test_reader_text checks that the reader joins it again).
_FROM_ORIGINAL = frozenset(TRICKS) - {"link_only", "spelled_out"}


def _messages(name: str) -> list[bytes]:
    with open(CORPUS / name, "rb") as handle:
        return list(split_mbox(handle))


def _parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def _first(spam: list[bytes], shape: str) -> bytes:
    """The first corpus spam of a shape (a top-level content type), ASCII, without defects, with a
    link in it: enough for every trick, link_only included."""
    for raw in spam:
        message = _parse(raw)
        parts = list(message.walk())
        if (
            message.get_content_type() == shape
            and not any(part.defects for part in parts)
            and all(part.get_content_charset() in (None, "us-ascii", "iso-8859-1") for part in parts)
            and any(part.get_content_type() == "text/plain" for part in parts) == (shape != "text/html")
            and b"http://" in raw
            and raw.isascii()
        ):
            return raw
    raise AssertionError(f"no {shape} spam in the corpus")


@pytest.fixture(scope="module")
def pool() -> list[str]:
    return ham_paragraphs(_messages("easy_ham.mbox")[:300])


@pytest.fixture(scope="module", params=["text/plain", "text/html", "multipart/alternative", "crlf"])
def spam(request: pytest.FixtureRequest) -> bytes:
    messages = _messages("spam.mbox")
    if request.param == "crlf":
        return _first(messages, "text/plain").replace(b"\n", b"\r\n")
    return _first(messages, request.param)


def _head(raw: bytes) -> bytes:
    return re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]


def _fields(raw: bytes) -> list[bytes]:
    """The header fields (continuation lines included) other than the MIME ones, byte for byte."""
    fields = re.split(rb"\r?\n(?![ \t])", _head(raw))
    return [field for field in fields if not _MIME_FIELD.match(field)]


def _texts(raw: bytes) -> dict[str, str]:
    """The decoded text of each text part, by subtype, as the email package reads it."""
    texts: dict[str, str] = {}
    for part in _parse(raw).walk():
        if part.get_content_maintype() == "text" and part.get_content_subtype() not in texts:
            assert isinstance(part, EmailMessage)
            text = part.get_content()
            if part.get_content_charset() == "iso-8859-1":  # read as mail clients read it
                text = text.encode("latin-1").decode("cp1252", errors="replace")
            texts[part.get_content_subtype()] = text
    return texts


def _shown(raw: bytes) -> str:
    """The body text of the part a mail client shows, as the reader reads it."""
    html_part = _texts(raw).get("html")
    if html_part is None:
        return extract_text(raw).partition("\n")[2]
    return extract_text(
        f"Subject: x\nContent-Type: text/html; charset=utf-8\n\n{html_part}".encode()
    ).partition("\n")[2]


def _visible_words(raw: bytes) -> list[str]:
    """The words a reader sees, with zero-width characters dropped and look-alikes read back."""
    readable = {glyph: letter for letter, glyph in HOMOGLYPHS.items()}
    words = []
    for subtype, text in _texts(raw).items():
        if subtype == "html":
            text = html.unescape(re.sub(r"(?s)<(style|script).*?</\1>|<[^>]*>", " ", text))
        text = "".join(readable.get(ch, ch) for ch in text if ch not in ZERO_WIDTH)
        words += text.split()
    return words


@pytest.mark.parametrize("name", sorted(TRICKS))
def test_trick_keeps_a_well_formed_message(name: str, spam: bytes, pool: list[str]) -> None:
    changed = TRICKS[name](spam, random.Random(7), pool)
    assert changed != spam
    assert changed == TRICKS[name](spam, random.Random(7), pool)  # deterministic given the Random
    message = _parse(changed)
    assert not [part.defects for part in message.walk() if part.defects]
    assert _fields(changed) == _fields(spam)  # every other header byte kept
    assert changed.count(b"\r\n") == (changed.count(b"\n") if b"\r\n" in spam else 0)
    for part in message.walk():
        if part.get_content_maintype() == "text":
            assert part["Content-Transfer-Encoding"] in (None, "7bit", "8bit", "quoted-printable", "base64")
            assert changed.isascii()  # re-encoded: no raw 8-bit bytes on the wire


@pytest.mark.parametrize("name", sorted(_FROM_ORIGINAL))
def test_reader_still_sees_the_spam(name: str, spam: bytes, pool: list[str]) -> None:
    changed = TRICKS[name](spam, random.Random(7), pool)
    seen = set(_visible_words(changed))
    missing = [word for word in _visible_words(spam) if word not in seen]
    assert not missing, missing[:10]


def _plain_or_html(raw: bytes) -> str:
    texts = _texts(raw)
    return texts.get("plain") or texts["html"]


def test_quoted_ham_prefix_quotes_a_ham_paragraph_first(spam: bytes, pool: list[str]) -> None:
    text = _plain_or_html(TRICKS["quoted_ham_prefix"](spam, random.Random(1), pool))
    if "plain" in _texts(spam):
        lines = text.splitlines()
        assert re.fullmatch(r"On \w{3}, .* wrote:", lines[0])
        assert lines[1].startswith("> ")
        quoted = " ".join(line[2:] for line in lines[1:] if line.startswith("> "))
        assert quoted in pool
    else:
        assert re.search(r"(?s)<p>On \w{3}, .*? wrote:</p>\s*<blockquote", text)


def test_hidden_html_words_hides_150_ham_words(spam: bytes, pool: list[str]) -> None:
    changed = TRICKS["hidden_html_words"](spam, random.Random(1), pool)
    markup = _texts(changed)["html"]  # a plain-text spam became HTML
    hidden = re.findall(r'<div style="([^"]*)">([^<]*)</div>', markup)
    assert {style for style, _ in hidden} == set(HIDDEN_STYLES)
    words = " ".join(text for _, text in hidden).split()
    assert len(words) == 150
    vocabulary = {word.lower() for paragraph in pool for word in re.findall(r"\w+", paragraph)}
    assert set(words) <= vocabulary
    if "plain" in _texts(spam) and "html" in _texts(spam):  # the alternative plain text unchanged
        assert _texts(changed)["plain"] == _texts(spam)["plain"]


def test_ham_words_appended_at_the_end(spam: bytes, pool: list[str]) -> None:
    text = _plain_or_html(TRICKS["ham_words_appended"](spam, random.Random(1), pool))
    tail = re.sub(r"<[^>]*>", " ", text).split()[-150:]
    vocabulary = {word.lower() for paragraph in pool for word in re.findall(r"\w+", paragraph)}
    assert set(tail) <= vocabulary


def test_zero_width_inside_every_word(spam: bytes, pool: list[str]) -> None:
    text = _plain_or_html(TRICKS["zero_width"](spam, random.Random(1), pool))
    text = re.sub(r"(?is)<(style|script).*?</\1>|<[^>]*>|&#?\w+;|https?://\S+|\S+@\S+", " ", text)
    words = re.findall(r"[^\W\d_][^\s\d_.,;:!?()\"'/-]+", text)
    assert words
    assert [word for word in words if not set(word) & set(ZERO_WIDTH)] == []


def test_homoglyphs_in_most_words(spam: bytes, pool: list[str]) -> None:
    text = _plain_or_html(TRICKS["homoglyphs"](spam, random.Random(1), pool))
    words = re.findall(r"[^\W\d_]{4,}", re.sub(r"<[^>]*>|https?://\S+|\S+@\S+", " ", text))
    disguised = [word for word in words if set(word) & set(HOMOGLYPHS.values())]
    assert len(disguised) > 0.6 * len(words)


def test_spelled_out_spells_about_half_the_words(spam: bytes, pool: list[str]) -> None:
    original = _plain_or_html(spam)
    text = _plain_or_html(TRICKS["spelled_out"](spam, random.Random(1), pool))
    words = re.findall(
        r"(?<![^\W\d_] )\b[^\W\d_]{3,}\b", re.sub(r"<[^>]*>|https?://\S+|\S+@\S+", " ", original)
    )
    spelled = re.findall(r"\b[^\W\d_](?: [^\W\d_]){2,}\b", text)
    assert 0.3 * len(words) < sum(len(run.split()) >= 3 for run in spelled)
    assert "".join(original.split()) == "".join(text.split())  # only spaces added


def test_base64_body_same_text(spam: bytes, pool: list[str]) -> None:
    changed = TRICKS["base64_body"](spam, random.Random(1), pool)
    for part in _parse(changed).walk():
        if part.get_content_maintype() == "text":
            assert part["Content-Transfer-Encoding"] == "base64"
    normalise = {key: value.replace("\r\n", "\n") for key, value in _texts(spam).items()}
    assert _texts(changed) == normalise


def test_long_ham_preamble_before_the_spam(spam: bytes, pool: list[str]) -> None:
    original = " ".join(_visible_words(spam))
    changed = " ".join(_visible_words(TRICKS["long_ham_preamble"](spam, random.Random(1), pool)))
    preamble = changed[: changed.index(original[:200])]
    assert len(preamble) >= 8000
    assert preamble.split()[:10] == next(p for p in pool if p.startswith(preamble[:40])).split()[:10]


def test_ham_sandwich_puts_the_spam_between_two_stretches_of_ham(spam: bytes, pool: list[str]) -> None:
    changed = TRICKS["ham_sandwich"](spam, random.Random(1), pool)
    originals, texts = _texts(spam), _texts(changed)
    assert set(texts) == set(originals)
    for subtype, text in texts.items():  # each part a client may show
        if subtype == "html":
            text = html.unescape(re.sub(r"<[^>]*>", " ", text))
            originals[subtype] = html.unescape(re.sub(r"<[^>]*>", " ", originals[subtype]))
        original, words = " ".join(originals[subtype].split()), " ".join(text.split())
        start = words.index(original)  # the spam whole, in the middle
        before, after = words[:start], words[start + len(original) :]
        assert len(before) >= 4000 and len(after) >= 4000
        assert before.split()[:10] == next(p for p in pool if p.startswith(before[:40])).split()[:10]
        assert any(p.endswith(" ".join(after.split()[-5:])) for p in pool)  # ends with a ham paragraph


def test_short_line_flood_before_the_spam(spam: bytes, pool: list[str]) -> None:
    changed = TRICKS["short_line_flood"](spam, random.Random(1), pool)
    text = extract_text(changed)
    original = extract_text(spam).partition("\n")[2].split("\n")
    # the body read, after the Subject line (HTML source line breaks are read as blank lines)
    lines = [line for line in text.partition("\n")[2].split("\n") if line.strip()]
    flood = lines[:FLOOD_LINES]
    assert all(2 <= len(line.split()) <= 3 for line in flood), flood
    pool_words = set(" ".join(pool).split())
    assert all(word in pool_words for line in flood for word in line.split())
    first_own = next(line for line in original if line.strip())
    assert first_own.strip() in "\n".join(lines[FLOOD_LINES:])  # the spam follows, whole


def test_interleaved_ham_lines_put_a_ham_sentence_after_every_line(spam: bytes, pool: list[str]) -> None:
    changed = TRICKS["interleaved_ham_lines"](spam, random.Random(1), pool)
    pool_words = set(" ".join(pool).split())
    # the reader sees every line of the spam, in order, each one followed by a line of ham (in the
    # part a client shows: the reader adds an alternative's plain part where it says other words,
    # and the trick draws other sentences for each part)
    own, lines = (
        [line.strip() for line in _shown(raw).split("\n") if line.strip()] for raw in (spam, changed)
    )
    at = 0
    for line in own:
        at = lines.index(line, at) + 1
    fillers = [line for line in lines if line not in own]
    assert len(fillers) >= len(own) // 2, (len(fillers), len(own))
    assert all(4 <= len(line.split()) <= 14 and set(line.split()) <= pool_words for line in fillers), fillers[
        :5
    ]
    if "plain" in _texts(spam):  # the plain text: exactly one ham line after each of its lines
        text_lines = [line for line in _texts(changed)["plain"].split("\n") if line.strip()]
        original = [line for line in _texts(spam)["plain"].split("\n") if line.strip()]
        assert text_lines[0::2] == original and len(text_lines) == 2 * len(original)


def test_interleaved_ham_lines_quote_a_quoted_line_and_stay_out_of_scripts(pool: list[str]) -> None:
    plain = (
        b"From: a@example.com\nSubject: offer\nContent-Type: text/plain\n\n"
        b"> Cheap meds here today\n> Order at once\nThanks\n"
    )
    lines = _texts(TRICKS["interleaved_ham_lines"](plain, random.Random(2), pool))["plain"].split("\n")
    assert lines[0] == "> Cheap meds here today" and lines[1].startswith("> ")  # the filler is quoted too
    assert lines[2] == "> Order at once" and lines[3].startswith("> ")
    assert lines[4] == "Thanks" and not lines[5].startswith(">")
    markup = (
        b"From: a@example.com\nSubject: offer\nContent-Type: text/html\n\n"
        b'<html><head><script>var s = "<br>";</script><!-- <br> --></head>'
        b"<body>Cheap meds<br clear=all>Order now</body></html>\n"
    )
    changed = _texts(TRICKS["interleaved_ham_lines"](markup, random.Random(2), pool))["html"]
    assert '<script>var s = "<br>";</script><!-- <br> -->' in changed  # nothing added where unseen
    assert re.search(r"Cheap meds<br clear=all>\n[^<]+<br>Order now", changed)


def test_link_only_keeps_a_link_and_little_else(spam: bytes, pool: list[str]) -> None:
    changed = TRICKS["link_only"](spam, random.Random(1), pool)
    message = _parse(changed)
    assert message.get_content_type() == "text/html"
    assert message["Subject"] == _parse(spam)["Subject"]
    links = re.findall(r'href="([^"]+)"', message.get_content())
    assert links and all(html.unescape(link).encode() in spam for link in links)
    assert len(_visible_words(changed)) <= 3


def test_message_without_text_is_left_alone(pool: list[str]) -> None:
    raw = b"From: a@example.com\nSubject: hi\nContent-Type: application/octet-stream\n\nAAAA\n"
    for trick in TRICKS.values():
        assert trick(raw, random.Random(1), pool) == raw


def test_ham_paragraphs_are_prose(pool: list[str]) -> None:
    assert len(pool) > 100
    assert all(len(p.split()) >= 12 and "://" not in p and not p.startswith(">") for p in pool)
