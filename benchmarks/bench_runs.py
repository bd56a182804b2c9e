"""Rows of ``bench_recipe`` over several splits, scored as ``spamfilter filter`` scores them.

Each split (``--seeds``) is another draw of the test messages and of the initial weights, so a
recipe's figures at a small false-positive rate are compared over several runs, not one. Every
cached model directory of ``bench_recipe`` (``--rows``, trained there first) scores its split's
test messages through this tree's reader and ``Classifier`` (the default variant, int8, at most
``--windows`` windows a message, each count given); the table gives spam recall where 0, 1 and 2
test ham are marked spam, (1 - ROC area) %, and recall and test ham FPR at the model's calibrated
threshold, then each row's mean over the splits.

    python -m benchmarks.bench_recipe --rows mail,line-ends+window64+avg995 --seed 7   # per split
    python -m benchmarks.bench_runs --rows mail,line-ends+window64+avg995 --seeds 123,7,11,1,2,3
    python -m benchmarks.bench_runs --rows mail --seeds 123,7,11 --windows 1,4
"""

from __future__ import annotations

import numpy as np

from spamfilter.metrics import roc_auc
from spamfilter.runtime import Classifier

from .common import script_parser, table
from .mail_corpus import load_corpus, recipe_dir, text_splits

HAM_ALLOWED = (0, 1, 2)  # test ham marked spam


def figures(scores: np.ndarray, labels: np.ndarray, threshold: float) -> list[float]:
    """Recall at each count of HAM_ALLOWED, (1 - ROCA) %, calibrated recall and FPR, in %."""
    spam, ham = scores[labels == 1], np.sort(scores[labels == 0])[::-1]
    at_counts = [100 * float((spam > ham[k]).mean()) for k in HAM_ALLOWED]
    return [
        *at_counts,
        100 * (1 - roc_auc(labels, scores)),
        100 * float((spam >= threshold).mean()),
        100 * float((ham >= threshold).mean()),
    ]


def cells(found: list[float]) -> list[str]:
    return [*(f"{x:.1f}" for x in found[:3]), f"{found[3]:.3f}", f"{found[4]:.1f}", f"{found[5]:.2f}"]


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--rows", default="mail,line-ends+window64+avg995")
    parser.add_argument("--seeds", default="123,7,11")
    parser.add_argument("--windows", default="4", help="windows a message at most, e.g. 1,4")
    args = parser.parse_args()
    rows, seeds = args.rows.split(","), [int(s) for s in args.seeds.split(",")]
    raws, labels = load_corpus()
    results: dict[tuple[str, int], list[list[float]]] = {}
    lines = []
    for seed in seeds:
        split = text_splits(raws, labels, seed)
        truth, texts = split.test["Label"].to_numpy(), split.test["Text"].tolist()
        for row in rows:
            folder = recipe_dir(seed) / row
            if not (folder / "spamfilter.json").is_file():
                raise SystemExit(
                    f"{folder}: not trained (python -m benchmarks.bench_recipe --rows {row} --seed {seed})"
                )
            for windows in [int(w) for w in args.windows.split(",")]:
                classifier = Classifier.load(folder)
                classifier.max_windows = windows
                # P(spam) saturates near 1: compared as log-odds, so the highest ham stay apart
                p = np.clip(classifier.spam_probability(texts), 1e-12, 1 - 1e-12)
                t = classifier.threshold
                found = figures(np.log(p / (1 - p)), truth, float(np.log(t / (1 - t))))
                results.setdefault((row, windows), []).append(found)
                lines.append([seed, row, windows, *cells(found)])
    for (row, windows), runs in results.items():
        lines.append([f"mean of {len(runs)}", row, windows, *cells(list(np.mean(runs, axis=0)))])
    heads = [f"recall % at {k} ham" for k in HAM_ALLOWED]
    print(
        table(
            ["split", "row", "windows", *heads, "(1-ROCA) %", "calibrated recall %", "calibrated FPR %"],
            lines,
        )
    )


if __name__ == "__main__":
    main()
