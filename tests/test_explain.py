"""Explanations of verdicts (spamfilter.explain) and the error report (spamfilter.report)."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import finishes_in_a_child

from spamfilter.explain import (
    MAX_SPANS,
    Explanation,
    Phrase,
    explain,
    explain_batch,
    report_header,
    safe_phrase,
    spamd_report,
    split_spans,
    without_spans,
)
from spamfilter.report import error_report, markdown_text
from spamfilter.runtime import Classifier

SPAM = [
    "WINNER!! As a valued network customer you have been selected to receive a £900 prize reward! "
    "To claim call 09061701461. Claim code KL341. Valid 12 hours only.",
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121 to receive "
    "entry question(std txt rate)T&C's apply 08452810075over18's",
    "URGENT! You have won a 1 week FREE membership in our £100,000 Prize Jackpot! Txt the word: CLAIM "
    "to No: 81010 T&C www.dbuk.net LCCLTD POBOX 4403LDNW1A7RW18",
]
HAM = "Hey, are we still meeting for lunch tomorrow? Let me know, I'll book the table at noon."
HOSTILE = (
    'Subject: "hi"\r\nX-Injected: yes\n\x00\x07\x1b[31m\u2028\u2029\x85\u202eevil\tTAB '
    "<script>alert(1)</script> | [click](javascript:alert(1)) WIN FREE CASH NOW!!! " + "x" * 300
)
PRINTABLE = re.compile(r"[ -~]*")


@pytest.fixture(scope="module")
def classifier(trained_model: Path) -> Classifier:
    return Classifier.load(trained_model)


@pytest.fixture(scope="module")
def spam_texts(classifier: Classifier) -> list[str]:
    """The spam above that the tiny model flags (it flags them all; a test needs at least one)."""
    flagged = [
        t for t, p in zip(SPAM, classifier.spam_probability(SPAM), strict=True) if p >= classifier.threshold
    ]
    assert flagged, "the tiny model flags none of the test spam"
    return flagged


def long_text() -> str:
    """A mail text of many windows and past the text cap: ham sentences, then an offer."""
    ham = " ".join(f"Sentence {i} of the minutes, as agreed at the meeting." for i in range(400))
    return "Re: minutes\n" + ham + "\n\nWIN a FREE prize now! Call 09061701461 to claim.\n" + "y " * 20_000


# --------------------------------------------------------------------------- spans


def test_spans_are_trimmed_clauses_of_the_text() -> None:
    text = "Hello there, friend.\nOne two three four five six seven eight nine ten eleven twelve thirteen"
    spans = split_spans(text, max_words=6)
    pieces = [text[a:b] for a, b in spans]
    assert pieces[:2] == ["Hello there,", "friend."]
    assert all(len(p.split()) <= 6 and p == p.strip() for p in pieces)
    assert " ".join(pieces[2:]) == text.split("\n")[1]  # the long line cut, nothing lost


def test_a_text_of_a_long_run_of_spaces_is_split_at_once() -> None:
    """Each space of a run was tried as the start of a dash's spaces (n² steps: 0.1 s for 3,000
    tabs, minutes for 200,000, on every spam explained). In a child, so that a return of that
    fails the test instead of hanging the suite (a few hundredths of a second here)."""
    code = (
        "from spamfilter.explain import split_spans\n"
        "assert split_spans('a' + '\\t' * 200_000 + 'x') == [(0, 200_002)]\n"
        "assert split_spans('buy now - cheap | pills') == [(0, 7), (10, 15), (18, 23)]\n"
    )
    finishes_in_a_child(code, timeout=20)


def test_without_spans_takes_the_space_before_a_span() -> None:
    text = "one two three four"
    assert without_spans(text, [(4, 7), (14, 18)]) == "one three"
    assert without_spans(text, [(0, 3)]) == " two three four"


def test_phrases_are_spans_of_the_message_text(classifier: Classifier, spam_texts: list[str]) -> None:
    texts = [*spam_texts, HAM, HOSTILE, long_text(), "ÜBER günstig — Rolex für 99 € 🎁 jetzt bestellen"]
    for text, explanation in zip(texts, explain_batch(classifier, texts, top=5), strict=True):
        for phrase in explanation.phrases:
            assert phrase.text and phrase.text in text
            assert text[phrase.start : phrase.end] == phrase.text
            assert phrase.text == phrase.text.strip()
            assert phrase.end <= classifier.recipe.chars_kept  # never past what is read
        assert len(explanation.phrases) <= 5


def test_removing_the_phrases_lowers_p_spam_of_a_spam(classifier: Classifier, spam_texts: list[str]) -> None:
    for text in spam_texts:
        # one pass: each phrase's effect alone, strongest first (greedy is checked below)
        explanation = explain_batch(classifier, [text], greedy=False)[0]
        assert explanation.is_spam and explanation.phrases
        assert all(p.direction == "spam" and p.log_odds > 0 for p in explanation.phrases)
        effects = [p.log_odds for p in explanation.phrases]
        assert effects == sorted(effects, reverse=True)  # strongest first
        # removing the text itself (not just its tokens) lowers P(spam), for the top phrase alone
        # and for all of them together
        before = classifier.spam_probability([text])[0]
        top = explanation.phrases[0]
        alone, together = classifier.spam_probability(
            [
                without_spans(text, [(top.start, top.end)]),
                without_spans(text, [(p.start, p.end) for p in explanation.phrases]),
            ]
        )
        assert alone < before and together < before


def test_greedy_phrases_each_lower_p_spam_further(classifier: Classifier, spam_texts: list[str]) -> None:
    for text in spam_texts:
        explanation = explain_batch(classifier, [text], greedy=True)[0]
        assert explanation.phrases and all(text[p.start : p.end] == p.text for p in explanation.phrases)
        assert len({(p.start, p.end) for p in explanation.phrases}) == len(explanation.phrases)
        afters = [explanation.probability] + [p.without for p in explanation.phrases]
        assert afters == sorted(afters, reverse=True) and all(p.delta > 0 for p in explanation.phrases)
        removed = without_spans(text, [(p.start, p.end) for p in explanation.phrases])
        assert classifier.spam_probability([removed])[0] < explanation.probability
        # the first greedy phrase is the strongest one alone
        assert explanation.phrases[0] == explain_batch(classifier, [text], top=1)[0].phrases[0]


# Removing a line between two line breaks leaves "\n", "\n" where the edited text encodes to one
# "\n\n" token: the same characters, ids the tokenizer never gives (what an occlusion that took
# the span's tokens out of the ids scored). And the spam in windows: P(spam) is the highest's.
SEAMS = [
    "Grow Up And Be A Man!\nClick Here\n\nhwawrlgiooooqvjoii WIN a FREE prize now",
    "Re: offer\n"
    + "Claim your FREE prize now, call 09061701461.\n" * 60
    + "\nbye\n\nfor no more emails click here\n\nx",
]


@pytest.mark.parametrize("greedy", [False, True])
def test_the_estimate_is_the_verdict_the_filter_gives_the_edited_text(
    classifier: Classifier, spam_texts: list[str], greedy: bool
) -> None:
    for text in [*spam_texts, *SEAMS, HAM]:
        explanation = explain_batch(classifier, [text], top=48 if not greedy else 3, greedy=greedy)[0]
        assert explanation.probability == classifier.spam_probability([text])[0]
        removed: list[tuple[int, int]] = []
        for phrase in explanation.phrases:
            # one pass: each phrase alone; greedy: with the phrases before it removed
            removed = [*removed, (phrase.start, phrase.end)] if greedy else [(phrase.start, phrase.end)]
            edited = without_spans(text, removed)
            # the edited text classified alone, as the filter classifies one message
            assert phrase.without == pytest.approx(classifier.spam_probability([edited])[0], abs=1e-12)


def test_a_ham_verdict_is_explained_by_phrases_towards_ham(classifier: Classifier) -> None:
    explanation = explain_batch(classifier, [HAM])[0]
    assert not explanation.is_spam
    assert all(p.direction == "ham" and p.delta < 0 for p in explanation.phrases)


def test_explanations_are_deterministic(classifier: Classifier, spam_texts: list[str]) -> None:
    first = explain_batch(classifier, [*spam_texts, HAM])
    assert explain_batch(classifier, [*spam_texts, HAM]) == first
    assert explain(classifier, spam_texts[0]) == explain_batch(classifier, [spam_texts[0]])[0].phrases


class CountingSession:
    """The real onnxruntime session, counting the calls and rows it is given."""

    def __init__(self, session: Any) -> None:
        self.session, self.calls, self.rows = session, 0, 0

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.calls += 1
        self.rows += len(feeds["input_ids"])
        return self.session.run(names, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def test_the_work_is_bounded(trained_model: Path) -> None:
    classifier = Classifier.load(trained_model)
    counting = CountingSession(classifier.session)
    classifier.session = counting
    text = long_text()
    explanation = explain_batch(classifier, [text], max_spans=20)[0]
    assert explanation.spans_scored == 20  # far more spans in the text, the cap holds
    # the text and, per pass (3 greedy passes for a spam verdict, one for ham), at most 20
    # copies, each of at most max_windows windows (and the windows once to rank them), each
    # copy in calls of its own, as the filter scores one message
    copies = 2 + (3 * 20 if explanation.is_spam else 20)
    assert counting.rows <= copies * classifier.max_windows
    assert counting.calls <= copies * -(-classifier.max_windows // classifier.batch_size)
    # the spans chosen are in what the model reads: the window that decides the verdict first
    assert all(p.end <= classifier.recipe.chars_kept for p in explanation.phrases)
    assert explain_batch(classifier, [text])[0].spans_scored == MAX_SPANS


def test_an_empty_or_spaceless_text_has_no_phrases(classifier: Classifier) -> None:
    for text in ("", "   \n\n ", "\x00"):
        explanation = explain_batch(classifier, [text])[0]
        assert explanation.phrases == [] or all(p.text in text for p in explanation.phrases)


# --------------------------------------------------------------------------- output


def hostile_explanation() -> Explanation:
    texts = [
        HOSTILE,
        "\r\n\r\nBcc: victim@example.org",
        '"quoted" \\ back\\slash',
        "\u00e9t\u00e9 na\u00efve \u4e2d\u6587",
    ]
    phrases = [Phrase(t, 0, len(t), 0.5, 0.4, 2.0 - i) for i, t in enumerate(texts)]
    return Explanation(0.97, 0.9, phrases, len(phrases))


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_the_report_header_cannot_be_broken_by_the_message(eol: str) -> None:
    value = report_header(hostile_explanation(), eol=eol)
    lines = value.split(eol + "\t")
    assert len(lines) == 5  # the summary and one line per phrase, nothing else
    assert all(PRINTABLE.fullmatch(line) for line in lines), lines
    assert len("X-Spam-Report: " + lines[0]) <= 78 and all(len("\t" + line) <= 78 for line in lines[1:])
    assert "\"'quoted' \\ back\\slash\"" in value  # quotes cannot end a phrase early
    assert "ete naive ??" in value
    raw = ("X-Spam-Report: " + value + eol + "Subject: test" + eol + eol + "body" + eol).encode("ascii")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert list(message.keys()) == ["X-Spam-Report", "Subject"]
    assert "X-Injected" not in message and "Bcc" not in message


def test_the_report_header_of_a_real_hostile_message(classifier: Classifier) -> None:
    explanation = explain_batch(classifier, [HOSTILE], top=5)[0]
    value = report_header(explanation)
    assert all(PRINTABLE.fullmatch(line) for line in value.split("\n\t"))
    with pytest.raises(ValueError, match="LF or CRLF"):
        report_header(explanation, eol="\r")


def test_a_header_without_phrases() -> None:
    assert report_header(Explanation(0.2, 0.9, [], 0)) == "P(spam)=0.200; no single phrase decides (ham)"


def test_spamd_report_is_safe_and_in_spamassassin_layout() -> None:
    report = spamd_report(hostile_explanation(), score=9.7, required=5.0, test="GPT2_SPAM_CLASSIFIER")
    lines = report.splitlines()
    assert lines[0] == "Content analysis details:   (9.7 points, 5.0 required)"
    assert lines[4].startswith(" 9.7 GPT2_SPAM_CLASSIFIER   P(spam) 0.970, threshold 0.900")
    assert all(PRINTABLE.fullmatch(line) and len(line) <= 100 for line in lines)
    assert "\r" not in report and len(lines) == 10


def test_safe_phrase_bounds_and_cleans() -> None:
    assert safe_phrase("a\r\nb\x00c\u2028d") == "a b c d"
    assert len(safe_phrase("word " * 100)) <= 60 and safe_phrase("word " * 100).endswith("...")


# --------------------------------------------------------------------------- the error report


def test_markdown_text_escapes_everything_a_renderer_reads() -> None:
    escaped = markdown_text("a|b <img src=x> [x](javascript:y) *em* `code` # h\n> quote &amp;")
    assert "\n" not in escaped and "<" not in escaped and ">" not in escaped
    assert "\\|" in escaped and "\\[x\\]\\(javascript:y\\)" in escaped.replace("\\:", ":")
    assert "&amp;amp;" in escaped


def error_inputs() -> tuple[list[str], list[int], list[float], list[str]]:
    hostile_ham = "Re: <b>lunch</b> | col\r\n# Heading\n<script>alert(1)</script> [x](javascript:alert(1))"
    texts = [hostile_ham, SPAM[0], HAM, SPAM[1]]
    labels = [0, 1, 0, 1]
    probabilities = [0.95, 0.10, 0.05, 0.99]  # a false positive, a missed spam, two right
    names = ["<img src=x onerror=alert(1)>|", "mbox:2", "ok-ham", "ok-spam"]
    return texts, labels, probabilities, names


def test_the_markdown_report_lists_the_errors_escaped(classifier: Classifier) -> None:
    texts, labels, probabilities, names = error_inputs()
    page = error_report(texts, labels, probabilities, 0.5, classifier, names=names)
    assert "4 messages (2 spam, 2 ham), threshold 0.5000: false positives 1, missed spam 1." in page
    assert "<script" not in page and "<img" not in page and "<b>" not in page and "](javascript" not in page
    assert not any(line.startswith("# Heading") for line in page.splitlines())
    rows = [line for line in page.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 4  # two headers, one false positive, one missed spam
    for row in rows:
        assert len(re.findall(r"(?<!\\)\|", row)) == 5  # the cells hold whatever the message says
    assert "ok\\-ham" not in page and "mbox:2".replace(":", "\\:") in page
    assert "0.9500" in page and "0.1000" in page
    # the missed spam (which the model really flags) is explained towards the evaluation's verdict
    assert "phrases towards ham" in page and not re.search(r"(\| |<br>)\+\d", page.split("Missed spam")[1])


def test_the_html_report_is_self_contained_and_escaped(classifier: Classifier) -> None:
    texts, labels, probabilities, names = error_inputs()
    page = error_report(texts, labels, probabilities, 0.5, classifier, names=names, fmt="html")
    tags = set(re.findall(r"<\s*([a-zA-Z0-9!]+)", page))
    allowed = {"!DOCTYPE", "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table"}
    assert tags <= allowed | {"tr", "th", "td", "ol", "li", "span"}
    assert "&lt;script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;|" in page
    assert "http://" not in page and "https://" not in page and "src=" not in page.replace("src=x", "")


def test_a_report_without_errors_and_a_bad_format(classifier: Classifier) -> None:
    page = error_report([HAM], [0], [0.1], 0.5, classifier)
    assert page.count("None.") == 2
    with pytest.raises(ValueError, match="markdown, html"):
        error_report([HAM], [0], [0.1], 0.5, classifier, fmt="pdf")
    with pytest.raises(ValueError, match="one entry per message"):
        error_report([HAM], [0, 1], [0.1], 0.5, classifier)


def test_a_spam_verdict_is_explained_greedily_and_a_ham_verdict_in_one_pass(
    classifier: Classifier, spam_texts: list[str]
) -> None:
    # The default is the method the deletion test measured (RESULTS section 17) for spam verdicts.
    chosen = explain_batch(classifier, spam_texts)
    assert chosen == explain_batch(classifier, spam_texts, greedy=True)
    assert chosen != explain_batch(classifier, spam_texts, greedy=False)  # the two methods differ here
    assert explain_batch(classifier, [HAM]) == explain_batch(classifier, [HAM], greedy=False)
