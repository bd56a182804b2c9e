"""Adapting the trunk to the mail before fine-tuning (``spamfilter.adapt``): does it help at low FPR?

The split of ``bench_recipe`` (the SpamAssassin public corpus, 70/10/20, seed 123). The trunk, a
2-layer x 128 GPT-2 from the same random weights the mail row starts from, first continues
next-token pretraining on the messages of the TRAINING split only (their labels unused; never the
validation or test split), written out as a folder of message files and read by the same reader as
``train``. bench_recipe's ``line-ends`` row (the mail recipe with the default pooling; ``--row mail``
for last-token) then fine-tunes from the adapted checkpoint, and both models are compared on the
test split: spam recall at 0.1 % and 0.5 % ham FPR (the
lowest threshold at which at most that share of the 546 test ham is marked spam), (1 - ROC area) %,
and recall / FPR at the threshold calibrated on the validation split.

    python -m benchmarks.bench_adapt                      # adapt (cached), fine-tune, table
    python -m benchmarks.bench_adapt --steps 600 --fresh  # another budget

The baseline is the same bench_recipe row from random weights (``benchmarks/.work/recipe/ROW``)
when it is there, trained here otherwise. An interrupted adaptation resumes from its last saved
step, an interrupted fine-tuning from its last finished epoch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spamfilter.adapt import STATE_FILE, AdaptOptions, adapt
from spamfilter.data import Splits
from spamfilter.finetune import ADAPT_LR, TRAINING_STATE
from spamfilter.modeldir import MANIFEST_FILE

from .bench_recipe import ROWS
from .common import DEFAULT_WORKDIR, script_parser, table_head
from .mail_corpus import (
    SEED,
    Row,
    load_corpus,
    messages_of,
    recipe_dir,
    shape_file,
    split_indexes,
    state_classifier,
    state_scores,
    text_splits,
    train_row,
)

OUT = DEFAULT_WORKDIR / "adapt"
RECIPES = {recipe.name: recipe for recipe in ROWS if recipe.name in ("mail", "line-ends")}


def split_with_raws(raws: list[bytes], labels: np.ndarray, seed: int = SEED) -> tuple[Splits, list[bytes]]:
    """The benchmarks' split (bench_recipe's), and the raw messages of its training part."""
    return text_splits(raws, labels, seed), messages_of(split_indexes(labels, seed).train, raws)


def workdir(seed: int) -> Path:
    """This benchmark's folder for a split: ``adapt/`` for the default seed, ``adapt/split-<seed>/``."""
    return OUT if seed == SEED else OUT / f"split-{seed}"


def write_folder(raws: list[bytes], folder: Path) -> None:
    """The training messages as a folder of message files, one of the formats ``adapt`` reads."""
    if folder.is_dir() and len(list(folder.iterdir())) == len(raws):
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, raw in enumerate(raws):
        (folder / f"{i:05d}.eml").write_bytes(raw)


def run_adaptation(args: argparse.Namespace, mail: Path, shape: Path) -> dict[str, Any]:
    out = workdir(args.seed) / f"trunk-{args.steps}"
    record_file = out / "adapt.json"
    if record_file.is_file() and not args.fresh:
        return dict(json.loads(record_file.read_text()))
    options = AdaptOptions(
        mail=[mail],
        out=out,
        model=str(shape),
        weights="random",
        steps=args.steps,
        context=args.context,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=max(1, args.steps // 10),
        save_every=args.save_every,
        held_out_windows=64,
        seed=args.seed,
        resume=(out / STATE_FILE).is_file() and not args.fresh,
    )
    started = time.monotonic()

    def step(done: int, total: int, loss: float) -> None:
        if done % 25 == 0:
            print(f"  step {done}/{total}: loss {loss:.3f} ({time.monotonic() - started:.0f} s)", flush=True)

    record = adapt(
        options,
        on_step=step,
        on_eval=lambda done, loss: print(f"  held-out loss at step {done}: {loss:.3f}", flush=True),
        on_stage=lambda stage: print(f"  {stage}", flush=True),
    )
    return record.to_dict()


def fine_tune_from(
    recipe: Row, weights: str, model: str | None, splits: Splits, out: Path, seed: int = SEED
) -> dict[str, Any]:
    """bench_recipe's row ``recipe``, from ``weights``; its manifest's test metrics and the time."""
    if (out / MANIFEST_FILE).is_file():
        manifest = json.loads((out / MANIFEST_FILE).read_text())
        return {"metrics": manifest["metrics"], "threshold": manifest["threshold"], "seconds": None}
    resume = (out / TRAINING_STATE).is_file()  # an interrupted run goes on from its last epoch
    result, seconds = train_row(recipe, splits, out, model=model, weights=weights, seed=seed, resume=resume)
    return {"metrics": result.manifest.metrics, "threshold": result.threshold, "seconds": seconds}


def score_state(state_file: Path, splits: Splits) -> dict[str, Any]:
    """Test figures of the weights in a fine-tuning state file (``training-state.pt``, saved after
    each epoch): for comparing two runs at the same epoch before either has finished. The scores
    are the filter's (the highest of a message's windows), as the finished run reports them."""
    from spamfilter.metrics import compute_metrics, threshold_sweep

    state = torch.load(state_file, map_location="cpu", weights_only=True)
    scores = state_scores(state_classifier(state), splits.test["Text"].tolist())
    labels = splits.test["Label"].to_numpy()
    sweep = [point.__dict__ for point in threshold_sweep(labels, scores)]
    test = compute_metrics(labels, scores, 0.5).to_dict()
    epochs = [(e["epoch"], round(e["validation_loss"], 4)) for e in state["record"]["epochs"]]
    return {"metrics": {"test": test, "test_threshold_sweep": sweep, "best_epoch": epochs}, "seconds": None}


def head(threshold: str, epochs: str) -> str:
    """The table's head; ``row`` writes its rows."""
    recall = ("recall at 0.1 % FPR", "recall at 0.5 % FPR", "(1 − ROCA) %", f"recall / FPR at {threshold}")
    return table_head("start of fine-tuning", *recall, epochs, "fine-tune s")


def row(name: str, result: dict[str, Any]) -> str:
    metrics = result["metrics"]
    test = metrics["test"]
    sweep = {point["target"]: point for point in metrics["test_threshold_sweep"]}
    (ham_ok, fp), (missed, caught) = test["confusion"]
    seconds = f"{result['seconds']:.0f}" if result.get("seconds") else "(cached)"
    return (
        f"| {name} | {sweep[0.001]['recall']:.2%} | {sweep[0.005]['recall']:.2%} | "
        f"{100 * (1 - test['roc_auc']):.3f} | {test['recall']:.2%} / {test['false_positive_rate']:.2%} "
        f"({fp}/{fp + ham_ok}) | {metrics['best_epoch']} | {seconds} |"
    )


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--steps", type=int, default=100, help="adaptation steps")
    parser.add_argument("--context", type=int, default=128, help="tokens per window")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=ADAPT_LR, help="as train --adapt-steps")
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--fresh", action="store_true", help="adapt and fine-tune again")
    parser.add_argument(
        "--states",
        nargs=2,
        type=Path,
        metavar=("BASELINE", "ADAPTED"),
        help="only compare the test figures of two fine-tuning states (training-state.pt), as they are",
    )
    parser.add_argument(
        "--row",
        default="line-ends",
        choices=sorted(RECIPES),
        help="bench_recipe's row that fine-tunes (line-ends: the default pooling; mail: last-token)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=SEED,
        help="the split, initial weights and batches (as bench_recipe)",
    )
    args = parser.parse_args()
    if args.states:
        raws, labels = load_corpus()
        splits, _ = split_with_raws(raws, labels)
        print(head("0.5", "(epoch, validation loss)"))
        for name, state_file in zip(("random weights", "adapted"), args.states, strict=True):
            print(row(f"{name} ({state_file.name})", score_state(state_file, splits)), flush=True)
        return
    shape = shape_file(OUT)
    raws, labels = load_corpus()
    splits, train_raws = split_with_raws(raws, labels, args.seed)
    work = workdir(args.seed)
    mail = work / "train-mail"
    write_folder(train_raws, mail)
    print(f"adapting on the {len(train_raws)} training messages ({args.steps} steps) ...", flush=True)
    adapted = run_adaptation(args, mail, shape)
    print(
        f"held-out LM loss {adapted['held_out_loss_before']:.3f} -> {adapted['held_out_loss_after']:.3f}; "
        f"{adapted['seconds']:.0f} s for {adapted['steps']} steps "
        f"({adapted['training_tokens']:,} training tokens)",
        flush=True,
    )
    trunk = work / f"trunk-{args.steps}"
    recipe = RECIPES[args.row]
    # the last-token runs before line-ends became the default keep their folder's name
    tuned_dir = work / (
        f"mail-adapted-{args.steps}" if args.row == "mail" else f"{args.row}-adapted-{args.steps}"
    )
    if args.fresh:
        shutil.rmtree(tuned_dir, ignore_errors=True)
    print(f"fine-tuning the adapted trunk (bench_recipe's {args.row} row) ...", flush=True)
    tuned = fine_tune_from(recipe, str(trunk), None, splits, tuned_dir, args.seed)
    cached = recipe_dir(args.seed) / args.row / MANIFEST_FILE
    baseline_dir = cached.parent if cached.is_file() else work / args.row
    print(f"the baseline, from random weights ({baseline_dir}) ...", flush=True)
    baseline = fine_tune_from(recipe, "random", str(shape), splits, baseline_dir, args.seed)
    print("\n" + head("the calibrated threshold", "best epoch"))
    print(row(f"random weights (bench_recipe's {args.row} row)", baseline))
    print(row(f"adapted: {adapted['steps']} steps on the training mail", tuned))
    print(f"\n{torch.get_num_threads()} torch threads; adaptation {adapted['seconds']:.0f} s")


if __name__ == "__main__":
    main()
