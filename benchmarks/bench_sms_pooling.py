"""The SMS recipe's pooling (``last-token`` against ``last``), judged by its false-positive rate over seeds.

For each seed and pooling, the SMS recipe is trained with the real command on a small GPT-2 from
random weights (2 layers, 128 features: the README's offline model), then every message is scored
with the library's ``Classifier`` on the exported model directory (its default variant, its
threshold: the verdicts ``filter`` gives). ``--seed`` sets the initial weights (the same for both
poolings: pooling adds no parameter) and also which ham the recipe keeps and how the balanced set is
split 70/10/20. The recipe undersamples ham to the spam count, so some 4,000 ham are in no split;
they are rebuilt here with the recipe's own functions (``balance`` and ``random_split`` with the
seed; checked against the test split's size and class counts that ``train`` recorded) and give a
far larger sample of the false-positive rate than the test split's ~150 ham.

Trained model directories are cached under ``--workdir`` (one per pooling and seed); a rerun only
scores them again.

    python -m benchmarks.bench_sms_pooling                       # seeds 123 1 2 3 4
    python -m benchmarks.bench_sms_pooling --seeds 123 1 2      # fewer seeds
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spamfilter.finetune import TRAINING_STATE

from .common import DEFAULT_WORKDIR, SMS_FILE, checked, machine_line, run_child, spamfilter_argv, table

POOLINGS = ("last-token", "last")
SEEDS = (123, 1, 2, 3, 4)
# The README's offline model ("Measured here"): no pretrained weights reach this machine.
TINY = {"n_embd": 128, "n_layer": 2, "n_head": 2, "n_positions": 256}


@dataclass
class Run:
    seed: int
    pooling: str
    train_seconds: float | None  # None: the model directory came from the cache
    variant: str
    threshold: float
    test_n: int
    test_accuracy: float
    test_ham: int
    test_fp: int
    test_spam: int
    test_tp: int
    heldout_ham: int  # ham in no split (undersampled away)
    heldout_fp: int
    heldout_unseen_ham: int  # of those, texts that are not also a training or validation text
    heldout_unseen_fp: int
    all_ham: int  # every ham of the file, training ham included (the "all SMS ham")
    all_ham_fp: int

    @property
    def test_fpr(self) -> float:
        return self.test_fp / self.test_ham

    @property
    def recall(self) -> float:
        return self.test_tp / self.test_spam

    @property
    def heldout_fpr(self) -> float:
        return self.heldout_fp / self.heldout_ham

    @property
    def heldout_unseen_fpr(self) -> float:
        return self.heldout_unseen_fp / self.heldout_unseen_ham

    @property
    def all_ham_fpr(self) -> float:
        return self.all_ham_fp / self.all_ham


def train(data: Path, workdir: Path, seed: int, pooling: str, log: Any) -> tuple[Path, float | None]:
    out = workdir / f"{pooling}-seed{seed}"
    manifest = out / "spamfilter.json"
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        # pooling at the top level (older manifests also repeated it inside the recipe)
        held = (saved["recipe"]["seed"], saved.get("pooling", saved["recipe"].get("pooling")))
        if held == (seed, pooling):
            return out, None
        raise SystemExit(f"{out} holds another run (seed {held[0]}, {held[1]}): remove it")
    config = workdir / "tiny" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(TINY))
    argv = [
        *spamfilter_argv(),
        "train",
        "--model",
        str(config),
        "--weights",
        "random",
        "--trainable",
        "all",
        "--data",
        str(data),
        "--pooling",
        pooling,
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--no-progress",
    ]
    if (out / TRAINING_STATE).is_file():
        argv.append("--resume")  # an interrupted run of this script: continue it
    log(f"training {out.name} ...")
    run = checked(run_child(argv), f"train {out.name}")
    (workdir / f"{out.name}.log").write_bytes(run.stdout + run.stderr)
    log(f"trained {out.name} in {run.seconds:.0f} s")
    return out, run.seconds


def score(model: Path, data: Path, seed: int, pooling: str, seconds: float | None) -> Run:
    from spamfilter import Classifier
    from spamfilter.data import balance, random_split, read_labelled

    # The recipe's own data path (finetune.load_splits with undersampling): the same frame, the
    # same seed. balance keeps the file's row index, so the ham it dropped are the rest.
    frame = read_labelled(data)
    balanced = balance(frame, seed)
    splits = random_split(balanced, seed=seed)
    ham = frame[frame["Label"] == 0]
    heldout = ham[~ham.index.isin(balanced.index)]
    seen = set(splits.train["Text"]) | set(splits.validation["Text"])
    unseen = heldout[~heldout["Text"].isin(seen)]

    manifest = json.loads((model / "spamfilter.json").read_text())
    recorded = manifest["metrics"]["test"]
    confusion = recorded["confusion"]  # rows: true ham, true spam
    test_labels = splits.test["Label"].tolist()
    if (len(test_labels), test_labels.count(0)) != (recorded["n"], sum(confusion[0])):
        raise SystemExit(f"{model}: the rebuilt test split does not match the one train recorded")

    classifier = Classifier.load(model)
    # Every message of the file once, in batches as filter batches them; by text, as the splits'
    # rows no longer carry the file's index (a repeated text is the same tokens, the same verdict).
    verdicts = classifier.classify(frame["Text"].tolist())
    spam_of = {text: label == "spam" for text, (label, _) in zip(frame["Text"], verdicts, strict=True)}
    test = splits.test
    test_spam = test[test["Label"] == 1]["Text"]
    test_ham = test[test["Label"] == 0]["Text"]
    tp = sum(spam_of[t] for t in test_spam)
    fp = sum(spam_of[t] for t in test_ham)
    return Run(
        seed=seed,
        pooling=pooling,
        train_seconds=seconds,
        variant=classifier.variant,
        threshold=classifier.threshold,
        test_n=len(test),
        test_accuracy=(tp + len(test_ham) - fp) / len(test),
        test_ham=len(test_ham),
        test_fp=fp,
        test_spam=len(test_spam),
        test_tp=tp,
        heldout_ham=len(heldout),
        heldout_fp=sum(spam_of[t] for t in heldout["Text"]),
        heldout_unseen_ham=len(unseen),
        heldout_unseen_fp=sum(spam_of[t] for t in unseen["Text"]),
        all_ham=len(ham),
        all_ham_fp=sum(spam_of[t] for t in ham["Text"]),
    )


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def spread(values: list[float]) -> str:
    """mean ± sample std [min, max], in %."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{pct(statistics.mean(values))} ± {pct(std)} [{pct(min(values))}, {pct(max(values))}]"


METRICS = (
    ("test accuracy %", "test_accuracy"),
    ("test ham FPR %", "test_fpr"),
    ("held-out ham FPR %", "heldout_fpr"),
    ("held-out unseen ham FPR %", "heldout_unseen_fpr"),
    ("all ham FPR %", "all_ham_fpr"),
    ("test spam recall %", "recall"),
)


def report(runs: list[Run]) -> str:
    per_run = table(
        [
            "seed",
            "pooling",
            "train s",
            "variant",
            "test acc %",
            "test FPR % (FP/ham)",
            "held-out FPR % (FP/ham)",
            "unseen held-out FPR %",
            "all ham FPR %",
            "recall % (TP/spam)",
        ],
        [
            [
                r.seed,
                r.pooling,
                "cached" if r.train_seconds is None else f"{r.train_seconds:.0f}",
                r.variant,
                pct(r.test_accuracy),
                f"{pct(r.test_fpr)} ({r.test_fp}/{r.test_ham})",
                f"{pct(r.heldout_fpr)} ({r.heldout_fp}/{r.heldout_ham})",
                f"{pct(r.heldout_unseen_fpr)} ({r.heldout_unseen_fp}/{r.heldout_unseen_ham})",
                pct(r.all_ham_fpr),
                f"{pct(r.recall)} ({r.test_tp}/{r.test_spam})",
            ]
            for r in runs
        ],
    )
    poolings = [p for p in POOLINGS if any(r.pooling == p for r in runs)]
    summary = table(
        [
            "metric (mean ± std [min, max])",
            *(f"{p} ({sum(r.pooling == p for r in runs)} seeds)" for p in poolings),
        ],
        [
            [name, *(spread([getattr(r, attr) for r in runs if r.pooling == p]) for p in poolings)]
            for name, attr in METRICS
        ],
    )
    text = f"{per_run}\n\n{summary}"
    by_key = {(r.seed, r.pooling): r for r in runs}
    paired = [
        (by_key[s, "last-token"], by_key[s, "last"])
        for s, p in by_key
        if p == "last" and (s, "last-token") in by_key
    ]
    if paired:
        rows = []
        for name, attr in METRICS:
            diffs = [getattr(a, attr) - getattr(b, attr) for a, b in paired]
            lower = sum(d < 0 for d in diffs)
            higher = sum(d > 0 for d in diffs)
            rows.append([name, spread(diffs), f"{lower} / {len(diffs) - lower - higher} / {higher}"])
        text += "\n\n" + table(
            [
                f"last-token − last, same seed ({len(paired)} seeds)",
                "difference, points",
                "lower / equal / higher",
            ],
            rows,
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="default: 123 1 2 3 4")
    parser.add_argument("--poolings", nargs="+", choices=POOLINGS, default=list(POOLINGS))
    parser.add_argument("--data", type=Path, default=SMS_FILE, help="the UCI SMSSpamCollection file")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR / "sms-pooling")
    parser.add_argument("--json", type=Path, help="also write every run's counts here")
    args = parser.parse_args()

    def log(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    log(machine_line())
    runs = []
    for seed in args.seeds:
        for pooling in args.poolings:
            model, seconds = train(args.data, args.workdir, seed, pooling, log)
            runs.append(score(model, args.data, seed, pooling, seconds))
            r = runs[-1]
            log(
                f"seed {seed} {pooling}: test acc {pct(r.test_accuracy)} %, "
                f"test FPR {pct(r.test_fpr)} %, held-out FPR {pct(r.heldout_fpr)} % "
                f"({r.heldout_fp}/{r.heldout_ham}), recall {pct(r.recall)} %"
            )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1))
    print()
    print(report(runs))


if __name__ == "__main__":
    main()
