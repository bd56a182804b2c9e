"""An experiment on the replay of ``bench_replay``: a memory of the labelled mail beside the model.

Statistical filters learn a campaign from one reported copy; the model's head, retrained on the
labels, moves 384 weights for all mail at once (RESULTS.md section 33). This asks how much a memory
of the mail itself would add, the way rspamd's fuzzy storage and Razor/Pyzor remember reported
spam: every message's word 5-grams (shingles, of the reader's text, quoted lines already left out),
and for each replayed message, before its label is seen,

- ``spam``: the largest share of a labelled spam's shingles found in it (containment: a spam
  padded with any amount of ham still contains all of its offer);
- ``ham``: the largest Jaccard resemblance to a labelled ham (resemblance, not containment: a spam
  that quotes a known newsletter whole resembles it much less than the newsletter's next issue);

and its score becomes the spamfilter row's log-odds plus ``weight * (spam - ham)``. The memory holds
the past the model was trained on and every label fed back before the message (the replay's order:
no message is compared with itself or with a later one). The scores are those of the cached
replay rows (``bench_replay`` first); nothing is trained here.

    python -m benchmarks.bench_near_duplicates                          # members3-L1, split of the replay
    python -m benchmarks.bench_near_duplicates --row members3-L1+links --weights 2,5,10
"""

from __future__ import annotations

import json
import re

import numpy as np

from spamfilter.mail import extract_text
from spamfilter.replay import one_minus_roca_percent, recall_at_fpr

from .bench_replay import REPLAY_ROWS, SEED, replay_folder, temporal_split
from .common import script_parser, table
from .mail_corpus import load_corpus

SHINGLE_WORDS = 5
_WORD = re.compile(r"\w+")


def shingles(text: str, words: int = SHINGLE_WORDS) -> frozenset[int]:
    """The hashes of the text's runs of ``words`` consecutive words (lower case); a shorter text's
    one run of all its words."""
    found = _WORD.findall(text.lower())
    if not found:
        return frozenset()
    return frozenset(hash(tuple(found[k : k + words])) for k in range(max(1, len(found) - words + 1)))


def memory_evidence(
    sets: list[frozenset[int]], labels: np.ndarray, known: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each message from ``known`` on: the largest containment of an earlier spam's shingles in
    it, and its largest Jaccard resemblance to an earlier ham (the first ``known`` are the past)."""
    spam = np.zeros(len(sets) - known)
    ham = np.zeros(len(sets) - known)
    for t in range(known, len(sets)):
        mine = sets[t]
        if not mine:
            continue
        for earlier in range(t):
            theirs = sets[earlier]
            shared = len(mine & theirs) if theirs else 0
            if not shared:
                continue
            if labels[earlier] == 1:
                spam[t - known] = max(spam[t - known], shared / len(theirs))
            else:
                ham[t - known] = max(ham[t - known], shared / len(mine | theirs))
    return spam, ham


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--row", choices=list(REPLAY_ROWS), default="members3-L1")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--filters", default="spamfilter-batch,spamfilter-batched,spamfilter")
    parser.add_argument("--weights", default="2,5,10", help="log-odds per unit of evidence")
    args = parser.parse_args()
    folder = replay_folder(args.row, args.seed)
    paths = {name: folder / f"{name}.json" for name in args.filters.split(",")}
    for path in paths.values():
        if not path.is_file():
            raise SystemExit(f"{path}: not replayed (python -m benchmarks.bench_replay --row {args.row} ...)")
    raws, labels = load_corpus()
    past, replayed, _ = temporal_split(raws, labels)
    order = np.concatenate([past, replayed])
    sets = [shingles(extract_text(raws[i])) for i in order]
    spam, ham = memory_evidence(sets, labels[order], len(past))
    y = labels[replayed]
    print(
        f"{args.row}, seed {args.seed}: replayed spam with a labelled spam's shingles half contained "
        f"{int((spam[y == 1] >= 0.5).sum())} of {int(y.sum())}; replayed ham resembling a labelled ham "
        f"by half or more {int((ham[y == 0] >= 0.5).sum())} of {int((y == 0).sum())}"
    )
    rows = []
    for name, path in paths.items():
        cached = json.loads(path.read_text())
        if cached["labels"] != y.tolist():
            raise SystemExit(f"{path}: another replay order than this corpus's")
        p = np.clip(np.asarray(cached["scores"], dtype=np.float64), 1e-12, 1 - 1e-12)
        log_odds = np.log(p) - np.log1p(-p)
        for weight in [0.0, *(float(w) for w in args.weights.split(","))]:
            score = log_odds + weight * (spam - ham)
            rows.append(
                [
                    name,
                    "none" if weight == 0 else f"{weight:g}",
                    f"{one_minus_roca_percent(y, score):.3f}",
                    f"{100 * recall_at_fpr(y, score, 0.001):.1f}%",
                    f"{100 * recall_at_fpr(y, score, 0.005):.1f}%",
                ]
            )
    print(table(["spamfilter row", "memory weight", "(1 - ROCA) %", "recall at 0.1 % FPR", "at 0.5 %"], rows))


if __name__ == "__main__":
    main()
