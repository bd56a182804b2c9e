"""The replay in date order (TREC's immediate feedback): no message is scored after its own label
was fed back, dates that cannot be trusted keep the given order, and the figures are TREC's."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from spamfilter.metrics import roc_auc
from spamfilter.replay import (
    HeadFilter,
    Rows,
    date_order,
    fit_head_newton,
    head_filter,
    head_probability,
    header_date,
    learning_curve,
    one_minus_roca_percent,
    order_messages,
    plausible_dates,
    recall_at_fpr,
    replay,
    replay_mail,
    report_lines,
    retrain_anchored,
)
from spamfilter.runtime import Classifier


class Recorder:
    """A filter that remembers every label it was told and, for each message it scored, which
    labels it had been told by then. Its score is the label it was told for the same text (a
    duplicate) and 0.5 for a text it has not been told about: the perfect cheat, should a replay
    ever hand over a label before the score."""

    threshold = 0.5

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = texts
        self.told: dict[int, int] = {}
        self.known_when_scored: dict[int, set[int]] = {}
        self.learn_calls: list[list[int]] = []

    def score(self, indexes: Sequence[int]) -> np.ndarray:
        by_text = {self.texts[i]: label for i, label in self.told.items()}
        for i in indexes:
            self.known_when_scored[i] = set(self.told)
        return np.asarray([float(by_text.get(self.texts[i], 0.5)) for i in indexes])

    def learn(self, indexes: Sequence[int], labels: Sequence[int]) -> None:
        self.learn_calls.append(list(indexes))
        self.told.update(zip(indexes, labels, strict=True))


# --------------------------------------------------------------------------- no leak


@pytest.mark.parametrize("interval", [1, 2, 5])
def test_every_message_is_scored_before_its_label_is_fed_back(interval: int) -> None:
    texts = ["a", "b", "c", "a", "d", "b", "e"]  # "a" and "b" come back later
    labels = [1, 0, 1, 1, 0, 0, 1]
    order = [2, 0, 1, 4, 3, 6, 5]  # the replay order (say, by date)
    recorder = Recorder(texts)
    result = replay(recorder, order, labels, interval=interval)
    assert sorted(recorder.known_when_scored) == list(range(7))
    for i, known in recorder.known_when_scored.items():
        assert i not in known, f"message {i} was scored after its label was fed back"
    # Within a block nothing is learnt: a message knows exactly the labels of the blocks before it.
    for position, i in enumerate(order):
        assert recorder.known_when_scored[i] == set(order[: position - position % interval])
    assert result.order.tolist() == order
    assert result.labels.tolist() == [labels[i] for i in order]
    assert result.updates == -(-7 // interval) and result.fed_back == 7


def test_a_duplicate_first_seen_gets_no_help_from_its_own_label() -> None:
    texts = ["offer", "hello", "offer"]
    recorder = Recorder(texts)
    result = replay(recorder, [0, 1, 2], [1, 0, 1], interval=1)
    # The first copy is unknown when scored; the second is scored after the first was labelled.
    assert result.scores.tolist() == [0.5, 0.5, 1.0]


def test_only_the_mistakes_are_fed_back_with_feedback_errors() -> None:
    class Fixed:
        threshold = 0.5

        def __init__(self) -> None:
            self.learnt: list[int] = []

        def score(self, indexes: Sequence[int]) -> np.ndarray:
            return np.asarray([0.9 if i % 2 else 0.1 for i in indexes])  # odd indexes called spam

        def learn(self, indexes: Sequence[int], labels: Sequence[int]) -> None:
            self.learnt.extend(indexes)

    fixed = Fixed()
    labels = [0, 1, 1, 0, 0, 1]  # 0 right, 1 right, 2 missed, 3 false positive, 4 right, 5 right
    result = replay(fixed, range(6), labels, interval=2, feedback="errors")
    assert fixed.learnt == [2, 3]
    assert result.fed_back == 2 and result.updates == 1
    assert result.figures()["spam_missed"] == 1 and result.figures()["ham_marked_spam"] == 1


def test_bad_replay_options_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        replay(Recorder(["a"]), [0], [1], interval=0)
    with pytest.raises(ValueError, match="feedback"):
        replay(Recorder(["a"]), [0], [1], feedback="some")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- dates


def message(date: str | None, subject: str = "s") -> bytes:
    head = f"Date: {date}\n" if date is not None else ""
    return f"From: a@example.org\n{head}Subject: {subject}\n\nbody\n".encode()


def test_header_dates_are_read_with_their_zone() -> None:
    assert header_date(message("Tue, 10 Sep 2002 12:00:00 +0200")) == header_date(
        message("Tue, 10 Sep 2002 10:00:00 +0000")
    )
    assert header_date(message("10 Sep 2002 10:00:00")) == header_date(message("10 Sep 2002 10:00:00 GMT"))


@pytest.mark.parametrize(
    "raw",
    [
        message(None),
        message("yesterday"),
        message(""),
        message("Mon, 32 Foo 2002 99:99:99 +9999"),
        message("Tue, 10 Sep 99999999999 10:00:00 +0000"),
        b"",
        b"\xff\xfe\x00 not a message at all",
        b"Date: \xff\xff\xff\n\nbody",
    ],
)
def test_a_missing_or_malformed_date_is_none(raw: bytes) -> None:
    assert header_date(raw) is None


def test_messages_without_a_plausible_date_keep_their_place_after_the_one_before() -> None:
    raws = [
        message("Wed, 11 Sep 2002 10:00:00 +0000", "b"),  # 0
        message(None, "after b"),  # 1: no date
        message("Tue, 10 Sep 2002 10:00:00 +0000", "a"),  # 2
        message("Thu, 18 Jul 102 10:00:00 +0000", "ancient"),  # 3: year 102
        message("Mon, 4 Oct 2028 10:00:00 +0000", "future"),  # 4: far after the others
        message("garbage", "unreadable"),  # 5
        message("Thu, 12 Sep 2002 10:00:00 +0000", "c"),  # 6
    ]
    order, undated = order_messages(raws)
    assert undated == 4
    # 1 follows 0; 3, 4, 5 follow 2 (their predecessor in the given order), in the given order
    assert order.tolist() == [2, 3, 4, 5, 0, 1, 6]


def test_absurd_dates() -> None:
    now = 1_700_000_000.0
    dates = plausible_dates([1e9, 1e9 + 10, 1.0, now + 10 * 86_400, None, 1e9 + 5], now=now)
    assert dates == [1e9, 1e9 + 10, None, None, None, 1e9 + 5]
    # A year after the 99th percentile of the rest is the far future even before now
    spread = [1e9 + day * 86_400 for day in range(200)]
    assert plausible_dates([*spread, 1e9 + 3 * 365 * 86_400], now=now)[-1] is None


def test_date_order_with_no_dates_is_the_given_order() -> None:
    assert date_order([None, None, None]).tolist() == [0, 1, 2]
    assert date_order([]).tolist() == []
    assert order_messages([b"", b"x"])[0].tolist() == [0, 1]


# --------------------------------------------------------------------------- figures


def test_figures_on_a_case_checked_by_hand() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.95])
    # 0.8 outranks 3 of the 4 ham, 0.95 all 4: ROC area 7/8
    assert one_minus_roca_percent(labels, scores) == pytest.approx(12.5)
    assert roc_auc(labels, scores) == pytest.approx(0.875)
    # 25 % FPR allows one ham above the threshold: both spam are above the second ham (0.3)
    assert recall_at_fpr(labels, scores, 0.25) == 1.0
    # below 25 % no ham may be above: only the spam above 0.9
    assert recall_at_fpr(labels, scores, 0.1) == 0.5
    assert recall_at_fpr(labels, scores, 0.0) == 0.5
    # ties: a spam equal to the highest ham counts half in the area and is not recalled
    tied = np.array([0.1, 0.2, 0.3, 0.9, 0.9, 0.95])
    assert one_minus_roca_percent(labels, tied) == pytest.approx(100 * (1 - 7.5 / 8))
    assert recall_at_fpr(labels, tied, 0.1) == 0.5
    assert one_minus_roca_percent(labels, np.array([0, 0, 0, 0, 1, 1])) == 0.0
    assert np.isnan(one_minus_roca_percent(np.array([1, 1]), np.array([0.2, 0.3])))


def test_learning_curve_blocks() -> None:
    labels = np.array([0, 1, 0, 1, 0])
    scores = np.array([0.2, 0.1, 0.3, 0.9, 0.4])
    verdicts = scores >= 0.5
    first, second, third = learning_curve(labels, scores, verdicts, block=2)
    assert (first.first, first.messages, first.spam, first.ham) == (0, 2, 1, 1)
    assert (first.spam_missed, first.ham_marked_spam) == (1, 0)
    assert first.one_minus_roca_percent == pytest.approx(100.0)
    assert second.one_minus_roca_percent == 0.0 and second.spam_missed == 0
    assert second.cumulative_one_minus_roca_percent == pytest.approx(50.0)  # 2 of 4 pairs
    assert third.messages == 1 and np.isnan(third.one_minus_roca_percent)
    assert third.cumulative_one_minus_roca_percent == pytest.approx(100 * (1 - 3 / 6))


# --------------------------------------------------------------------------- spamfilter's head


def test_newton_head_fits_and_stays_near_the_start() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    start_w, start_b = np.zeros((2, 4)), np.zeros(2)
    nothing = Rows(np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int64), np.zeros(0))
    weight, bias = fit_head_newton(start_w, start_b, Rows(x, y, np.ones(200)), nothing)
    margin = x @ (weight[1] - weight[0]) + bias[1] - bias[0]
    assert ((margin > 0) == (y == 1)).mean() > 0.95
    # a head whose rows moved apart symmetrically: the middle of the two rows is unchanged
    assert np.allclose(weight[0] + weight[1], 0) and np.allclose(bias[0] + bias[1], 0)


TEXTS = [
    "WINNER!! You have won a free cash prize, call 09061701461 now to claim",
    "Are we still meeting for lunch tomorrow? Let me know",
    "URGENT! Your mobile number has been awarded a 2000 prize. Txt CLAIM to 81010",
    "Ok, see you at home later",
]


def test_the_head_replay_scores_as_the_filter_and_learns_only_what_it_was_told(trained_model: Path) -> None:
    texts = [*TEXTS, TEXTS[1]]  # a ham comes back as the last message
    online = head_filter(trained_model, texts)
    before = Classifier.load(trained_model, variant="fp32").spam_probability(texts)
    assert online.score(range(len(texts))) == pytest.approx(before, abs=1e-5)
    assert isinstance(online, HeadFilter)

    # Two replays that differ only in the label fed back for message 1 (a ham; a user calling it
    # spam by mistake in the second): every score up to and including message 1's is the same in
    # both, and only its later copy (message 4) is scored after that label.
    honest = replay(online, range(len(texts)), [1, 0, 1, 0, 0], interval=1)
    mistaken = replay(head_filter(trained_model, texts), range(len(texts)), [1, 1, 1, 0, 0], interval=1)
    assert honest.scores[0] == pytest.approx(before[0], abs=1e-5)
    assert mistaken.scores[:2].tolist() == honest.scores[:2].tolist()
    assert mistaken.scores[4] > honest.scores[4] + 0.01
    assert honest.updates == 5 and honest.fed_back == 5
    assert honest.learn_seconds > 0


def test_replay_mail_orders_by_date_and_reports(trained_model: Path) -> None:
    raws = [
        message("Thu, 12 Sep 2002 10:00:00 +0000", TEXTS[0]),
        message("Tue, 10 Sep 2002 10:00:00 +0000", TEXTS[1]),
        message("not a date", TEXTS[2]),
        message("Wed, 11 Sep 2002 10:00:00 +0000", TEXTS[3]),
    ]
    result = replay_mail(trained_model, raws, [1, 0, 1, 0], interval=2, feedback="errors")
    assert result.order.tolist() == [1, 2, 3, 0]
    assert result.labels.tolist() == [0, 1, 0, 1]
    assert result.extra["undated"] == 1 and result.interval == 2
    text = "\n".join(report_lines(result, block=2))
    assert "(1 - ROCA) %" in text and "recall at 0.1 % ham FPR" in text and "| 3-4 | 1 / 1 |" in text


def test_the_default_head_retrain_moves_a_taught_row_toward_its_label() -> None:
    # (a plain refit on everything, fit_head_newton, grows more confident on the nearly separable
    # training rows instead and pushes this row further down: why the anchored one is the default)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    weight = np.array([[0, 0, 0, 0, 0, 0], [4.0, 0, 0, 0, 0, 0]])
    bias = np.zeros(2)
    odd = np.array([[-1.0, 3, 0, 0, 0, 0]], dtype=np.float32)  # a spam the head calls ham
    before = head_probability(odd, weight, bias)[0]
    taught = Rows(odd, np.array([1]), np.array([1.0]))
    new_weight, new_bias = retrain_anchored(weight, bias, taught, Rows(x, y, np.ones(300)))
    assert head_probability(odd, new_weight, new_bias)[0] > before + 0.01
    margin = x @ (new_weight[1] - new_weight[0]) + new_bias[1] - new_bias[0]
    assert ((margin > 0) == (y == 1)).mean() > 0.9  # what it was trained on is still read right
