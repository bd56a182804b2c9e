"""``spamfilter classify`` and ``spamfilter eval``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..runtime import Classifier

from .common import (
    CONTEXT,
    FiniteFloatRange,
    _classifier_used,
    _echo,
    _fail,
    _library_errors,
    _load_classifier,
    _warn,
    choice_option,
    cli,
    count_option,
    gpu_option,
    mail_sources_options,
    model_option,
    threshold_option,
    variant_option,
)


@cli.command(context_settings=CONTEXT)
@click.argument("texts", nargs=-1, required=True)
@model_option
@threshold_option
@click.option(
    "--explain",
    "explain_text",
    is_flag=True,
    help="Also print the phrases that moved each P(spam) most, with their effect in log-odds "
    "(about a second a text: benchmarks/bench_explain.py).",
)
@gpu_option
@variant_option
def classify(
    texts: tuple[str, ...],
    model: Path | None,
    threshold: float | None,
    explain_text: bool,
    gpu: bool,
    variant: str | None,
) -> None:
    """Classify each TEXT ('-' reads one text from stdin): prints label and P(spam)."""
    classifier = _load_classifier(model, gpu, variant=variant)
    items = [sys.stdin.read() if t == "-" else t for t in texts]
    from ..verdict import Decision

    decision = Decision(classifier.threshold, threshold)
    for (label, p), text in zip(classifier.classify(items, decision), items, strict=True):
        _echo(f"{label}\t{p:.4f}\t{_one_line_preview(text)}")
        if explain_text:
            _print_phrases(classifier, text, decision.cut)
    click.echo(f"spamfilter: {_classifier_used(model, classifier)}", err=True)


def _one_line_preview(text: str, width: int = 60) -> str:
    """A text on one output line: line breaks shown as spaces, long texts cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


@cli.command(name="eval", context_settings=CONTEXT)
@click.argument("data", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_option
@mail_sources_options("Spam (with --ham, instead of DATA)", "Wanted mail")
@threshold_option
@click.option(
    "--target-fpr",
    "target_fprs",
    multiple=True,
    type=FiniteFloatRange(0, 1),
    help="False-positive rates to find thresholds for (repeatable). Default: 0.1% 0.5% 1% 2% 5%.",
)
@click.option(
    "--report",
    type=click.Path(path_type=Path),
    default=None,
    help="PATH.md or PATH.html: a page of the false positives and missed spam, each with the phrases "
    "that moved its P(spam) most (explained one by one: about a second each). Any other PATH: a folder "
    "to write eval.json and roc.png to. Default: none written (the model directory keeps its "
    "training record).",
)
@click.option(
    "--online",
    is_flag=True,
    help="Replay --spam/--ham in Date order as a filter lives: each message scored before its label "
    "is fed back as a user's correction, the head retrained as learn retrains it. Prints TREC's "
    "(1 - ROCA) %, spam recall at 0.1 % and 0.5 % ham FPR and a learning curve.",
)
@count_option(
    "--interval", 100, "--online: retrain the head every N messages (every message costs the most)."
)
@choice_option(
    "--feedback",
    ("all", "errors"),
    "all",
    "--online: feed back every label, or only the mistakes' (as users correct mail).",
)
@count_option("--block", 200, "--online: messages per curve row.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="--online: write the learning curve as a PNG here (the train extra's matplotlib).",
)
@click.option(
    "--memory/--no-memory",
    default=True,
    show_default=True,
    help="Move each verdict by the memory of corrected mail as the filter does (near-duplicates of "
    "reported spam and ham); with --online, each label fed back is remembered too. --no-memory: the "
    "model (and its head) alone.",
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
    online: bool,
    interval: int,
    feedback: str,
    block: int,
    plot: Path | None,
    memory: bool,
    gpu: bool,
    variant: str | None,
) -> None:
    """Measure a model on labelled messages: DATA (the UCI file, or CSV/TSV with label and text
    columns) or --spam/--ham mailboxes. Prints accuracy, precision, recall, F1, the false-positive
    rate, the confusion matrix, ROC AUC and which --threshold gives a chosen false-positive rate."""
    from ..evaluate import evaluate, format_report, write_report
    from ..labelled import read_labelled_texts, read_mail_texts
    from ..mail import check_sources
    from ..metrics import DEFAULT_TARGET_FPRS, near_chance
    from ..verdict import Decision

    context = click.get_current_context()
    if not online:
        for name in ("interval", "feedback", "block", "plot"):
            if context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                raise click.UsageError(f"--{name} goes with --online")
    _check_outputs(report, plot)
    if online:
        if report is not None:
            raise click.UsageError(
                "--report goes without --online (the replay prints its figures; --plot draws them)"
            )
        if data is not None or not (spam_sources and ham_sources):
            raise click.UsageError("--online replays mail: give --spam and --ham (their Date orders them)")
        _eval_online(model, spam_sources, ham_sources, interval, feedback, block, plot, memory)
        return
    with _library_errors():
        check_sources(data, spam_sources, ham_sources, "DATA", required=True)
        if data is not None:
            texts, labels = read_labelled_texts(data)
        else:
            texts, labels = read_mail_texts(spam_sources, ham_sources, _warn)
    classifier = _load_classifier(model, gpu, variant=variant)
    classifier.use_memory = memory
    decision = Decision(classifier.threshold, threshold)
    result = evaluate(classifier, texts, labels, decision, target_fprs or DEFAULT_TARGET_FPRS)
    _echo(format_report(result))
    _echo(_low_fpr_line(result.labels, result.spam_probability))
    warning = near_chance(
        float(result.metrics["roc_auc"]),
        float(result.metrics["recall"]),
        decision.cut,
        classifier.directory.manifest.recipe,
        classifier.directory.manifest.base_model,
        (0.005, _recall_at(result.labels, result.spam_probability, 0.005)),
    )
    if warning is not None:
        _warn(warning.replace("on the test split", "on these messages").replace("of the test ", "of these "))
    click.echo(f"spamfilter: {_classifier_used(model, classifier)}", err=True)
    if report is not None and report.suffix.lower() in PAGE_SUFFIXES:
        _write_error_page(report, texts, result.labels, result.spam_probability, decision.cut, classifier)
        return
    if report is None:  # never over the test report that train wrote into the model directory
        click.echo("spamfilter: no files written; --report DIR keeps eval.json and roc.png", err=True)
        return
    try:
        written = write_report(result, report)
    except OSError as error:
        _fail(f"cannot write the report: {error}")
    click.echo(f"spamfilter: wrote {' and '.join(map(str, written))}", err=True)


# eval --report PATH with one of these suffixes writes the error page (report.py) in that format
PAGE_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}


def _check_outputs(report: Path | None, plot: Path | None) -> None:
    """eval's files checked before the evaluation runs (minutes with --online), each a usage error:
    a page or a plot goes into a folder that exists, at a path that is a file or nothing yet (never
    a device: /dev/full was 'written'); a report folder is a folder or nothing yet, and not a model
    directory (its eval.json and roc.png are train's test report)."""
    if report is not None:
        hint = "'--report'"
        _in_existing_folder(report, hint)
        if report.suffix.lower() in PAGE_SUFFIXES:
            _file_or_nothing(report, hint)
        elif report.exists() and not report.is_dir():
            raise click.BadParameter(
                f"{report} is not a folder: PATH.md or PATH.html for a page, else a folder for eval.json "
                "and roc.png",
                param_hint=hint,
            )
        elif (report / "spamfilter.json").exists():
            raise click.BadParameter(
                f"{report} is a model directory: eval never writes over the test report that train "
                "wrote there (eval.json, roc.png); give another folder",
                param_hint=hint,
            )
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise click.BadParameter(
                f"{plot}: the learning curve is a PNG, name a .png file", param_hint="'--plot'"
            )
        _in_existing_folder(plot, "'--plot'")
        _file_or_nothing(plot, "'--plot'")


def _in_existing_folder(path: Path, hint: str) -> None:
    if not path.parent.is_dir():
        raise click.BadParameter(f"{path}: there is no folder {path.parent}", param_hint=hint)


def _file_or_nothing(path: Path, hint: str) -> None:
    if path.exists() and not path.is_file():
        raise click.BadParameter(f"{path} exists and is not a regular file", param_hint=hint)


def _recall_at(labels: list[int], probabilities: list[float], fpr: float) -> float:
    """Spam recall where at most ``fpr`` of these ham are marked spam (nan without spam or ham)."""
    import numpy as np

    from ..metrics import threshold_sweep

    y = np.asarray(labels)
    if not (y == 0).any() or not (y == 1).any():
        return float("nan")
    return float(threshold_sweep(y, np.asarray(probabilities), (fpr,))[0].recall)


def _low_fpr_line(labels: list[int], probabilities: list[float]) -> str:
    """The figures of record for mail on these messages: (1 - ROC area) % as TREC reports it and
    spam recall where at most 0.1 % of the ham is marked spam."""
    import numpy as np

    from ..metrics import roc_auc, threshold_sweep

    y, p = np.asarray(labels), np.asarray(probabilities)
    area = roc_auc(y, p)
    point = threshold_sweep(y, p, (0.001,))[0]
    ham = int(np.sum(y == 0))
    note = f" (only {ham} ham: 0.1 % is less than one)" if ham < 1000 else ""
    return (
        f"(1 - ROC area) {100 * (1 - area):.3f} %; spam recall {point.recall:.2%} at "
        f"{point.false_positive_rate:.2%} ham FPR (target 0.1 %){note}"
    )


def _write_error_page(
    path: Path,
    texts: list[str],
    labels: list[int],
    probabilities: list[float],
    threshold: float,
    classifier: Classifier,
) -> None:
    from ..report import error_report

    page = error_report(
        texts, labels, probabilities, threshold, classifier, fmt=PAGE_SUFFIXES[path.suffix.lower()]
    )
    from ..replacefile import replace_file

    try:
        replace_file(path, page.encode("utf-8"))  # whole or not at all, never through a link there
    except OSError as error:
        _fail(f"cannot write the report: {error}")
    click.echo(f"spamfilter: wrote {path}", err=True)


def _eval_online(
    model: Path | None,
    spam_sources: tuple[Path, ...],
    ham_sources: tuple[Path, ...],
    interval: int,
    feedback: str,
    block: int,
    plot: Path | None,
    memory: bool = True,
) -> None:
    """eval --online: the replay of spamfilter.replay over raw mail, its figures on stdout."""
    import os

    # The head's regressions on one BLAS thread: 10-30 times faster on busy cores (where numpy is
    # not loaded yet; the replay is correct either way).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from collections import Counter

    from ..errors import DataError
    from ..mail import iter_mail_source
    from ..modeldir import default_model_dir
    from ..replay import learning_curve, plot_learning_curve, replay_mail, report_lines

    raws: list[bytes] = []
    labels: list[int] = []
    with _library_errors():
        for label, paths in ((1, spam_sources), (0, ham_sources)):
            for path in paths:
                skipped: Counter[str] = Counter()
                try:
                    for raw in iter_mail_source(Path(path), skipped):
                        raws.append(raw)
                        labels.append(label)
                except (OSError, ValueError) as error:
                    raise DataError(f"cannot read mail from {path}: {error}") from None
        if not raws:
            raise DataError("no messages to replay")

        def progress(done: int, total: int) -> None:
            click.echo(f"spamfilter: replayed {done} of {total} messages", err=True)

        result = replay_mail(
            model or default_model_dir(),
            raws,
            labels,
            interval=interval,
            feedback="errors" if feedback == "errors" else "all",
            on_block=progress,
            memory=memory,
        )
    _echo(
        f"online replay of {len(raws)} messages in Date order, head retrained every {interval}, "
        f"feedback: {feedback}, memory of the labels fed back: {'on' if memory else 'off'}"
    )
    for line in report_lines(result, block=block):
        _echo(line)
    if plot is not None:
        try:
            plot_learning_curve(
                {"spamfilter": learning_curve(result.labels, result.scores, result.verdicts, block)}, plot
            )
        except ImportError:
            _fail("--plot needs matplotlib (the train extra): pip install 'spamfilter[train]'")
        except OSError as error:
            _fail(f"cannot write the plot: {error}")
        click.echo(f"spamfilter: wrote {plot}", err=True)


def _print_phrases(classifier: Classifier, text: str, threshold: float) -> None:
    """One indented line per phrase, e.g. ``  +2.41 P(spam) without it 0.412 "WIN a FREE prize"``."""
    from ..explain import explain_batch, safe_phrase

    with _library_errors():
        explanation = explain_batch(classifier, [text], threshold=threshold)[0]
    for line in explanation.memory:  # what the memory of corrected (and training) mail added
        _echo(f"  memory {line}")
    if not explanation.phrases:
        _echo("  no single phrase decides")
    for phrase in explanation.phrases:
        effect = f"{phrase.log_odds:+.2f} log-odds, P(spam) without it {phrase.without:.3f}"
        _echo(f'  {effect}: "{safe_phrase(phrase.text)}"')
