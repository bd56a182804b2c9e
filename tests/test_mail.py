"""Tests for spamfilter.mail: text extraction, mbox splitting, X-Spam headers, mail sources."""

from __future__ import annotations

import base64
import io
import mailbox
import os
import subprocess
import sys
import threading
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import finishes_in_a_child

from spamfilter.mail import (
    SPAM_HEADER_NAMES,
    extract_text,
    iter_mail_source,
    looks_like_email,
    looks_like_mbox,
    remove_spam_headers,
    split_mbox,
)
from spamfilter.mail import headers as mail_headers
from spamfilter.mail import text as mail_text
from spamfilter.verdict import VERSION_TAG, Decision, insert_spam_headers

SAMPLE_MBOX = Path(__file__).resolve().parents[1] / "examples" / "sample.mbox"

# SPAMFILTER_FUZZ_EXAMPLES raises the count for a long run (benchmarks/fuzz_long.sh).
PROPERTY = settings(
    max_examples=int(os.environ.get("SPAMFILTER_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def message(headers: str, body: bytes | str = b"", eol: str = "\n") -> bytes:
    """A message from header lines written with LF, re-joined with `eol`, plus a body."""
    head = eol.join(headers.strip("\n").split("\n")) + eol + eol
    return head.encode("ascii") + (body.encode("utf-8") if isinstance(body, str) else body)


def mime(content_type: str, body: bytes | str, subject: str = "test", extra: str = "") -> bytes:
    headers = f"Subject: {subject}\nMIME-Version: 1.0\nContent-Type: {content_type}\n{extra}"
    return message(headers, body)


def body_of(text: str) -> str:
    """The body part of extract_text's result (everything after the subject line)."""
    return text.split("\n", 1)[1]


# --- extract_text: structure ------------------------------------------------------------------


def test_subject_then_newline_then_body() -> None:
    headers = "From: a@example.org\nSubject:  Hello   there \nTo: b@example.org"
    raw = message(headers, "Body text.\n")
    assert extract_text(raw) == "Hello there\nBody text."


def test_message_without_subject_still_starts_with_the_newline() -> None:
    assert extract_text(message("From: a@example.org", "only body\n")) == "\nonly body"


def test_leading_mbox_from_line_is_not_text() -> None:
    raw = b"From spammer@example.org Mon Jan  1 00:00:00 2024\n" + message("Subject: hi", "x\n")
    assert extract_text(raw) == "hi\nx"


def test_multipart_alternative_reads_the_part_a_client_shows() -> None:
    body = (
        "--alt\nContent-Type: text/html\n\n<p>the html version</p>\n"
        "--alt\nContent-Type: text/plain\n\nthe plain version\n--alt--\n"
    )
    text = extract_text(mime('multipart/alternative; boundary="alt"', body))
    assert body_of(text) == "the plain version"  # the last part a client can show (RFC 2046)


NEWSLETTER = (
    "Minutes of the board meeting on Tuesday. The budget for the spring term was approved, the "
    "library will open on Saturdays from March, and the next meeting is on the fourth of April."
)
OFFER = "Cheap meds without prescription, lowest prices guaranteed, order today and save big on every refill."


def _alternative(plain: str, markup: str) -> bytes:
    body = (
        f"--alt\nContent-Type: text/plain\n\n{plain}\n"
        f"--alt\nContent-Type: text/html\n\n<html><body>{markup}</body></html>\n--alt--\n"
    )
    return mime("multipart/alternative; boundary=alt", body)


def test_an_invitation_after_the_html_leaves_the_html_read() -> None:
    body = (
        f"--alt\nContent-Type: text/plain\n\n{NEWSLETTER}\n"
        f"--alt\nContent-Type: text/html\n\n<p>{OFFER}</p>\n"
        "--alt\nContent-Type: text/calendar\n\nBEGIN:VCALENDAR\nEND:VCALENDAR\n--alt--\n"
    )
    assert (
        body_of(extract_text(mime("multipart/alternative; boundary=alt", body))) == f"{OFFER}\n\n{NEWSLETTER}"
    )


def test_an_html_message_behind_a_plain_stub_is_read() -> None:
    stub = "This is an HTML message. To read it, view it online at http://example.com/view?id=77 please."
    text = body_of(extract_text(_alternative(stub, f"<p>{NEWSLETTER}</p>")))
    assert text == f"{NEWSLETTER}\n\n{stub}"


def test_an_alternative_written_twice_is_read_once() -> None:
    text = extract_text(_alternative(NEWSLETTER, f"<p>{NEWSLETTER.replace('budget', '<b>budget</b>')}</p>"))
    assert body_of(text) == NEWSLETTER


def test_an_offer_in_the_html_behind_a_plain_newsletter_is_read() -> None:
    """The spam's readers see the HTML; a filter that read only the plain part read the newsletter."""
    text = body_of(extract_text(_alternative(NEWSLETTER, f"<p>{OFFER}</p>")))
    assert text == f"{OFFER}\n\n{NEWSLETTER}"


def test_an_offer_in_the_plain_part_behind_an_html_newsletter_is_read() -> None:
    # the offer's words scattered through the HTML do not make its plain text known: word pairs count
    scattered = " ".join(sorted(OFFER.split()))
    text = body_of(extract_text(_alternative(OFFER, f"<p>{NEWSLETTER}</p><p>{scattered}</p>")))
    assert text.endswith(OFFER) and text.startswith(NEWSLETTER)


def test_multipart_alternative_with_only_html_reduces_it() -> None:
    body = (
        "--alt\nContent-Type: text/calendar\n\nBEGIN:VCALENDAR\n"
        "--alt\nContent-Type: text/html\n\n<p>Meet&nbsp;at <b>noon</b></p>\n--alt--\n"
    )
    text = extract_text(mime("multipart/alternative; boundary=alt", body))
    assert body_of(text) == "Meet at noon"


def test_alternative_inside_mixed_keeps_document_order() -> None:
    body = (
        "--outer\nContent-Type: multipart/alternative; boundary=inner\n\n"
        "--inner\nContent-Type: text/plain\n\nfirst\n"
        "--inner\nContent-Type: text/html\n\n<p>first as html</p>\n--inner--\n"
        "--outer\nContent-Type: text/plain\n\nsecond\n--outer--\n"
    )
    text = extract_text(mime("multipart/mixed; boundary=outer", body))
    assert body_of(text) == "first\n\nsecond"


def test_html_only_drops_script_style_and_comments_and_unescapes_entities() -> None:
    html = (
        "<html><head><style>.x { color: red }</style>"
        "<script type='text/javascript'>var secret = 'hidden';</script></head>"
        "<body><!-- a comment --><h1>Win&nbsp;&amp;&#32;smile</h1>"
        "<p>Caf&eacute; &lt;deals&gt;<br>second&#x20;line</p>"
        "<div>cell</div><img src='x.png' alt='FREE PRIZE'></body></html>"
    )
    text = body_of(extract_text(mime("text/html; charset=utf-8", html)))
    assert "hidden" not in text and "color" not in text and "comment" not in text
    assert text.split("\n") == [
        "Win & smile",
        "",
        "Café <deals>",
        "second line",
        "",
        "cell",
        "FREE PRIZE",
    ]


def test_html_script_without_end_hides_the_rest() -> None:
    text = extract_text(mime("text/html", "<p>visible</p><script>hidden forever"))
    assert body_of(text) == "visible"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("<a" * 100_000, "test\ntail"),  # one long tag up to the first '>'
        ("<!--" * 100_000, "test\n"),  # an unclosed comment hides the rest
        ("<?" * 100_000, "test\ntail"),
        ("</" * 200_000, "test\n"),  # "</" before a non-letter opens a bogus comment (HTML5)
    ],
)
def test_pathological_html_is_handled(payload: str, expected: str) -> None:
    # html.parser takes minutes on some of these (it rescans unclosed constructs).
    assert extract_text(mime("text/html", payload + "<p>tail")) == expected


def test_base64_body() -> None:
    encoded = base64.encodebytes("Grüße aus Köln – decoded\n".encode()).decode()
    raw = mime("text/plain; charset=utf-8", encoded, extra="Content-Transfer-Encoding: base64\n")
    assert body_of(extract_text(raw)) == "Grüße aus Köln – decoded"


def test_quoted_printable_body_with_soft_breaks() -> None:
    body = "caf=C3=A9 and a very long line that is wrapped=\n here, =3D sign\n"
    extra = "Content-Transfer-Encoding: Quoted-Printable\n"
    raw = mime("text/plain; charset=utf-8", body, extra=extra)
    assert body_of(extract_text(raw)) == "café and a very long line that is wrapped here, = sign"


def test_invalid_base64_is_tolerated() -> None:
    good = base64.b64encode(b"readable part ").decode()
    body = f"{good}!!!***\n####Zm9v\nYmFy=\n=="
    raw = mime("text/plain", body, extra="Content-Transfer-Encoding: base64\n")
    assert body_of(extract_text(raw)).startswith("readable part foobar")


@pytest.mark.parametrize(
    ("charset", "payload", "expected"),
    [
        ("iso-8859-1", "Grüße, café".encode("iso-8859-1"), "Grüße, café"),
        ("koi8-r", "Привет, мир".encode("koi8-r"), "Привет, мир"),
        ("windows-1252", "“quoted” €5".encode("cp1252"), "“quoted” €5"),
        # Latin-1 labels are read as cp1252, their superset, as browsers do.
        ("iso-8859-1", "“€”".encode("cp1252"), "“€”"),
        ("gb2312", "简体中文 and 镕".encode("gb18030"), "简体中文 and 镕"),
        # Wrong labels: Latin-1 bytes declared UTF-8, UTF-8 bytes declared Latin-1 or ASCII.
        ("utf-8", "café crème".encode("latin-1"), "café crème"),
        ("iso-8859-1", "Grüße".encode(), "Grüße"),
        ("us-ascii", "naïve".encode(), "naïve"),
        # Unknown or unfit charsets fall back to UTF-8, then cp1252.
        ("x-made-up-charset", "déjà vu".encode(), "déjà vu"),
        ("x-made-up-charset", "déjà vu".encode("cp1252"), "déjà vu"),
        ("zlib", b"plain", "plain"),
        ("punycode", "ünï".encode(), "ünï"),
        # UTF-16 is full of NULs: they must be removed after decoding, not before.
        ("utf-16", "wide text".encode("utf-16"), "wide text"),
    ],
)
def test_body_charsets(charset: str, payload: bytes, expected: str) -> None:
    raw = mime(f'text/plain; charset="{charset}"', payload)
    assert body_of(extract_text(raw)) == expected


def test_html_charset_from_content_type() -> None:
    raw = mime("text/html; charset=koi8-r", "<p>Скидки</p>".encode("koi8-r"))
    assert body_of(extract_text(raw)) == "Скидки"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("=?utf-8?B?SGVsbG8gV8O2cmxk?=", "Hello Wörld"),
        ("=?ISO-8859-1?Q?Gr=FC=DFe_aus_K=F6ln?=", "Grüße aus Köln"),
        ("=?koi8-r?B?8NLJ18XU?=", "Привет"),
        ("Re: =?utf-8?q?caf=C3=A9?= today", "Re: café today"),
        # Whitespace between encoded words goes, a multi-byte character may be split across them.
        ("=?utf-8?Q?a?= =?utf-8?Q?b?=", "ab"),
        ("=?utf-8?B?w6k=?=\n =?utf-8?B?w6k=?=", "éé"),
        ("=?utf-8?Q?=C3?= =?utf-8?Q?=A9t=C3=A9?=", "été"),
        ("=?utf-8*en?Q?language_tag?=", "language tag"),
        ("=?utf-8?B?SGVsbG8?=", "Hello"),  # missing padding
        # Broken words: unknown charset, junk base64, unterminated, empty.
        ("=?x-unknown?Q?caf=E9?=", "café"),
        ("=?utf-8?B?not*base64!?= x", "=?utf-8?B?not*base64!?= x"),
        ("=?utf-8?Q?unterminated", "=?utf-8?Q?unterminated"),
        ("=??Q??= left", "left"),
        ("folded\n   subject\tline", "folded subject line"),
    ],
)
def test_rfc2047_subjects(subject: str, expected: str) -> None:
    raw = f"Subject: {subject}\nFrom: a@example.org\n\nbody\n".encode()
    assert extract_text(raw) == f"{expected}\nbody"


@pytest.mark.parametrize(
    ("raw_subject", "expected"),
    [("Grüße ünd €".encode(), "Grüße ünd €"), ("Grüße".encode("latin-1"), "Grüße")],
)
def test_8bit_subject(raw_subject: bytes, expected: str) -> None:
    raw = b"Subject: " + raw_subject + b"\nX-B\xe4d: \xff\xfe\n\nbody\n"
    assert extract_text(raw) == f"{expected}\nbody"


def test_8bit_header_name_is_still_a_header() -> None:
    raw = b"Subject: ok\nX-\xff\xfe-Broken: value\nX-Later: x\n\nbody\n"
    assert extract_text(raw) == "ok\nbody"


def test_non_text_parts_and_attachments_that_clients_do_not_show_are_skipped() -> None:
    """Text and HTML attachments are read in their place (Thunderbird and Apple Mail show them
    below the body; an offer put there behind "Hello" is read); pictures, documents and text
    types that clients only save (CSV, patches by their types) are not."""
    pdf = base64.b64encode(b"%PDF-1.4 binary pdf").decode()
    body = (
        "--m\nContent-Type: text/plain\n\nvisible text\n"
        '--m\nContent-Type: text/plain; name="notes.txt"\n'
        'Content-Disposition: attachment; filename="notes.txt"\n\nattached notes\n'
        "--m\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
        f"{pdf}\n"
        "--m\nContent-Type: image/png\n\nPNGDATA\n"
        "--m\nContent-Type: text/csv\n\na,b,c\n"
        "--m\nContent-Type: text/x-diff\nContent-Disposition: attachment\n\n+a patch\n"
        '--m\nContent-Type: text/html\nContent-Disposition: attachment; filename="invoice.html"\n\n'
        "<p>Sign in <b>here</b></p><p style='display:none'>hidden</p>\n"
        "--m\nContent-Type: text/plain\nContent-Disposition: inline\n\nmore visible\n--m--\n"
    )
    text = extract_text(mime("multipart/mixed; boundary=m", body))
    assert body_of(text) == "visible text\n\nattached notes\n\nSign in here\n\nmore visible"


def test_forwarded_and_attached_messages_are_read() -> None:
    inner = "Subject: inner\nContent-Type: text/plain\n\nforwarded words\n"
    attached = "Subject: attached\nContent-Type: text/plain\n\nattached words\n"
    body = (
        f"--f\nContent-Type: text/plain\n\nsee below\n--f\nContent-Type: message/rfc822\n\n{inner}"
        f"--f\nContent-Type: message/rfc822\nContent-Disposition: attachment\n\n{attached}--f--\n"
    )
    text = extract_text(mime("multipart/mixed; boundary=f", body))
    assert body_of(text) == "see below\n\nforwarded words\n\nattached words"


def test_missing_header_body_separator() -> None:
    raw = b"Subject: no blank line\nFrom: a@example.org\nThe body starts here.\nSecond line.\n"
    assert extract_text(raw) == "no blank line\nThe body starts here.\nSecond line."


def test_headers_only_message() -> None:
    assert extract_text(b"Subject: just headers") == "just headers\n"


def test_part_without_headers() -> None:
    body = "--b\nno headers in this part\n--b\n\nnor in this one\n--b--\n"
    text = extract_text(mime("multipart/mixed; boundary=b", body))
    assert body_of(text) == "no headers in this part\n\nnor in this one"


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        # Declared boundary never used: the first delimiter-like line gives the boundary.
        ("multipart/mixed; boundary=declared", "--other\n\nfound text\n--other--\n", "found text"),
        (
            "multipart/alternative",
            "intro\n--guess\nContent-Type: text/html\n\n<b>html</b>\n"
            "--guess\nContent-Type: text/plain\n\nplain\n--guess--\n",
            "plain",
        ),
        # Nothing like a delimiter at all: the body is read as plain text.
        (
            "multipart/mixed; boundary=declared",
            "no parts here\n-- \nsig\n",
            "no parts here\n-- \nsig",
        ),
        # No close delimiter: the last part runs to the end.
        ("multipart/mixed; boundary=b", "--b\n\none\n--b\n\ntwo\n", "one\n\ntwo"),
        # A longer boundary that starts like ours is not a delimiter.
        (
            "multipart/mixed; boundary=b",
            "--b\n\nkeep --bx\n--bx\nstill\n--b--\n",
            "keep --bx\n--bx\nstill",
        ),
        # Multipart without any boundary parameter.
        ("multipart/mixed", "just text\n", "just text"),
        # Transport padding after delimiters, quoted boundary with spaces.
        ('multipart/mixed; boundary="a b"', "--a b  \n\nfirst\n--a b-- \nepilogue\n", "first"),
    ],
)
def test_broken_boundaries(content_type: str, body: str, expected: str) -> None:
    assert body_of(extract_text(mime(content_type, body))) == expected


def test_nul_bytes_removed() -> None:
    raw = b"Subject: nul\x00here\n\nbo\x00dy\x00\n"
    text = extract_text(raw)
    assert "\x00" not in text and text == "nulhere\nbody"


def test_endoftext_literal_is_kept_as_text() -> None:
    raw = message("Subject: <|endoftext|> in subject", "before <|endoftext|> after\n")
    assert extract_text(raw) == "<|endoftext|> in subject\nbefore <|endoftext|> after"


def test_crlf_message() -> None:
    raw = message("Subject: crlf\nContent-Type: text/plain", "line one\r\nline two\r\n", eol="\r\n")
    assert extract_text(raw) == "crlf\nline one\nline two"


@pytest.mark.parametrize("max_chars", [0, 1, 5, 50])
def test_max_chars_bounds_the_result(max_chars: int) -> None:
    raw = message("Subject: a subject", "x" * 1000)
    text = extract_text(raw, max_chars=max_chars)
    assert text == ("a subject\n" + "x" * 1000)[:max_chars]


def test_sample_mbox_texts() -> None:
    with SAMPLE_MBOX.open("rb") as stream:
        texts = [extract_text(raw) for raw in split_mbox(stream)]
    joined = "\n".join(texts)
    assert texts[0].startswith("🎉 You have won 1.500.000 EUR!\nCONGRATULATIONS!")
    assert "Cheap meds online – no prescription needed!" in texts[2]
    assert "do-not-show-this" not in joined and "font-family" not in joined
    assert "CLICK HERE to get your prize now." in texts[4]
    # its text attachment, read below the body
    assert texts[5].endswith("Bob\n\nVacation photos list\n1. beach.jpg\n2. mountain.jpg")
    assert texts[6].startswith("Glückwunsch! Sie haben gewonnen\nSehr geehrter Gewinner")
    assert ">From the archive of 2019" in texts[7]
    assert "<p>" not in texts[8] and "Click here within 24 hours" in texts[8]


# --- extract_text: pathological input --------------------------------------------------------


def test_50_mb_base64_body_is_decoded_only_as_far_as_needed() -> None:
    line = base64.b64encode(b"spam spam spam " * 19)[:76] + b"\n"
    body = line * (50_000_000 // len(line))
    raw = mime("text/plain", body, extra="Content-Transfer-Encoding: base64\n")
    text = extract_text(raw, max_chars=2000)
    assert len(text) == 2000 and body_of(text).startswith("spam spam spam")


def test_text_after_a_50_mb_attachment_is_found() -> None:
    blob = (b"QUFB" * 19 + b"\n") * (50_000_000 // 77)
    raw = mime(
        "multipart/mixed; boundary=z",
        b"--z\nContent-Type: application/zip\nContent-Transfer-Encoding: base64\n\n"
        + blob
        + b"--z\nContent-Type: text/plain\n\nthe real text\n--z--\n",
    )
    assert body_of(extract_text(raw)) == "the real text"


def test_100000_header_lines() -> None:
    raw = b"Subject: many headers\n" + b"X-Filler: value\n" * 100_000 + b"\nthe body\n"
    assert extract_text(raw) == "many headers\nthe body"


def nested_multipart(depth: int) -> bytes:
    lines = ["Subject: deep", "Content-Type: multipart/mixed; boundary=b0", ""]
    for level in range(1, depth):
        lines += [f"--b{level - 1}", f"Content-Type: multipart/mixed; boundary=b{level}", ""]
    lines += [f"--b{depth - 1}", "Content-Type: text/plain", "", "deep text"]
    lines += [f"--b{level}--" for level in reversed(range(depth))]
    return "\n".join(lines).encode()


def test_moderately_nested_mime_is_read() -> None:
    assert extract_text(nested_multipart(30)) == "deep\ndeep text"


def test_mime_tree_1000_levels_deep() -> None:
    # The innermost text is beyond the nesting limit: what matters is a prompt, clean answer.
    assert extract_text(nested_multipart(1000)) == "deep\n"


def test_many_parts_are_bounded() -> None:
    parts = "".join(f"--p\nContent-Type: text/plain\n\npart {i}\n" for i in range(5000))
    text = extract_text(mime("multipart/mixed; boundary=p", parts + "--p--\n"), max_chars=10**6)
    assert body_of(text).startswith("part 0\n\npart 1\n\n")
    assert "part 998" in text and "part 4999" not in text


MAIL_FRAGMENTS = [
    b"From a@b Mon Jan 1 00:00:00 2024\n",
    b"Subject: ",
    b"=?utf-8?B?w6k=?=",
    b"=?x?Q?=E9_?=",
    b"?=",
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b"\n\n",
    b":",
    b"\x00",
    b"\xff\xe9",
    b"X-Spam-Flag: YES\n",
    b"x-spam-status: No,\n\tfolded\n",
    b"Content-Type: multipart/mixed; boundary=b\n",
    b"Content-Type: multipart/alternative; boundary=b\n",
    b"Content-Type: message/rfc822\n",
    b"Content-Type: text/html; charset=koi8-r\n",
    b"Content-Type: text/plain; charset=utf-16\n",
    b"Content-Transfer-Encoding: base64\n",
    b"Content-Transfer-Encoding: quoted-printable\n",
    b"Content-Disposition: attachment\n",
    b"--b\n",
    b"--b--\n",
    b"<p>",
    b"<script>",
    b"<!--",
    b"&amp;",
    b"SGVsbG8=",
    b"=C3=A9=\n",
    b">From x\n",
]
mail_piece = st.one_of(st.sampled_from(MAIL_FRAGMENTS), st.binary(max_size=8))
mail_like = st.lists(mail_piece, max_size=40).map(b"".join)


@PROPERTY
@given(raw=st.one_of(st.binary(max_size=400), mail_like), max_chars=st.integers(0, 300))
def test_extract_text_never_raises(raw: bytes, max_chars: int) -> None:
    # The private function, without the catch-all fallback around it, so that a bug cannot hide.
    text = mail_text._extract_text(raw, max_chars)
    assert isinstance(text, str) and len(text) <= max_chars and "\x00" not in text
    assert extract_text(raw, max_chars=max_chars) == text


def test_import_is_light() -> None:
    # The module sits on the cold-start path of mail pipelines: no torch, numpy or pandas.
    code = "import sys, spamfilter.mail; print(*sorted(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "spamfilter.mail" in loaded and not loaded & {"torch", "numpy", "pandas"}


# --- X-Spam headers ---------------------------------------------------------------------------


def test_status_value() -> None:
    decision = Decision(0.5, version="spamfilter-0.1.0")
    value = decision.status(decision.verdict(0.97251))
    tests = "tests=GPT2_SPAM_CLASSIFIER"
    assert value == f"Yes, score=9.8 required=5.0 {tests} spam_probability=0.973 version=spamfilter-0.1.0"
    decision = Decision(0.75, version="")
    assert (
        decision.status(decision.verdict(0.0123))
        == f"No, score=0.0 required=5.0 {tests} spam_probability=0.012"
    )


@pytest.mark.parametrize("version", ["1.0\r\nX-Injected: yes", "a b", "tab\there"])
def test_status_value_rejects_unsafe_versions(version: str) -> None:
    with pytest.raises(ValueError, match="version"):
        Decision(0.5, version=version)


def _status(flag: str, score: str, p: str) -> bytes:
    return (
        f"X-Spam-Status: {flag}, score={score} required=5.0 tests=GPT2_SPAM_CLASSIFIER "
        f"spam_probability={p} version={VERSION_TAG}"
    ).encode()


def test_insert_at_top_of_lf_message() -> None:
    raw = b"Subject: hi\nFrom: a@example.org\n\nbody\n"
    out = insert_spam_headers(raw, 0.9)
    assert (
        out == b"X-Spam-Flag: YES\n" + _status("Yes", "9.0", "0.900") + b"\nX-Spam-Level: *********\n" + raw
    )


def test_insert_after_mbox_from_line() -> None:
    from_line = b"From a@example.org Mon Jan  1 00:00:00 2024\n"
    raw = from_line + b"Subject: hi\n\nbody\n"
    out = insert_spam_headers(raw, 0.1)
    new = b"X-Spam-Flag: NO\n" + _status("No", "1.0", "0.100") + b"\nX-Spam-Level: *\n"
    assert out == from_line + new + raw[len(from_line) :]


def test_from_header_is_not_an_mbox_line() -> None:
    raw = b"From : a@example.org\nSubject: hi\n\nbody\n"
    assert insert_spam_headers(raw, 0.9).startswith(b"X-Spam-Flag: YES\n")


def test_insert_into_crlf_message_keeps_everything_else() -> None:
    raw = b"From x Mon Jan  1 00:00:00 2024\r\nSubject: hi\r\nTo: b\r\n\r\nline\nmixed\r\n"
    out = insert_spam_headers(raw, 0.5)
    head = b"From x Mon Jan  1 00:00:00 2024\r\n"
    new = out[len(head) : len(out) - len(raw) + len(head)]
    assert out.startswith(head) and out.endswith(raw[len(head) :])
    assert new.count(b"\r\n") == 3 and new.count(b"\n") == 3
    assert new.startswith(b"X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=5.0")
    assert new.endswith(b"X-Spam-Level: *****\r\n")


def test_existing_spam_headers_are_replaced_in_any_case_and_folding() -> None:
    raw = (
        b"Received: from x\r\n\tby y\r\n"
        b"x-spam-flag: NO\r\n"
        b"Subject: hi\r\n"
        b"X-SPAM-STATUS : No, score=-1.0\r\n  required=5.0\r\n\ttests=NONE\r\n"
        b"X-Spam-Level: **\r\n"
        b"X-Spam-Checker-Version: SpamAssassin 4.0.1\r\n"
        b"X-Spam-Report: \r\n\t*  2.0 SOME_RULE\r\n"
        b"X-Spam-Status: Yes\r\n"
        b"X-Spamfilter-Flag: kept: another prefix\r\n"
        b"\r\n"
        b"X-Spam-Flag: body text, not a header\r\n"
    )
    out = insert_spam_headers(raw, 0.9)
    assert out.lower().count(b"x-spam-flag") == 2  # ours and the one in the body
    assert out.lower().count(b"x-spam-status") == 1
    assert b"tests=NONE" not in out and b"SOME_RULE" not in out and b"SpamAssassin" not in out
    assert out == (
        b"X-Spam-Flag: YES\r\n" + _status("Yes", "9.0", "0.900") + b"\r\nX-Spam-Level: *********\r\n"
        b"Received: from x\r\n\tby y\r\n"
        b"Subject: hi\r\n"
        b"X-Spamfilter-Flag: kept: another prefix\r\n"
        b"\r\n"
        b"X-Spam-Flag: body text, not a header\r\n"
    )


def test_another_prefix_leaves_spamassassins_fields() -> None:
    raw = b"X-Spam-Flag: YES\nX-Spam-Level: ***\nX-Spamfilter-Level: *\nSubject: hi\n\nbody\n"
    out = insert_spam_headers(raw, 0.2, header_prefix="X-Spamfilter")
    assert out.startswith(b"X-Spamfilter-Flag: NO\nX-Spamfilter-Status: No, score=2.0 required=5.0")
    assert out.endswith(b"X-Spamfilter-Level: **\nX-Spam-Flag: YES\nX-Spam-Level: ***\nSubject: hi\n\nbody\n")
    assert remove_spam_headers(out, "X-Spamfilter") == remove_spam_headers(raw, "X-Spamfilter")


@pytest.mark.parametrize(
    "name", [*SPAM_HEADER_NAMES, *(name.upper() for name in SPAM_HEADER_NAMES), "x-spam-FLAG"]
)
def test_remove_each_spam_header(name: str) -> None:
    kept = f"Subject: a\nX-Spam-Flagged: kept\n\n{name}: in body\n".encode()
    raw = kept.replace(b"X-Spam-Flagged", f"{name}: v\n folded\nX-Spam-Flagged".encode(), 1)
    assert remove_spam_headers(raw) == kept


def test_insert_twice_keeps_one_verdict() -> None:
    raw = b"Subject: hi\n\nbody\n"
    twice = insert_spam_headers(insert_spam_headers(raw, 0.9), 0.2)
    assert twice == insert_spam_headers(raw, 0.2)


def test_message_without_separator() -> None:
    raw = b"Subject: hi\nX-Spam-Flag: YES\nbody line\nX-Spam-Flag: also body\n"
    assert remove_spam_headers(raw) == b"Subject: hi\nbody line\nX-Spam-Flag: also body\n"
    out = insert_spam_headers(raw, 0.1)
    assert out.endswith(b"\nSubject: hi\nbody line\nX-Spam-Flag: also body\n")


@pytest.mark.parametrize("raw", [b"", b"body only, no headers", b"\n\nbody", b"From x"])
def test_insert_into_degenerate_messages(raw: bytes) -> None:
    out = insert_spam_headers(raw, 0.9)
    assert out.startswith(b"X-Spam-Flag: YES\nX-Spam-Status: Yes") and out.endswith(raw)
    assert remove_spam_headers(out) == raw


def test_indented_first_header_line() -> None:
    # Malformed: once our fields are above it, the indented line reads as their continuation,
    # so remove_spam_headers drops it in both cases, and the round trip property holds.
    raw = b" stray indented line\nSubject: x\n\n body\n"
    out = insert_spam_headers(raw, 0.9)
    assert out.endswith(b"\n" + raw)
    assert remove_spam_headers(out) == remove_spam_headers(raw) == b"Subject: x\n\n body\n"


def test_removal_does_not_create_an_mbox_from_line() -> None:
    # Once the old field is gone, "From x" is at the top; it was a body line and stays one.
    out = insert_spam_headers(b"X-Spam-Flag: NO\nFrom x\n", 0.9)
    assert out.startswith(b"X-Spam-Flag: YES\n") and out.endswith(b"\nFrom x\n")
    assert remove_spam_headers(out) == b"From x\n"


def test_remove_spam_headers_leaves_other_mail_alone() -> None:
    raw = SAMPLE_MBOX.read_bytes()
    assert remove_spam_headers(raw) is raw


@PROPERTY
@given(
    raw=st.one_of(st.binary(max_size=300), mail_like),
    probability=st.floats(0, 1),
)
def test_insert_then_remove_is_remove(raw: bytes, probability: float) -> None:
    decision = Decision(0.5)
    verdict = decision.verdict(probability)
    out = decision.tag(raw, verdict)
    cleaned = remove_spam_headers(raw)
    assert remove_spam_headers(out) == cleaned
    # The new fields are the only addition; apart from them only old spam fields are gone.
    eol = b"\r\n" if raw.split(b"\n", 1)[0].endswith(b"\r") and b"\n" in raw else b"\n"
    new = b"".join(f"{name}: {value}".encode() + eol for name, value in decision.fields(verdict))
    removed = frozenset(name.lower().encode() for name in SPAM_HEADER_NAMES)
    assert out.replace(new, b"", 1) == mail_headers._drop_fields(raw, removed, drop_stray_lines=False)


# --- split_mbox -------------------------------------------------------------------------------


def mailbox_count(path: Path) -> int:
    box = mailbox.mbox(path, create=False)
    try:
        return len(box)
    finally:
        box.close()


def test_sample_mbox_splits_like_mailbox_module(tmp_path: Path) -> None:
    data = SAMPLE_MBOX.read_bytes()
    messages = list(split_mbox(io.BytesIO(data)))
    assert b"".join(messages) == data
    copy = tmp_path / "sample.mbox"  # mailbox opens files read-write: never the original
    copy.write_bytes(data)
    assert len(messages) == mailbox_count(copy) == 10
    assert all(m.startswith(b"From ") for m in messages)
    assert sum(m.count(b"\n>From the archive") for m in messages) == 1


def test_mbox_written_by_mailbox_module(tmp_path: Path) -> None:
    path = tmp_path / "box.mbox"
    box = mailbox.mbox(path)
    for i in range(25):
        msg = EmailMessage()
        msg["Subject"] = f"message {i}"
        msg["From"] = "a@example.org"
        msg.set_content(f"body {i}\nFrom here on, lines starting with From get escaped.\n\n")
        box.add(msg)
    box.flush()
    box.close()
    with path.open("rb") as stream:
        messages = list(split_mbox(stream))
    reference = mailbox.mbox(path, create=False)
    try:
        assert len(messages) == len(reference) == 25
        for raw, key in zip(messages, reference.keys(), strict=True):
            assert raw.rstrip(b"\n").endswith(reference.get_bytes(key).rstrip(b"\n"))
    finally:
        reference.close()


def test_unescaped_from_inside_a_paragraph_does_not_split() -> None:
    data = b"From a x\nSubject: one\n\nquoted:\nFrom me to you\n\nFrom b y\nSubject: two\n\nbody\n"
    messages = list(split_mbox(io.BytesIO(data)))
    assert messages == [
        b"From a x\nSubject: one\n\nquoted:\nFrom me to you\n\n",
        b"From b y\nSubject: two\n\nbody\n",
    ]


def test_crlf_mbox() -> None:
    first = b"From a x\r\nSubject: one\r\n\r\nbody\r\n\r\n"
    data = first + b"From b y\r\nSubject: two\r\n\r\n>From z\r\n"
    messages = list(split_mbox(io.BytesIO(data)))
    assert messages == [first, data[len(first) :]]


def test_leading_bytes_without_from_line_are_kept() -> None:
    data = b"Subject: stray\n\ntext\n\nFrom a x\nSubject: real\n\nbody\n"
    assert list(split_mbox(io.BytesIO(data))) == [
        b"Subject: stray\n\ntext\n\n",
        b"From a x\nSubject: real\n\nbody\n",
    ]


def test_empty_stream() -> None:
    assert list(split_mbox(io.BytesIO(b""))) == []


def test_max_message_bytes() -> None:
    data = b"From a x\n\nshort\n\nFrom b y\n\n" + b"long line\n" * 100
    stream = io.BytesIO(data)
    messages = split_mbox(stream, max_message_bytes=200)
    assert next(messages) == b"From a x\n\nshort\n\n"
    with pytest.raises(ValueError, match="message 2"):
        next(messages)
    assert list(split_mbox(io.BytesIO(data), max_message_bytes=len(data))) == [
        b"From a x\n\nshort\n\n",
        data[len(b"From a x\n\nshort\n\n") :],
    ]


class ReadOnlyStream(io.RawIOBase):
    """A forward-only stream, like a socket or stdin: seeking fails."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        chunk = self._data.read(min(len(buffer), 7))  # tiny reads, to cross line ends
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def seekable(self) -> bool:
        return False

    def seek(self, *args: object) -> int:
        raise io.UnsupportedOperation("seek")

    def tell(self) -> int:
        raise io.UnsupportedOperation("tell")


def test_split_non_seekable_wrapper() -> None:
    data = SAMPLE_MBOX.read_bytes()
    messages = list(split_mbox(ReadOnlyStream(data)))  # type: ignore[arg-type]
    assert len(messages) == 10 and b"".join(messages) == data


def test_split_from_a_pipe() -> None:
    data = SAMPLE_MBOX.read_bytes() * 20  # more than a pipe buffer holds
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as writer:
            writer.write(data)

    writer_thread = threading.Thread(target=feed)
    writer_thread.start()
    with os.fdopen(read_fd, "rb") as reader:
        messages = list(split_mbox(reader))
    writer_thread.join()
    assert len(messages) == 200 and b"".join(messages) == data


@PROPERTY
@given(data=st.one_of(st.binary(max_size=500), mail_like))
def test_split_concatenation_is_the_input(data: bytes) -> None:
    messages = list(split_mbox(io.BytesIO(data)))
    assert b"".join(messages) == data
    assert all(messages)
    assert all(m.startswith(b"From ") for m in messages[1:])


body_line = st.one_of(
    st.sampled_from(["", ">From escaped", ">>From twice", "From inside", "text", "Subject: no"]),
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20),
)


@PROPERTY
@given(
    bodies=st.lists(st.lists(body_line, max_size=6), min_size=1, max_size=6),
    eol=st.sampled_from(["\n", "\r\n"]),
)
def test_generated_mbox_round_trip(bodies: list[list[str]], eol: str) -> None:
    # A writer's mbox: "From " body lines escaped, every message ended by an empty line.
    written = []
    for i, lines in enumerate(bodies):
        lines = [">" + line if line.startswith("From ") else line for line in lines]
        from_line = f"From sender{i}@example.org Mon Jan  1 00:00:00 2024"
        text = eol.join([from_line, f"Subject: {i}", ""])
        written.append((text + eol + "".join(line + eol for line in lines) + eol).encode())
    messages = list(split_mbox(io.BytesIO(b"".join(written))))
    assert messages == written


# --- mail sources -----------------------------------------------------------------------------


def test_iter_mail_source_mbox(tmp_path: Path) -> None:
    path = tmp_path / "inbox"
    path.write_bytes(SAMPLE_MBOX.read_bytes())
    messages = list(iter_mail_source(path))
    assert len(messages) == 10 and b"".join(messages) == path.read_bytes()


def test_iter_mail_source_maildir(tmp_path: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (tmp_path / sub).mkdir()
    (tmp_path / "new" / "1700000002.M2.host").write_bytes(b"Subject: new 2\n\nb\n")
    (tmp_path / "new" / "1700000001.M1.host").write_bytes(b"Subject: new 1\n\nb\n")
    (tmp_path / "cur" / "1600000000.M0.host:2,S").write_bytes(b"Subject: seen\n\nb\n")
    (tmp_path / "tmp" / "1800000000.M9.host").write_bytes(b"Subject: in delivery\n\nb\n")
    subjects = [extract_text(raw).split("\n")[0] for raw in iter_mail_source(tmp_path)]
    assert subjects == ["seen", "new 1", "new 2"]


def test_iter_mail_source_eml_folder(tmp_path: Path) -> None:
    for name in ("c.eml", "a.EML", "b.eml"):
        (tmp_path / name).write_bytes(f"Subject: {name}\n\nbody\n".encode())
    (tmp_path / "notes.txt").write_bytes(b"Subject: not mail\n\n")
    subjects = [extract_text(raw).split("\n")[0] for raw in iter_mail_source(tmp_path)]
    assert subjects == ["a.EML", "b.eml", "c.eml"]


def test_iter_mail_source_single_message_and_empty_file(tmp_path: Path) -> None:
    single = tmp_path / "one.eml"
    single.write_bytes(b"Return-Path: <a@example.org>\nSubject: x\n\nbody\n")
    assert list(iter_mail_source(single)) == [single.read_bytes()]
    empty = tmp_path / "empty.mbox"
    empty.write_bytes(b"")
    assert list(iter_mail_source(empty)) == []


@pytest.mark.parametrize("kind", ["missing", "text file", "empty folder"])
def test_iter_mail_source_rejects_other_paths(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "thing"
    if kind == "text file":
        path.write_bytes(b"just some notes\nnot mail\n")
    elif kind == "empty folder":
        path.mkdir()
        (path / "readme.txt").write_bytes(b"x")
    with pytest.raises(ValueError) as error:
        iter_mail_source(path)  # raises on the call, not on first use
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("head", "mbox", "mail"),
    [
        (b"From a@example.org Mon Jan  1 00:00:00 2024\n", True, False),
        (b"From: a@example.org\nTo: b\n", False, True),
        (b"Received: from mx by mx2; Mon, 1 Jan 2024\n", False, True),
        (b"Return-Path: <a@example.org>\r\n", False, True),
        (b"X-Obsolete : spaced colon\n", False, True),
        (b"Hello world\n", False, False),
        (b" indented: value\n", False, False),
        (b"", False, False),
        (b">From a\n", False, False),
    ],
)
def test_looks_like(head: bytes, mbox: bool, mail: bool) -> None:
    assert looks_like_mbox(head) is mbox
    assert looks_like_email(head) is mail


def test_the_mbox_from_line_is_not_part_of_the_text() -> None:
    # filter and training hand whole mbox messages to extract_text: the From_ line must not count
    for raw in split_mbox(io.BytesIO(SAMPLE_MBOX.read_bytes())):
        assert raw.startswith(b"From ")
        assert extract_text(raw) == extract_text(raw.split(b"\n", 1)[1])


def test_a_message_saved_with_its_own_from_line_into_an_mbox_reads_as_itself() -> None:
    """Two envelope lines (an mbox entry whose message kept its own 'From ' line): neither is a
    header, so the text is the message's own and the tags go below both lines."""
    one = b"From alice@example.org  Thu Aug 22 2002\nSubject: lunch\nFrom: a@example.org\n\nsee you at noon\n"
    twice = b"From someone Mon Jan  1 00:00:00 2024\n" + one
    assert extract_text(twice) == extract_text(one) == "lunch\nsee you at noon"
    tagged = insert_spam_headers(twice, 0.1)
    lines = tagged.split(b"\n")
    assert lines[:2] == twice.split(b"\n")[:2] and lines[2].startswith(b"X-Spam-")


def test_text_enriched_is_read_as_drawn() -> None:
    """text/enriched (RFC 1896), which Thunderbird and Apple Mail draw: a spam sent so was read as
    its Subject alone. Commands and what <param> holds are not text; "<<" is "<"; a lone line
    break is a space, two make a line."""
    body = "<bold>Cheap</bold> meds <<today>\n<color><param>red</param>now</color>\n\nOrder"
    assert body_of(extract_text(mime("text/enriched", body))) == "Cheap meds <today> now\nOrder"
    mixed = f"--m\nContent-Type: text/plain\n\nHello\n--m\nContent-Type: text/richtext\n\n{body}\n--m--\n"
    assert body_of(extract_text(mime("multipart/mixed; boundary=m", mixed))) == (
        "Hello\n\nCheap meds <today> now\nOrder"
    )


def test_a_message_of_one_text_part_of_an_unknown_type_is_read_as_plain_text() -> None:
    # RFC 2046 4.1.4: an unknown subtype of text is shown as plain text, as clients show it
    assert body_of(extract_text(mime("text/x-offer", "Cheap meds today"))) == "Cheap meds today"


def test_enriched_text_of_any_shape_is_read_in_one_pass() -> None:
    """Unclosed <param>s, runs of "<<" and of line breaks, a "<" before a long word: each read in
    one pass (a pattern that looked for the end of every <param> would scan to the end from each).
    In a child, with a timeout far above the work's (a fraction of a second here)."""
    code = (
        "from spamfilter.mail.text import _enriched_text\n"
        "assert _enriched_text('<param>' * 200_000 + 'x') == ''\n"
        "assert _enriched_text('<<' * 300_000) == '<' * 300_000\n"
        "assert _enriched_text('<' + 'a' * 1_000_000) == '<' + 'a' * 1_000_000\n"
    )
    finishes_in_a_child(code, timeout=30)


def test_every_subject_of_a_message_with_several_is_read() -> None:
    """Some clients show a message's first Subject, others its last: a spammer who put a harmless
    one first had the model read that alone. Each distinct one is read, in order, as one line."""
    raw = b"Subject: Hello friend\nSubject:\nSubject: Cheap meds now\nSubject: Hello friend\n\nhi\n"
    assert extract_text(raw) == "Hello friend Cheap meds now\nhi"
    # the first few and the last, however many come between (a client that shows the last)
    many = b"".join(b"Subject: hello %d\n" % n for n in range(50)) + b"Subject: Cheap meds now\n\nhi\n"
    assert extract_text(many) == "hello 0 hello 1 hello 2 Cheap meds now\nhi"
