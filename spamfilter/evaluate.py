"""``spamfilter eval``: metrics of a model on labelled messages, with a threshold sweep."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import DEFAULT_TARGET_FPRS, compute_metrics, roc_curve, threshold_sweep
from .replacefile import replace_file
from .runtime import Classifier
from .verdict import Decision

EVAL_RECORD = "eval.json"
ROC_PLOT = "roc.png"


@dataclass(frozen=True)
class EvalReport:
    """Metrics at a threshold, the threshold for each target false-positive rate, and the scores
    they came from (``eval.json`` holds all but the per-message lists)."""

    metrics: dict[str, Any]
    threshold_sweep: list[dict[str, Any]]
    variant: str  # what scored: fp32, int8, or torch (the training run's own test report)
    provider: str
    spam_probability: list[float]
    labels: list[int]

    @classmethod
    def of(
        cls,
        labels: Sequence[int] | np.ndarray,
        probabilities: Sequence[float] | np.ndarray,
        threshold: float,
        target_fprs: Sequence[float] = DEFAULT_TARGET_FPRS,
        variant: str = "",
        provider: str = "",
    ) -> EvalReport:
        y = np.asarray(labels, dtype=np.int64)
        p = np.asarray(probabilities, dtype=np.float64)
        return cls(
            metrics=compute_metrics(y, p, threshold).to_dict(),
            threshold_sweep=[asdict(point) for point in threshold_sweep(y, p, target_fprs)],
            variant=variant,
            provider=provider,
            spam_probability=p.tolist(),
            labels=y.tolist(),
        )

    def summary(self) -> dict[str, Any]:
        """What ``eval.json`` records: everything but the per-message scores and labels."""
        return {k: v for k, v in asdict(self).items() if k not in ("spam_probability", "labels")}


def evaluate(
    classifier: Classifier,
    texts: Sequence[str],
    labels: Sequence[int],
    decision: Decision | None = None,
    target_fprs: Sequence[float] = DEFAULT_TARGET_FPRS,
) -> EvalReport:
    """Metrics at the decision's threshold (default: the model's), ROC AUC, and the lowest
    threshold for each target false-positive rate."""
    cut = (decision or Decision(classifier.threshold)).cut
    probabilities = classifier.spam_probability(list(texts))
    return EvalReport.of(labels, probabilities, cut, target_fprs, classifier.variant, classifier.provider)


def write_report(report: EvalReport, folder: Path) -> list[Path]:
    """``eval.json`` in ``folder``, and ``roc.png`` where matplotlib is installed (the train extra;
    a filter-only install has none). Returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    replace_file(folder / EVAL_RECORD, (json.dumps(report.summary(), indent=2) + "\n").encode())
    try:
        import matplotlib  # noqa: F401 - the train extra's
    except ImportError:  # a filter-only install: the numbers are all in eval.json
        return [folder / EVAL_RECORD]
    from .plots import plot_roc

    metrics = report.metrics
    fpr, tpr, _ = roc_curve(report.labels, report.spam_probability)
    point = (metrics["false_positive_rate"], metrics["recall"])
    plot_roc(fpr, tpr, metrics["roc_auc"], metrics["threshold"], point, folder / ROC_PLOT)
    return [folder / EVAL_RECORD, folder / ROC_PLOT]


def format_report(report: EvalReport) -> str:
    m = report.metrics
    (tn, fp), (fn, tp) = m["confusion"]
    lines = [
        f"{m['n']} messages, threshold {m['threshold']:.3f} ({report.variant} on {report.provider})",
        f"accuracy {m['accuracy']:.2%}  precision {m['precision']:.2%}  recall {m['recall']:.2%}  "
        f"F1 {m['f1']:.2%}  false-positive rate {m['false_positive_rate']:.2%}  ROC AUC {m['roc_auc']:.4f}",
        "confusion matrix      predicted not spam  predicted spam",
        f"  actual not spam     {tn:>18}  {fp:>14}",
        f"  actual spam         {fn:>18}  {tp:>14}",
        "threshold for a target false-positive rate (on these messages):",
        "  target FPR  threshold  FPR      recall",
    ]
    for point in report.threshold_sweep:
        if point["threshold"] is None:
            lines.append(f"  {point['target']:>10.2%}  none: ham scored 1.0")
            continue
        lines.append(
            f"  {point['target']:>10.2%}  {point['threshold']:.4f}     {point['false_positive_rate']:<7.2%}  "
            f"{point['recall']:.2%}"
        )
    return "\n".join(lines)
