"""Why a verdict was given: the phrases of a message that moved its P(spam) most, by occlusion.

The message's model text is cut into short spans (clauses of at most ``MAX_WORDS`` words; lines
and sentence or clause punctuation end a span). Each span is removed in turn (its text and the
space before it), and every such copy of the text is scored exactly as the filter scores the
edited text as a message of its own: encoded again (not the span's tokens taken out of the
text's ids: that leaves token pairs at the seam which BPE never produces, e.g. two ``\n`` for
one ``\n\n``, and moved P(spam) of a 23-token spam from 0.006 to 0.995), cut into the windows of
:mod:`.windows` and run in a call of its own (the int8 model quantizes its activations per call,
so a row's answer depends on the rows beside it). A phrase's ``without`` is therefore the P(spam)
that classifying the edited text gives. No gradients and no torch: onnxruntime alone, as on the
filter path. ``greedy`` then removes phrases one after the other (each chosen with the ones
before it removed): phrases that only count together are found, at ``top`` times the cost.

The bound: at most ``MAX_SPANS`` spans per message, so a one-pass explanation scores at most
``MAX_SPANS + 1`` copies of the text (each of up to ``MAX_WINDOWS`` windows), tens of times the
cost of classifying the message (``benchmarks/bench_explain.py`` measures it). Only spans the
model reads are candidates (text past the windows' reach has no effect); where they are more
than the cap, those of the window that decided the verdict (the highest P(spam)) come first,
then the message's first line (repeated in every window), then the rest in text order.

The ranking of a spam's phrases: P(spam) is the highest window's, so a spam turns to ham only
once every window is below the threshold. A span is ranked first by how far its removal lowers
the windows' excess over the threshold (each window's log-odds above the threshold's, summed),
which credits lowering a second window above the threshold where P(spam) alone shows nothing,
then by the change of P(spam) in log-odds (a ham verdict's phrases by that alone). Log-odds, not
probability: a confident spam sits where P(spam) barely moves (0.9995 against 0.9990), and
log-odds still tell its strongest phrase from its weakest.

Which verdicts are explained (off, spam, all) is the ``Decision``'s to say
(:meth:`spamfilter.verdict.Decision.explains`); this module only explains.

Output for headers (:func:`report_header`) and for spamd (:func:`spamd_report`) carries no byte
of the message that could break a header: printable ASCII only, control characters and line
breaks turned into spaces, other characters to their closest ASCII letter or ``?``, every
phrase and every line bounded.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from .runtime import batched_logits, session_logits, softmax_spam
from .windows import _HEAD_SHARE, discounted, head_length, split_windows, windows_of

if TYPE_CHECKING:
    from .memory import Evidence
    from .runtime import Classifier
    from .tokenizer import Tokenizer

MAX_WORDS = 6  # words per span at most: a phrase an admin reads at a glance
MAX_SPANS = 48  # spans scored per message at most (each one a copy of the text scored)
Direction = Literal["spam", "ham"]

# A span ends at a line break, or after sentence or clause punctuation followed by a space.
# (A dash's spaces are tried from the first of a run only: from every one, a run of n spaces with
# no dash after it cost n² steps.)
_BREAK = re.compile(r"\n+|(?<=[.!?;:,])[ \t]+|(?<![ \t])[ \t]+[-\u2013\u2014|][ \t]+")
_WORD = re.compile(r"\S+")
_PROBABILITY_FLOOR = 1e-7  # log-odds of P in [floor, 1 - floor]: finite for saturated answers


@dataclass(frozen=True)
class Phrase:
    """One span of the message text and what removing it does to P(spam).

    ``text == message_text[start:end]``; ``delta`` is P(spam) with the span minus P(spam)
    without it (positive: the phrase pushed towards spam); ``without`` is P(spam) without it
    (greedy explanations: without it and the phrases before it)."""

    text: str
    start: int
    end: int
    delta: float
    without: float
    log_odds: float  # the same effect in log-odds (a spam's phrases are ranked on its windows, see above)

    @property
    def direction(self) -> Direction:
        return "spam" if self.log_odds > 0 else "ham"


@dataclass(frozen=True)
class Explanation:
    """A message's P(spam), the verdict at ``threshold`` and the phrases behind it (strongest first)."""

    probability: float
    threshold: float
    phrases: list[Phrase]
    spans_scored: int
    # What the memory of corrected mail added (memory.py): e.g. "+8.40 holds 84% of a spam
    # reported 2026-12-05". The phrases are the model's; these lines say what moved it further.
    memory: tuple[str, ...] = ()

    @property
    def is_spam(self) -> bool:
        return self.probability >= self.threshold


# --------------------------------------------------------------------------- spans


def split_spans(text: str, max_words: int = MAX_WORDS) -> list[tuple[int, int]]:
    """``(start, end)`` of the text's spans in text order: clauses of at most ``max_words`` words
    (a longer clause is cut into pieces of nearly equal length), outer whitespace not included."""
    spans: list[tuple[int, int]] = []
    begin = 0
    for cut in [*_BREAK.finditer(text), None]:
        end = len(text) if cut is None else cut.start()
        words = [(m.start(), m.end()) for m in _WORD.finditer(text, begin, end)]
        if words:
            pieces = math.ceil(len(words) / max_words)
            size = math.ceil(len(words) / pieces)
            for first in range(0, len(words), size):
                chunk = words[first : first + size]
                spans.append((chunk[0][0], chunk[-1][1]))
        if cut is not None:
            begin = cut.end()
    return spans


def without_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """``text`` with the (non-overlapping) spans removed, each with the spaces or tabs before it
    (as the occlusion removes its tokens, which carry the space before a word): no double space,
    which the model would read as a sign of its own, is left behind."""
    pieces, kept = [], 0
    for start, end in sorted(spans):
        while start > kept and text[start - 1] in " \t":
            start -= 1
        pieces.append(text[kept:start])
        kept = max(kept, end)
    pieces.append(text[kept:])
    return "".join(pieces)


def _char_offsets(classifier: Classifier, text: str, ids: list[int]) -> list[int] | None:
    """The character offset where each token starts, plus the text's length at the end; None
    where the tokens do not decode back to the text (then every span counts as read)."""
    decoded, offsets = classifier.tokenizer.encoding.decode_with_offsets(ids)
    if decoded != text:
        return None
    return [*offsets, len(text)]


def read_ranges(classifier: Classifier, text: str) -> tuple[list[tuple[int, int]], int, list[list[int]]]:
    """What the model reads of ``text``: the character range of each window's stretch of the
    text, the end of the first line that every window repeats (0 for a single window) and the
    windows' token ids."""
    max_length = classifier.directory.max_length
    ids = classifier.tokenizer.encode(text)
    offsets = _char_offsets(classifier, text, ids)
    if offsets is None or len(ids) <= max_length or classifier.max_windows <= 1:
        end = len(text) if offsets is None else offsets[min(len(ids), max_length)]
        return [(0, end)], 0, [ids[:max_length]]
    head = min(head_length(ids, max_length // _HEAD_SHARE), max_length // _HEAD_SHARE)
    windows = split_windows(ids, head, max_length, classifier.max_windows, classifier.recipe.end_at_paragraph)
    body = np.asarray(ids[head:], dtype=np.int64)
    ranges, begin = [], 0
    for window in windows:
        part = np.asarray(window[head:], dtype=np.int64)  # every window is the head + a stretch
        begin = _find(body, part, begin)
        ranges.append((offsets[head + begin], offsets[min(len(ids), head + begin + len(part))]))
    return ranges, offsets[head], windows


def _find(body: np.ndarray, part: np.ndarray, start: int) -> int:
    """Where ``part`` first occurs in ``body`` at or after ``start`` (``start`` if nowhere: the
    windows are cut from ``body``, so it always occurs)."""
    if len(part) == 0:
        return start
    for at in np.flatnonzero(body[start:] == part[0]) + start:
        if at + len(part) <= len(body) and np.array_equal(body[at : at + len(part)], part):
            return int(at)
    return start


@dataclass
class _Message:
    """A text ready for occlusion: its token ids and its candidate spans."""

    text: str
    ids: list[int]
    spans: list[tuple[int, int]]
    tokenizer: Tokenizer

    def without(self, chosen: Sequence[int]) -> list[int]:
        """The token ids of the text without the spans ``chosen`` (indices into ``spans``): the
        edited text encoded again, exactly what the filter would read. Taking the span's tokens
        out of ``ids`` instead leaves token pairs that BPE never produces at the seam (``\\n``,
        ``\\n`` where the text now holds ``\\n\\n``, one token): the same characters, ids the model
        never saw in training, and a P(spam) that can be far from the edited text's."""
        return self.tokenizer.encode(without_spans(self.text, [self.spans[i] for i in chosen]))


def _prepare(classifier: Classifier, text: str, max_spans: int, max_words: int) -> _Message:
    spans = candidate_spans(classifier, text, max_spans, max_words)
    return _Message(text, classifier.tokenizer.encode(text), spans, classifier.tokenizer)


def candidate_spans(
    classifier: Classifier, text: str, max_spans: int = MAX_SPANS, max_words: int = MAX_WORDS
) -> list[tuple[int, int]]:
    """The spans worth scoring, at most ``max_spans``, in text order: those the model reads,
    the verdict's window first where they are more than the cap (see the module's docstring)."""
    spans = split_spans(text, max_words)
    ranges, head_end, windows = read_ranges(classifier, text)
    read = [s for s in spans if any(s[0] < hi and s[1] > lo for lo, hi in ranges) or s[1] <= head_end]
    if len(read) <= max_spans:
        return read
    best = ranges[int(np.argmax(_window_probabilities(classifier, windows)))]
    first = [s for s in read if best[0] < s[1] and s[0] < best[1]]
    head = [s for s in read if s[1] <= head_end and s not in first]
    rest = [s for s in read if s not in first and s not in head]
    return sorted((first + head + rest)[:max_spans])


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class _Scores:
    """Per copy of a text: P(spam) as the filter computes it, and how far its windows stand above
    the threshold (the sum, over the windows, of each one's log-odds above the threshold's)."""

    p: np.ndarray
    excess: np.ndarray


def _message_windows(classifier: Classifier, ids: Sequence[int]) -> np.ndarray:
    """P(spam) of each window of one text, computed as :meth:`Classifier.spam_probability`
    computes it for that text alone: the same windows, in one call of the classifier's batch.
    The int8 model quantizes its activations with one scale per call, so a row's answer depends
    on the rows beside it (by up to 0.05 in P(spam) for a copy scored among 128 rows against
    alone): scoring every copy in calls of its own is what makes the explanation's estimate the
    verdict the filter gives the edited text."""
    windows, _ = windows_of(
        [ids], classifier.directory.max_length, classifier.max_windows, classifier.recipe.end_at_paragraph
    )
    return _window_probabilities(classifier, windows)


def _window_probabilities(classifier: Classifier, windows: Sequence[Sequence[int]]) -> np.ndarray:
    logits = batched_logits(
        windows,
        session_logits(classifier.session),
        batch_size=classifier.batch_size,
        max_length=classifier.directory.max_length,
        pad_token_id=classifier.directory.pad_token_id,
        trim=classifier.dynamic_length,
    )
    return np.asarray(softmax_spam(logits))


def _scores(classifier: Classifier, rows: Sequence[Sequence[int]], threshold: float) -> _Scores:
    """:class:`_Scores` per row of token ids; identical rows (a span whose removal leaves the
    ids unchanged) are scored once."""
    seen: dict[tuple[int, ...], tuple[float, float]] = {}
    p, excess = np.zeros(len(rows)), np.zeros(len(rows))
    cut = float(_log_odds(threshold))
    for index, row in enumerate(rows):
        key = tuple(row)
        if key not in seen:
            windows = _message_windows(classifier, row)
            # as the filter combines them: the highest window, less the model's discount for n
            off = classifier.recipe.window_discount * math.log(len(windows))
            highest = float(discounted(windows.max(keepdims=True), np.asarray([off]))[0])
            seen[key] = (highest, float(np.clip(_log_odds(windows) - off - cut, 0, None).sum()))
        p[index], excess[index] = seen[key]
    return _Scores(p, excess)


def _log_odds(p: float | np.ndarray) -> np.ndarray:
    clipped = np.clip(p, _PROBABILITY_FLOOR, 1 - _PROBABILITY_FLOOR)
    return np.asarray(np.log(clipped) - np.log1p(-clipped))


def _effects(sign: float, p: float, excess: float, scores: _Scores) -> tuple[np.ndarray, np.ndarray]:
    """How far removing each copy's spans moves the verdict: the drop of the windows' excess
    above the threshold (spam only: P(spam) is the highest window's, so a spam turns to ham only
    once every window is below the threshold, and a span that lowers a second window above it is
    progress that P(spam) alone does not show), then the change of P(spam) in log-odds."""
    log_odds = sign * (_log_odds(p) - _log_odds(scores.p))
    excess_drop = (excess - scores.excess) if sign > 0 else np.zeros(len(scores.p))
    return excess_drop, log_odds


def _order(
    message: _Message, candidates: Sequence[int], excess_drop: np.ndarray, log_odds: np.ndarray
) -> list[int]:
    """Positions in ``candidates`` of the spans that move P(spam) against the verdict, the
    strongest first (ties in text order: deterministic)."""
    moving = [
        j for j in range(len(candidates)) if excess_drop[j] > 0 or (excess_drop[j] == 0 and log_odds[j] > 0)
    ]
    return sorted(moving, key=lambda j: (-excess_drop[j], -log_odds[j], message.spans[candidates[j]][0]))


def explain_batch(
    classifier: Classifier,
    texts: Sequence[str],
    top: int = 3,
    threshold: float | None = None,
    max_spans: int = MAX_SPANS,
    max_words: int = MAX_WORDS,
    towards: Direction | None = None,
    greedy: bool | None = None,
    users: Sequence[str | None] | None = None,
) -> list[Explanation]:
    """An explanation per text: its P(spam) and up to ``top`` phrases that pushed it towards its
    verdict at ``threshold`` (the model's by default), or ``towards`` the verdict named, strongest
    first. Every copy of a text without one span is scored as the filter scores a message.

    ``greedy`` removes the phrases one after the other: the second is the span whose removal,
    the first one removed too, moves P(spam) furthest, and so on (``top`` passes, each as large
    as the first). It finds phrases that only count together, as when two windows each hold a
    reason for the verdict; each phrase's ``delta`` is then what it adds after the ones above.
    By default (``None``) a spam verdict is explained greedily and a ham verdict in one pass: on
    the deletion test (RESULTS section 17) removing the top 3 greedy phrases turns more flagged
    spam to ham than the top 3 of one pass on both models measured (24 % against 16 %, 63 %
    against 35 %), for 1.6 to 4.5 times the cost.

    The phrases are scored by the model alone; where the memory of corrected mail moved the
    verdict too (``users``: per text, whose memory counts besides the shared one), the
    explanation's ``memory`` lines say by how much and why."""
    cut = classifier.threshold if threshold is None else threshold
    remembered: Sequence[Evidence | None] = classifier.memory_evidence(texts, users) or [None] * len(texts)
    cap = classifier.recipe.chars_kept
    explanations = []
    for text, evidence in zip(texts, remembered, strict=True):
        message = _prepare(classifier, text[:cap], max_spans, max_words)
        original = _scores(classifier, [message.ids], cut)
        p, excess = float(original.p[0]), float(original.excess[0])
        # spam: phrases that raised P(spam); ham: those that lowered it
        sign = 1.0 if (towards == "spam" if towards else p >= cut) else -1.0
        stepwise = sign > 0 if greedy is None else greedy
        steps = top if stepwise else 1
        chosen: list[int] = []
        phrases: list[Phrase] = []
        for _ in range(steps):
            candidates = [i for i in range(len(message.spans)) if i not in chosen]
            if not candidates:
                break
            scores = _scores(classifier, [message.without([*chosen, i]) for i in candidates], cut)
            excess_drop, log_odds = _effects(sign, p, excess, scores)
            order = _order(message, candidates, excess_drop, log_odds)
            if not stepwise:
                phrases = [_phrase(message, candidates[j], p, float(scores.p[j])) for j in order[:top]]
                break
            if not order:
                break  # nothing left that moves P(spam) against the verdict
            best = order[0]
            phrases.append(_phrase(message, candidates[best], p, float(scores.p[best])))
            chosen.append(candidates[best])
            p, excess = float(scores.p[best]), float(scores.excess[best])
        memory = tuple(evidence.lines()) if evidence is not None else ()
        explanations.append(Explanation(float(original.p[0]), cut, phrases, len(message.spans), memory))
    return explanations


def _phrase(message: _Message, index: int, before: float, after: float) -> Phrase:
    start, end = message.spans[index]
    return Phrase(
        text=message.text[start:end],
        start=start,
        end=end,
        delta=before - after,
        without=after,
        log_odds=float(_log_odds(before) - _log_odds(after)),
    )


def explain(
    classifier: Classifier,
    text: str,
    top: int = 3,
    threshold: float | None = None,
    max_spans: int = MAX_SPANS,
) -> list[Phrase]:
    """The up to ``top`` phrases of ``text`` (a message's model text, as
    :func:`spamfilter.mail.extract_text` gives it) that pushed P(spam) most towards the verdict."""
    return explain_batch(classifier, [text], top, threshold, max_spans)[0].phrases


# --------------------------------------------------------------------------- safe output

MAX_PHRASE_CHARS = 60  # of one phrase in a header or report line
MAX_HEADER_PHRASES = 5
_SPACES = re.compile(r"\s+")


def safe_phrase(text: str, limit: int = MAX_PHRASE_CHARS) -> str:
    """``text`` as printable ASCII on one line, at most ``limit`` characters: whitespace and
    control characters of any kind become one space, accents are dropped (NFKD), any other
    character becomes ``?``, and the double quote becomes a single one (phrases are quoted)."""
    folded = unicodedata.normalize("NFKD", text)
    chars = []
    for ch in folded:
        if unicodedata.combining(ch):
            continue
        if ch.isspace() or unicodedata.category(ch)[0] in "CZ":
            chars.append(" ")
        elif " " <= ch <= "~":
            chars.append("'" if ch == '"' else ch)
        else:
            chars.append("?")
    line = _SPACES.sub(" ", "".join(chars)).strip()
    if len(line) > limit:
        line = line[: max(1, limit - 3)].rstrip() + "..."
    return line


def phrase_lines(phrases: Sequence[Phrase]) -> list[str]:
    """One line per phrase, e.g. ``+2.41 "WIN a FREE prize"``: how far the phrase moves the
    spam log-odds (its removal takes that away; log-odds because a confident verdict's P(spam)
    barely moves, 0.9995 against 0.9990) and the phrase, safe for any header."""
    return [f'{p.log_odds:+.2f} "{safe_phrase(p.text)}"' for p in phrases[:MAX_HEADER_PHRASES]]


def report_header(explanation: Explanation, eol: str = "\n") -> str:
    """The value of an ``X-Spam-Report``-style field: a summary line, then one folded line per
    phrase (``eol`` + tab, so ``eol`` must be the message's own line ending). Printable ASCII
    between the folds, every line under 78 characters, at most ``MAX_HEADER_PHRASES`` phrases."""
    if eol not in ("\n", "\r\n"):
        raise ValueError("eol must be LF or CRLF")
    verdict = "spam" if explanation.is_spam else "ham"
    memory = [f"memory {safe_phrase(line)}" for line in explanation.memory]
    if not explanation.phrases:
        head = f"P(spam)={explanation.probability:.3f}; no single phrase decides ({verdict})"
        return (eol + "\t").join([head, *memory])
    head = f"P(spam)={explanation.probability:.3f}; phrases towards {verdict}, log-odds:"
    return (eol + "\t").join([head, *memory, *phrase_lines(explanation.phrases)])


def spamd_report(explanation: Explanation, score: float, required: float, test: str) -> str:
    """The body of a spamd REPORT answer (what ``spamc -R`` prints), in SpamAssassin's layout:
    the points and the one test, then the phrases as its description lines. ``score`` and
    ``required`` are on the scale the service answers with; ``test`` is the test's name."""
    width = 22
    lines = [
        f"Content analysis details:   ({score:.1f} points, {required:.1f} required)",
        "",
        " pts rule name              description",
        "---- ---------------------- --------------------------------------------------",
        f"{score:4.1f} {safe_phrase(test, width):<{width}} "
        f"P(spam) {explanation.probability:.3f}, threshold {explanation.threshold:.3f}",
    ]
    verdict = "spam" if explanation.is_spam else "ham"
    lines.extend(f"{'':27}memory {safe_phrase(line)}" for line in explanation.memory)
    if explanation.phrases:
        lines.append(f"{'':27}phrases towards {verdict} (log-odds):")
        lines.extend(f"{'':27}{line}" for line in phrase_lines(explanation.phrases))
    return "\n".join(lines) + "\n"
