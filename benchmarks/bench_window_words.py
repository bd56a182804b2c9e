"""An experiment, not the product: the word model of bench_word_fusion read per window.

Section 24 of RESULTS.md found that a word model fused with the classifier ranks far better at a
low false-positive rate, but that padding defeats it: read over the whole message, a page of ham
outvotes the offer in one bag of words. Here the word model scores each of the classifier's
windows (the window's own text, decoded from its tokens), its log-odds are fused with that
window's, and the message's score is the highest window's, as the classifier's is. A preamble then
sits in windows of its own and cannot dilute the offer's.

    python -m benchmarks.bench_window_words                 # split 123
    python -m benchmarks.bench_window_words --seed 7
"""

from __future__ import annotations

import numpy as np

from spamfilter.mail import extract_text
from spamfilter.replay import one_minus_roca_percent, recall_at_fpr
from spamfilter.runtime import Classifier, batched_logits, session_logits, softmax_spam
from spamfilter.windows import windows_of

from .bench_evasion import changed_spam, ham_pool, load_split
from .bench_word_fusion import WordModel, arguments, features, log_odds
from .common import DEFAULT_WORKDIR


def window_scores(classifier: Classifier, texts: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every window's GPT-2 log-odds, its text's index, and its text (decoded from its tokens)."""
    recipe = classifier.recipe
    rows = classifier.tokenizer.encode_batch([text[: recipe.chars_kept] for text in texts])
    windows, owners = windows_of(rows, recipe.max_length, recipe.max_windows)
    outputs = batched_logits(
        windows,
        session_logits(classifier.session),
        batch_size=classifier.batch_size,
        max_length=recipe.max_length,
        pad_token_id=recipe.pad_token_id,
        trim=classifier.dynamic_length,
    )
    decode = classifier.tokenizer.encoding.decode
    return log_odds(softmax_spam(outputs)), owners, [decode(w) for w in windows]


def highest(values: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    out = np.full(count, -np.inf)
    np.maximum.at(out, owners, values)
    return out


class Scores:
    """One set of messages read both ways: the GPT-2 windows and the word model's."""

    def __init__(self, classifier: Classifier, words: WordModel, raws: list[bytes]) -> None:
        texts = [extract_text(raw) for raw in raws]
        self.count = len(texts)
        self.gpt, self.owners, window_texts = window_scores(classifier, texts)
        self.words = words.scores([features(b"", text, False) for text in window_texts])
        self.whole_words = words.scores([features(b"", text, False) for text in texts])

    def message(self, name: str, spread: tuple[float, float], weight: float) -> np.ndarray:
        g, w = self.gpt / spread[0], self.words / spread[1]
        if name == "GPT-2":
            return highest(self.gpt, self.owners, self.count)
        if name == "whole fused":
            return highest(g, self.owners, self.count) + weight * self.whole_words / spread[1]
        if name == "window fused":
            return highest(g + weight * w, self.owners, self.count)
        if name == "window one-sided":
            return highest(g + weight * np.maximum(w, 0), self.owners, self.count)
        if name == "window min":  # a window is spam only as far as both models say so
            return highest(np.minimum(g, w), self.owners, self.count)
        raise ValueError(name)


NAMES = ("GPT-2", "whole fused", "window fused", "window one-sided", "window min")


def main() -> None:
    args, model, parts = arguments(__doc__)
    words = WordModel().fit(
        [features(b"", extract_text(raw), False) for raw in parts["train"][0]], parts["train"][1]
    )
    classifier = Classifier.load(model)
    validation = Scores(classifier, words, parts["validation"][0])
    spread = float(validation.gpt.std()), float(validation.words.std())
    test = Scores(classifier, words, parts["test"][0])
    y = parts["test"][1]
    print(f"model {model}, split {args.seed}; word model weight {args.weight}\n")
    print("| score | (1 − ROCA) % | recall at 0.1 % FPR | at 0.5 % FPR |")
    print("| --- | --- | --- | --- |")
    test_scores = {name: test.message(name, spread, args.weight) for name in NAMES}
    for name, score in test_scores.items():
        print(
            f"| {name} | {one_minus_roca_percent(y, score):.3f} | "
            f"{recall_at_fpr(y, score, 0.001):.1%} | {recall_at_fpr(y, score, 0.005):.1%} |"
        )
    ham = y == 0
    cuts = {
        (name, k): np.sort(s[ham])[::-1][k] for name, s in test_scores.items() for k in (1, 3)
    }  # the score of the 2nd / 4th highest test ham: 1 / 3 test ham above it
    split = load_split(args.seed)
    changed = changed_spam(split, ham_pool(split, DEFAULT_WORKDIR / "evasion"), None, args.seed)
    print("\nrecall at 1 / 3 test ham marked spam\n")
    print("| change to the spam | " + " | ".join(NAMES) + " |")
    print("| --- |" + " --- |" * len(NAMES))
    for trick, messages in changed.items():
        scores = Scores(classifier, words, messages)
        cells = []
        for name in NAMES:
            s = scores.message(name, spread, args.weight)
            cells.append(" / ".join(f"{np.mean(s > cuts[name, k]):.1%}" for k in (1, 3)))
        print(f"| {trick} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
