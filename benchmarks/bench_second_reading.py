"""An experiment, not the product: a second reading of a message's most spam-like lines.

Interleaving a sentence of ordinary mail after every line of a spam (``interleaved_ham_lines``)
costs the classifier more than any other trick: every line of the offer is read next to ham, in
every window. Here each line of the reader's text (the Subject line before it, as the windows
repeat it) is scored on its own, the lines that score highest are put together in text order up to
``--budget`` tokens, after the Subject, and that condensed text is scored as one more window. The
message's log-odds are then the higher of its windows' and the condensed text's less a penalty
(``--penalties``): a ham newsletter whose offers page is read on its own must not become spam.
"gated" gives the second reading only to messages scoring above 90 % of the validation ham, which
is what would make its cost affordable (scoring every line alone costs several times the windows:
the script prints both times).

Every figure is on bench_recipe's test split of a cached model (``--model``, default the mail
recipe's current row); the changed spam are bench_evasion's, and a heavier interleaving (the
trick applied twice: three ham sentences after every line of the spam). Recall is counted where
1 and 3 test ham score above the cut, for each score.

    python -m benchmarks.bench_second_reading                 # split 123
    python -m benchmarks.bench_second_reading --seed 11
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np

from spamfilter.evasion import interleaved_ham_lines
from spamfilter.mail import extract_text
from spamfilter.replay import one_minus_roca_percent, recall_at_fpr
from spamfilter.runtime import Classifier

from .bench_evasion import changed_spam, ham_pool, load_split
from .bench_word_fusion import log_odds
from .common import DEFAULT_WORKDIR, script_parser
from .mail_corpus import SEED, load_corpus, recipe_dir, split_indexes

HAM_ABOVE = (1, 3)  # test ham above the cut


def condensed_log_odds(classifier: Classifier, texts: list[str], budget: int) -> np.ndarray:
    """Per text: the log-odds of its most spam-like lines read together (each line scored alone,
    after the text's first line), at most ``budget`` tokens, in text order."""
    count = classifier.tokenizer.encoding.encode_ordinary
    heads, lines_of, rows, owners = [], [], [], []
    for index, text in enumerate(texts):
        head, _, body = text[: classifier.recipe.chars_kept].partition("\n")
        lines = [line for line in body.split("\n") if line.strip()]
        heads.append(head)
        lines_of.append(lines)
        rows += [f"{head}\n{line}" for line in lines]
        owners += [index] * len(lines)
    line_scores = log_odds(classifier.spam_probability(rows)) if rows else np.zeros(0)
    owner_of = np.asarray(owners, dtype=np.int64)
    condensed = []
    for index, lines in enumerate(lines_of):
        used, chosen = len(count(heads[index])) + 1, []
        for j in np.argsort(-line_scores[owner_of == index], kind="stable"):
            size = len(count(lines[j])) + 1
            if used + size <= budget:
                chosen.append(j)
                used += size
        condensed.append(heads[index] + "\n" + "\n".join(lines[j] for j in sorted(chosen)))
    return log_odds(classifier.spam_probability(condensed))


class Readings:
    """A set of messages read both ways: the windows (the product) and the condensed lines, each
    timed (seconds in this process)."""

    def __init__(self, classifier: Classifier, raws: list[bytes], budget: int) -> None:
        texts = [extract_text(raw) for raw in raws]
        started = time.perf_counter()
        self.windows = log_odds(classifier.spam_probability(texts))
        self.windows_seconds = time.perf_counter() - started
        self.condensed = condensed_log_odds(classifier, texts, budget)
        self.condensed_seconds = time.perf_counter() - started - self.windows_seconds

    def scores(self, penalties: list[float], gate: float) -> dict[str, np.ndarray]:
        out = {"windows": self.windows}
        for penalty in penalties:
            second = np.maximum(self.windows, self.condensed - penalty)
            out[f"max, −{penalty:g}"] = second
            out[f"gated, −{penalty:g}"] = np.where(self.windows >= gate, second, self.windows)
        return out


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--seed", type=int, default=SEED, help="bench_recipe's split (default 123)")
    parser.add_argument("--model", type=Path, help="default: the split's line-ends+window64+avg995 model")
    parser.add_argument("--budget", type=int, default=128, help="tokens of the condensed text (default 128)")
    parser.add_argument("--penalties", default="0,1,3", help="log-odds taken off the condensed reading")
    args = parser.parse_args()
    penalties = [float(x) for x in args.penalties.split(",")]
    model = args.model or recipe_dir(args.seed) / "line-ends+window64+avg995"
    classifier = Classifier.load(model)
    raws, labels = load_corpus()
    cut = split_indexes(labels, args.seed)
    validation = cut.validation[cut.validation["Label"] == 0]
    ham_texts = [extract_text(raws[i]) for i in validation["Index"]]
    gate = float(np.quantile(log_odds(classifier.spam_probability(ham_texts)), 0.9))
    test = Readings(classifier, [raws[i] for i in cut.test["Index"]], args.budget)
    y = cut.test["Label"].to_numpy()
    ham = y == 0
    scores = test.scores(penalties, gate)
    print(f"model {model}, split {args.seed}; condensed text {args.budget} tokens; gate: log-odds {gate:.2f}")
    print(
        f"test split, {len(y)} messages: the windows {test.windows_seconds:.1f} s, the second reading "
        f"(every line alone, then the condensed text) {test.condensed_seconds:.1f} s"
    )
    print(
        f"gated in: {np.mean(test.windows[ham] >= gate):.1%} of the test ham, "
        f"{np.mean(test.windows[~ham] >= gate):.1%} of the test spam\n"
    )
    print("| score | (1 − ROCA) % | recall at 0.1 % FPR | at 0.5 % FPR |")
    print("| --- | --- | --- | --- |")
    for name, score in scores.items():
        print(
            f"| {name} | {one_minus_roca_percent(y, score):.3f} | "
            f"{recall_at_fpr(y, score, 0.001):.1%} | {recall_at_fpr(y, score, 0.005):.1%} |"
        )
    cuts = {(name, k): np.sort(s[ham])[::-1][k] for name, s in scores.items() for k in HAM_ABOVE}
    split = load_split(args.seed)
    pool = ham_pool(split, DEFAULT_WORKDIR / "evasion")
    changed = changed_spam(split, pool, None, args.seed)
    changed["interleaved, twice"] = [
        interleaved_ham_lines(raw, random.Random(f"{args.seed}:twice:{i}"), pool)
        for i, raw in enumerate(changed["interleaved_ham_lines"])
    ]
    print(f"\nrecall where {' / '.join(map(str, HAM_ABOVE))} test ham score above the cut\n")
    print("| change to the spam | " + " | ".join(scores) + " |")
    print("| --- |" + " --- |" * len(scores))
    for trick, messages in changed.items():
        found = Readings(classifier, messages, args.budget).scores(penalties, gate)
        cells = [
            " / ".join(f"{np.mean(found[name] > cuts[name, k]):.1%}" for k in HAM_ABOVE) for name in scores
        ]
        print(f"| {trick} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
