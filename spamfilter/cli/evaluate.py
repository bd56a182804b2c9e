"""``spamfilter classify`` and ``spamfilter eval``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    pass

from .common import (
    CONTEXT,
    _classifier_used,
    _fail,
    _library_errors,
    _load_classifier,
    _warn,
    cli,
    gpu_option,
    mail_sources_options,
    model_option,
    variant_option,
)


@cli.command(context_settings=CONTEXT)
@click.argument("texts", nargs=-1, required=True)
@model_option
@click.option("--threshold", type=click.FloatRange(0, 1), default=None)
@gpu_option
@variant_option
def classify(
    texts: tuple[str, ...], model: Path | None, threshold: float | None, gpu: bool, variant: str | None
) -> None:
    """Classify each TEXT ('-' reads one text from stdin): prints label and P(spam)."""
    classifier = _load_classifier(model, gpu, variant=variant)
    items = [sys.stdin.read() if t == "-" else t for t in texts]
    from ..verdict import Decision

    decision = Decision(classifier.threshold, threshold)
    for (label, p), text in zip(classifier.classify(items, decision), items, strict=True):
        click.echo(f"{label}\t{p:.4f}\t{_one_line_preview(text)}")
    click.echo(f"spamfilter: {_classifier_used(model, classifier)}", err=True)


def _one_line_preview(text: str, width: int = 60) -> str:
    """A text on one output line: line breaks shown as spaces, long texts cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


@cli.command(name="eval", context_settings=CONTEXT)
@click.argument("data", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_option
@mail_sources_options("Spam (with --ham, instead of DATA)", "Wanted mail")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="Default: the model's.")
@click.option(
    "--target-fpr",
    "target_fprs",
    multiple=True,
    type=click.FloatRange(0, 1),
    help="False-positive rates to find thresholds for (repeatable). Default: 0.1% 0.5% 1% 2% 5%.",
)
@click.option(
    "--report",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write eval.json and roc.png to. Default: none written (the model directory keeps "
    "its training record).",
)
@gpu_option
@variant_option
def eval_command(
    data: Path | None,
    model: Path | None,
    spam_sources: tuple[Path, ...],
    ham_sources: tuple[Path, ...],
    threshold: float | None,
    target_fprs: tuple[float, ...],
    report: Path | None,
    gpu: bool,
    variant: str | None,
) -> None:
    """Measure a model on labelled messages: DATA (the UCI file, or CSV/TSV with label and text
    columns) or --spam/--ham mailboxes. Prints accuracy, precision, recall, F1, the false-positive
    rate, the confusion matrix, ROC AUC and which --threshold gives a chosen false-positive rate."""
    from ..evaluate import evaluate, format_report, write_report
    from ..labelled import read_labelled_texts, read_mail_texts
    from ..mail import check_sources
    from ..metrics import DEFAULT_TARGET_FPRS
    from ..verdict import Decision

    with _library_errors():
        check_sources(data, spam_sources, ham_sources, "DATA", required=True)
        if data is not None:
            texts, labels = read_labelled_texts(data)
        else:
            texts, labels = read_mail_texts(spam_sources, ham_sources, _warn)
    classifier = _load_classifier(model, gpu, variant=variant)
    decision = Decision(classifier.threshold, threshold)
    result = evaluate(classifier, texts, labels, decision, target_fprs or DEFAULT_TARGET_FPRS)
    click.echo(format_report(result))
    click.echo(f"spamfilter: {_classifier_used(model, classifier)}", err=True)
    if report is None:  # never over the test report that train wrote into the model directory
        click.echo("spamfilter: no files written; --report DIR keeps eval.json and roc.png", err=True)
        return
    try:
        written = write_report(result, report)
    except OSError as error:
        _fail(f"cannot write the report: {error}")
    click.echo(f"spamfilter: wrote {' and '.join(map(str, written))}", err=True)
