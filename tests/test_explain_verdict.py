"""The Report field: added by the Decision only where its explanation policy says so, folded in
the message's own line ending, printable ASCII and bounded whatever the message holds."""

from __future__ import annotations

import email

import pytest
from conftest import make_email

from spamfilter.errors import UsageError
from spamfilter.explain import Explanation, Phrase
from spamfilter.verdict import MAX_REPORT_CHARS, Decision


def _explanation(texts: list[str], probability: float = 0.9) -> Explanation:
    phrases = [Phrase(t, 0, len(t), 0.2, probability - 0.2, 1.5 - i) for i, t in enumerate(texts)]
    return Explanation(probability, 0.5, phrases, len(phrases))


def _report(tagged: bytes, prefix: str = "X-Spam") -> str | None:
    return email.message_from_bytes(tagged).get(f"{prefix}-Report")


@pytest.mark.parametrize(
    ("policy", "probability", "expected"),
    [("off", 0.9, False), ("off", 0.1, False), ("spam", 0.9, True), ("spam", 0.1, False), ("all", 0.1, True)],
)
def test_report_only_per_policy(policy: str, probability: float, expected: bool) -> None:
    decision = Decision(model_threshold=0.5, explain=policy)
    verdict = decision.verdict(probability)
    tagged = decision.tag(make_email("Hello", "body"), verdict, _explanation(["WIN a prize"], probability))
    assert (_report(tagged) is not None) is expected
    names = [name for name, _ in decision.fields(verdict, _explanation(["x"], probability))]
    assert ("X-Spam-Report" in names) is expected


def test_no_report_without_explanation() -> None:
    decision = Decision(explain="all")
    assert _report(decision.tag(make_email("Hi", "body"), decision.verdict(0.9))) is None


def test_report_takes_the_verdicts_probability_and_prefix() -> None:
    decision = Decision(model_threshold=0.5, explain="all", header_prefix="X-Spamfilter")
    verdict = decision.verdict(0.8761)
    tagged = decision.tag(make_email("Hi", "body"), verdict, _explanation(["cheap pills"], 0.8779))
    report = _report(tagged, "X-Spamfilter")
    assert report is not None and report.startswith("P(spam)=0.876; phrases towards spam")
    assert b"spam_probability=0.876" in tagged
    assert '"cheap pills"' in report


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_report_is_safe_folded_and_bounded(newline: str) -> None:
    hostile = [
        "line\r\nBcc: victim@example.org",
        "nul\x00 and \x1b[31m escape",
        "ünïcödé \u202e reversed 😀 " + "x" * 500,
        'quote " and \\ backslash',
        "\n\n\nSubject: injected",
        "a" * 5000,
        "tab\tand\x0bvt",
    ]
    decision = Decision(model_threshold=0.5, explain="spam")
    raw = make_email("Hostile", "body", newline=newline)
    tagged = decision.tag(raw, decision.verdict(0.99), _explanation(hostile, 0.99))
    header_block = tagged.split(newline.encode() * 2, 1)[0]
    lines = header_block.split(newline.encode())
    report_at = next(i for i, line in enumerate(lines) if line.startswith(b"X-Spam-Report:"))
    # the Report is its first line and the folded lines right after it, nothing else of ours
    report_lines = [lines[report_at]]
    for line in lines[report_at + 1 :]:
        if not line.startswith(b"\t"):
            break
        report_lines.append(line)
    assert 2 <= len(report_lines) <= 6
    for line in report_lines:
        assert all(0x20 <= b <= 0x7E or b == 0x09 for b in line), line
        assert len(line) < 100
    assert sum(len(line) for line in report_lines) <= MAX_REPORT_CHARS + 20
    # no field smuggled in: the header names are the message's plus the four of ours
    names = [line.split(b":", 1)[0] for line in lines if line and not line[:1].isspace()]
    assert b"Bcc" not in names and names.count(b"Subject") == 1
    # the line ending is the message's own throughout (no bare LF in a CRLF message)
    if newline == "\r\n":
        assert b"\n" not in tagged.replace(b"\r\n", b"")
    # everything after the new fields is the message, byte for byte
    assert tagged.endswith(raw)


def test_earlier_report_replaced() -> None:
    extra = "X-Spam-Report: \n\t* 3.0 SOMETHING old report\n\t* 1.0 OTHER more\n"
    raw = make_email("Hi", "body", extra=extra)
    decision = Decision(model_threshold=0.5, explain="all")
    tagged = decision.tag(raw, decision.verdict(0.2), _explanation(["hello"], 0.2))
    assert tagged.count(b"X-Spam-Report:") == 1 and b"SOMETHING" not in tagged


def test_unknown_policy_refused() -> None:
    with pytest.raises(UsageError):
        Decision(explain="sometimes")
