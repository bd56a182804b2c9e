"""Classification metrics from labels and spam probabilities (numpy only: no torch)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Metrics:
    n: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    false_positive_rate: float  # ham marked as spam: what mail users care about most
    roc_auc: float
    confusion: list[list[int]]  # [[true ham, ham marked spam], [spam missed, spam caught]]
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _safe_ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank statistic (ties count one half)."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([positives, negatives]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([positives, negatives])[order]
    ranks[order] = _average_ranks(values)
    rank_sum = ranks[: len(positives)].sum()
    return float((rank_sum - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives)))


def _average_ranks(sorted_values: np.ndarray) -> np.ndarray:
    ranks = np.arange(1, len(sorted_values) + 1, dtype=float)
    start = 0
    for end in range(1, len(sorted_values) + 1):
        if end == len(sorted_values) or sorted_values[end] != sorted_values[start]:
            ranks[start:end] = ranks[start:end].mean()
            start = end
    return ranks


def compute_metrics(
    labels: Sequence[int] | np.ndarray, spam_probability: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> Metrics:
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(spam_probability, dtype=np.float64)
    predicted = (p >= threshold).astype(np.int64)
    tp = int(((predicted == 1) & (y == 1)).sum())
    tn = int(((predicted == 0) & (y == 0)).sum())
    fp = int(((predicted == 1) & (y == 0)).sum())
    fn = int(((predicted == 0) & (y == 1)).sum())
    precision = _safe_ratio(tp, tp + fp)
    recall = _safe_ratio(tp, tp + fn)
    return Metrics(
        n=len(y),
        accuracy=_safe_ratio(tp + tn, len(y)),
        precision=precision,
        recall=recall,
        f1=_safe_ratio(2 * precision * recall, precision + recall),
        false_positive_rate=_safe_ratio(fp, fp + tn),
        roc_auc=roc_auc(y, p),
        confusion=[[tn, fp], [fn, tp]],
        threshold=threshold,
    )


@dataclass(frozen=True)
class OperatingPoint:
    target: float  # the false-positive rate asked for
    threshold: float | None  # None: no threshold up to 1.0 keeps to the target (ham scored 1.0)
    false_positive_rate: float
    recall: float


DEFAULT_TARGET_FPRS = (0.001, 0.005, 0.01, 0.02, 0.05)


def _share_at_or_above(sorted_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold, the share of ``sorted_scores`` (ascending) that is >= it."""
    if len(sorted_scores) == 0:
        return np.zeros(len(thresholds))
    below = np.searchsorted(sorted_scores, thresholds, side="left")
    return (len(sorted_scores) - below) / len(sorted_scores)


def threshold_sweep(
    labels: Sequence[int] | np.ndarray,
    spam_probability: Sequence[float] | np.ndarray,
    target_fprs: Sequence[float] = DEFAULT_TARGET_FPRS,
) -> list[OperatingPoint]:
    """For each target false-positive rate, the lowest threshold whose rate on these messages stays
    at or below it (catching the most spam while marking at most that share of ham as spam)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(spam_probability, dtype=np.float64)
    ham, spam = np.sort(p[y == 0]), np.sort(p[y == 1])
    # Only the scores themselves change the rates, plus one step above the highest (flags nothing).
    candidates = np.unique(p) if len(p) else np.zeros(1)
    if candidates[-1] < 1.0:
        candidates = np.append(candidates, np.nextafter(candidates[-1], np.inf))
    fprs, recalls = _share_at_or_above(ham, candidates), _share_at_or_above(spam, candidates)
    points = []
    for target in target_fprs:
        meets = np.flatnonzero(fprs <= target)  # fprs fall as the threshold rises: the first is lowest
        if len(meets) == 0:
            points.append(OperatingPoint(float(target), None, float(fprs[-1]), float(recalls[-1])))
            continue
        i = meets[0]
        points.append(OperatingPoint(float(target), float(candidates[i]), float(fprs[i]), float(recalls[i])))
    return points


@dataclass(frozen=True)
class Calibration:
    """The decision threshold chosen on the validation split for a ham false-positive budget."""

    target_fpr: float
    threshold: float
    validation_fpr: float  # at ``threshold``, on the messages it was chosen on
    validation_recall: float
    validation_ham: int
    validation_spam: int
    # How it was chosen: "validation" (the empirical quantile above), or, for a budget the
    # validation ham alone cannot resolve, "validation+training ham" (spamfilter.calibration):
    # on `fitted_ham` scores, the validation and the training split's ham.
    method: str = "validation"
    fitted_ham: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate_threshold(
    labels: Sequence[int] | np.ndarray, spam_probability: Sequence[float] | np.ndarray, target_fpr: float
) -> Calibration:
    """The threshold that catches the most spam while marking at most ``target_fpr`` of the ham.

    :func:`threshold_sweep`'s lowest threshold is the score of a message itself; the threshold set
    here lies halfway between it and the next lower score, which flags the same messages but leaves a
    margin on both sides for mail the model has not seen. Clamped to [0.001, 0.999] so that the
    verdict never rests on a probability that rounds to 0 or 1.
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(spam_probability, dtype=np.float64)
    if not (y == 0).any() or not (y == 1).any():
        raise ValueError("the validation split needs both spam and not-spam messages to calibrate on")
    point = threshold_sweep(y, p, [target_fpr])[0]
    if point.threshold is None:
        threshold = 1.0
    else:
        lower = p[p < point.threshold]
        halfway = (point.threshold + lower.max()) / 2 if len(lower) else point.threshold
        # Two adjacent floats have no float between them: then the sweep's own threshold.
        threshold = halfway if len(lower) and halfway > lower.max() else point.threshold
    threshold = float(min(max(threshold, 0.001), 0.999))
    ham, spam = p[y == 0], p[y == 1]
    return Calibration(
        target_fpr=float(target_fpr),
        threshold=threshold,
        validation_fpr=float(np.mean(ham >= threshold)),
        validation_recall=float(np.mean(spam >= threshold)),
        validation_ham=int(len(ham)),
        validation_spam=int(len(spam)),
    )


def coarse_calibration(calibration: Calibration) -> str | None:
    """Why a calibrated threshold is only a rough guide, or None.

    A budget that allows fewer than two validation ham to be marked spam puts the threshold next to
    one or two messages' scores: on the SpamAssassin corpus (281 validation ham, 0.5 %) the test
    false-positive rate it gave ranged from 0.18 % to 0.91 % over three splits.
    """
    ham = max(calibration.validation_ham, calibration.fitted_ham)
    allowed = math.floor(calibration.target_fpr * ham + 1e-9)
    if allowed >= 2:
        return None
    where = "validation" if ham == calibration.validation_ham else "validation and training"
    return (
        f"the threshold rests on {ham} {where} ham, of which a "
        f"{calibration.target_fpr:.2%} budget allows {allowed} to be marked spam: on new mail the "
        "rate may be several times the target (more ham gives a finer threshold; "
        "'spamfilter eval' shows the trade-off)"
    )


def roc_curve(
    labels: Sequence[int] | np.ndarray, spam_probability: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates, thresholds), thresholds descending."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(spam_probability, dtype=np.float64)
    thresholds = np.concatenate([[np.inf], np.unique(p)[::-1]])
    fpr = _share_at_or_above(np.sort(p[y == 0]), thresholds)
    tpr = _share_at_or_above(np.sort(p[y == 1]), thresholds)
    return fpr, tpr, thresholds


# A model this close to chance on its own test split has not learnt the task: the summary says so.
NEAR_CHANCE_ROC_AUC = 0.8
NEAR_CHANCE_RECALL = 0.5
SMALL_TRAINING_SPLIT = 1000  # training messages below which "too little data" is named as a cause
RANDOM_INITIALISATION = "random initialisation"  # how the manifest's base_model names random weights


def near_chance(
    roc_auc: float,
    recall: float,
    threshold: float,
    recipe: Mapping[str, Any] | None = None,
    base_model: Mapping[str, Any] | None = None,
    recall_at_fpr: tuple[float, float] | None = None,
) -> str | None:
    """One line when test figures say the model misses most spam, naming the likely causes from the
    model directory's manifest (its ``recipe`` and ``base_model``), else None.

    Near chance: ROC AUC below :data:`NEAR_CHANCE_ROC_AUC`. Random weights with only the last block
    trained (``--trainable last-block``) gave ROC AUC 0.57 on the SpamAssassin corpus: the lower
    blocks stay random, so the head reads noise. Spam recall below :data:`NEAR_CHANCE_RECALL` at
    the threshold in use while the model ranks spam above ham is another case: the threshold is
    too strict (a 0.1 % budget placed above validation ham that score like the spam caught 4.9 % of
    a split's test spam, where 0.5 % test FPR caught 83 %). ``recall_at_fpr``: (a false-positive
    rate, the test recall there), shown as what a looser threshold gives.
    """
    low_auc = not math.isnan(roc_auc) and roc_auc < NEAR_CHANCE_ROC_AUC
    if not low_auc and recall >= NEAR_CHANCE_RECALL:
        return None
    recipe, base_model = recipe or {}, base_model or {}
    sizes = recipe.get("split_sizes") or []
    too_little = (
        f"too little data ({int(sizes[0])} training messages)"
        if sizes and int(sizes[0]) < SMALL_TRAINING_SPLIT
        else None
    )
    auc = "n/a" if math.isnan(roc_auc) else f"{roc_auc:.2f}"
    if not low_auc:
        return _strict_threshold(recall, threshold, auc, recipe.get("target_fpr"), recall_at_fpr, too_little)
    causes = []
    trainable = str(recipe.get("trainable", ""))
    if base_model.get("weights") == RANDOM_INITIALISATION and trainable and trainable != "all":
        causes.append(
            f"random weights with --trainable {trainable} (the untrained lower blocks stay random: "
            "train every layer with --trainable all, or start from pretrained weights)"
        )
    if too_little:
        causes.append(too_little)
    if not causes:
        causes.append("too little data or too few epochs for this model")
    return (
        f"the model is near chance on the test split (ROC AUC {auc}, spam recall {recall:.1%} at "
        f"threshold {threshold:.4f}); likely cause: {'; '.join(causes)}"
    )


def _strict_threshold(
    recall: float,
    threshold: float,
    auc: str,
    target_fpr: Any,
    recall_at_fpr: tuple[float, float] | None,
    too_little: str | None,
) -> str:
    """near_chance's line for a model that ranks spam above ham but whose threshold lets most pass."""
    looser = ""
    if recall_at_fpr is not None and not math.isnan(recall_at_fpr[1]):
        fpr, caught = recall_at_fpr
        looser = f"; where {fpr:.1%} of the test ham are marked spam it catches {caught:.1%}"
    if isinstance(target_fpr, float | int) and not isinstance(target_fpr, bool) and target_fpr > 0:
        cause = (
            f"the threshold was chosen for --target-fpr {target_fpr:g} above the highest-scoring "
            "validation ham, which score as high as most spam (retrain with a larger --target-fpr or "
            "more mail, or give filter a --threshold from eval's table)"
        )
    else:
        cause = "the threshold is too strict for this model's scores (choose one with train --target-fpr)"
    causes = [cause, too_little] if too_little else [cause]
    return (
        f"the threshold {threshold:.4f} marks only {recall:.1%} of the test spam as spam though the "
        f"model ranks spam above ham (ROC AUC {auc}){looser}; likely cause: {'; '.join(causes)}"
    )
