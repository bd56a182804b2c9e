"""Padding against a causal model: P(spam) read at every line end of a window, not only at its last token.

The model reads each window left to right, so its hidden state at a line end depends only on
the text up to that line: the head applied there is P(spam) of the window cut after that line.
A spam with ham words appended has, at the end of its own lines, the verdict it had before the
padding. This script scores the evasion benchmark's messages (``bench_evasion``: section 10's
test split, each test spam changed one way) both ways, through torch in fp32 from a training
state, and prints spam recall per change at fixed numbers of test ham marked spam (1 and 3 of
546), each rule at its own threshold:

- ``last``: the shipped rule, the window's last token, the message's P(spam) its highest window's;
- ``line ends``: the highest P(spam) over the window's line ends after its first line (a line
  end at least ``--min-tokens`` past the repeated first line) and its last token.

    python -m benchmarks.bench_line_ends --model benchmarks/.work/recipe/explain-2ep

The experiment that led to ``--pooling line-ends`` (RESULTS section 21), which trains the head
for this rule and reads each line's last token rather than its newline. It reads a model's
positions itself, so run it on a model trained with ``last-token``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spamfilter.windows import MAX_WINDOWS

from .bench_evasion import OUT, changed_spam, cpu_line, ham_pool, load_split, replies_quoting
from .common import script_parser, table
from .mail_corpus import SEED, state_classifier

if TYPE_CHECKING:
    from spamfilter.model import SpamClassifier
    from spamfilter.tokenizer import Tokenizer

_NEWLINES = frozenset({198, 628})  # GPT-2's "\n" and "\n\n"


RULES = ("last", "line ends", "model")


def window_scores(
    classifier: SpamClassifier, tokenizer: Tokenizer, raw: bytes, min_tokens: int, max_windows: int
) -> tuple[float, float, float]:
    """P(spam) of one message by each of ``RULES``, the highest over its windows: the head at the
    last token, at every newline (this experiment's rule), and the model's own pooling (what the
    filter computes, in fp32)."""
    import torch

    from spamfilter.formats import message_text
    from spamfilter.windows import head_length, windows_of

    ids = tokenizer.encode_batch([message_text(raw)])[0]
    windows, _ = windows_of([ids], 256, max_windows)
    last, ends, own = 0.0, 0.0, 0.0
    for window in windows:
        with torch.no_grad():
            gpt = classifier.gpt
            row = torch.tensor([window])
            logits = gpt.lm_head(gpt.run_blocks(gpt.embed(row), seen=gpt.seen(row)))[0]
            own = max(own, float(torch.softmax(classifier(row), -1)[0, 1]))
        p = torch.softmax(logits, -1)[:, 1].numpy()
        first = head_length(window, 64)
        read = [t for t, token in enumerate(window) if token in _NEWLINES and t >= first + min_tokens]
        last = max(last, float(p[-1]))
        ends = max(ends, float(p[[*read, len(window) - 1]].max()))
    return last, ends, own


def recall_at(spam: np.ndarray, ham: np.ndarray, false_positives: int) -> float:
    """Spam recall at the lowest threshold that marks at most ``false_positives`` ham as spam."""
    threshold = np.nextafter(np.sort(ham)[::-1][false_positives], 1.0)
    return float(np.mean(spam >= threshold))


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--model",
        type=Path,
        required=True,
        help="a model directory (model.pt) or a run's folder (training-state.pt)",
    )
    parser.add_argument("--min-tokens", type=int, default=16, help="line ends read after the first line")
    parser.add_argument(
        "--max-windows", type=int, default=MAX_WINDOWS, help="windows read per message at most"
    )
    parser.add_argument("--seed", type=int, default=SEED, help="the split (bench_recipe --seed)")
    args = parser.parse_args()

    import torch

    from spamfilter.tokenizer import Tokenizer

    torch.set_num_threads(1)
    state_file = args.model / "training-state.pt"  # a run's best epoch so far, or the finished model
    if state_file.is_file():
        classifier = state_classifier(torch.load(state_file, weights_only=True), best=True)
    else:
        from spamfilter.export import load_single_checkpoint

        classifier = load_single_checkpoint(args.model / "model.pt")[0]
    tokenizer = Tokenizer()
    split = load_split(args.seed)
    pool = ham_pool(split, OUT)
    rows = changed_spam(split, pool, None, args.seed)
    rows["replies (ham)"] = replies_quoting(split.test_spam, pool, args.seed)
    scored = {
        name: np.array(
            [window_scores(classifier, tokenizer, raw, args.min_tokens, args.max_windows) for raw in messages]
        )
        for name, messages in {"ham": split.test_ham, **rows}.items()
    }
    ham = scored.pop("ham")
    headers = ["change to the spam"] + [f"{rule} at {fp}/{len(ham)} ham" for fp in (1, 3) for rule in RULES]
    lines = [
        [name]
        + [
            f"{100 * recall_at(s[:, rule], ham[:, rule], fp):.1f} %"
            for fp in (1, 3)
            for rule in range(len(RULES))
        ]
        for name, s in scored.items()
    ]
    print(
        f"model {args.model} (pooling {classifier.pooling}), split {args.seed}, min tokens "
        f"{args.min_tokens}, windows {args.max_windows}; CPU: {cpu_line()}"
    )
    print(table(headers, lines))


if __name__ == "__main__":
    main()
