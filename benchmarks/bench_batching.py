"""Batching in one process: messages per second when the classifier is called with all messages at
once, 16 at a time (a micro-batch of `serve`) or one at a time, with the library's length groups
(`runtime.batched_logits`) and with the way before them (each batch of 8 padded to its longest
row, whatever the spread of lengths).

    .venv/bin/python -m benchmarks.bench_batching --model DIR [--sms 96] [--emails 32] [--repeats 2]

DIR must accept shorter inputs (pooling ``last-token``); the default is the cached GPT-2-small
benchmark model. Best of ``--repeats``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import build_model_dir, machine_line, script_parser, table
from benchmarks.serve_load import email_messages, sms_messages
from spamfilter import runtime
from spamfilter.pipeline import message_text
from spamfilter.runtime import Classifier
from spamfilter.tokenizer import pad_rows


def padded_to_longest(
    rows: Sequence[Sequence[int]],
    logits: runtime.LogitsFunction,
    *,
    batch_size: int,
    max_length: int,
    pad_token_id: int,
    trim: bool,
) -> np.ndarray:
    """``batched_logits`` as it was before length groups: sorted, ``batch_size`` at a time."""
    out = np.empty((len(rows), 2), dtype=np.float64)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for begin in range(0, len(order), batch_size):
        chosen = order[begin : begin + batch_size]
        length = max(1, min(max_length, max(len(rows[i]) for i in chosen))) if trim else max_length
        out[chosen] = logits(pad_rows((rows[i] for i in chosen), length, pad_token_id))
    return out


def rate(classifier: Classifier, texts: list[str], call_size: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        for start in range(0, len(texts), call_size):
            classifier.spam_probability(texts[start : start + call_size])
        best = min(best, time.perf_counter() - began)
    return len(texts) / best


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--sms", type=int, default=96)
    parser.add_argument("--emails", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model = args.model or build_model_dir(Path(__file__).resolve().parent / ".work", "last-token")
    classifier = Classifier.load(model)
    print(machine_line())
    print(f"model {model}: {classifier.variant}, batch size {classifier.batch_size}\n")
    shuffled = random.Random(1)
    kinds = {"sms": sms_messages(), "email": email_messages()[0]}
    ways: dict[str, Callable[..., np.ndarray]] = {
        "length groups": runtime.batched_logits,
        "padded to the longest of 8": padded_to_longest,
    }
    rows = []
    for kind, count in (("sms", args.sms), ("email", args.emails)):
        messages = kinds[kind]
        shuffled.shuffle(messages)
        texts = [message_text(raw) for raw in messages[:count]]
        classifier.spam_probability(texts[:4])  # warm-up
        for name, way in ways.items():
            runtime.batched_logits = way  # the classifier looks it up at call time
            try:
                rates = [rate(classifier, texts, size, args.repeats) for size in (len(texts), 16, 1)]
            finally:
                runtime.batched_logits = ways["length groups"]
            rows.append([kind, str(len(texts)), name, *(f"{r:.1f}" for r in rates)])
    print(table(["messages", "n", "batches", "all in one call", "calls of 16", "calls of 1"], rows))


if __name__ == "__main__":
    main()
