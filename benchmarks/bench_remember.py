"""What a memory of the training mail (``spamfilter.memory``, ``train --remember-training``) does to
a trained model's figures of record and its calibrated threshold, on cached ``bench_recipe`` models.

The memory changes no weight: it moves the scores of mail that holds a training spam's own runs.
So the model directory's validation and test scores are taken as the filter gives them
(``Classifier``, the default variant, every window), once as they are and once with the memory of
the split's training messages; the threshold is chosen from each as ``train`` chooses it
(``spamfilter.calibration.calibrate``: the validation split, with the training ham where the
budget needs more ham), and the test split is measured at it. The tricks against a remembering
model are ``bench_tricks --remember-training``'s.

    python -m benchmarks.bench_remember --row members3-L1+links --seeds 123,7,11
"""

from __future__ import annotations

import json

from spamfilter.calibration import calibrate, needs_more_ham
from spamfilter.mail import extract_text
from spamfilter.memory import Memory
from spamfilter.metrics import compute_metrics
from spamfilter.replay import one_minus_roca_percent, recall_at_fpr
from spamfilter.runtime import Classifier, cpu_instruction_set

from .common import script_parser, table
from .mail_corpus import load_corpus, recipe_dir, split_indexes


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--row", default="members3-L1+links")
    parser.add_argument("--seeds", default="123,7,11")
    args = parser.parse_args()
    raws, labels = load_corpus()
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        folder = recipe_dir(seed) / args.row
        if not (folder / "spamfilter.json").is_file():
            raise SystemExit(
                f"{folder}: not trained (python -m benchmarks.bench_recipe --rows {args.row} --seed {seed})"
            )
        target = float(json.loads((folder / "spamfilter.json").read_text())["recipe"]["target_fpr"])
        split = split_indexes(labels, seed)
        part = {name: getattr(split, name)["Index"].to_numpy() for name in ("train", "validation", "test")}
        texts = {name: [extract_text(raws[i]) for i in indexes] for name, indexes in part.items()}
        truth = {name: labels[indexes] for name, indexes in part.items()}
        classifier = Classifier.load(folder)
        classifier.use_memory = False  # the memory here is the benchmark's own, applied below
        ham = truth["train"] == 0
        score = {
            "validation": classifier.spam_probability(texts["validation"]),
            "test": classifier.spam_probability(texts["test"]),
            "train ham": classifier.spam_probability(
                [t for t, h in zip(texts["train"], ham, strict=True) if h]
            ),
        }
        memory = Memory.of(
            (str(n), int(label), text, 0.0)
            for n, (label, text) in enumerate(zip(truth["train"], texts["train"], strict=True))
        )
        train_ham_texts = [t for t, h in zip(texts["train"], ham, strict=True) if h]
        remembered = {
            name: memory.scores(values, source)
            for (name, values), source in zip(
                score.items(), (texts["validation"], texts["test"], train_ham_texts), strict=True
            )
        }
        for kind, scores in (("model", score), ("+ training memory", remembered)):
            extra = (
                scores["train ham"] if needs_more_ham(int((truth["validation"] == 0).sum()), target) else None
            )
            cut = calibrate(truth["validation"], scores["validation"], target, extra).threshold
            test = compute_metrics(truth["test"], scores["test"], cut)
            rows.append(
                [
                    seed,
                    kind,
                    f"{one_minus_roca_percent(truth['test'], scores['test']):.3f}",
                    f"{100 * recall_at_fpr(truth['test'], scores['test'], 0.001):.1f} %",
                    f"{cut:.4f}",
                    f"{100 * test.recall:.1f} %, {100 * test.false_positive_rate:.2f} %",
                ]
            )
    print(f"CPU: {cpu_instruction_set()}; row {args.row}")
    heads = ["split", "scores", "(1 - ROCA) %", "recall at 0.1 % FPR", "threshold", "recall, FPR there"]
    print(table(heads, rows))


if __name__ == "__main__":
    main()
