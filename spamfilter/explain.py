"""Why a verdict was given: the phrases of a message that moved its P(spam) most, by occlusion.

The message's model text is cut into short spans (clauses of at most ``MAX_WORDS`` words; lines
and sentence or clause punctuation end a span). Each span is removed in turn (its tokens taken
out of the text's token ids, which is removing its text and the space before it), every such
copy is scored together with the text itself in one batched pass, read as the filter reads a
message (the windows of :mod:`.windows`, the highest P(spam) wins, each distinct window scored
once), and a span's effect is how far its removal moves P(spam). No gradients and no torch:
onnxruntime alone, as on the filter path. ``greedy`` then removes phrases one after the other
(each chosen with the ones before it removed): phrases that only count together are found, at
``top`` times the cost.

The bound: at most ``MAX_SPANS`` spans per message, so a one-pass explanation scores at most
``MAX_SPANS + 1`` copies of the text (each of up to ``MAX_WINDOWS`` windows, fewer distinct
ones), tens of times the cost of classifying the message (``benchmarks/bench_explain.py``
measures it). Only spans the model reads are candidates (text past the windows' reach has no
effect); where they are more than the cap, those of the window that decided the verdict (the
highest P(spam)) come first, then the message's first line (repeated in every window), then the
rest in text order.

Effects are ranked in log-odds, not in probability: a confident spam sits where P(spam) barely
moves (0.9995 against 0.9990), and log-odds still tell its strongest phrase from its weakest.

Which verdicts are explained (off, spam, all) is the ``Decision``'s to say
(:meth:`spamfilter.verdict.Decision.explains`); this module only explains.

Output for headers (:func:`report_header`) and for spamd (:func:`spamd_report`) carries no byte
of the message that could break a header: printable ASCII only, control characters and line
breaks turned into spaces, other characters to their closest ASCII letter or ``?``, every
phrase and every line bounded.
"""

from __future__ import annotations

import bisect
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from .runtime import batched_logits, chars_kept, session_logits, softmax_spam
from .windows import _HEAD_SHARE, combine, head_length, split_windows, windows_of

if TYPE_CHECKING:
    from .runtime import Classifier
    from .tokenizer import Tokenizer

MAX_WORDS = 6  # words per span at most: a phrase an admin reads at a glance
MAX_SPANS = 48  # spans scored per message at most (each one a copy of the text scored)
# Model rows per onnxruntime call at most: bounds one call's memory (GPT-2 small's attention
# scores for 128 rows of 256 tokens: 128 x 12 heads x 256 x 256 floats, 0.4 GB a layer).
ROWS_PER_CALL = 128
Direction = Literal["spam", "ham"]

# A span ends at a line break, or after sentence or clause punctuation followed by a space.
_BREAK = re.compile(r"\n+|(?<=[.!?;:,])[ \t]+|[ \t]+[-\u2013\u2014|][ \t]+")
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
    log_odds: float  # the same effect in log-odds, which ranks the phrases

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
    windows = split_windows(ids, head, max_length, classifier.max_windows)
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
    """A text ready for occlusion: its token ids, its candidate spans and each one's tokens."""

    text: str
    ids: list[int]
    spans: list[tuple[int, int]]
    tokens: list[tuple[int, int]] | None  # token range per span; None: re-encode each variant
    tokenizer: Tokenizer

    def without(self, chosen: Sequence[int]) -> list[int]:
        """The token ids of the text without the spans ``chosen`` (indices into ``spans``).
        Removing a span's tokens (the space before its first word included, as GPT-2 tokens
        carry it) is removing its text, short of how BPE would merge across the new seam."""
        if self.tokens is None:
            return self.tokenizer.encode(without_spans(self.text, [self.spans[i] for i in chosen]))
        keep = np.ones(len(self.ids), dtype=bool)
        for i in chosen:
            keep[self.tokens[i][0] : self.tokens[i][1]] = False
        return [token for token, kept in zip(self.ids, keep, strict=True) if kept]


def _prepare(classifier: Classifier, text: str, max_spans: int, max_words: int) -> _Message:
    spans = candidate_spans(classifier, text, max_spans, max_words)
    ids = classifier.tokenizer.encode(text)
    offsets = _char_offsets(classifier, text, ids)
    if offsets is None:
        return _Message(text, ids, spans, None, classifier.tokenizer)
    # the token holding a span's first character (with the space before it) up to the first
    # token that starts at or after its end
    tokens = [
        (bisect.bisect_right(offsets, start) - 1, bisect.bisect_left(offsets, end)) for start, end in spans
    ]
    return _Message(text, ids, spans, tokens, classifier.tokenizer)


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
    best = ranges[int(np.argmax(softmax_spam(_logits(classifier, windows))))]
    first = [s for s in read if best[0] < s[1] and s[0] < best[1]]
    head = [s for s in read if s[1] <= head_end and s not in first]
    rest = [s for s in read if s not in first and s not in head]
    return sorted((first + head + rest)[:max_spans])


# --------------------------------------------------------------------------- scoring


def _logits(classifier: Classifier, windows: Sequence[Sequence[int]]) -> np.ndarray:
    """Logits of windows of token ids in as few onnxruntime calls as ``ROWS_PER_CALL`` allows
    (:meth:`Classifier.spam_probability` runs ``batch_size`` rows a call, 8 on the CPU)."""
    return batched_logits(
        windows,
        session_logits(classifier.session),
        batch_size=ROWS_PER_CALL,
        max_length=classifier.directory.max_length,
        pad_token_id=classifier.directory.pad_token_id,
        trim=classifier.dynamic_length,
    )


def _probabilities(classifier: Classifier, rows: Sequence[Sequence[int]]) -> np.ndarray:
    """P(spam) per row of token ids as :meth:`Classifier.spam_probability` computes it for a
    text (the windows of :mod:`.windows`, the highest wins), each distinct window scored once:
    the copies of a text share the windows before the removed span."""
    windows, owners = windows_of(rows, classifier.directory.max_length, classifier.max_windows)
    distinct: dict[tuple[int, ...], int] = {}
    index = np.asarray([distinct.setdefault(tuple(w), len(distinct)) for w in windows], dtype=np.int64)
    unique = [list(w) for w in distinct]
    p = softmax_spam(_logits(classifier, unique)) if unique else np.zeros(0)
    return combine(p[index], owners, len(rows))


def _log_odds(p: float | np.ndarray) -> np.ndarray:
    clipped = np.clip(p, _PROBABILITY_FLOOR, 1 - _PROBABILITY_FLOOR)
    return np.asarray(np.log(clipped) - np.log1p(-clipped))


def explain_batch(
    classifier: Classifier,
    texts: Sequence[str],
    top: int = 3,
    threshold: float | None = None,
    max_spans: int = MAX_SPANS,
    max_words: int = MAX_WORDS,
    towards: Direction | None = None,
    greedy: bool = False,
) -> list[Explanation]:
    """An explanation per text: its P(spam) and up to ``top`` phrases that pushed it towards its
    verdict at ``threshold`` (the model's by default), or ``towards`` the verdict named, strongest
    first. Every text and every copy without one span is scored in one batched pass
    (:func:`_probabilities`).

    ``greedy`` removes the phrases one after the other: the second is the span whose removal,
    the first one removed too, moves P(spam) furthest, and so on (``top`` passes, each as large
    as the first). It finds phrases that only count together, as when two windows each hold a
    reason for the verdict; each phrase's ``delta`` is then what it adds after the ones above."""
    cut = classifier.threshold if threshold is None else threshold
    cap = chars_kept(classifier.directory.max_length)
    messages = [_prepare(classifier, text[:cap], max_spans, max_words) for text in texts]
    rows: list[list[int]] = []
    for message in messages:
        rows.append(message.ids)
        rows.extend(message.without([i]) for i in range(len(message.spans)))
    scores = _probabilities(classifier, rows)
    originals, singles, signs, at = [], [], [], 0
    for message in messages:
        originals.append(float(scores[at]))
        singles.append(scores[at + 1 : at + 1 + len(message.spans)])
        at += 1 + len(message.spans)
        # spam: phrases that raised P(spam); ham: those that lowered it
        signs.append(1.0 if (towards == "spam" if towards else originals[-1] >= cut) else -1.0)
    if greedy:
        phrases = _greedy(classifier, messages, originals, singles, signs, top)
    else:
        phrases = [
            _strongest(m, p, w, sign, top)
            for m, p, w, sign in zip(messages, originals, singles, signs, strict=True)
        ]
    return [
        Explanation(p, cut, found, len(m.spans))
        for m, p, found in zip(messages, originals, phrases, strict=True)
    ]


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


def _strongest(message: _Message, p: float, without: np.ndarray, sign: float, top: int) -> list[Phrase]:
    """The ``top`` spans whose removal alone moves P(spam) furthest against the verdict."""
    effects = sign * (_log_odds(p) - _log_odds(without))
    # the strongest effect first, ties in text order: deterministic
    order = sorted(range(len(message.spans)), key=lambda i: (-effects[i], message.spans[i][0]))
    return [_phrase(message, i, p, float(without[i])) for i in order[:top] if effects[i] > 0]


def _greedy(
    classifier: Classifier,
    messages: list[_Message],
    originals: list[float],
    singles: list[np.ndarray],
    signs: list[float],
    top: int,
) -> list[list[Phrase]]:
    chosen: list[list[int]] = [[] for _ in messages]
    current = list(originals)
    phrases: list[list[Phrase]] = [[] for _ in messages]
    scored: list[tuple[list[int], np.ndarray]] = [
        (list(range(len(m.spans))), w) for m, w in zip(messages, singles, strict=True)
    ]
    for step in range(top):
        if step:  # the first step's copies are the single removals, scored already
            candidates = [
                [i for i in range(len(m.spans)) if i not in done] if len(done) == step else []
                for m, done in zip(messages, chosen, strict=True)
            ]
            rows = [
                m.without([*done, i])
                for m, done, c in zip(messages, chosen, candidates, strict=True)
                for i in c
            ]
            if not rows:
                break
            flat = _probabilities(classifier, rows)
            scored, at = [], 0
            for c in candidates:
                scored.append((c, flat[at : at + len(c)]))
                at += len(c)
        for k, (candidate, p) in enumerate(scored):
            if not candidate or len(chosen[k]) != step:
                continue
            effects = signs[k] * (_log_odds(current[k]) - _log_odds(p))
            best = min(range(len(candidate)), key=lambda j: (-effects[j], messages[k].spans[candidate[j]][0]))
            if effects[best] <= 0:
                continue  # nothing left that moves P(spam) against the verdict
            phrases[k].append(_phrase(messages[k], candidate[best], current[k], float(p[best])))
            chosen[k].append(candidate[best])
            current[k] = float(p[best])
    return phrases


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
    if not explanation.phrases:
        return f"P(spam)={explanation.probability:.3f}; no single phrase decides ({verdict})"
    head = f"P(spam)={explanation.probability:.3f}; phrases towards {verdict}, log-odds:"
    return (eol + "\t").join([head, *phrase_lines(explanation.phrases)])


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
    if explanation.phrases:
        lines.append(f"{'':27}phrases towards {verdict} (log-odds):")
        lines.extend(f"{'':27}{line}" for line in phrase_lines(explanation.phrases))
    return "\n".join(lines) + "\n"
