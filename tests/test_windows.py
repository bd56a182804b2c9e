"""The whole message is read: windows over a long text, the highest window's score, and a trained
model that flags a spam behind 2,000 tokens of ordinary text (which reading the first window alone
does not)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_email

from spamfilter.cli import cli
from spamfilter.runtime import Classifier
from spamfilter.tokenizer import Tokenizer
from spamfilter.windows import (
    DISCOUNT_LIMIT,
    MAX_WINDOWS,
    WINDOW_DISCOUNT,
    combine,
    discount_recorded,
    head_length,
    later_windows,
    split_windows,
    windows_of,
    windows_recorded,
)


def test_a_text_that_fits_is_one_window_of_the_same_tokens() -> None:
    ids = list(range(50))
    assert split_windows(ids, head=5, max_length=50) == [ids]


def test_windows_repeat_the_first_line_and_cover_the_body_in_order() -> None:
    ids = list(range(1000, 1250))  # 10 head tokens, then 240 body tokens
    windows = split_windows(ids, head=10, max_length=100, max_windows=8)
    assert [len(w) for w in windows] == [100, 100, 70]
    assert all(w[:10] == ids[:10] for w in windows)
    assert [t for w in windows for t in w[10:]] == ids[10:]  # every body token once, in order
    assert windows[0] == ids[:100]  # the first window is what one window read before


def test_the_cap_spreads_windows_from_the_first_token_to_the_last() -> None:
    ids = list(range(10_000))
    windows = split_windows(ids, head=0, max_length=100, max_windows=4)
    assert len(windows) == 4
    assert windows[0][0] == 0 and windows[-1][-1] == 9_999
    assert [w[0] for w in windows] == [0, 3_300, 6_600, 9_900]  # evenly spread, the last at the end


def test_windows_after_the_first_start_where_a_line_begins() -> None:
    newline = 198  # GPT-2's "\n"
    body = [5] * 150 + [newline] + [6] * 30 + [newline] + [7] * 40  # lines of 150, 30 and 40 tokens
    windows = split_windows(body, head=0, max_length=100, max_windows=8)
    assert windows[0] == body[:100]
    assert windows[1] == body[100:200]  # no line begins in the first window's second half
    assert windows[2] == [7] * 40  # the last line begins in the second's: read from its start
    spread = split_windows([5] * 2_000 + [newline] + [7] * 60, head=0, max_length=100, max_windows=4)
    assert spread[-1] == [7] * 60  # an appended paragraph is read alone, from its first token


def test_only_a_first_line_within_a_quarter_window_is_repeated() -> None:
    newline = 198
    assert head_length([5, 6, newline, 7, 8], limit=25) == 3
    assert head_length([5] * 30 + [newline] + [7] * 300, limit=25) == 0  # a long Subject is not
    later, owners = later_windows([[5] * 50, [5, newline] + [7] * 300], max_length=100)
    assert owners.tolist() == [1] * len(later) and len(later) == 3  # the long text's 2nd-4th windows
    assert all(window[:2] == [5, newline] for window in later)


def test_the_last_spread_window_starts_at_a_paragraph() -> None:
    newline = 198
    body = [5] * 2_000 + [newline] + [6] * 30 + [newline, newline] + [7] * 40 + [newline] + [8] * 10
    spread = split_windows(body, head=0, max_length=100, max_windows=4)
    assert spread[-1] == [7] * 40 + [newline] + [8] * 10  # from the paragraph, not the line of 6s


def test_a_long_first_line_takes_at_most_a_quarter_of_a_window() -> None:
    ids = list(range(400))
    windows = split_windows(ids, head=300, max_length=100, max_windows=100)
    assert all(len(w) <= 100 for w in windows)
    assert all(w[:25] == ids[:25] for w in windows)


def test_the_message_scores_as_its_highest_window() -> None:
    scores = np.array([0.1, 0.9, 0.2, 0.3, 0.05])
    owners = np.array([0, 0, 0, 1, 2])
    assert combine(scores, owners, 3).tolist() == [0.9, 0.3, 0.05]


def test_a_long_message_loses_the_discount_per_log_of_its_windows() -> None:
    scores = np.array([0.6, 0.2, 0.95, 0.5, 0.7, 0.1, 0.3, 0.999])
    owners = np.array([0, 1, 1, 2, 2, 2, 2, 3])
    combined = combine(scores, owners, 4, discount=0.25)
    assert combined[0] == 0.6 and combined[3] == 0.999  # one window: exactly as before
    log_odds = np.log(combined / (1 - combined))
    assert log_odds[1] == pytest.approx(np.log(0.95 / 0.05) - 0.25 * np.log(2))
    assert log_odds[2] == pytest.approx(np.log(0.7 / 0.3) - 0.25 * np.log(4))
    assert combine(scores, owners, 4, discount=0.0).tolist() == [0.6, 0.95, 0.7, 0.999]
    # saturated scores stay finite and ordered
    saturated = combine(np.array([1.0, 1.0, 1.0]), np.array([0, 0, 1]), 2, discount=0.25)
    assert np.all(np.isfinite(saturated)) and saturated[0] < saturated[1] == 1.0


def test_models_record_their_discount_and_older_ones_have_none() -> None:
    assert discount_recorded({}) == 0.0  # before the discount: the highest window as it is
    assert discount_recorded({"window_discount": WINDOW_DISCOUNT}) == WINDOW_DISCOUNT
    for damaged in ("0.25", True, -1.0, DISCOUNT_LIMIT + 1, float("nan")):
        assert discount_recorded({"window_discount": damaged}) == 0.0


def test_every_token_of_a_long_text_within_the_cap_is_read() -> None:
    # distinct tokens, a line break every 40: every one of them must be in some window
    body = [198 if i % 40 == 0 else 1_000 + i for i in range(1, 6_000)]
    windows = split_windows([5, 198, *body], head=2, max_length=256, max_windows=MAX_WINDOWS)
    assert 6_000 // 254 <= len(windows) <= MAX_WINDOWS
    assert set(body) <= {token for window in windows for token in window}
    assert all(window[:2] == [5, 198] for window in windows)  # the Subject line in each


def test_a_spam_between_two_stretches_of_ham_lies_between_four_spread_windows() -> None:
    """What reading every window fixes: four windows spread over a 3,000-token body (the reading
    of models trained before it) skip the middle, where a spammer puts the offer."""
    body = [11] * 1_400 + [198, 628] + [99] * 200 + [628] + [11] * 1_400
    ids = [5, 198, *body]
    spread = split_windows(ids, head=2, max_length=256, max_windows=4)
    assert not any(99 in window for window in spread)
    assert any(99 in window for window in split_windows(ids, head=2, max_length=256, max_windows=MAX_WINDOWS))


def test_the_end_is_read_from_a_paragraph_only_by_models_that_record_it() -> None:
    # two windows of lines, then an offer appended as a paragraph of its own, out of the first's reach
    body = [11, 198] * 200 + [628] + [99, 198] * 10
    ids = [5, 198, *body]
    older = split_windows(ids, head=2, max_length=256, max_windows=4)
    assert len(older) == 2 and older[1][2] != 99  # as models trained before read it
    now = split_windows(ids, head=2, max_length=256, max_windows=MAX_WINDOWS, end_at_paragraph=True)
    assert now[:2] == older and now[2] == [5, 198] + [99, 198] * 10  # and the offer alone
    nearer = [5, 198, *([11, 198] * 120), 628, *([99, 198] * 20)]  # the window before reaches it
    windows = split_windows(nearer, head=2, max_length=256, max_windows=MAX_WINDOWS, end_at_paragraph=True)
    assert len(windows) == 2 and windows[1] == [5, 198] + [99, 198] * 20


def test_windows_follow_the_tokenizer_and_the_subject() -> None:
    tokenizer = Tokenizer()
    text = "Cheap meds\n" + "word " * 300
    rows = tokenizer.encode_batch([text, "short"])
    windows, owners = windows_of(rows, 64)
    subject = tokenizer.encode("Cheap meds\n")
    assert owners.tolist() == [0] * (len(windows) - 1) + [1]
    assert all(w[: len(subject)] == subject for w in windows[:-1])
    assert windows[-1] == tokenizer.encode("short")


def test_models_calibrated_on_one_window_keep_reading_one() -> None:
    assert windows_recorded({}) == 1
    assert windows_recorded({"max_windows": MAX_WINDOWS}) == MAX_WINDOWS
    assert windows_recorded({"max_windows": "4"}) == 1 and windows_recorded({"max_windows": 10**6}) == 1


@pytest.fixture(scope="module")
def padded_spam(trained_model: Path, sms_file: Path) -> tuple[str, str, Classifier]:
    """A spam SMS the model flags, and 2,000 tokens of ham: the five ham SMS it finds least spammy,
    one a line, in turn (a model trained on SMS reads some runs of other SMS lines as spam)."""
    # fp32: int8 kernels differ between AVX2 and AVX-512/VNNI machines; the windows do not.
    classifier = Classifier.load(trained_model, variant="fp32")
    with open(sms_file, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    ham = [text for label, text in rows if label == "ham"][:2000]
    spam = [text for label, text in rows if label == "spam"][:200]
    ham_p, spam_p = classifier.spam_probability(ham), classifier.spam_probability(spam)
    tokenizer = Tokenizer()
    padding, tokens, least = [], 0, [ham[index] for index in np.argsort(ham_p)[:5]]
    while tokens < 2_000:
        padding.append(least[len(padding) % len(least)])
        tokens += len(tokenizer.encode(padding[-1])) + 1
    return "\n".join(padding), spam[int(np.argmax(spam_p))], classifier  # one SMS a line


def test_a_spam_behind_2000_tokens_of_ham_is_flagged(padded_spam: tuple[str, str, Classifier]) -> None:
    padding, spam, classifier = padded_spam
    assert classifier.max_windows == MAX_WINDOWS  # recorded by train
    cut = classifier.threshold
    assert classifier.spam_probability([spam])[0] >= cut
    # As filter reads an email: its Subject line, then the body.
    assert classifier.spam_probability([f"Re: minutes\n{padding}"])[0] < cut  # the padding alone is ham
    # The spam is a paragraph of its own after the lines of ham, as in an email's body.
    assert classifier.spam_probability([f"Re: minutes\n{padding}\n\n{spam}"])[0] >= cut
    # What this fixes: read as one window, the padding decides.
    classifier.max_windows = 1
    try:
        assert classifier.spam_probability([f"Re: minutes\n{padding}\n\n{spam}"])[0] < cut
    finally:
        classifier.max_windows = MAX_WINDOWS


def test_a_spam_between_two_halves_of_the_ham_is_flagged(padded_spam: tuple[str, str, Classifier]) -> None:
    padding, spam, classifier = padded_spam
    assert classifier.recipe.window_discount == WINDOW_DISCOUNT  # recorded by train
    lines = padding.split("\n")
    before, after = "\n".join(lines[: len(lines) // 2]), "\n".join(lines[len(lines) // 2 :])
    sandwich = f"Re: minutes\n{before}\n\n{spam}\n\n{after}"
    rows = classifier.tokenizer.encode_batch([sandwich])
    windows, _ = windows_of(
        rows, classifier.recipe.max_length, MAX_WINDOWS, classifier.recipe.end_at_paragraph
    )
    assert len(windows) > 4  # more than models trained before read
    assert classifier.spam_probability([sandwich])[0] >= classifier.threshold


def test_pipeline_mode_flags_the_padded_spam_and_counts_windows(
    padded_spam: tuple[str, str, Classifier], trained_model: Path
) -> None:
    padding, spam, _ = padded_spam
    message = make_email("Re: the minutes", f"{padding}\n\n{spam}")
    command = ["filter", "-m", str(trained_model), "--format", "email", "--variant", "fp32"]
    result = CliRunner().invoke(cli, command, input=message)
    assert result.exit_code == 0, result.output
    assert b"X-Spam-Flag: YES" in result.stdout_bytes
    assert result.stdout_bytes.endswith(message)  # only the headers were inserted


def test_the_summary_counts_the_windows_read(
    padded_spam: tuple[str, str, Classifier], trained_model: Path, tmp_path: Path
) -> None:
    padding, spam, _ = padded_spam
    mbox = tmp_path / "in.mbox"
    mbox.write_bytes(b"From a@b Mon Jan  1 00:00:00 2024\n" + make_email("long", f"{padding}\n\n{spam}"))
    result = CliRunner().invoke(
        cli, ["filter", "-m", str(trained_model), str(mbox), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    classifier = Classifier.load(trained_model)
    text = f"long\n{padding}\n\n{spam}"  # as the reader gives it: the Subject line, the body
    recipe = classifier.recipe
    rows = classifier.tokenizer.encode_batch([text])
    windows, _ = windows_of(rows, recipe.max_length, recipe.max_windows, recipe.end_at_paragraph)
    assert len(windows) > 4
    assert f"; {len(windows)} windows read" in result.stderr


def test_later_windows_stop_at_the_cap() -> None:
    rows = [list(range(1_000)), list(range(50)), list(range(2_000))]
    windows, owners = later_windows(rows, 100, max_windows=3)
    assert owners.tolist() == [0, 0, 2, 2]  # two after each long row's first, none for the short one
    assert len(later_windows(rows, 100, max_windows=1)[0]) == 0
    every, _ = later_windows(rows, 100, max_windows=64)
    assert len(every) > len(windows)
