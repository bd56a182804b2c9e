"""Out-of-fold scores of the training ham for the threshold: does calibration on them hold 0.1 % FPR?

The mail recipe chooses its threshold for ``--target-fpr 0.001`` on the validation ham together
with the training split's ham, scored by the model that was trained on them
(``spamfilter.calibration.calibrate``). A ham the model was trained on scores lower than one it
has not seen, so that pool may put the threshold too low. This script scores every training ham
with a model that was not trained on it: the training split is cut into ``--folds`` parts, and
for each part bench_recipe's row is trained on the others (the same validation split, the same
seed) and scores that part's ham as the filter does (every window, the directory's default
variant). The row's own model (``benchmarks/.work/recipe/ROW``, trained by bench_recipe) is then
given the threshold each way, and judged on the test split:

- ``trained-on ham``: the recipe's rule (the validation ham with the row model's own scores of the
  training ham);
- ``out-of-fold ham``: the validation ham with the fold models' scores of the training ham;
- ``validation only``: the validation ham alone (above the highest of them at 0.1 %).

    python -m benchmarks.bench_folds                    # split 123, 5 folds
    python -m benchmarks.bench_folds --seed 7

Each fold model is cached in ``benchmarks/.work/folds/[split-<seed>/]ROW-fold-K``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spamfilter.calibration import calibrate
from spamfilter.data import Splits
from spamfilter.metrics import calibrate_threshold

from .bench_recipe import ROWS
from .common import DEFAULT_WORKDIR, script_parser, table_head
from .mail_corpus import SEED, load_corpus, recipe_dir, shape_file, text_splits, train_row

OUT = DEFAULT_WORKDIR / "folds"


def scores(model_dir: Path, texts: list[str]) -> np.ndarray:
    """P(spam) of each text as ``filter`` computes it (every window, the default variant)."""
    from spamfilter.runtime import Classifier

    return np.asarray(Classifier.load(model_dir).spam_probability(texts), dtype=np.float64)


def out_of_fold_ham(splits: Splits, row_name: str, folds: int, seed: int) -> np.ndarray:
    """Every training ham's P(spam) from the fold model that did not train on it."""
    recipe = next(row for row in ROWS if row.name == row_name)
    train = splits.train.reset_index(drop=True)
    part = np.random.default_rng(seed).permutation(len(train)) % folds
    out = OUT if seed == SEED else OUT / f"split-{seed}"
    ham_scores = np.full(len(train), np.nan)
    for k in range(folds):
        held = part == k
        folder = out / f"{row_name}-fold-{k}"
        if not (folder / "spamfilter.json").is_file():
            print(f"training fold {k + 1} of {folds} on {int((~held).sum())} messages ...", flush=True)
            fold = Splits(train[~held].reset_index(drop=True), splits.validation, splits.test)
            train_row(recipe, fold, folder, model=str(shape_file(OUT)), seed=seed)
        ham = held & (train["Label"].to_numpy() == 0)
        ham_scores[ham] = scores(folder, train["Text"][ham].tolist())
    return ham_scores[train["Label"].to_numpy() == 0]


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--row", default="line-ends", help="bench_recipe's row (its model must exist)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=SEED, help="the split (as bench_recipe)")
    parser.add_argument("--target-fpr", type=float, default=0.001)
    args = parser.parse_args()
    model = recipe_dir(args.seed) / args.row
    if not (model / "spamfilter.json").is_file():
        parser.error(f"no model in {model}: run python -m benchmarks.bench_recipe --rows {args.row} first")
    raws, labels = load_corpus()
    splits = text_splits(raws, labels, args.seed)
    oof = out_of_fold_ham(splits, args.row, args.folds, args.seed)
    val_y = splits.validation["Label"].to_numpy()
    val_p = scores(model, splits.validation["Text"].tolist())
    test_y = splits.test["Label"].to_numpy()
    test_p = scores(model, splits.test["Text"].tolist())
    train_ham = splits.train[splits.train["Label"] == 0]["Text"].tolist()
    own = scores(model, train_ham)
    ways = {
        "trained-on ham (the recipe)": calibrate(val_y, val_p, args.target_fpr, own).threshold,
        "out-of-fold ham": calibrate(val_y, val_p, args.target_fpr, oof).threshold,
        "validation only": calibrate_threshold(val_y, val_p, args.target_fpr).threshold,
    }
    ham, spam = test_p[test_y == 0], test_p[test_y == 1]
    print(
        f"model {model}, {args.folds} folds, split {args.seed}; training ham above 0.99: "
        f"own scores {int((own > 0.99).sum())}, out of fold {int((oof > 0.99).sum())} of {len(own)}"
    )
    print(table_head("way", "threshold", "test ham FPR", "spam recall"))
    for way, threshold in ways.items():
        false = int((ham >= threshold).sum())
        print(
            f"| {way} | {threshold:.5f} | {false / len(ham):.2%} ({false}/{len(ham)}) | "
            f"{float(np.mean(spam >= threshold)):.1%} |"
        )


if __name__ == "__main__":
    main()
