"""How a long message is read: a few windows spread over it, or every window with a discount.

For each split (``--seeds``) and each cached ``bench_recipe`` model (``--rows``), the same trained
weights read two ways (training does not read the window cap: only the threshold, the test figures
and the filter's reading depend on it):

- ``as recorded``: the model's own recipe (models trained before the discount: at most 4 windows,
  a longer body read at 4 stretches spread over it, P(spam) the highest window's);
- ``every window``: at most ``--max-windows`` windows (every window of the reader's 20,000
  characters in ordinary text), the highest window's log-odds less ``--discount`` * ln(windows);
- ``every window, end at a paragraph``: the same, the window that reads the end starting at the
  first paragraph of the body's last stretch, as the last of 4 spread windows did (where the window
  before it reaches it: nothing is skipped).

Each way is calibrated as ``train`` calibrates (``spamfilter.calibration.calibrate`` at the
model's ``target_fpr``, on the validation split and, where its ham are too few for the budget,
the training split's ham, every window), and measured on the test split: the calibrated threshold,
recall and FPR there, recall at 0.1 % / 0.5 % test FPR, (1 - ROCA) %, windows read and seconds;
then spam recall under every trick of ``spamfilter.evasion`` (``ham_sandwich`` included) where
1 / 3 test ham score above the cut (``bench_tricks``'s measure). Scores are the fp32 model's
(training calibrates on fp32 scores), one process, ``Classifier.spam_probability``.

    python -m benchmarks.bench_windows --rows members3-L1+links --seeds 123,7,11
"""

from __future__ import annotations

import dataclasses
import random
import time

import numpy as np

from spamfilter.calibration import calibrate, needs_more_ham
from spamfilter.evasion import TRICKS
from spamfilter.mail import extract_text
from spamfilter.metrics import roc_auc, threshold_sweep
from spamfilter.runtime import Classifier
from spamfilter.windows import MAX_WINDOWS, WINDOW_DISCOUNT

from .bench_evasion import OUT, cpu_line, ham_pool, load_split
from .common import script_parser, table
from .mail_corpus import load_corpus, recipe_dir, split_indexes

HAM_ALLOWED = (1, 3)
WAYS = ("as recorded", "every window", "every window, end at a paragraph")


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--rows", default="members3-L1+links")
    parser.add_argument("--seeds", default="123,7,11")
    parser.add_argument("--max-windows", type=int, default=MAX_WINDOWS)
    parser.add_argument("--discount", type=float, default=WINDOW_DISCOUNT)
    args = parser.parse_args()
    raws, labels = load_corpus()
    summary, tricks = [], []
    for seed in [int(s) for s in args.seeds.split(",")]:
        cut = split_indexes(labels, seed)
        texts = {
            name: ([extract_text(raws[i]) for i in part["Index"]], part["Label"].to_numpy())
            for name, part in (("train", cut.train), ("validation", cut.validation), ("test", cut.test))
        }
        train_ham = [t for t, y in zip(*texts["train"], strict=True) if y == 0]
        split = load_split(seed)
        pool = ham_pool(split, OUT)
        changed = {"none": [extract_text(raw) for raw in split.test_spam]}
        for name, trick in TRICKS.items():
            changed[name] = [
                extract_text(trick(raw, random.Random(f"{seed}:{name}:{i}"), pool))
                for i, raw in enumerate(split.test_spam)
            ]
        test_ham = [extract_text(raw) for raw in split.test_ham]
        for row in args.rows.split(","):
            folder = recipe_dir(seed) / row
            recorded = Classifier.load(folder, variant="fp32")
            every = dataclasses.replace(
                recorded.recipe,
                max_windows=args.max_windows,
                window_discount=args.discount,
                end_at_paragraph=False,
            )
            paragraph = dataclasses.replace(every, end_at_paragraph=True)
            ways = dict(zip(WAYS, (recorded.recipe, every, paragraph), strict=True))
            found: dict[str, list[str]] = {name: [] for name in changed}
            for way, recipe in ways.items():
                classifier = Classifier.load(folder, variant="fp32")
                classifier.recipe = recipe
                validation = classifier.spam_probability(texts["validation"][0])
                y_validation = texts["validation"][1]
                target = recipe.target_fpr or 0.001
                extra = (
                    classifier.spam_probability(train_ham)
                    if needs_more_ham(int((y_validation == 0).sum()), target)
                    else None
                )
                threshold = calibrate(y_validation, validation, target, extra).threshold
                classifier.windows_scored = 0
                started = time.perf_counter()
                test = classifier.spam_probability(texts["test"][0])
                seconds = time.perf_counter() - started
                y_test = texts["test"][1]
                sweep = {point.target: point.recall for point in threshold_sweep(y_test, test)}
                flagged = test >= threshold
                summary.append(
                    [
                        seed,
                        row,
                        way,
                        f"{threshold:.4f}",
                        f"{100 * flagged[y_test == 1].mean():.1f} %",
                        f"{100 * flagged[y_test == 0].mean():.2f} %",
                        f"{100 * (sweep[0.001] or 0):.1f} / {100 * (sweep[0.005] or 0):.1f} %",
                        f"{100 * (1 - roc_auc(y_test, test)):.3f}",
                        f"{classifier.windows_scored} in {seconds:.1f} s",
                    ]
                )
                ham = np.sort(classifier.spam_probability(test_ham))[::-1]
                for name, messages in changed.items():
                    p = classifier.spam_probability(messages)
                    found[name].append(
                        " / ".join(f"{100 * float((p > ham[k]).mean()):.1f}" for k in HAM_ALLOWED)
                    )
            tricks += [[seed, row, name, *cells] for name, cells in found.items()]
            print(f"split {seed}, {row}: done", flush=True)
    print(f"CPU: {cpu_line()}; every window: at most {args.max_windows}, discount {args.discount:g}")
    print(
        table(
            [
                "split",
                "row",
                "reading",
                "threshold",
                "recall",
                "FPR",
                "recall at 0.1 / 0.5 % FPR",
                "(1 - ROCA) %",
                "test windows",
            ],
            summary,
        )
    )
    print()
    print(table(["split", "row", "change to the spam", *[f"{way} (1 / 3 ham)" for way in WAYS]], tricks))


if __name__ == "__main__":
    main()
