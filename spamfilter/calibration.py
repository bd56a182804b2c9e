"""Thresholds for a small false-positive budget, from few ham (numpy only: no torch).

A threshold chosen as an empirical quantile of the validation ham cannot resolve a budget smaller
than one message in two of the validation split: with 281 validation ham a 0.1 % budget allows
none to be marked spam, the threshold lands just above the highest one, and the rate on new mail
is whatever the ham that happened to fall into validation say. :func:`calibrate` adds the training
split's ham (7 times more). :func:`tail_threshold`, an extrapolation of the ham scores' upper tail
(peaks over threshold with an exponential excess on the logit scale), was measured against it on
the SpamAssassin corpus and is kept for that comparison (``benchmarks/bench_threshold.py``): on
281 validation ham it put the threshold above every spam.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .metrics import Calibration, calibrate_threshold

TAIL_SHARE = 0.1  # the highest-scoring share of the ham that the tail is fitted on
MIN_TAIL = 10  # ham at least in the fitted tail (fewer: the fit is noise)
_EPSILON = 1e-7  # scores are clipped to (eps, 1 - eps) before the logit: float32 rounds to 1.0


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPSILON, 1 - _EPSILON)
    return np.log(p / (1 - p))


def expit(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def tail_threshold(
    ham_scores: Sequence[float] | np.ndarray,
    target_fpr: float,
    tail_share: float = TAIL_SHARE,
    min_tail: int = MIN_TAIL,
) -> float | None:
    """The score above which ``target_fpr`` of ham is expected, from an exponential fit to the
    excesses of the highest ``tail_share`` of ``ham_scores`` over the next one (logit scale), or
    None with too few ham for a tail of ``min_tail``.

    Never below the empirical threshold for the same budget: the fit only extrapolates beyond
    what the ham seen can tell.
    """
    p = np.sort(np.asarray(ham_scores, dtype=np.float64))[::-1]
    z, n = logit(p), len(p)
    m = max(min_tail, math.ceil(tail_share * n))
    if n <= m:
        return None
    top, base = z[:m], z[m]  # m ham above the base; P(Z > base) is about m / n
    scale = max(float(np.mean(top - base)), 1e-6)  # the exponential's maximum-likelihood scale
    level = base + scale * math.log(max(m / (n * target_fpr), 1.0))
    allowed = math.floor(target_fpr * n + 1e-9)  # empirical: above all but `allowed` ham
    floor = float(np.nextafter(p[allowed], np.inf)) if allowed < n else 0.0
    return min(max(expit(level), floor), 1.0)


def needs_more_ham(validation_ham: int, target_fpr: float) -> bool:
    """Whether ``target_fpr`` allows fewer than two of the validation ham to be marked spam: then
    the validation split alone places the threshold by one or two messages."""
    return math.floor(target_fpr * validation_ham + 1e-9) < 2


def calibrate(
    validation_labels: Sequence[int] | np.ndarray,
    validation_scores: Sequence[float] | np.ndarray,
    target_fpr: float,
    training_ham_scores: Sequence[float] | np.ndarray | None = None,
) -> Calibration:
    """The recipe's threshold for ``target_fpr``.

    Where the validation ham can resolve the budget (two or more of them may be marked spam), the
    validation split's empirical threshold (:func:`spamfilter.metrics.calibrate_threshold`).
    Otherwise the higher of that and the same threshold chosen on the validation ham together with
    ``training_ham_scores``: the training split's ham scored as the filter scores it, every window
    (the windows after a message's first were never trained on, and the ham that score highest,
    long newsletters, are few: 281 validation ham of the SpamAssassin corpus held none of them).
    """
    y = np.asarray(validation_labels, dtype=np.int64)
    p = np.asarray(validation_scores, dtype=np.float64)
    base = calibrate_threshold(y, p, target_fpr)
    if training_ham_scores is None or not needs_more_ham(base.validation_ham, target_fpr):
        return base
    extra = np.asarray(training_ham_scores, dtype=np.float64)
    pooled = calibrate_threshold(
        np.concatenate([y, np.zeros(len(extra), dtype=np.int64)]), np.concatenate([p, extra]), target_fpr
    )
    threshold = max(base.threshold, pooled.threshold)
    return replace(
        base,
        threshold=threshold,
        validation_fpr=float(np.mean(p[y == 0] >= threshold)),
        validation_recall=float(np.mean(p[y == 1] >= threshold)),
        method="validation+training ham",
        fitted_ham=int((y == 0).sum()) + len(extra),
    )
