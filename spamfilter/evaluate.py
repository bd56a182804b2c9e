"""``spamfilter eval``: metrics of a model directory on labelled messages, with a threshold sweep."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import DEFAULT_TARGET_FPRS, compute_metrics, roc_curve, threshold_sweep
from .runtime import Classifier

EVAL_RECORD = "eval.json"
ROC_PLOT = "roc.png"


def evaluate(
    classifier: Classifier,
    texts: Sequence[str],
    labels: Sequence[int],
    threshold: float | None = None,
    target_fprs: Sequence[float] = DEFAULT_TARGET_FPRS,
) -> dict[str, Any]:
    """Metrics at the threshold, ROC AUC, and the lowest threshold for each target false-positive rate."""
    cut = classifier.threshold if threshold is None else threshold
    probabilities = classifier.spam_probability(list(texts))
    y = np.asarray(labels, dtype=np.int64)
    return {
        "metrics": compute_metrics(y, probabilities, cut).to_dict(),
        "threshold_sweep": [asdict(point) for point in threshold_sweep(y, probabilities, target_fprs)],
        "variant": classifier.variant,
        "provider": classifier.provider,
        "spam_probability": probabilities.tolist(),
        "labels": y.tolist(),
    }


def write_report(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """``eval.json`` and ``roc.png`` in ``folder``."""
    from .plots import plot_roc

    folder.mkdir(parents=True, exist_ok=True)
    metrics = report["metrics"]
    fpr, tpr, _ = roc_curve(report["labels"], report["spam_probability"])
    point = (metrics["false_positive_rate"], metrics["recall"])
    plot_roc(fpr, tpr, metrics["roc_auc"], metrics["threshold"], point, folder / ROC_PLOT)
    summary = {k: v for k, v in report.items() if k not in ("spam_probability", "labels")}
    (folder / EVAL_RECORD).write_text(json.dumps(summary, indent=2) + "\n")
    return folder / EVAL_RECORD, folder / ROC_PLOT


def format_report(report: dict[str, Any]) -> str:
    m = report["metrics"]
    (tn, fp), (fn, tp) = m["confusion"]
    lines = [
        f"{m['n']} messages, threshold {m['threshold']:.3f} ({report['variant']} on {report['provider']})",
        f"accuracy {m['accuracy']:.2%}  precision {m['precision']:.2%}  recall {m['recall']:.2%}  "
        f"F1 {m['f1']:.2%}  false-positive rate {m['false_positive_rate']:.2%}  ROC AUC {m['roc_auc']:.4f}",
        "confusion matrix      predicted not spam  predicted spam",
        f"  actual not spam     {tn:>18}  {fp:>14}",
        f"  actual spam         {fn:>18}  {tp:>14}",
        "threshold for a target false-positive rate (on these messages):",
        "  target FPR  threshold  FPR      recall",
    ]
    for point in report["threshold_sweep"]:
        if point["threshold"] is None:
            lines.append(f"  {point['target']:>10.2%}  none: ham scored 1.0")
            continue
        lines.append(
            f"  {point['target']:>10.2%}  {point['threshold']:.4f}     {point['false_positive_rate']:<7.2%}  "
            f"{point['recall']:.2%}"
        )
    return "\n".join(lines)
