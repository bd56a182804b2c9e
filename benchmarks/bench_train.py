"""Training time of the default recipe (last block + final LayerNorm + head trainable, batch 8) on the
SMS training split, GPT-2-small-shaped random model: ``cache_frozen=True`` vs the straightforward loop.

The full recipe (5 epochs over 1,045 messages, with 149 validation and 300 test messages) takes long on
a small CPU, so ``--epochs``, ``--train-limit`` and ``--eval-limit`` shorten the measured run. Each run
is split into phases from the step callbacks (set-up incl. the frozen-block cache, time per step, one
loss estimate, the final accuracy/test pass), and the full 5-epoch recipe is extrapolated from those
phases; the extrapolation is printed as such.

    .venv/bin/python -m benchmarks.bench_train --epochs 1 --train-limit 240 --eval-limit 80
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import DEFAULT_WORKDIR, SEED, cores, machine_line, script_parser, sms_splits, table

FULL = {"train": 1045, "validation": 149, "test": 300, "epochs": 5, "batch": 8, "eval_every": 50}


def arrays(limit_train: int | None, limit_eval: int | None) -> dict[str, tuple[Any, Any]]:
    import numpy as np

    from spamfilter.tokenizer import Tokenizer

    splits = sms_splits()
    tokenizer = Tokenizer()
    names = ("train", "validation", "test")
    rows = {name: tokenizer.encode_batch(getattr(splits, name)["Text"].tolist()) for name in names}
    max_length = max(len(r) for r in rows["train"])  # the recipe pads to the longest training message
    out = {}
    for name, encoded in rows.items():
        labels = getattr(splits, name)["Label"].to_numpy(np.int64)
        limit = limit_train if name == "train" else limit_eval
        ids = tokenizer.pad(encoded, max_length)
        out[name] = (ids[:limit], labels[:limit])
    return out


def one_run(
    data: dict[str, tuple[Any, Any]], epochs: int, cache_frozen: bool, device: str = "cpu"
) -> dict[str, Any]:
    import torch

    from spamfilter.model import GPT, GPTConfig, SpamClassifier, add_classification_head
    from spamfilter.train_loop import TrainingConfig, train_classifier

    torch.manual_seed(SEED)
    classifier = SpamClassifier(add_classification_head(GPT(GPTConfig())), "last")
    config = TrainingConfig(epochs=epochs, cache_frozen=cache_frozen)
    step_times: list[float] = []
    epoch_times: list[float] = []
    started = time.perf_counter()
    record = train_classifier(
        classifier,
        data["train"],
        data["validation"],
        data["test"],
        config,
        on_step=lambda step, total, loss: step_times.append(time.perf_counter()),
        on_epoch=lambda rec: epoch_times.append(time.perf_counter()),
        device=device,
    )
    total = time.perf_counter() - started
    steps_per_epoch = len(data["train"][0]) // config.batch_size
    # diffs[k] is the time from step k+1 to step k+2; leave out those that include a loss estimate
    # (after every eval_every-th step) or an epoch boundary
    diffs = [b - a for a, b in zip(step_times, step_times[1:], strict=False)]
    plain = [d for k, d in enumerate(diffs) if (k + 2) % config.eval_every and (k + 1) % steps_per_epoch]
    step = statistics.median(plain or diffs)
    # last step of each epoch -> on_epoch: the per-epoch loss/accuracy estimate (eval_batches batches)
    epoch_eval = statistics.median(
        epoch_times[e] - step_times[(e + 1) * steps_per_epoch - 1] for e in range(len(epoch_times))
    )
    return {
        "cache_frozen": cache_frozen,
        "total_s": total,
        "setup_s": step_times[0] - started - step,
        "step_s": step,
        "estimate_s": epoch_eval,  # one loss estimate on train + validation (eval_batches each)
        "final_s": total - (epoch_times[-1] - started),
        "steps": len(step_times),
        "step_losses": record.step_losses,
    }


def extrapolate(run: dict[str, Any], n: dict[str, int]) -> float:
    """The full recipe's time from one run's phases: set-up and final pass scale with the examples they
    cover, steps and loss estimates are counted."""
    steps = FULL["epochs"] * (FULL["train"] // FULL["batch"])
    estimates = steps // FULL["eval_every"] + FULL["epochs"]
    covered = n["train"] + n["validation"] + n["test"]
    full_covered = FULL["train"] + FULL["validation"] + FULL["test"]
    return (
        run["setup_s"] * full_covered / covered
        + steps * run["step_s"]
        + estimates * run["estimate_s"]
        + run["final_s"] * full_covered / covered
    )


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--epochs", type=int, default=1, help="epochs actually run (the recipe: 5)")
    parser.add_argument("--train-limit", type=int, default=None, help="first N training messages")
    parser.add_argument("--eval-limit", type=int, default=None, help="first N validation and test messages")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(cores())
    print(f"machine: {machine_line()}; torch threads {torch.get_num_threads()}; device {args.device}\n")
    data = arrays(args.train_limit, args.eval_limit)
    n = {name: len(ids) for name, (ids, _) in data.items()}
    print(f"data: {n}, padded to {data['train'][0].shape[1]} tokens; epochs run: {args.epochs}\n")
    runs = [one_run(data, args.epochs, cache, args.device) for cache in (True, False)]
    cached, plain = runs
    losses_a, losses_b = cached["step_losses"], plain["step_losses"]
    max_diff = max(abs(a - b) for a, b in zip(losses_a, losses_b, strict=True))
    rows = []
    for r in runs:
        rows.append(
            [
                "cache_frozen=True" if r["cache_frozen"] else "cache_frozen=False (straightforward)",
                f"{r['total_s']:.1f}",
                f"{r['setup_s']:.1f}",
                f"{r['step_s'] * 1000:.0f}",
                f"{r['estimate_s']:.2f}",
                f"{r['final_s']:.1f}",
                f"{extrapolate(r, n):.0f}",
            ]
        )
    print(
        table(
            [
                "loop",
                "measured s",
                "set-up s",
                "ms/step",
                "loss estimate s",
                "final pass s",
                "5-epoch full s (extrap.)",
            ],
            rows,
        )
    )
    measured = plain["total_s"] / cached["total_s"]
    full = extrapolate(plain, n) / extrapolate(cached, n)
    print(
        f"\nspeed-up of cache_frozen: measured run {measured:.2f}x; "
        f"extrapolated to the full 5-epoch recipe {full:.2f}x; "
        f"per step {plain['step_s'] / cached['step_s']:.1f}x"
    )
    print(f"step losses: {len(losses_a)} steps, max |difference| {max_diff:.2e}")
    summary = {
        "n": n,
        "epochs": args.epochs,
        "runs": [{k: v for k, v in r.items() if k != "step_losses"} for r in runs],
        "extrapolated_s": {"cached": extrapolate(cached, n), "plain": extrapolate(plain, n)},
        "speedup_measured": measured,
        "speedup_extrapolated": full,
        "max_loss_diff": max_diff,
    }
    args.workdir.mkdir(parents=True, exist_ok=True)
    name = "bench_train.json" if args.device == "cpu" else f"bench_train_{args.device}.json"
    (args.workdir / name).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
