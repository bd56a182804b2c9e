"""An experiment, not the product: would a word model beside the GPT-2 classifier catch more spam at
a low false-positive rate, and would it still hold against padding?

The word model is what statistical filters (bogofilter, SpamAssassin's Bayes, TREC's online
logistic regression) are made of: a logistic regression on the hashed words and word pairs of a
message, present or not, trained by stochastic gradient on bench_recipe's training split. Its
log-odds are added to the GPT-2 model's (each divided by its spread on the validation split,
the word model's weighted by ``--weight``): "fused". "one-sided" adds only the word model's evidence
towards spam (``max(0, ...)``), so that ham text added to a spam can at most take that bonus away.
"headers only" reads the header fields instead of the text, to show what they carry on this corpus.

Every figure is on bench_recipe's test split of a cached mail model (``--model``, default the mail
recipe's current row); the changed spam are bench_evasion's (the same tricks and ham pool), each
counted at the threshold that marks 0.5 % of the test ham spam for that score.

    python -m benchmarks.bench_word_fusion                    # split 123
    python -m benchmarks.bench_word_fusion --seed 7           # another split's cached model
"""

from __future__ import annotations

import argparse
import re
import zlib
from email.parser import BytesHeaderParser
from pathlib import Path

import numpy as np

from spamfilter.mail import extract_text
from spamfilter.replay import one_minus_roca_percent, recall_at_fpr
from spamfilter.runtime import Classifier

from .bench_evasion import changed_spam, ham_pool, load_split
from .common import DEFAULT_WORKDIR, script_parser
from .mail_corpus import SEED, load_corpus, recipe_dir, split_indexes

DIMENSIONS = 1 << 20  # hashed features
EPOCHS = 10
LEARNING_RATE = 0.5
WORDS_READ = 3_000  # words of a text at most, like a statistical filter's token cap
HEADER_FIELDS = ("from", "to", "reply-to", "x-mailer", "content-type", "message-id", "received")
_WORD = re.compile(r"[^\W_]+|[$€£!]")
_HEADERS = BytesHeaderParser()


def features(raw: bytes, text: str, headers_only: bool) -> np.ndarray:
    """The hashed indexes of a message's features: its words and word pairs, or its header fields' words."""
    names: set[str] = set()
    if headers_only:
        parsed = _HEADERS.parsebytes(raw)
        for field in HEADER_FIELDS:
            for value in parsed.get_all(field) or []:
                names.update(f"{field}:{word}" for word in _WORD.findall(str(value).lower())[:60])
    else:
        words = _WORD.findall(text.lower())[:WORDS_READ]
        names.update(f"w:{word}" for word in words)
        names.update(f"b:{a} {b}" for a, b in zip(words, words[1:], strict=False))
    return np.unique(np.fromiter((zlib.crc32(n.encode()) & (DIMENSIONS - 1) for n in names), dtype=np.int64))


class WordModel:
    """Logistic regression on binary features, each message's vector scaled to unit length."""

    def __init__(self) -> None:
        self.weights = np.zeros(DIMENSIONS)
        self.bias = 0.0

    def fit(self, rows: list[np.ndarray], labels: np.ndarray) -> WordModel:
        spam = labels.mean()
        class_weight = {1: 0.5 / spam, 0: 0.5 / (1 - spam)}  # the classes weigh alike, as the recipe's loss
        order = np.random.default_rng(SEED)
        for _ in range(EPOCHS):
            for i in order.permutation(len(rows)):
                step = (labels[i] - self._p(rows[i])) * class_weight[int(labels[i])] * LEARNING_RATE
                self.weights[rows[i]] += step / np.sqrt(len(rows[i]) + 1)
                self.bias += step * 0.1
        return self

    def log_odds(self, row: np.ndarray) -> float:
        return float(self.weights[row].sum() / np.sqrt(len(row) + 1) + self.bias)

    def _p(self, row: np.ndarray) -> float:
        return 1.0 / (1.0 + np.exp(-self.log_odds(row)))

    def scores(self, rows: list[np.ndarray]) -> np.ndarray:
        return np.array([self.log_odds(row) for row in rows])


def log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.asarray(np.log(p / (1 - p)))


Parts = dict[str, tuple[list[bytes], np.ndarray]]  # split name -> (raw messages, labels)


def arguments(doc: str | None) -> tuple[argparse.Namespace, Path, Parts]:
    """The word-model experiments' options (split, model, weight), the model and the split's parts."""
    parser = script_parser(doc)
    parser.add_argument("--seed", type=int, default=SEED, help="bench_recipe's split (default 123)")
    parser.add_argument("--model", type=Path, help="default: the split's line-ends+window64+avg995 model")
    parser.add_argument("--weight", type=float, default=1.5, help="the word model's weight (default 1.5)")
    args = parser.parse_args()
    model = args.model or recipe_dir(args.seed) / "line-ends+window64+avg995"
    raws, labels = load_corpus()
    cut = split_indexes(labels, args.seed)
    parts = {
        name: ([raws[i] for i in part["Index"]], part["Label"].to_numpy())
        for name, part in (("train", cut.train), ("validation", cut.validation), ("test", cut.test))
    }
    return args, model, parts


def main() -> None:
    args, model, parts = arguments(__doc__)
    texts = {name: [extract_text(raw) for raw in part[0]] for name, part in parts.items()}
    classifier = Classifier.load(model)
    gpt = {name: log_odds(classifier.spam_probability(texts[name])) for name in ("validation", "test")}
    y = parts["test"][1]
    print(f"model {model}, split {args.seed}; word model weight {args.weight}\n")
    print("| score | reads | (1 − ROCA) % | recall at 0.1 % FPR | at 0.5 % FPR |")
    print("| --- | --- | --- | --- | --- |")

    def row(name: str, reads: str, score: np.ndarray) -> None:
        print(
            f"| {name} | {reads} | {one_minus_roca_percent(y, score):.3f} | "
            f"{recall_at_fpr(y, score, 0.001):.1%} | {recall_at_fpr(y, score, 0.005):.1%} |"
        )

    row("GPT-2 (the model)", "text", gpt["test"])
    words: dict[bool, tuple[WordModel, dict[str, np.ndarray]]] = {}
    for headers_only in (False, True):
        rows = {
            name: [
                features(raw, text, headers_only)
                for raw, text in zip(parts[name][0], texts[name], strict=True)
            ]
            for name in parts
        }
        word_model = WordModel().fit(rows["train"], parts["train"][1])
        scores = {name: word_model.scores(rows[name]) for name in ("validation", "test")}
        words[headers_only] = (word_model, scores)
        reads = "header fields" if headers_only else "text"
        spread = gpt["validation"].std(), scores["validation"].std()
        row("word model alone", reads, scores["test"])
        row("fused", reads, gpt["test"] / spread[0] + args.weight * scores["test"] / spread[1])
        row(
            "one-sided",
            reads,
            gpt["test"] / spread[0] + args.weight * np.maximum(scores["test"] / spread[1], 0),
        )

    header_model = words[True][0]
    names: dict[int, str] = {}
    for raw in parts["train"][0]:
        parsed = _HEADERS.parsebytes(raw)
        for field in HEADER_FIELDS:
            for value in parsed.get_all(field) or []:
                for word in _WORD.findall(str(value).lower())[:60]:
                    names[zlib.crc32(f"{field}:{word}".encode()) & (DIMENSIONS - 1)] = f"{field}:{word}"
    order = np.argsort(header_model.weights)
    print(
        "\nheader features weighing most towards spam:",
        ", ".join(names.get(int(i), "?") for i in order[::-1][:8]),
    )
    print("header features weighing most towards ham:", ", ".join(names.get(int(i), "?") for i in order[:8]))

    # Against the tricks: the text word model, at 0.5 % test FPR for each score.
    word_model, scores = words[False]
    spread = gpt["validation"].std(), scores["validation"].std()
    ham = y == 0

    def fused(g: np.ndarray, w: np.ndarray, one_sided: bool) -> np.ndarray:
        evidence = w / spread[1]
        return g / spread[0] + args.weight * (np.maximum(evidence, 0) if one_sided else evidence)

    test_scores = {
        "GPT-2": gpt["test"],
        "fused": fused(gpt["test"], scores["test"], False),
        "one-sided": fused(gpt["test"], scores["test"], True),
    }
    cuts = {name: np.sort(s[ham])[::-1][int(0.005 * ham.sum())] for name, s in test_scores.items()}
    split = load_split(args.seed)
    changed = changed_spam(split, ham_pool(split, DEFAULT_WORKDIR / "evasion"), None, args.seed)
    print("\n| change to the spam | GPT-2 | fused | one-sided |")
    print("| --- | --- | --- | --- |")
    for trick, messages in changed.items():
        texts_changed = [extract_text(raw) for raw in messages]
        g = log_odds(classifier.spam_probability(texts_changed))
        w = word_model.scores(
            [features(raw, text, False) for raw, text in zip(messages, texts_changed, strict=True)]
        )
        changed_scores = {"GPT-2": g, "fused": fused(g, w, False), "one-sided": fused(g, w, True)}
        cells = [f"{np.mean(changed_scores[name] > cuts[name]):.1%}" for name in test_scores]
        print(f"| {trick} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
