"""The evasion benchmark's tricks against cached model directories, scored as ``spamfilter filter``
scores them (the default variant, int8, the model's windows), at fixed numbers of test ham.

For each split (``--seeds``) and each ``bench_recipe`` row (``--rows``, trained there first): the
split's test ham and its test spam, untouched and changed by each trick of ``bench_evasion``, plus
ham replies quoting a test spam; spam recall where 1 and 3 test ham score above the cut (each model
at its own cut: above its (k + 1)-th highest test ham), and the share of the replies marked spam
at that cut. Tricks at the model's threshold with the peers beside it are ``bench_evasion``'s.

    python -m benchmarks.bench_tricks --rows line-ends+window64+avg995,members3-L1 --seeds 123,7,11
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from spamfilter.corrections import CORRECTIONS_DIR
from spamfilter.mail import extract_text
from spamfilter.memory import Memory, write_memory
from spamfilter.runtime import Classifier

from .bench_evasion import OUT, Split, changed_spam, cpu_line, ham_pool, load_split, replies_quoting
from .common import script_parser, table
from .mail_corpus import recipe_dir

HAM_ALLOWED = (1, 3)


def scores(classifier: Classifier, messages: list[bytes]) -> np.ndarray:
    return classifier.spam_probability([extract_text(raw) for raw in messages])


def remembering_copy(folder: Path, split: Split) -> Path:
    """A copy of a model folder whose shared memory holds the split's training mail."""
    copy = Path(tempfile.mkdtemp(prefix="bench-tricks-")) / folder.name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.pt", "*.png", "users", "corrections"))
    (copy / CORRECTIONS_DIR).mkdir()
    entries = [
        (f"train-{label}-{number}", label, extract_text(raw), 0.0)
        for label, messages in ((1, split.train_spam), (0, split.train_ham))
        for number, raw in enumerate(messages)
    ]
    write_memory(copy / CORRECTIONS_DIR, Memory.of(entries))
    return copy


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--rows", default="line-ends+window64+avg995,members3-L1")
    parser.add_argument("--seeds", default="123,7,11")
    parser.add_argument(
        "--remember-training",
        action="store_true",
        help="each model with a memory of its split's training mail (spamfilter.memory), as if every "
        "training message had been filed as a correction: scored from a copy of the model folder",
    )
    args = parser.parse_args()
    rows, seeds = args.rows.split(","), [int(s) for s in args.seeds.split(",")]
    lines, heads = [], ["split", "change to the spam"]
    heads += [f"{row} at {k} ham" for row in rows for k in HAM_ALLOWED]
    for seed in seeds:
        split = load_split(seed)
        pool = ham_pool(split, OUT)
        changed = changed_spam(split, pool, None, seed)
        changed["ham replies quoting a spam (marked spam)"] = replies_quoting(split.test_spam, pool, seed)
        found: dict[str, list[str]] = {name: [] for name in changed}
        for row in rows:
            folder = recipe_dir(seed) / row
            if not (folder / "spamfilter.json").is_file():
                train = f"python -m benchmarks.bench_recipe --rows {row} --seed {seed}"
                raise SystemExit(f"{folder}: not trained ({train})")
            if args.remember_training:
                folder = remembering_copy(folder, split)
            classifier = Classifier.load(folder)
            ham = np.sort(scores(classifier, split.test_ham))[::-1]
            for name, messages in changed.items():
                p = scores(classifier, messages)
                found[name] += [f"{100 * float((p > ham[k]).mean()):.1f} %" for k in HAM_ALLOWED]
        lines += [[seed, name, *cells] for name, cells in found.items()]
    print(f"CPU: {cpu_line()}")
    print(table(heads, lines))


if __name__ == "__main__":
    main()
