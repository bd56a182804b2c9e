"""Thresholds for a small false-positive budget from few ham: the tail fit of spamfilter.calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spamfilter.calibration import calibrate, expit, logit, tail_threshold
from spamfilter.metrics import calibrate_threshold


def _ham(n: int, seed: int = 0) -> np.ndarray:
    """Ham scores whose logits are -6 plus an exponential of scale 1: P(logit > t) = exp(-(t + 6))
    for t > -6, so the 0.1 % quantile is at logit ln(1000) - 6 = 0.908."""
    z = -6 + np.random.default_rng(seed).exponential(1.0, n)
    return 1 / (1 + np.exp(-z))


TRUE_LOGIT_AT_0_1_PERCENT = math.log(1000) - 6


def test_the_fit_finds_a_quantile_beyond_the_ham_seen() -> None:
    # 281 ham (the SpamAssassin validation split's count) cannot show the 0.1 % quantile: the
    # empirical threshold is the highest ham, about the 0.35 % quantile; the fit reads further out
    # (never below the highest ham, which a sample's largest draw can put above the true quantile).
    found = []
    for seed in range(20):
        ham = _ham(281, seed)
        threshold = tail_threshold(ham, 0.001)
        assert threshold is not None and threshold > ham.max()
        found.append(logit(np.array([threshold]))[0])
    assert abs(np.median(found) - TRUE_LOGIT_AT_0_1_PERCENT) < 0.5


def test_the_fit_keeps_to_the_budget_on_new_ham_of_the_same_kind() -> None:
    rates = [float(np.mean(_ham(100_000, 100 + s) >= tail_threshold(_ham(281, s), 0.001))) for s in range(20)]
    assert np.median(rates) < 0.002  # about the target, where the highest-ham rule gives ~0.35 %


def test_never_below_the_empirical_threshold() -> None:
    # Ham whose top is one outlier far above the rest: the fit alone would undershoot it.
    ham = np.concatenate([np.full(999, 0.01), [0.999]])
    threshold = tail_threshold(ham, 0.001)
    assert threshold is not None and threshold > 0.01
    assert np.mean(ham >= threshold) <= 0.001


def test_too_few_ham_for_a_tail() -> None:
    assert tail_threshold(_ham(10), 0.001) is None
    assert tail_threshold(_ham(11), 0.001) is not None


def test_logit_and_expit_are_inverse_and_bounded() -> None:
    p = np.array([0.0, 1e-9, 0.2, 0.5, 0.9, 1.0])
    z = logit(p)
    assert np.isfinite(z).all()
    assert [round(expit(v), 6) for v in z[2:5]] == [0.2, 0.5, 0.9]


def _validation(ham: list[float], spam: list[float]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([0] * len(ham) + [1] * len(spam)), np.array(ham + spam)


def test_enough_validation_ham_keeps_the_validation_threshold() -> None:
    labels, scores = _validation(list(np.linspace(0.01, 0.6, 400)), [0.9, 0.95, 0.99])
    training_ham = np.full(2000, 0.97)  # would raise it: not consulted, 400 ham resolve 0.5 %
    calibration = calibrate(labels, scores, 0.005, training_ham)
    assert calibration == calibrate_threshold(labels, scores, 0.005)
    assert calibration.method == "validation" and calibration.fitted_ham == 0


def test_few_validation_ham_add_the_training_ham_that_score_higher() -> None:
    # 281 validation ham, none above 0.3; of 1,923 training ham three score 0.95 to 0.97 (the
    # long newsletters the SpamAssassin validation split lacked). At 0.1 % of 2,204 ham, two may
    # be marked spam: the threshold lies between the third and the second highest.
    labels, scores = _validation(list(np.linspace(0.01, 0.3, 281)), [0.5, 0.96, 0.99])
    training_ham = np.concatenate([np.linspace(0.01, 0.4, 1920), [0.95, 0.96, 0.97]])
    calibration = calibrate(labels, scores, 0.001, training_ham)
    assert 0.95 < calibration.threshold <= 0.96
    assert calibration.method == "validation+training ham" and calibration.fitted_ham == 281 + 1923
    assert calibration.validation_recall == pytest.approx(2 / 3) and calibration.validation_fpr == 0
    alone = calibrate(labels, scores, 0.001)
    assert alone.threshold < 0.5 and alone.method == "validation"


def test_the_training_ham_never_lower_the_validation_threshold() -> None:
    labels, scores = _validation(list(np.linspace(0.01, 0.8, 281)), [0.9, 0.99])
    calibration = calibrate(labels, scores, 0.001, np.full(1923, 0.01))
    assert calibration.threshold == calibrate_threshold(labels, scores, 0.001).threshold
