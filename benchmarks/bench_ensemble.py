"""Several runs of the mail recipe on one split, their log-odds averaged: does an ensemble of
initial weights steady recall at a small false-positive rate? (an experiment, RESULTS section 30)

Section 26 found that one run of the default recipe differs from the next by tens of points of
recall at 0.1 % FPR: which commercial newsletter lands above the spam changes from run to run.
Averaging the log-odds of runs that differ only in their initial weights (and the order of their
batches) is the usual cure for such variance. For each split (``--seeds``), member 0 is
``bench_recipe``'s cached default row (trained there first if missing); members 1.. are the same
row trained with initial-weight seed ``split + 1000 * i`` into ``recipe/<split>/<row>+init<seed>``
(with ``--layers N`` other than the default shape's, every member, member 0 included, is trained
here into ``<row>+L<N>+init<seed>``). Every member scores the split's test messages as
``spamfilter filter`` does (default variant, int8, 4 windows); the table gives recall where 0, 1
and 2 test ham are marked spam, (1 - ROCA) %, and recall and test ham FPR at a threshold chosen as
the recipe chooses it (0.1 % of the validation and training ham, each scored as the filter scores
it), for each member, the mean of the members' figures, and the ensembles of the first k members
(an ensemble's message log-odds the mean of its members'; ``train --members`` takes the highest
window of the mean instead). Each member's line in the log gives the seconds it takes to score the
test split in-process (int8, the tokenizer included, best of 3).

    python -m benchmarks.bench_ensemble --seeds 123,7,11 --members 3
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from spamfilter.calibration import calibrate
from spamfilter.runtime import Classifier

from .bench_recipe import ROWS, splits_for
from .bench_runs import cells, figures
from .common import script_parser, table
from .mail_corpus import RECIPE_OUT, SHAPE, load_corpus, recipe_dir, shape_file, train_row

TARGET_FPR = 0.001


def member_dir(row: str, split: int, member: int, layers: int) -> Path:
    if layers != SHAPE["n_layer"]:  # every member trained here, the cached row is of the default shape
        return recipe_dir(split) / f"{row}+L{layers}+init{split + 1000 * member}"
    return recipe_dir(split) / (row if member == 0 else f"{row}+init{split + 1000 * member}")


def log_odds(folder: Path, texts: list[str]) -> np.ndarray:
    classifier = Classifier.load(folder)
    p = np.clip(classifier.spam_probability(texts), 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def test_seconds(folder: Path, texts: list[str]) -> float:
    """Seconds the model takes to score ``texts`` in-process as ``filter`` scores them (int8, the
    tokenizer included, start-up not), best of 3 after a warm-up."""
    classifier = Classifier.load(folder)
    classifier.spam_probability(texts[:50])
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        classifier.spam_probability(texts)
        best = min(best, time.perf_counter() - started)
    return best


def measured(z: dict[str, np.ndarray], truth: np.ndarray, validation_truth: np.ndarray) -> list[float]:
    """``figures`` of the test log-odds in ``z``, the threshold chosen on its validation and training ham."""
    p = {part: 1 / (1 + np.exp(-v)) for part, v in z.items()}
    cut = calibrate(validation_truth, p["validation"], TARGET_FPR, p["training ham"]).threshold
    cut_z = float(np.log(cut / (1 - cut))) if cut < 1 else np.inf
    return figures(z["test"], truth, cut_z)


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--row", default="line-ends+window64+avg995")
    parser.add_argument("--seeds", default="123,7,11")
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--layers", type=int, default=SHAPE["n_layer"], help="each member's blocks")
    args = parser.parse_args()
    row = next(r for r in ROWS if r.name == args.row)
    raws, labels = load_corpus()
    shape = shape_file(RECIPE_OUT, args.layers)
    lines: list[list[object]] = []
    pooled: dict[str, list[list[float]]] = {}
    for split in [int(s) for s in args.seeds.split(",")]:
        splits = splits_for(raws, labels, row.parts, split)
        scored: list[dict[str, np.ndarray]] = []
        for member in range(args.members):
            folder = member_dir(row.name, split, member, args.layers)
            if not (folder / "spamfilter.json").is_file():
                init = split + 1000 * member
                print(f"training split {split}, member {member} (initial weights {init}) ...", flush=True)
                _, seconds = train_row(row, splits, folder, model=str(shape), seed=init)
                print(f"  {seconds:.0f} s", flush=True)
            cost = test_seconds(folder, splits.test["Text"].tolist())
            print(f"  member {member}: test split scored in {cost:.2f} s", flush=True)
            started = time.perf_counter()
            scored.append(
                {
                    part: log_odds(folder, frame["Text"].tolist())
                    for part, frame in (
                        ("test", splits.test),
                        ("validation", splits.validation),
                        ("training ham", splits.train[splits.train["Label"] == 0]),
                    )
                }
            )
            print(f"  member {member} scored in {time.perf_counter() - started:.0f} s", flush=True)
        truths = (splits.test["Label"].to_numpy(), splits.validation["Label"].to_numpy())
        singles = [measured(z, *truths) for z in scored]
        for member, found in enumerate(singles):
            lines.append([split, f"member {member}", *cells(found)])
        lines.append([split, "mean of the members", *cells(list(np.mean(singles, axis=0)))])
        pooled.setdefault("mean of the members", []).append(list(np.mean(singles, axis=0)))
        for k in range(2, args.members + 1):
            average = {part: np.mean([z[part] for z in scored[:k]], axis=0) for part in scored[0]}
            found = measured(average, *truths)
            lines.append([split, f"ensemble of {k}", *cells(found)])
            pooled.setdefault(f"ensemble of {k}", []).append(found)
    for name, runs in pooled.items():
        lines.append([f"mean of {len(runs)} splits", name, *cells(list(np.mean(runs, axis=0)))])
    print(
        table(
            [
                "split",
                "model",
                "recall % at 0 ham",
                "at 1 ham",
                "at 2 ham",
                "(1-ROCA) %",
                "calibrated recall %",
                "calibrated FPR %",
            ],
            lines,
        )
    )


if __name__ == "__main__":
    main()
