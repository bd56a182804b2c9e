"""Evaluation as filters live: messages in date order, each scored before its label is seen.

TREC's spam track measures a filter the way a mail user lives with it: the messages arrive in
the order they were sent, the filter scores each one, and only then is it told the truth, as a
user's correction would tell it (every message, or only the ones it got wrong), and it may learn
from it before the next ones. Its scores, each given before its own label was known, are then
ranked: (1 - ROC area) in percent, and spam recall at a fixed ham false-positive rate.

- :func:`date_order` puts raw messages in the order of their ``Date`` headers; a message whose
  date is missing, unreadable or absurd keeps its place after the message before it.
- :func:`replay` drives any :class:`OnlineFilter`: it scores a block of messages with the model as
  it is, then hands their feedback over and lets the filter update every ``interval`` messages.
  A filter is never asked to score a message after being told its label.
- :func:`one_minus_roca_percent`, :func:`recall_at_fpr`, :func:`learning_curve` are the figures.

Nothing here imports torch: a filter's scores and updates are the filter's business.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from .memory import Memory
from .windows import discounted

if TYPE_CHECKING:
    from .learn import WindowFeatures

Feedback = Literal["all", "errors"]
FEEDBACK: tuple[Feedback, ...] = ("all", "errors")

EARLIEST = datetime(1990, 1, 1, tzinfo=timezone.utc).timestamp()  # no mail of interest is older
# A date this far after nearly all the others (the 99th percentile) is a clock or a spammer's
# trick (the SpamAssassin corpus of 2002 has messages "sent" in 2020 and 2028), not a place in time.
FUTURE_SLACK = timedelta(days=365).total_seconds()
_HEADER_BYTES = 64 << 10  # the Date header is looked for in a message's first 64 KB only

_HEADERS = BytesHeaderParser()


# --------------------------------------------------------------------------- date order


def header_date(raw: bytes) -> float | None:
    """The ``Date`` header of a raw message as a POSIX timestamp; None where it is missing or
    cannot be read (a date without a zone is taken as UTC)."""
    try:
        value = _HEADERS.parsebytes(raw[:_HEADER_BYTES]).get("Date")
        if value is None:
            return None
        when = parsedate_to_datetime(str(value))
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        stamp = when.timestamp()
    except (TypeError, ValueError, OverflowError, IndexError, AttributeError):
        return None  # malformed headers of every kind: the message keeps its given place
    return stamp if math.isfinite(stamp) else None


def plausible_dates(dates: Sequence[float | None], now: float | None = None) -> list[float | None]:
    """``dates`` with the absurd ones set to None: before 1990, after ``now`` (plus a day of
    clock skew), or more than a year after the 99th percentile of the others."""
    latest = (time.time() if now is None else now) + 86_400
    kept = [d if d is not None and EARLIEST <= d <= latest else None for d in dates]
    known = np.asarray([d for d in kept if d is not None], dtype=np.float64)
    if len(known):
        fence = float(np.percentile(known, 99)) + FUTURE_SLACK
        kept = [d if d is not None and d <= fence else None for d in kept]
    return kept


def date_order(dates: Sequence[float | None]) -> np.ndarray:
    """Indexes of the messages in date order (a stable sort: equal dates keep the given order).

    A message without a plausible date (None here; see :func:`plausible_dates`) takes the date of
    the message before it in the given order (the first dated one's, at the start), so it stays
    right after its neighbour instead of jumping to either end of the replay."""
    filled = np.empty(len(dates), dtype=np.float64)
    first = next((d for d in dates if d is not None), 0.0)
    previous = first
    for index, date in enumerate(dates):
        previous = previous if date is None else date
        filled[index] = previous
    return np.argsort(filled, kind="stable")


def order_messages(raws: Sequence[bytes], now: float | None = None) -> tuple[np.ndarray, int]:
    """Date order of raw messages (:func:`date_order`) and how many had no plausible date."""
    dates = plausible_dates([header_date(raw) for raw in raws], now)
    return date_order(dates), sum(d is None for d in dates)


# --------------------------------------------------------------------------- figures (TREC)


def roc_area(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random spam scores above a random ham, ties
    counting one half (the Mann-Whitney statistic, as TREC computes it)."""
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    spam, ham = s[y == 1], s[y == 0]
    if len(spam) == 0 or len(ham) == 0:
        return float("nan")
    ham_sorted = np.sort(ham)
    below = np.searchsorted(ham_sorted, spam, side="left")
    ties = np.searchsorted(ham_sorted, spam, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (len(spam) * len(ham)))


def one_minus_roca_percent(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """TREC's summary figure: (1 - ROC area) x 100; lower is better, 0 a perfect ranking."""
    return 100.0 * (1.0 - roc_area(labels, scores))


def recall_at_fpr(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, fpr: float
) -> float:
    """Spam recall at the strictest threshold that marks at most ``fpr`` of the ham as spam:
    the share of spam scoring strictly above the ``floor(fpr x ham)``-th highest ham score (above
    every ham where that count is 0). Ties go against the filter: a spam equal to that ham score
    is not counted."""
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    spam, ham = s[y == 1], np.sort(s[y == 0])[::-1]
    if len(spam) == 0 or len(ham) == 0:
        return float("nan")
    allowed = math.floor(fpr * len(ham) + 1e-9)  # ham that may score at or above the threshold
    if allowed >= len(ham):
        return 1.0
    # A threshold just above ham[allowed] marks exactly the ham ranked above it (ties with it
    # excluded, so possibly fewer than allowed).
    return float((spam > ham[allowed]).mean())


@dataclass(frozen=True)
class Block:
    """Figures of one block of consecutive messages of a replay."""

    first: int  # position in the replay of its first message (0-based)
    messages: int
    spam: int
    ham: int
    spam_missed: int  # at the threshold the filter had when scoring
    ham_marked_spam: int
    one_minus_roca_percent: float  # within the block (nan with one class only)
    cumulative_one_minus_roca_percent: float  # every message so far

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def learning_curve(labels: np.ndarray, scores: np.ndarray, verdicts: np.ndarray, block: int) -> list[Block]:
    """Figures per ``block`` consecutive messages of a replay: its errors and (1 - ROCA) %, and the
    (1 - ROCA) % of everything up to its end."""
    blocks = []
    for first in range(0, len(labels), max(1, block)):
        end = min(len(labels), first + max(1, block))
        y, s, v = labels[first:end], scores[first:end], verdicts[first:end]
        blocks.append(
            Block(
                first=first,
                messages=end - first,
                spam=int((y == 1).sum()),
                ham=int((y == 0).sum()),
                spam_missed=int(((y == 1) & ~v).sum()),
                ham_marked_spam=int(((y == 0) & v).sum()),
                one_minus_roca_percent=one_minus_roca_percent(y, s),
                cumulative_one_minus_roca_percent=one_minus_roca_percent(labels[:end], scores[:end]),
            )
        )
    return blocks


# --------------------------------------------------------------------------- the replay


class OnlineFilter(Protocol):
    """A filter being replayed. Messages are named by their index in the caller's list.

    ``score`` is asked for a block of messages with the filter as it is: none of their labels has
    been given yet. ``learn`` then receives the labels fed back for (some of) them and updates the
    filter; it is called once per block, so its cost is the update cost at the replay's interval.
    """

    @property
    def threshold(self) -> float: ...  # P(spam) (or score) at or above which a message is spam

    def score(self, indexes: Sequence[int]) -> np.ndarray: ...

    def learn(self, indexes: Sequence[int], labels: Sequence[int]) -> None: ...


@dataclass
class ReplayResult:
    """Scores in replay order, each given before its message's label was known."""

    order: np.ndarray  # the caller's indexes, in replay order
    labels: np.ndarray  # 1 spam, 0 ham, in replay order
    scores: np.ndarray
    verdicts: np.ndarray  # spam by the threshold the filter had when scoring
    interval: int
    feedback: Feedback
    fed_back: int  # labels handed to the filter
    updates: int  # learn() calls
    score_seconds: float
    learn_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def figures(self, fprs: Sequence[float] = (0.001, 0.005)) -> dict[str, float]:
        """TREC's figures of the replay: (1 - ROCA) % and spam recall at each ham FPR."""
        out = {"one_minus_roca_percent": one_minus_roca_percent(self.labels, self.scores)}
        for fpr in fprs:
            out[f"recall_at_{fpr:g}"] = recall_at_fpr(self.labels, self.scores, fpr)
        spam = self.labels == 1
        out["spam_missed"] = int((spam & ~self.verdicts).sum())
        out["ham_marked_spam"] = int((~spam & self.verdicts).sum())
        return out

    def cost_lines(self) -> list[str]:
        n = max(1, len(self.labels))
        return [
            f"{len(self.labels)} messages replayed, interval {self.interval}, feedback {self.feedback}: "
            f"{self.fed_back} labels fed back, {self.updates} updates",
            f"scoring {1000 * self.score_seconds / n:.2f} ms/message, updates "
            f"{1000 * self.learn_seconds / n:.2f} ms/message "
            f"({1000 * self.learn_seconds / max(1, self.updates):.1f} ms each)",
        ]


def replay(
    online: OnlineFilter,
    order: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    interval: int = 1,
    feedback: Feedback = "all",
    on_block: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay the messages ``order`` (the caller's indexes, in date order; ``labels`` indexed the
    same way as the caller's list) through ``online``: each block of ``interval`` messages is
    scored first, then the labels of the block (all of them, or with ``feedback="errors"`` only
    those of the messages the filter got wrong at its threshold) are handed to ``learn``.
    ``on_block(done, total)`` is told the progress."""
    if interval < 1:
        raise ValueError("the update interval is at least 1 message")
    if feedback not in FEEDBACK:
        raise ValueError(f"feedback is one of {', '.join(FEEDBACK)}")
    order = np.asarray(order, dtype=np.int64)
    every_label = np.asarray(labels, dtype=np.int64)
    y = every_label[order]
    scores = np.empty(len(order), dtype=np.float64)
    verdicts = np.zeros(len(order), dtype=bool)
    fed = updates = 0
    score_seconds = learn_seconds = 0.0
    for first in range(0, len(order), interval):
        block = order[first : first + interval]
        started = time.perf_counter()
        got = np.asarray(online.score(block.tolist()), dtype=np.float64)
        score_seconds += time.perf_counter() - started
        if got.shape != (len(block),):
            raise ValueError(f"the filter gave {got.shape} scores for {len(block)} messages")
        scores[first : first + len(block)] = got
        verdicts[first : first + len(block)] = got >= online.threshold
        truth = y[first : first + len(block)]
        chosen = np.ones(len(block), dtype=bool)
        if feedback == "errors":
            chosen = verdicts[first : first + len(block)] != (truth == 1)
        if chosen.any():
            started = time.perf_counter()
            online.learn(block[chosen].tolist(), truth[chosen].tolist())
            learn_seconds += time.perf_counter() - started
            fed += int(chosen.sum())
            updates += 1
        if on_block is not None:
            on_block(first + len(block), len(order))
    return ReplayResult(
        order=order,
        labels=y,
        scores=scores,
        verdicts=verdicts,
        interval=interval,
        feedback=feedback,
        fed_back=fed,
        updates=updates,
        score_seconds=score_seconds,
        learn_seconds=learn_seconds,
    )


# --------------------------------------------------------------------------- spamfilter's head


@dataclass(frozen=True)
class Rows:
    """Pooled feature rows with their labels (1 spam, 0 ham) and a weight each."""

    features: np.ndarray
    labels: np.ndarray
    weights: np.ndarray


class HeadTrainer(Protocol):
    """A head retrain: ``(weight (2, C), bias (2,))`` of the trained head, the rows taught by the
    labels fed back so far, and the rows the head was trained on -> the new ``(weight, bias)``."""

    def __call__(
        self, weight: np.ndarray, bias: np.ndarray, taught: Rows, trained: Rows
    ) -> tuple[np.ndarray, np.ndarray]: ...


def fit_head_newton(
    weight: np.ndarray,
    bias: np.ndarray,
    taught: Rows,
    trained: Rows,
    l2_to_start: float = 1e-3,
    iterations: int = 25,
) -> tuple[np.ndarray, np.ndarray]:
    """A plain weighted logistic regression of the head on the trained and the taught rows
    together, by Newton's method, kept near the trained head (``learn``'s objective before its
    numpy head: the weighted mean cross-entropy plus ``l2_to_start`` times the squared distance
    to the starting head). The reference :func:`retrain_anchored` (the default) is compared with.

    A two-class softmax head only matters through the difference of its rows, P(spam) =
    sigmoid((w1 - w0) . f + b1 - b0), so the regression is binary and the difference is split
    evenly between the rows of the returned head."""
    features = np.concatenate([trained.features, taught.features])
    x = np.hstack([np.asarray(features, dtype=np.float64), np.ones((len(features), 1))])
    y = np.concatenate([trained.labels, taught.labels]).astype(np.float64)
    s = np.concatenate([trained.weights, taught.weights]).astype(np.float64)
    s /= s.sum()
    start = np.append(weight[1] - weight[0], bias[1] - bias[0]).astype(np.float64)
    # Each row of the (2, C) head drifts by half the difference's move: |move|^2 / 2 in all.
    penalty = l2_to_start / 2
    theta = start.copy()
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ theta, -60, 60)))
        gradient = x.T @ (s * (p - y)) + 2 * penalty * (theta - start)
        hessian = (x * (s * p * (1 - p))[:, None]).T @ x + 2 * penalty * np.eye(len(theta))
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-7:
            break
    middle_w, middle_b = (weight[0] + weight[1]) / 2, (bias[0] + bias[1]) / 2
    new_weight = np.stack([middle_w - theta[:-1] / 2, middle_w + theta[:-1] / 2])
    new_bias = np.array([middle_b - theta[-1] / 2, middle_b + theta[-1] / 2])
    return new_weight, new_bias


def retrain_anchored(
    weight: np.ndarray, bias: np.ndarray, taught: Rows, trained: Rows
) -> tuple[np.ndarray, np.ndarray]:
    """The package's head retrain (:func:`spamfilter.head.retrain_head`, what ``learn`` uses):
    the taught rows as the loss, the training messages as an anchor the head stays near, so
    that the head moves only as far as the labels fed back need."""
    from .head import Anchor, Head, retrain_head

    new = retrain_head(
        Head(weight, bias),
        taught.features,
        taught.labels,
        taught.weights,
        Anchor(trained.features, trained.labels, trained.weights),
    )
    return new.weight.astype(np.float64), new.bias.astype(np.float64)


def head_probability(features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """P(spam) of the (2, C) head over rows of features."""
    difference = (weight[1] - weight[0]).astype(np.float64)
    margin = features.astype(np.float64) @ difference + float(bias[1] - bias[0])
    return 1.0 / (1.0 + np.exp(-np.clip(margin, -60, 60)))


class HeadFilter:
    """spamfilter replayed as ``learn`` updates it: the trunk fixed, the head retrained from the
    trained head on every label fed back so far, with the training messages' features as what
    the head was trained on.

    ``window_features`` (W, C) are the pooled features of every window of the replayed messages,
    ``owners`` (W,) the message index of each window (:func:`spamfilter.windows.windows_of`): a
    message scores the highest of its windows', as the filter scores it. A ham fed back teaches
    all its windows, a spam its highest-scoring one under the head of the moment (as ``learn``
    does). ``base_features`` and ``base_labels`` are the train split's (``learn.safetensors``);
    each message fed back weighs as much as a training message of its class (the recipe's class
    weights), shared among the rows it teaches. The threshold stays the model's."""

    def __init__(
        self,
        weight: np.ndarray,
        bias: np.ndarray,
        threshold: float,
        window_features: np.ndarray,
        owners: np.ndarray,
        base_features: np.ndarray,
        base_labels: np.ndarray,
        trainer: HeadTrainer | None = None,
        texts: Sequence[str] | None = None,
        discounts: np.ndarray | None = None,
    ) -> None:
        self.start = (np.asarray(weight, dtype=np.float64), np.asarray(bias, dtype=np.float64))
        # With the messages' texts, each label fed back is also remembered as the filter
        # remembers a correction (memory.py), and later messages are compared with it.
        self.texts = texts
        self.memory = Memory()
        self.weight, self.bias = self.start
        self._threshold = float(threshold)
        self.features = np.asarray(window_features, dtype=np.float32)
        # per message, the log-odds the filter takes off its highest window (windows.combine)
        self.discounts = discounts
        self.windows_of: dict[int, list[int]] = {}  # message index -> its window rows
        for row, owner in enumerate(np.asarray(owners, dtype=np.int64).tolist()):
            self.windows_of.setdefault(owner, []).append(row)
        base_y = np.asarray(base_labels, dtype=np.int64)
        counts = np.bincount(base_y, minlength=2).astype(np.float64)
        self.class_weight = counts.sum() / (2 * np.maximum(counts, 1))  # the recipe's weighted loss
        self.trained = Rows(np.asarray(base_features, dtype=np.float32), base_y, self.class_weight[base_y])
        self.trainer = trainer or retrain_anchored
        self.taught_rows: list[int] = []
        self.taught_labels: list[int] = []
        self.taught_shares: list[float] = []

    @property
    def threshold(self) -> float:
        return self._threshold

    def score(self, indexes: Sequence[int]) -> np.ndarray:
        scores = np.asarray([self._message_score(i) for i in indexes], dtype=np.float64)
        if self.texts is None or not len(self.memory):
            return scores
        return self.memory.scores(scores, [self.texts[i] for i in indexes])

    def _message_score(self, index: int) -> float:
        rows = self.windows_of[index]
        highest = head_probability(self.features[rows], self.weight, self.bias).max(keepdims=True)
        if self.discounts is None:
            return float(highest[0])
        return float(discounted(highest, self.discounts[index : index + 1])[0])

    def learn(self, indexes: Sequence[int], labels: Sequence[int]) -> None:
        for index, label in zip(indexes, labels, strict=True):
            rows = self.windows_of[index]
            if label == 1:  # the spam's highest window under the current head
                scores = head_probability(self.features[rows], self.weight, self.bias)
                rows = [rows[int(np.argmax(scores))]]
            if self.texts is not None:
                self.memory = self.memory.with_entry(str(index), int(label), self.texts[index], 0.0)
            self.taught_rows.extend(rows)
            self.taught_labels.extend([int(label)] * len(rows))
            self.taught_shares.extend([1.0 / len(rows)] * len(rows))  # a message's weight, shared
        y = np.asarray(self.taught_labels, dtype=np.int64)
        weights = self.class_weight[y] * np.asarray(self.taught_shares)
        taught = Rows(self.features[self.taught_rows], y, weights)
        # Every update starts from the trained head with everything fed back so far, so the head
        # after a message depends on the labels seen, not on how the updates were spaced.
        self.weight, self.bias = self.trainer(*self.start, taught, self.trained)


# --------------------------------------------------------------------------- features of a model


def window_features(model_dir: Path, texts: Sequence[str]) -> WindowFeatures:
    """What the head reads of every window the filter reads of each text
    (:class:`spamfilter.learn.WindowFeatures`): so that replaying a head retrain needs no second
    pass through the trunk. Read as ``learn`` reads them, from the fp32 model."""
    from . import learn
    from .modeldir import open_model_directory

    directory = open_model_directory(Path(model_dir))
    return learn.window_features(directory, texts, learn.features_session(directory, "fp32"))


def model_head(model_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """The model's head ``(weight (2, C), bias (2,))``, the train split's features and labels it was
    trained on (``learn.safetensors``), and the model's threshold."""
    from safetensors.numpy import load_file

    from .modeldir import open_model_directory

    directory = open_model_directory(Path(model_dir))
    saved = load_file(directory.path / "learn.safetensors")
    # The head from the checkpoint (the ONNX graph folds it into its last MatMul).
    from .export import load_checkpoint

    classifier, _ = load_checkpoint(directory.checkpoint_path)
    head = classifier.gpt.lm_head
    weight = head.weight.detach().numpy().astype(np.float64)
    bias = head.bias.detach().numpy().astype(np.float64)
    return weight, bias, saved["train_features"], saved["train_labels"], directory.threshold


def head_filter(
    model_dir: Path, texts: Sequence[str], trainer: HeadTrainer | None = None, memory: bool = True
) -> HeadFilter:
    """A :class:`HeadFilter` for replaying ``texts`` (indexed as given) through a model directory,
    remembering the labels fed back as the filter remembers corrections (unless ``memory`` is off)."""
    read = window_features(model_dir, texts)
    weight, bias, base_x, base_y, threshold = model_head(model_dir)
    return HeadFilter(
        weight,
        bias,
        threshold,
        read.features,
        read.owners,
        base_x,
        base_y,
        trainer=trainer,
        texts=texts if memory else None,
        discounts=read.discounts,
    )


# --------------------------------------------------------------------------- the learning curve


def curve_table(curves: dict[str, list[Block]]) -> str:
    """A Markdown table: per block of messages, each filter's errors and (1 - ROCA) % so far."""
    names = list(curves)
    lines = [
        "| messages | spam / ham | "
        + " | ".join(f"{name}: missed / FP, (1-ROCA) % so far" for name in names)
        + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for row, block in enumerate(next(iter(curves.values()), [])):
        cells = []
        for name in names:
            b = curves[name][row]
            cells.append(f"{b.spam_missed} / {b.ham_marked_spam}, {b.cumulative_one_minus_roca_percent:.3f}")
        lines.append(
            f"| {block.first + 1}-{block.first + block.messages} | {block.spam} / {block.ham} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def plot_learning_curve(
    curves: dict[str, list[Block]], path: Path, title: str = "Replay in date order"
) -> None:
    """PNG: each filter's (1 - ROCA) % over the messages replayed so far (log scale) and its
    errors per block."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    figure, (roca_axis, error_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for name, blocks in curves.items():
        ends = [b.first + b.messages for b in blocks]
        # 0 cannot be drawn on a log scale: a perfect ranking so far is drawn at 0.001
        values = [max(b.cumulative_one_minus_roca_percent, 1e-3) for b in blocks]
        roca_axis.plot(ends, values, marker="o", label=name)
        error_axis.plot(ends, [b.spam_missed + b.ham_marked_spam for b in blocks], marker="o", label=name)
    roca_axis.set_yscale("log")
    roca_axis.set_xlabel("messages replayed")
    roca_axis.set_ylabel("(1 - ROC area) %, all messages so far")
    roca_axis.set_title(title)
    roca_axis.legend()
    error_axis.set_xlabel("messages replayed")
    error_axis.set_ylabel("errors in the block at the filter's threshold")
    error_axis.set_title("Errors per block")
    error_axis.legend()
    figure.tight_layout()
    from .plots import save_png  # drawn in memory: savefig to a path let a full disk pass unsaid

    save_png(figure, path)
    plt.close(figure)


# --------------------------------------------------------------------------- a model directory on mail


def replay_mail(
    model_dir: Path,
    raws: Sequence[bytes],
    labels: Sequence[int] | np.ndarray,
    *,
    interval: int = 1,
    feedback: Feedback = "all",
    trainer: HeadTrainer | None = None,
    on_block: Callable[[int, int], None] | None = None,
    memory: bool = True,
) -> ReplayResult:
    """Replay raw messages (``labels``: 1 spam, 0 ham) through a model directory in date order,
    its head retrained every ``interval`` messages on the labels fed back so far, and (``memory``)
    each label fed back remembered as a correction is (:mod:`spamfilter.memory`). The result's
    ``extra`` says how many messages had no plausible date and how long the trunk took."""
    from .formats import message_text

    order, undated = order_messages(raws)
    started = time.perf_counter()
    online = head_filter(model_dir, [message_text(raw) for raw in raws], trainer, memory=memory)
    trunk_seconds = time.perf_counter() - started
    result = replay(online, order, labels, interval=interval, feedback=feedback, on_block=on_block)
    result.extra.update(undated=undated, trunk_seconds=trunk_seconds)
    return result


def report_lines(result: ReplayResult, block: int = 200) -> list[str]:
    """What a replay found, for people: TREC's figures, the costs and the learning curve."""
    figures = result.figures()
    lines = [
        f"(1 - ROCA) %: {figures['one_minus_roca_percent']:.3f}",
        f"spam recall at 0.1 % ham FPR: {figures['recall_at_0.001']:.1%}, "
        f"at 0.5 %: {figures['recall_at_0.005']:.1%}",
        f"at the threshold as it was when each message was scored: {figures['spam_missed']} of "
        f"{int(result.labels.sum())} spam missed, {figures['ham_marked_spam']} of "
        f"{int((result.labels == 0).sum())} ham marked spam",
        *result.cost_lines(),
    ]
    if "undated" in result.extra:
        lines.append(f"{result.extra['undated']} messages without a plausible Date kept their given place")
    curve = learning_curve(result.labels, result.scores, result.verdicts, block)
    return [*lines, "", curve_table({"replay": curve})]
