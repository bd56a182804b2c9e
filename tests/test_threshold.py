"""The threshold that train stores: chosen on the validation split for a ham false-positive budget."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spamfilter.metrics import calibrate_threshold, threshold_sweep

scores = st.lists(
    st.tuples(st.integers(0, 1), st.floats(0, 1, allow_nan=False)), min_size=2, max_size=300
).filter(lambda rows: {label for label, _ in rows} == {0, 1})


@given(scores, st.sampled_from([0.0, 0.005, 0.01, 0.05, 0.2]))
def test_the_threshold_keeps_to_the_budget_and_flags_what_the_sweep_flags(rows, target: float) -> None:
    labels = np.array([label for label, _ in rows])
    probabilities = np.array([p for _, p in rows])
    chosen = calibrate_threshold(labels, probabilities, target)
    assert 0.001 <= chosen.threshold <= 0.999
    point = threshold_sweep(labels, probabilities, [target])[0]
    if point.threshold is not None and 0.001 < chosen.threshold < 0.999:  # not clamped
        assert chosen.validation_fpr == pytest.approx(point.false_positive_rate)
        assert chosen.validation_recall == pytest.approx(point.recall)
        assert chosen.validation_fpr <= target
        assert chosen.threshold <= point.threshold
    else:  # clamped: only where the sweep's threshold lies outside [0.001, 0.999] or does not exist
        assert (
            point.threshold is None
            or not 0.001 < point.threshold < 0.999
            or chosen.threshold in (0.001, 0.999)
        )


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
