"""The whole message is read: a text longer than the model's window is scored over several windows.

The model reads ``max_length`` tokens at a time. Reading only the first ones lets a spammer decide
the verdict by what comes first (a page of ordinary mail before the offer) or bury the offer under
padding. A longer text is therefore cut into consecutive windows, each one the text's first line
(the Subject, for mail: at most a quarter of the window) followed by the next stretch of the body
(from the start of a line where one is near, so that an appended paragraph is read from its start),
and the message's P(spam) is the highest of its windows' (:func:`combine`): a spam cannot hide
behind a ham prefix or suffix, and the calibrated threshold is chosen on that same combined score,
so the false-positive budget still holds.

The bound: at most ``MAX_WINDOWS`` windows per message. A body that needs more is read at
``MAX_WINDOWS`` stretches spread evenly from its first to its last token (a spam appended after
pages of ham is read; between the stretches of a very long message some text is skipped), within
the text cap of :func:`spamfilter.mail.extract_text` (20,000 characters).
A text that fits one window is scored exactly as before: one row, the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

MAX_WINDOWS = 4  # windows scored per message at most (README "What the model reads")
_HEAD_SHARE = 4  # the repeated first line takes at most 1/_HEAD_SHARE of a window
_NEWLINES = frozenset({198, 628})  # GPT-2's tokens for "\n" and "\n\n": where lines begin


def windows_recorded(recipe: dict[str, object]) -> int:
    """The windows per message that a model's threshold was calibrated for (``max_windows`` in its
    recipe); 1 for models written before windows, whose threshold was chosen on one window."""
    value = recipe.get("max_windows", 1)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64:
        return value
    return 1


def split_windows(
    ids: Sequence[int],
    head: int,
    max_length: int,
    max_windows: int = MAX_WINDOWS,
) -> list[list[int]]:
    """The windows of one text's token ids: ``head`` is how many leading ids form its first line
    (repeated at the start of every window), ``max_length`` the model's window.

    Every window after the first starts at the beginning of a line where one lies in the
    previous window's second half (or, spread out under the cap, in its own first half), so that
    a paragraph appended to pages of other text is read from its start, not mixed with their end.
    The first window is the text's first ``max_length`` tokens, as one window always was."""
    ids = list(ids)
    if len(ids) <= max_length or max_windows <= 1:
        return [ids[:max_length]]
    head = min(head, max_length // _HEAD_SHARE)
    first, body = ids[:head], ids[head:]
    width = max_length - head
    lines = [i for i in range(1, len(body)) if body[i - 1] in _NEWLINES and body[i] not in _NEWLINES]
    starts = [0]
    while starts[-1] + width < len(body):
        begin = starts[-1]
        later = [i for i in lines if begin + width // 2 < i <= begin + width]
        starts.append(later[-1] if later else begin + width)
    if len(starts) > max_windows:
        # Spread over the whole body, the first stretch and the last one (aligned to its end)
        # included: what a spammer puts first, last or in the middle is read.
        last = len(body) - width
        starts = [0]
        for k in range(1, max_windows):
            begin = round(last * k / (max_windows - 1))
            nearby = [i for i in lines if begin <= i < begin + width // 2]
            starts.append(nearby[0] if nearby else begin)
    return [first + body[begin : begin + width] for begin in starts]


def head_length(text: str, ids: Sequence[int], encode: Callable[[str], list[int]]) -> int:
    """How many of ``ids`` (the encoding of ``text``) encode its first line, newline included;
    0 where the text has no first line to repeat or its encoding does not start with it."""
    end = text.find("\n", 0, 2000)
    if end < 0:
        return 0
    first = encode(text[: end + 1])
    return len(first) if list(ids[: len(first)]) == first else 0


def windows_of(
    texts: Sequence[str],
    rows: Sequence[Sequence[int]],
    encode: Callable[[str], list[int]],
    max_length: int,
    max_windows: int = MAX_WINDOWS,
) -> tuple[list[list[int]], np.ndarray]:
    """Every text's windows, flattened, and for each window the index of its text."""
    windows: list[list[int]] = []
    owners: list[int] = []
    for index, (text, ids) in enumerate(zip(texts, rows, strict=True)):
        head = head_length(text, ids, encode) if len(ids) > max_length else 0
        parts = split_windows(ids, head, max_length, max_windows)
        windows.extend(parts)
        owners.extend([index] * len(parts))
    return windows, np.asarray(owners, dtype=np.int64)


def combine(window_probabilities: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    """A message's P(spam): the highest of its windows'."""
    combined = np.zeros(count, dtype=np.float64)
    np.maximum.at(combined, owners, window_probabilities)
    return combined
