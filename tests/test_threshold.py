"""The threshold that train stores: chosen on the validation split for a ham false-positive budget."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spamfilter.metrics import Calibration, calibrate_threshold, coarse_calibration, threshold_sweep

# Scores inside (0.001, 0.999), where no clamp applies (clamping has its own test below).
scores = st.lists(
    st.tuples(st.integers(0, 1), st.floats(0.002, 0.998, allow_nan=False)), min_size=2, max_size=300
).filter(lambda rows: {label for label, _ in rows} == {0, 1})


@given(scores, st.sampled_from([0.0, 0.005, 0.01, 0.05, 0.2]))
def test_the_threshold_keeps_to_the_budget_and_flags_what_the_sweep_flags(rows, target: float) -> None:
    labels = np.array([label for label, _ in rows])
    probabilities = np.array([p for _, p in rows])
    chosen = calibrate_threshold(labels, probabilities, target)
    point = threshold_sweep(labels, probabilities, [target])[0]
    assert point.threshold is not None  # one step above the highest score always flags no ham
    assert chosen.validation_fpr <= target
    assert chosen.validation_fpr == pytest.approx(point.false_positive_rate)
    assert chosen.validation_recall == pytest.approx(point.recall)
    assert chosen.threshold <= point.threshold


def test_a_clamped_threshold_reports_its_real_rates() -> None:
    # Ham scored 1.0: no threshold up to 1 keeps it out; the clamp at 0.999 says what it flags.
    chosen = calibrate_threshold(np.array([0, 1]), np.array([1.0, 1.0]), 0.0)
    assert chosen.threshold == 0.999
    assert (chosen.validation_fpr, chosen.validation_recall) == (1.0, 1.0)


def test_the_threshold_lies_between_the_scores_it_separates() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    probabilities = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.9, 0.95])
    # At most 1/4 of the ham: the ham at 0.6 may be flagged; the lowest such threshold is 0.5 (a
    # spam's score), and the next lower score is 0.3: halfway is 0.4.
    chosen = calibrate_threshold(labels, probabilities, 0.25)
    assert chosen.threshold == pytest.approx(0.4)
    assert (chosen.validation_fpr, chosen.validation_recall) == (0.25, 1.0)
    strict = calibrate_threshold(labels, probabilities, 0.0)
    assert strict.threshold == pytest.approx(0.75)  # between the ham at 0.6 and the spam at 0.9
    assert (strict.validation_fpr, strict.validation_recall) == (0.0, 2 / 3)


def test_calibration_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both spam and not-spam"):
        calibrate_threshold(np.array([0, 0]), np.array([0.1, 0.2]), 0.01)


@pytest.mark.parametrize(
    ("ham", "target", "allowed"), [(281, 0.005, 1), (100, 0.005, 0), (399, 0.005, 1), (1000, 0.001, 1)]
)
def test_a_budget_of_fewer_than_two_ham_is_called_coarse(ham: int, target: float, allowed: int) -> None:
    calibration = Calibration(target, 0.7, 0.0, 0.9, validation_ham=ham, validation_spam=50)
    warning = coarse_calibration(calibration)
    assert warning is not None
    assert f"rests on {ham} validation ham" in warning and f"allows {allowed} to be marked spam" in warning


@pytest.mark.parametrize(("ham", "target"), [(400, 0.005), (2000, 0.001), (281, 0.01)])
def test_a_budget_of_two_or_more_ham_is_not_called_coarse(ham: int, target: float) -> None:
    assert coarse_calibration(Calibration(target, 0.7, 0.0, 0.9, ham, 50)) is None
