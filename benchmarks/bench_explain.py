"""Explanations, measured: do the phrases named for a spam verdict really carry it, and at what cost.

The deletion test on the test split of the SpamAssassin corpus as ``bench_recipe`` cuts it
(70/10/20, seed 123), with the mail recipe's model (bench_recipe's "mail" row, cached in
``benchmarks/.work/recipe/mail`` and trained there once when missing; ``--model DIR`` scores
another). For every test spam the model flags at its threshold, the top 3 phrases of
:func:`spamfilter.explain.explain_batch` are removed from its text and the text scored again: a
verdict that turns to ham is a flip. The control removes 3 random spans of the same lengths (in
characters, starting at words, not overlapping, within the text the model reads), seeded per
message. Top 1 and top 2 are reported too; ``--top K`` removes up to K phrases (K random spans in
the control), to see how many it takes.

The cost: milliseconds per explained message (one message per call, as a filter explains a spam
verdict), and the filter's throughput over the whole test split (the library's
``Classifier.spam_probability`` in batches of 8, as ``filter`` scores) with explanations off and
for spam verdicts only (each batch's spam explained in one more call).

    python -m benchmarks.bench_explain                   # every flagged test spam
    python -m benchmarks.bench_explain --limit 50        # a quick run
    python -m benchmarks.bench_explain --model DIR --max-spans 32
    python -m benchmarks.bench_explain --model DIR --no-throughput --top 6
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from spamfilter.explain import MAX_SPANS, MAX_WORDS, candidate_spans, explain_batch, without_spans
from spamfilter.runtime import Classifier

from . import bench_evasion, bench_recipe
from .common import table

BATCH = 8  # the filter's batch on the CPU


def random_spans(
    classifier: Classifier, text: str, lengths: list[int], rng: random.Random, max_spans: int, max_words: int
) -> list[tuple[int, int]]:
    """Spans of ``lengths`` characters, each starting where a random candidate span of the
    explanation starts (the same candidates, the same cap), not overlapping one another (fewer
    where the text has no room)."""
    starts = [start for start, _ in candidate_spans(classifier, text, max_spans, max_words)]
    chosen: list[tuple[int, int]] = []
    for length in lengths:
        free = [s for s in starts if all(s + length <= a or s >= b for a, b in chosen)]
        if not free:
            break
        start = rng.choice(free)
        chosen.append((start, min(len(text), start + length)))
    return chosen


@dataclass
class Deletion:
    n: int = 0
    top: int = 3  # phrases asked for, and random spans in the control
    flips: dict[int, int] = field(default_factory=dict)  # top k removed (k = 1 .. top)
    random_flips: int = 0
    after_top: list[float] = field(default_factory=list)  # P(spam) without the top phrases
    after_random: list[float] = field(default_factory=list)
    # log-odds of P(spam): the text's margin above the threshold, and how far the top phrases and
    # the random spans lower it (a flip needs a drop larger than the margin)
    margin: list[float] = field(default_factory=list)
    drop_top: list[float] = field(default_factory=list)
    drop_random: list[float] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)  # per explanation
    spans: list[int] = field(default_factory=list)  # scored per explanation
    fewer: int = 0  # messages with fewer than ``top`` phrases towards spam
    # the explanation's own P(spam) without its last phrase against the edited text classified
    disagree: list[float] = field(default_factory=list)
    verdicts_disagree: int = 0


def log_odds(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def deletion_test(
    classifier: Classifier,
    texts: list[str],
    seed: int,
    max_spans: int,
    max_words: int,
    greedy: bool,
    top: int = 3,
) -> Deletion:
    threshold = classifier.threshold
    result = Deletion(n=len(texts), top=top, flips=dict.fromkeys(range(1, top + 1), 0))
    for index, text in enumerate(texts):
        started = time.perf_counter()
        explanation = explain_batch(
            classifier, [text], top=top, max_spans=max_spans, max_words=max_words, greedy=greedy
        )[0]
        result.ms.append(1000 * (time.perf_counter() - started))
        result.spans.append(explanation.spans_scored)
        spans = [(p.start, p.end) for p in explanation.phrases]
        result.fewer += len(spans) < top
        rng = random.Random(f"{seed}:{index}")
        lengths = [end - start for start, end in spans]
        control = random_spans(classifier, text, lengths, rng, max_spans, max_words)
        # p[k - 1]: the top k removed; then the random spans removed, then the text itself; each
        # edited text classified alone, as the filter classifies one message (the int8 model's
        # answer for a row depends on the rows of its call)
        variants = [without_spans(text, spans[:k]) for k in range(1, top + 1)]
        variants += [without_spans(text, control), text]
        p = [float(classifier.spam_probability([variant])[0]) for variant in variants]
        p_random, p_text = p[top], p[top + 1]
        if spans:
            # one pass estimates each phrase alone, greedy the phrases before it removed too
            k = 1 if not greedy else len(spans)
            estimate = explanation.phrases[k - 1].without
            result.disagree.append(abs(estimate - p[k - 1]))
            result.verdicts_disagree += (estimate < threshold) != (p[k - 1] < threshold)
        for k in range(1, top + 1):
            result.flips[k] += bool(p[k - 1] < threshold)
        result.random_flips += bool(p_random < threshold)
        result.after_top.append(p[top - 1])
        result.after_random.append(p_random)
        result.margin.append(log_odds(p_text) - log_odds(threshold))
        result.drop_top.append(log_odds(p_text) - log_odds(p[top - 1]))
        result.drop_random.append(log_odds(p_text) - log_odds(p_random))
    return result


def throughput(
    classifier: Classifier, texts: list[str], explain: bool, repeats: int, greedy: bool = False
) -> tuple[float, int]:
    """Messages per second through the filter's scoring (batches of 8), explaining each batch's
    spam verdicts in one more call when ``explain``; the best of ``repeats`` passes."""
    best, explained = float("inf"), 0
    for _ in range(repeats):
        started, explained = time.perf_counter(), 0
        for begin in range(0, len(texts), BATCH):
            batch = texts[begin : begin + BATCH]
            p = classifier.spam_probability(batch)
            spam = [text for text, q in zip(batch, p, strict=True) if q >= classifier.threshold]
            if explain and spam:
                explain_batch(classifier, spam, greedy=greedy)
                explained += len(spam)
        best = min(best, time.perf_counter() - started)
    return (len(texts) / best if repeats else float("nan")), explained


def percent(count: int, n: int) -> str:
    return f"{100 * count / n:.1f} % ({count}/{n})" if n else "-"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None, help="score this model directory instead")
    parser.add_argument("--seed", type=int, default=bench_recipe.SEED, help="the split's (bench_recipe's)")
    parser.add_argument("--limit", type=int, default=None, help="at most N flagged spam (a quick run)")
    parser.add_argument("--max-spans", type=int, default=MAX_SPANS)
    parser.add_argument("--max-words", type=int, default=MAX_WORDS)
    parser.add_argument("--repeats", type=int, default=2, help="throughput passes (best is reported)")
    parser.add_argument("--variant", default=None, help="the model's variant (default: its default, int8)")
    parser.add_argument("--no-throughput", action="store_true", help="the deletion test only")
    parser.add_argument(
        "--top", type=int, default=3, help="phrases removed at most, and random spans in the control"
    )
    args = parser.parse_args()
    if args.top < 1:
        parser.error("--top: at least 1")
    if args.model is not None and not (args.model / "spamfilter.json").is_file():
        parser.error(f"--model: {args.model} is not a model directory (no spamfilter.json)")

    model = args.model or bench_evasion.mail_model(args.seed)
    classifier = Classifier.load(model, variant=args.variant)
    raws, labels = bench_recipe.load_corpus()
    test = bench_recipe.splits_for(raws, labels, "text", args.seed).test
    texts = test["Text"].tolist()
    spam = [text for text, label in zip(texts, test["Label"], strict=True) if label == 1]
    p = classifier.spam_probability(spam)
    flagged = [text for text, q in zip(spam, p, strict=True) if q >= classifier.threshold][: args.limit]
    cap = classifier.recipe.chars_kept
    print(
        f"test split: {len(texts)} messages, {len(spam)} spam, {len(flagged)} flagged spam explained; "
        f"threshold {classifier.threshold:.4f}",
        flush=True,
    )
    methods = {"one pass": False, "greedy": True}
    results = {
        name: deletion_test(
            classifier,
            [t[:cap] for t in flagged],
            args.seed,
            args.max_spans,
            args.max_words,
            greedy,
            args.top,
        )
        for name, greedy in methods.items()
    }
    repeats = 0 if args.no_throughput else args.repeats
    off, _ = throughput(classifier, texts, explain=False, repeats=repeats)
    speeds = {
        name: throughput(classifier, texts, explain=True, repeats=repeats, greedy=greedy)
        for name, greedy in methods.items()
    }

    command = "python -m benchmarks.bench_explain " + " ".join(sys.argv[1:])
    print(
        f"\n{command}\nmodel {model} ({classifier.variant}, max_length {classifier.directory.max_length}, "
        f"threshold {classifier.threshold:.4f}); CPU: {bench_evasion.cpu_line()}\n"
    )
    median = statistics.median
    rows = []
    for name, result in results.items():
        n = result.n
        last = result.top
        for k in range(1, last + 1):
            rows.append(
                [
                    f"{name}: top {k} phrase{'s' if k > 1 else ''} removed",
                    percent(result.flips[k], n),
                    f"{median(result.after_top):.4f}" if n and k == last else "",
                    f"{median(result.drop_top):.2f}" if n and k == last else "",
                ]
            )
        rows.append(
            [
                f"{name}: {last} random span{'s' if last > 1 else ''} of the same lengths removed",
                percent(result.random_flips, n),
                f"{median(result.after_random):.4f}" if n else "-",
                f"{median(result.drop_random):.2f}" if n else "-",
            ]
        )
    head = ["flagged test spam", "verdicts flipped to ham", "median P(spam) after", "median log-odds drop"]
    print(table(head, rows))
    margins = results["one pass"].margin
    if margins:
        print(
            f"\nflagged spam's log-odds above the threshold: median {median(margins):.2f}, "
            f"10th percentile {sorted(margins)[int(0.1 * (len(margins) - 1))]:.2f}"
        )
    print(
        "\n"
        + "; ".join(
            f"{name}: {r.fewer} of {r.n} had fewer than {r.top} phrases towards spam"
            for name, r in results.items()
        )
        + "\n"
    )
    cost = []
    for name, result in results.items():
        ms = sorted(result.ms)
        n = result.n
        cost.append(
            [
                f"{name}: ms per explained spam (mean / median / p95)",
                f"{statistics.fmean(ms):.0f} / {median(ms):.0f} / {ms[int(0.95 * (n - 1))]:.0f}"
                if n
                else "-",
            ]
        )
    spans = results["one pass"].spans
    cost.append(
        [
            "spans scored per message (mean / max)",
            f"{statistics.fmean(spans):.1f} / {max(spans)}" if spans else "-",
        ]
    )
    if repeats:
        cost.append(["filter msgs/s, explanations off", f"{off:.1f}"])
    for name, (speed, explained) in speeds.items() if repeats else ():
        cost.append(
            [
                f"filter msgs/s, {name} explanations of spam verdicts ({explained} of {len(texts)})",
                f"{speed:.1f}",
            ]
        )
    print(table(["cost", "value"], cost))
    for name, result in results.items():
        d = result.disagree
        print(
            f"{name}: the explanation's estimate against the edited text classified: max |difference| "
            f"{max(d) if d else 0:.2g}, verdicts that differ {result.verdicts_disagree} of {len(d)}"
        )


if __name__ == "__main__":
    main()
