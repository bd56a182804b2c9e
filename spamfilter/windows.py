"""The whole message is read: a text longer than the model's window is scored over several windows.

The model reads ``max_length`` tokens at a time. Reading only the first ones lets a spammer decide
the verdict by what comes first (a page of ordinary mail before the offer) or bury the offer under
padding. A longer text is therefore cut into consecutive windows, each one the text's first line
(the Subject, for mail, where it takes at most a quarter of the window) followed by the next
stretch of the body (from the start of a line where one is near, so that an appended paragraph is
read from its start), and the message's P(spam) is the highest of its windows' (:func:`combine`):
a spam cannot hide behind ham before it, after it or on both sides, and the calibrated threshold
is chosen on that same combined score, so the false-positive budget still holds.

The highest of n windows rises with n: a long ham has more chances to hold one window that reads
like spam. A model records a discount (``window_discount``, :data:`WINDOW_DISCOUNT` for models
trained now): the highest window's log-odds less ``discount * ln(n)``, so a message in one window
scores exactly as before and a long one is judged by what stands out in it, not by its length
(``benchmarks/RESULTS.md`` section 42: reading every window without it raised the threshold over
long ham on one split of three).

The bound: at most ``max_windows`` windows per message (:data:`MAX_WINDOWS` for models trained now,
every window of the reader's text cap, 20,000 characters, in ordinary text). A body that needs more
is read at ``max_windows`` stretches spread evenly from its first to its last token (text that
tokenizes to one token a character or so; between the stretches some text is skipped). A text that
fits one window is scored exactly as before: one row, the same tokens. Models trained before this
read as their threshold was calibrated: at most 4 windows without a discount (``max_windows`` 4 in
their recipe), or one window (before windows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_WINDOWS = 32  # windows scored per message at most (README "What the model reads"): 7,000+ tokens
WINDOWS_LIMIT = 64  # the most a model may record (train --max-windows)
WINDOW_DISCOUNT = 0.25  # log-odds taken off per ln(windows read), for models trained now
END_AT_PARAGRAPH = True  # models trained now read a text's end from its last stretch's first paragraph
DISCOUNT_LIMIT = 4.0  # the most a model may record (train --window-discount)
_PROBABILITY_FLOOR = 1e-12  # log-odds of P in [floor, 1 - floor]: finite for saturated answers
_HEAD_SHARE = 4  # the repeated first line takes at most 1/_HEAD_SHARE of a window
_NEWLINES = frozenset({198, 628})  # GPT-2's tokens for "\n" and "\n\n": where lines begin


def windows_recorded(recipe: dict[str, object]) -> int:
    """The windows per message that a model's threshold was calibrated for (``max_windows`` in its
    recipe); 1 for models written before windows, whose threshold was chosen on one window."""
    value = recipe.get("max_windows", 1)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= WINDOWS_LIMIT:
        return value
    return 1


def discount_recorded(recipe: dict[str, object]) -> float:
    """The log-odds discount per ln(windows read) that a model's threshold was calibrated with
    (``window_discount`` in its recipe); 0 for models written before it (the highest window alone)."""
    value = recipe.get("window_discount", 0.0)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= DISCOUNT_LIMIT:
        return float(value)
    return 0.0


def split_windows(
    ids: Sequence[int],
    head: int,
    max_length: int,
    max_windows: int = MAX_WINDOWS,
    end_at_paragraph: bool = False,
) -> list[list[int]]:
    """The windows of one text's token ids: ``head`` is how many leading ids form its first line
    (repeated at the start of every window), ``max_length`` the model's window.

    Every window after the first starts at the beginning of a line where one lies in the
    previous window's second half (or, spread out under the cap, in its own first half); the last
    spread window, which reads to the end from wherever it starts, starts at the first paragraph
    that begins in it, so that a paragraph appended to pages of other text is read alone. (Starting
    every window at a paragraph measured worse: recall at 0.18 % FPR 84 % against 90 %.) Within the
    cap the windows follow each other over the whole body; with ``end_at_paragraph`` (models that
    record it) the end is read as the last spread window reads it, from the first paragraph of the
    body's last stretch (in one more window where the one before does not reach it). The first
    window is the text's first ``max_length`` tokens, as one window always was."""
    ids = list(ids)
    if len(ids) <= max_length or max_windows <= 1:
        return [ids[:max_length]]
    head = min(head, max_length // _HEAD_SHARE)
    first, body = ids[:head], ids[head:]
    width = max_length - head
    lines = [i for i in range(1, len(body)) if body[i - 1] in _NEWLINES and body[i] not in _NEWLINES]
    # A paragraph starts after a blank line: "\n\n" in one token, or two "\n" tokens in a row.
    paragraphs = [i for i in lines if body[i - 1] == 628 or (i > 1 and body[i - 2] in _NEWLINES)]

    def boundary(candidates: list[int], low: int, high: int, last: bool) -> int | None:
        found = [i for i in candidates if low <= i < high]
        return (found[-1] if last else found[0]) if found else None

    starts = [0]
    while starts[-1] + width < len(body):
        begin = starts[-1]
        cut = boundary(lines, begin + width // 2 + 1, begin + width + 1, last=True)
        starts.append(begin + width if cut is None else cut)
    at = boundary(paragraphs, len(body) - width, len(body), last=False) if len(starts) > 1 else None
    if end_at_paragraph and at is not None and at != starts[-1] and len(starts) <= max_windows:
        # The end is read, as the last spread window reads it, from the first paragraph of the
        # body's last stretch: an offer appended to a page of other text is read alone, not after
        # the lines before it. Where the window before does not reach that paragraph, the window
        # that did read the end stays too (nothing is skipped), if the cap allows one more.
        if at <= starts[-2] + width:
            starts[-1] = at
        elif len(starts) < max_windows:
            starts.append(at)
    if len(starts) > max_windows:
        # Spread over the whole body, the first stretch and the last one (aligned to its end)
        # included: what a spammer puts first, last or in the middle is read.
        end = len(body) - width
        starts = [0]
        for k in range(1, max_windows):
            begin = round(end * k / (max_windows - 1))
            if k == max_windows - 1:
                cut = boundary(paragraphs, begin, len(body), last=False)
            if k < max_windows - 1 or cut is None:
                cut = boundary(lines, begin, begin + width // 2, last=False)
            starts.append(begin if cut is None else cut)
    return [first + body[begin : begin + width] for begin in starts]


def head_length(ids: Sequence[int], limit: int) -> int:
    """How many leading ids form the text's first line, its newline included (the Subject line of
    an email); 0 where no line ends within the first ``limit`` ids."""
    for index, token in enumerate(ids[:limit]):
        if token in _NEWLINES:
            return index + 1
    return 0


def windows_of(
    rows: Sequence[Sequence[int]],
    max_length: int,
    max_windows: int = MAX_WINDOWS,
    end_at_paragraph: bool = False,
) -> tuple[list[list[int]], np.ndarray]:
    """Every text's windows, flattened, and for each window the index of its text."""
    windows: list[list[int]] = []
    owners: list[int] = []
    for index, ids in enumerate(rows):
        head = head_length(ids, max_length // _HEAD_SHARE)
        parts = split_windows(ids, head, max_length, max_windows, end_at_paragraph)
        windows.extend(parts)
        owners.extend([index] * len(parts))
    return windows, np.asarray(owners, dtype=np.int64)


def later_windows(
    rows: Sequence[Sequence[int]],
    max_length: int,
    max_windows: int = MAX_WINDOWS,
    end_at_paragraph: bool = False,
) -> tuple[list[list[int]], np.ndarray]:
    """The windows after the first of every row longer than ``max_length`` (at most ``max_windows``
    in all per row), and the index of each one's row: what training adds to the first windows it
    has already scored or trained on."""
    windows, owners = windows_of(rows, max_length, max_windows, end_at_paragraph)
    later = np.flatnonzero(np.r_[False, owners[1:] == owners[:-1]])
    return [windows[i] for i in later], owners[later]


def discounts(owners: np.ndarray, count: int, discount: float) -> np.ndarray:
    """Per message, the log-odds its highest window loses (``discount * ln(n)`` for n windows
    read): what :func:`combine` takes off, for code that scores windows its own way (``learn``)."""
    read = np.bincount(np.asarray(owners, dtype=np.int64), minlength=count)
    return discount * np.log(np.maximum(read, 1))


def combine(
    window_probabilities: np.ndarray, owners: np.ndarray, count: int, discount: float = 0.0
) -> np.ndarray:
    """A message's P(spam): the highest of its windows', its log-odds less ``discount * ln(n)``
    for a message read in n windows (see the module's docstring; 0: the highest window's as it is)."""
    combined = np.zeros(count, dtype=np.float64)
    np.maximum.at(combined, owners, window_probabilities)
    if discount <= 0:
        return combined
    return discounted(combined, discounts(owners, count, discount))


def discounted(probabilities: np.ndarray, log_odds_off: np.ndarray) -> np.ndarray:
    """``probabilities`` with ``log_odds_off`` taken off each one's log-odds (where it is 0, the
    probability exactly as it is: a message in one window scores as before)."""
    out = np.array(probabilities, dtype=np.float64)
    moved = np.asarray(log_odds_off) > 0
    p = np.clip(out[moved], _PROBABILITY_FLOOR, 1 - _PROBABILITY_FLOOR)
    out[moved] = 1 / (1 + np.exp(-(np.log(p) - np.log1p(-p) - np.asarray(log_odds_off)[moved])))
    return out
