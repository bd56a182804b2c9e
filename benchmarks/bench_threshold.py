"""Ways of choosing the mail recipe's threshold for a small false-positive budget, compared on one
trained model (``benchmarks/.work/recipe/<row>`` from ``bench_recipe``).

Every message of the row's split (training, validation, test) is scored as the filter scores it
(the model directory's default variant, every window, the highest kept), once, cached beside the
model. Each way of choosing then sees only what it is allowed to (validation scores, and for some
the training ham's), and the table gives its threshold, the test split's ham FPR and spam recall
there, beside the model's own figures at fixed test FPRs (the figures of record: recall at 0.1 %
and 0.5 % ham FPR, and (1 - ROC area) %).

    python -m benchmarks.bench_threshold                     # the mail row of split 123
    python -m benchmarks.bench_threshold --row reader --seed 7
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spamfilter.calibration import calibrate, tail_threshold
from spamfilter.metrics import roc_auc, threshold_sweep

from .common import script_parser, table_head
from .mail_corpus import SEED, load_corpus, recipe_dir, state_classifier, state_scores, text_splits

SPLITS = ("train", "validation", "test")


def scores(model_dir: Path, seed: int, state: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    cache = model_dir / ("bench-threshold-state-scores.npz" if state else "bench-threshold-scores.npz")
    if cache.is_file():
        saved = np.load(cache)
        return {name: (saved[f"{name}_labels"], saved[f"{name}_scores"]) for name in SPLITS}
    raws, labels = load_corpus()
    splits = text_splits(raws, labels, seed)
    score = _state_scorer(model_dir) if state else _filter_scorer(model_dir)
    out = {}
    for name in SPLITS:
        frame = getattr(splits, name)
        out[name] = (frame["Label"].to_numpy(np.int64), score(frame["Text"].tolist()))
    arrays: dict[str, np.ndarray] = {}
    for name, (y, p) in out.items():
        arrays[f"{name}_labels"], arrays[f"{name}_scores"] = y, p
    np.savez(cache, allow_pickle=False, **arrays)
    return out


def _filter_scorer(model_dir: Path) -> Callable[[list[str]], np.ndarray]:
    from spamfilter.runtime import Classifier

    return Classifier.load(model_dir).spam_probability


def _state_scorer(model_dir: Path) -> Callable[[list[str]], np.ndarray]:
    """The best epoch so far of a run still training (its training-state.pt), scored with torch
    (fp32) over every window as the filter scores: to look at thresholds before the run ends."""
    import torch

    state = torch.load(model_dir / "training-state.pt", weights_only=True)
    classifier = state_classifier(state, best=True)
    print(f"state after epoch {state['epoch']}, weights of epoch {state['best']['epoch']}", flush=True)
    return lambda texts: state_scores(classifier, texts)


def ways(data: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Callable[[], float | None]]:
    (ty, tp), (vy, vp) = data["train"], data["validation"]
    train_ham = tp[ty == 0]
    return {
        "validation, 0.5 % budget (before)": lambda: calibrate(vy, vp, 0.005).threshold,
        "validation, 0.1 % budget": lambda: calibrate(vy, vp, 0.001).threshold,
        "validation tail fit, 0.1 %": lambda: tail_threshold(vp[vy == 0], 0.001),
        "validation + training ham, 0.1 % (chosen)": lambda: calibrate(vy, vp, 0.001, train_ham).threshold,
        "validation + training ham tail fit, 0.1 %": lambda: tail_threshold(
            np.append(vp[vy == 0], train_ham), 0.001
        ),
        "validation + training ham, 0.5 %": lambda: calibrate(vy, vp, 0.005, train_ham).threshold,
    }


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--row", default="mail")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--state", action="store_true", help="score the best epoch of a run still training")
    args = parser.parse_args()
    model_dir = recipe_dir(args.seed) / args.row
    data = scores(model_dir, args.seed, args.state)
    y, p = data["test"]
    ham, spam = p[y == 0], p[y == 1]
    sweep = {point.target: point for point in threshold_sweep(y, p, [0.001, 0.0014, 0.005])}
    print(f"model {model_dir} (split {args.seed}): test {len(spam)} spam, {len(ham)} ham")
    print(
        f"recall at 0.1 % / 0.14 % / 0.5 % test FPR: {sweep[0.001].recall:.2%} / {sweep[0.0014].recall:.2%} "
        f"/ {sweep[0.005].recall:.2%}; (1 - ROC area) {100 * (1 - roc_auc(y, p)):.3f} %"
    )
    for name in SPLITS:
        labels, values = data[name]
        top = np.sort(values[labels == 0])[::-1][:5]
        print(f"{name}: {int((labels == 0).sum())} ham, highest " + ", ".join(f"{v:.4f}" for v in top))
    print("\n" + table_head("way", "threshold", "test ham FPR", "test spam recall"))
    results = {}
    for name, choose in ways(data).items():
        threshold = choose()
        if threshold is None:
            print(f"| {name} | (too few ham) | | |")
            continue
        fp, caught = int((ham >= threshold).sum()), int((spam >= threshold).sum())
        results[name] = {"threshold": threshold, "fp": fp, "caught": caught}
        print(
            f"| {name} | {threshold:.4f} | {fp / len(ham):.2%} ({fp}/{len(ham)}) | "
            f"{caught / len(spam):.2%} ({caught}/{len(spam)}) |"
        )
    (model_dir / "bench-threshold.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
