"""Learning from corrections: why right corrections were refused, and what the retrain does now.

Given a mail model directory and a later slice of mail it was not trained on, files the later
spam that the model misses as corrections (1, then up to 30) and retrains the head twice:

- ``refit``: the method before (the head refitted as a weighted logistic regression on the
  training features plus the corrections, a weak pull toward the current head, the threshold
  calibrated again on the validation split, no more held-out ham marked spam allowed);
- ``anchored``: ``spamfilter learn`` as it is (spamfilter/learn.py): the head moved from the
  current one as little as the corrections need, measured on the training messages, the threshold
  never lowered, held-out changes allowed within two binomial standard deviations.

For each it prints the held-out figures before and after, the verdict of the check, and the later
slice's figures (ham marked spam, uncorrected spam caught) at the new head; then the retrain's time
without torch and the memory of per-user heads.

    python benchmarks/bench_learn.py MODEL_DIR --later-spam DIR --later-ham DIR [--later-ham DIR]
    python benchmarks/bench_learn.py --synthetic       # timings only, gpt2-small-sized features
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from spamfilter.corrections import Corrections
from spamfilter.head import Anchor, Head, apply_head, retrain_head, teach
from spamfilter.learn import (
    RetrainRefused,
    _held_out,
    current_head,
    read_features,
    retrain,
    training_anchor,
    window_features,
)
from spamfilter.mail import iter_mail_source
from spamfilter.metrics import calibrate_threshold
from spamfilter.modeldir import open_model_directory
from spamfilter.pipeline import message_text
from spamfilter.windows import combine, discounted


def _messages(sources: list[Path]) -> list[bytes]:
    out: list[bytes] = []
    for source in sources:
        out.extend(iter_mail_source(source))
    return out


def _scores(model: Path, head: Head, raws: list[bytes]) -> np.ndarray:
    directory = open_model_directory(model)
    features, owners, discounts = window_features(directory, [message_text(raw) for raw in raws])
    return discounted(combine(apply_head(head, features), owners, len(raws)), discounts)


def _refit(model: Path, corrections: list[bytes]) -> tuple[Head, float, str | None, dict[str, int]]:
    """The method before: a weighted logistic regression refitted on every training feature plus
    the corrections (their weight doubling until learnt), the threshold recalibrated on validation,
    the strict held-out check."""
    directory = open_model_directory(model)
    saved = read_features(model)
    start = current_head(directory)
    anchor, class_weight = training_anchor(saved)
    features, owners, discounts = window_features(directory, [message_text(raw) for raw in corrections])
    highest = np.asarray(
        [
            np.flatnonzero(owners == m)[np.argmax(apply_head(start, features[owners == m]))]
            for m in range(len(corrections))
        ],
        dtype=np.int64,
    )
    x = features[highest] if len(corrections) else features[:0]
    labels = np.ones(len(x), dtype=np.int64)
    target = directory.manifest.recipe.get("target_fpr")

    def threshold(head: Head) -> float:
        if target is None:
            return directory.threshold
        probabilities = apply_head(head, saved["validation_features"])
        return calibrate_threshold(saved["validation_labels"], probabilities, float(target)).threshold

    scale, head = 1.0, start
    for _ in range(13):
        both_x = np.concatenate([anchor.features, x])
        both_y = np.concatenate([anchor.labels, labels])
        assert anchor.weights is not None
        both_w = np.concatenate([anchor.weights, class_weight[labels] * scale])
        head = retrain_head(start, both_x, both_y, both_w, anchor=None)  # no anchor: a refit
        cut = threshold(head)
        if len(x) == 0 or (apply_head(head, x) >= cut).all():
            break
        scale *= 2
    before = _held_out(apply_head(start, saved["test_features"]), saved["test_labels"], directory.threshold)
    after = _held_out(apply_head(head, saved["test_features"]), saved["test_labels"], cut)
    strict = None
    if after.ham_marked_spam > before.ham_marked_spam:
        strict = (
            f"more held-out ham marked spam ({after.ham_marked_spam} instead of {before.ham_marked_spam})"
        )
    elif after.spam_missed > before.spam_missed + max(1, int(np.ceil(0.01 * before.spam))):
        strict = f"more held-out spam missed ({after.spam_missed} instead of {before.spam_missed})"
    figures = {
        "ham_fp_before": before.ham_marked_spam,
        "ham_fp_after": after.ham_marked_spam,
        "spam_missed_before": before.spam_missed,
        "spam_missed_after": after.spam_missed,
        "ham": before.ham,
        "spam": before.spam,
    }
    return head, cut, strict, figures


def real(args: argparse.Namespace) -> None:
    model = args.model
    directory = open_model_directory(model)
    start = current_head(directory)
    later_spam = _messages(args.later_spam)
    later_ham = _messages(args.later_ham)
    spam_scores = _scores(model, start, later_spam)
    ham_scores = _scores(model, start, later_ham)
    missed = [raw for raw, score in zip(later_spam, spam_scores, strict=True) if score < directory.threshold]
    print(
        f"model {model}: threshold {directory.threshold:.4f}, "
        f"target FPR {directory.manifest.recipe.get('target_fpr')}"
    )
    print(
        f"later slice: {len(later_ham)} ham ({int((ham_scores >= directory.threshold).sum())} marked spam), "
        f"{len(later_spam)} spam ({len(missed)} missed)"
    )
    print()
    print(
        "| corrections | method | held-out ham marked spam | held-out spam missed | check | "
        "later ham marked spam | later uncorrected spam caught | retrain s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for count in [0, 1, *([min(30, len(missed))] if len(missed) > 1 else [])]:
        taught = missed[:count]
        rest = [raw for raw in later_spam if raw not in taught]
        # The method before.
        began = time.perf_counter()
        head, cut, refused, f = _refit(model, taught)
        seconds = time.perf_counter() - began
        later_fp = int((_scores(model, head, later_ham) >= cut).sum())
        caught = int((_scores(model, head, rest) >= cut).sum())
        print(
            f"| {count} | refit (before) | {f['ham_fp_before']} -> {f['ham_fp_after']} of {f['ham']} | "
            f"{f['spam_missed_before']} -> {f['spam_missed_after']} of {f['spam']} | "
            f"{'refused: ' + refused if refused else 'kept'} | {later_fp} of {len(later_ham)} | "
            f"{caught} of {len(rest)} | {seconds:.1f} |"
        )
        if count == 0:
            continue
        # spamfilter learn as it is now, on a copy of the directory.
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(shutil.copytree(model, Path(scratch) / "model"))
            shutil.rmtree(copy / "corrections", ignore_errors=True)
            corrections = Corrections(copy)
            for raw in taught:
                corrections.add(raw, 1)
            began = time.perf_counter()
            try:
                result = retrain(copy)
                verdict, before, after = "kept", result.before, result.after
            except RetrainRefused as error:
                verdict, before, after = f"refused: {error}", None, None
            seconds = time.perf_counter() - began
            now = open_model_directory(copy)
            head = current_head(now)
            later_fp = int((_scores(copy, head, later_ham) >= now.threshold).sum())
            caught = int((_scores(copy, head, rest) >= now.threshold).sum())
            held = (
                f"{before.ham_marked_spam} -> {after.ham_marked_spam} of {before.ham} | "
                f"{before.spam_missed} -> {after.spam_missed} of {before.spam}"
                if before and after
                else "- | -"
            )
            print(
                f"| {count} | anchored (now) | {held} | {verdict} | {later_fp} of {len(later_ham)} | "
                f"{caught} of {len(rest)} | {seconds:.1f} |"
            )


def synthetic(args: argparse.Namespace) -> None:
    """The regression alone on gpt2-small-sized features (C = 768), and per-user head memory."""
    rng = np.random.default_rng(0)
    size = 768
    print("| training messages | corrections | dims | anchored retrain s | teach (doubling) s |")
    print("|---|---|---|---|---|")
    for rows in (2_000, 5_000):
        x = rng.normal(size=(rows, size)).astype(np.float32)
        y = (x[:, :8].sum(1) + rng.normal(size=rows) > 1.5).astype(np.int64)
        anchor = Anchor(x, y, np.where(y == 1, 3.0, 0.6))
        start = Head(rng.normal(size=(2, size)) * 0.05, np.zeros(2))
        for count in (1, 30):
            cx = rng.normal(size=(count, size)).astype(np.float32)
            cy = np.ones(count, dtype=np.int64)
            began = time.perf_counter()
            retrain_head(start, cx, cy, np.full(count, 3.0), anchor)
            once = time.perf_counter() - began
            began = time.perf_counter()
            teach(start, cx, cy, 0.5, anchor)
            taught = time.perf_counter() - began
            print(f"| {rows} | {count} | {size} | {once:.2f} | {taught:.2f} |")
    print()
    from spamfilter.user_heads import UserHead, UserHeads, _head_bytes

    with tempfile.TemporaryDirectory() as scratch:
        heads = UserHeads(Path(scratch), max_users=2_000, max_loaded=1_000)
        head = UserHead(Head(rng.normal(size=(2, size)), np.zeros(2)), 0.5, "t")
        tracemalloc.start()
        for i in range(1_000):
            heads.save(f"user{i}@example.org", head)
            heads.head(f"user{i}@example.org")
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        on_disk = sum(p.stat().st_size for p in Path(scratch).rglob("*") if p.is_file())
    print(
        f"per-user heads (C = {size}): file {len(_head_bytes(head))} bytes; 1,000 users held in memory: "
        f"{current / 1e6:.1f} MB traced; on disk {on_disk / 1e6:.1f} MB with their user records"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--later-spam", type=Path, action="append", default=[])
    parser.add_argument("--later-ham", type=Path, action="append", default=[])
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args()
    if args.synthetic:
        synthetic(args)
    elif args.model is None or not args.later_spam or not args.later_ham:
        parser.error("give MODEL_DIR --later-spam DIR --later-ham DIR, or --synthetic")
    else:
        real(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
