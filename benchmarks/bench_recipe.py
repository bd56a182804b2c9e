"""The mail recipe, measured: each choice of ``spamfilter train`` on the SpamAssassin public corpus.

One split of the 3,250 messages of ``../shared/data/spamassassin`` (70/10/20, seed 123) for every
row; a 2-layer x 128 GPT-2 from random weights (no pretrained weights reach this machine), every
parameter trained. Each row changes one thing from the row it names, trains, and reports on the
test split: accuracy, spam recall and ham false-positive rate at the threshold chosen on the
validation split for ``--target-fpr`` (0.1 % unless the row says otherwise; with too few
validation ham for it, on the training ham too), spam recall where 0.1 % and 0.5 % of the test ham
are marked spam and (1 - ROC area) % (the figures of record), training time, and the filter's
msgs/s (the model directory's default variant, whole test split, one process).

The "parts" rows change what the model reads of a message: the filter's text (Subject, then the
readable body), and additions of the sender (display name and domain) or of the link hosts.

    python -m benchmarks.bench_recipe                 # every row (about an hour on 2 cores)
    python -m benchmarks.bench_recipe --rows seed,mail   # some rows
    python -m benchmarks.bench_recipe --rows base,+links,body-only --seed 7   # another split
    python -m benchmarks.bench_recipe --pooled base,+links,body-only          # summed over splits

Results are cached per row in ``benchmarks/.work/recipe/results.json`` (``split-<seed>/`` for the
other seeds); ``--fresh`` retrains. ``--seed`` changes both the split and the initial weights, so
rows that differ by a message or two can be compared over several splits: ``--pooled`` sums each
row's test confusion over every split measured.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import replace
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import numpy as np

from spamfilter.data import Splits
from spamfilter.mail import extract_text

from .common import script_parser, table_head

# The corpus, the split and the mail row are shared with the other mail benchmarks; the names stay
# importable from here (bench_threshold, bench_explain).
from .mail_corpus import BASE, MAIL, SEED, Row, load_corpus, recipe_dir, shape_file, text_splits, train_row
from .mail_corpus import RECIPE_OUT as OUT

# The recipe's default reading since section 23 of RESULTS.md, which the rows below vary.
WINDOW64_AVG995 = replace(
    MAIL,
    name="line-ends+window64+avg995",
    what="window 64, the weights a moving average (decay 0.995 per step)",
    pooling="line-ends",
    link_copies=False,
    attention_window=64,
    weight_average=0.995,
)
# Three runs of the mail recipe read as one (train --members 3, a 1-layer shape).
MEMBERS3_L1 = replace(
    WINDOW64_AVG995,
    name="members3-L1",
    what="3 runs of 1 layer (seeds seed, +1000, +2000) read as one, log-odds averaged",
    members=3,
    layers=1,
)
# ... with link-only copies of the training mail: the README's recommendation for mail from
# random weights (section 34 of RESULTS.md).
MEMBERS3_L1_LINKS = replace(
    MEMBERS3_L1,
    name="members3-L1+links",
    what="members3-L1 + link-only copies of training mail",
    link_copies=True,
)
# ... with the trunk first adapted to the training split's text (section 36 of RESULTS.md).
MEMBERS3_L1_LINKS_ADAPT = replace(
    MEMBERS3_L1_LINKS,
    name="members3-L1+links+adapt",
    what="members3-L1+links, the trunk first adapted for 100 steps (train --adapt-steps 100)",
    adapt_steps=100,
)

# ... with copies of the training spam under ham Subjects (section 41 of RESULTS.md).
MEMBERS3_L1_LINKS_SUBJECTS = replace(
    MEMBERS3_L1_LINKS,
    name="members3-L1+links+subjects",
    what="members3-L1+links + copies of the training spam under training ham's Subjects",
    subject_copies=True,
)

ROWS = [
    MAIL,
    replace(BASE, name="base", what="the mail recipe, at most 3 epochs (the ablations' budget)"),
    replace(
        BASE,
        name="seed",
        what="the SMS recipe's choices: undersampled ham, last epoch (of 4), pooling last, threshold 0.5",
        pooling="last",
        balance="undersample",
        keep_best=False,
        target_fpr=None,
        epochs=4,
    ),
    replace(
        BASE, name="pooling-last", what="pooling last (the seed's) instead of last-token", pooling="last"
    ),
    replace(BASE, name="len128", what="--max-length 128", max_length=128),
    replace(BASE, name="+sender", what="+ the sender's display name and domain", parts="text+sender"),
    replace(BASE, name="+links", what="+ the hosts of the links", parts="text+links"),
    replace(BASE, name="len512", what="--max-length 512", max_length=512),
    replace(BASE, name="body-only", what="the body without the Subject", parts="body"),
    replace(
        BASE,
        name="reader",
        what="base with the reader's text (hidden HTML dropped, Unicode, quotes) and windows",
    ),
    replace(BASE, name="reader+augment", what="reader + training spam with ham text around it", augment=True),
    replace(
        MAIL,
        name="line-ends",
        what="the mail row with pooling line-ends",
        pooling="line-ends",
        link_copies=False,
    ),
    replace(
        MAIL,
        name="line-ends+links",
        what="line-ends + link-only copies of training mail",
        pooling="line-ends",
        link_copies=True,
    ),
    replace(
        MAIL,
        name="line-ends+adapt",
        what="line-ends, after 100 steps of train --adapt-steps on the training split",
        pooling="line-ends",
        link_copies=False,
        adapt_steps=100,
    ),
    replace(
        MAIL,
        name="line-ends+window64",
        what="line-ends, each position attending to the first line and the 64 positions up to it",
        pooling="line-ends",
        link_copies=False,
        attention_window=64,
    ),
    replace(
        MAIL,
        name="line-ends+window16",
        what="line-ends, each position attending to the first line and the 16 positions up to it",
        pooling="line-ends",
        link_copies=False,
        attention_window=16,
    ),
    replace(
        MAIL,
        name="line-ends+window32",
        what="line-ends, each position attending to the first line and the 32 positions up to it",
        pooling="line-ends",
        link_copies=False,
        attention_window=32,
    ),
    replace(
        MAIL,
        name="line-ends+window128",
        what="line-ends, each position attending to the first line and the 128 positions up to it",
        pooling="line-ends",
        link_copies=False,
        attention_window=128,
    ),
    replace(
        MAIL,
        name="line-ends+window64+links",
        what="window 64 + link-only copies of training mail",
        pooling="line-ends",
        link_copies=True,
        attention_window=64,
    ),
    WINDOW64_AVG995,
    MEMBERS3_L1,
    replace(
        MEMBERS3_L1,
        name="members3-L1+interleave",
        what="members3-L1 + a copy of each training spam with ham sentences between its lines",
        interleave=True,
    ),
    MEMBERS3_L1_LINKS,
    MEMBERS3_L1_LINKS_ADAPT,
    MEMBERS3_L1_LINKS_SUBJECTS,
    replace(
        MEMBERS3_L1,
        name="members3-L1+win16",
        what="members3-L1 reading at most 16 windows per message",
        max_windows=16,
    ),
    replace(
        WINDOW64_AVG995,
        name="line-ends+window64+avg995+links",
        what="window 64, average 0.995, link-only copies of training mail",
        link_copies=True,
    ),
    replace(
        WINDOW64_AVG995,
        name="line-ends+window64+avg995+win16",
        what="window 64, average 0.995, at most 16 windows read per message",
        max_windows=16,
    ),
    replace(
        MAIL,
        name="line-ends+window32+avg995",
        what="window 32, the weights a moving average (decay 0.995 per step)",
        pooling="line-ends",
        link_copies=False,
        attention_window=32,
        weight_average=0.995,
    ),
    replace(
        MAIL,
        name="line-ends+augment",
        what="line-ends + training spam with ham text around it",
        pooling="line-ends",
        augment=True,
        link_copies=False,
    ),
    replace(
        BASE,
        name="reader+augment+windows",
        what="reader + augment + every window of a long training ham trained as ham",
        augment=True,
    ),
]


# --------------------------------------------------------------------------- what the model reads

_HEADERS = BytesHeaderParser()
_LINK_HOST = re.compile(rb"""https?://([A-Za-z0-9.-]+)""", re.IGNORECASE)


def _sender(raw: bytes) -> str:
    """'From: display name @domain' of a message (decoded; empty where there is none)."""
    try:
        value = str(_HEADERS.parsebytes(raw).get("From", ""))
        name, address = parseaddr(str(make_header(decode_header(value))))
    except Exception:  # a benchmark over real mail: an undecodable header reads as no sender
        return ""
    domain = address.rpartition("@")[2].lower()
    return f"From: {name} @{domain}".strip()


def _link_hosts(raw: bytes, limit: int = 20) -> str:
    hosts = dict.fromkeys(m.group(1).lower().decode("ascii") for m in _LINK_HOST.finditer(raw))
    return "Links: " + " ".join(list(hosts)[:limit])


PARTS: dict[str, Callable[[bytes], str]] = {
    "text": extract_text,
    "body": lambda raw: extract_text(raw).partition("\n")[2],
    "text+sender": lambda raw: _sender(raw) + "\n" + extract_text(raw),
    "text+links": lambda raw: extract_text(raw) + "\n" + _link_hosts(raw),
}


def splits_for(raws: list[bytes], labels: np.ndarray, parts: str, seed: int = SEED) -> Splits:
    """The shared split with ``parts`` of each message: the same messages in each part, whatever it reads."""
    return text_splits(raws, labels, seed, PARTS[parts])


# --------------------------------------------------------------------------- one row


workdir = recipe_dir


def measure(row: Row, raws: list[bytes], labels: np.ndarray, seed: int = SEED) -> dict[str, Any]:
    splits = splits_for(raws, labels, row.parts, seed)
    out = workdir(seed) / row.name
    result, seconds = train_row(row, splits, out, model=str(shape_file(OUT, row.layers)), seed=seed)
    test = result.manifest.metrics["test"]
    sweep = {point["target"]: point["recall"] for point in result.manifest.metrics["test_threshold_sweep"]}
    return {
        "recall_at_0.1%": sweep.get(0.001),
        "recall_at_0.5%": sweep.get(0.005),
        "one_minus_roc_area_percent": 100 * (1 - test["roc_auc"]),
        "row": row.name,
        "what": row.what,
        "accuracy": test["accuracy"],
        "recall": test["recall"],
        "fpr": test["false_positive_rate"],
        "confusion": test["confusion"],
        "threshold": result.threshold,
        "train_messages": len(splits.train)
        if row.balance == "weight"
        else 2 * int(splits.train["Label"].sum()),
        "best_epoch": result.record.best_epoch,
        "epochs_run": len(result.record.epochs),
        "validation_losses": [round(e.validation_loss, 4) for e in result.record.epochs],
        "train_seconds": seconds,
        **speed(out, splits.test["Text"].tolist()),
    }


def mail_model(seed: int = SEED) -> Path:
    """The mail row's model directory for a split: the cached one, else trained once (and recorded
    in the split's results like any row)."""
    out = workdir(seed) / MAIL.name
    if not (out / "spamfilter.json").is_file():
        print(f"training the mail recipe's model into {out} (bench_recipe's mail row, once) ...", flush=True)
        workdir(seed).mkdir(parents=True, exist_ok=True)
        raws, labels = load_corpus()
        result = measure(MAIL, raws, labels, seed)
        cache = workdir(seed) / "results.json"
        done = json.loads(cache.read_text()) if cache.is_file() else {}
        cache.write_text(json.dumps({**done, MAIL.name: result}, indent=2))
    return out


def speed(model_dir: Path, texts: list[str], repeats: int = 3) -> dict[str, Any]:
    """The filter's msgs/s over the test split: the model directory's default variant, batch 8
    (filter's default), best of ``repeats`` passes after a warm-up."""
    from spamfilter.runtime import Classifier

    classifier = Classifier.load(model_dir)
    classifier.spam_probability(texts[:16])
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        classifier.spam_probability(texts)
        best = min(best, time.perf_counter() - started)
    return {"filter_msgs_per_s": len(texts) / best, "variant": classifier.variant}


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        table_head(
            *("row", "what changes", "recall at 0.1 % / 0.5 % FPR", "(1 - ROCA) %", "accuracy"),
            *("spam recall", "ham FPR", "threshold", "best / run epochs", "train s", "filter msgs/s"),
        )
    ]
    for r in results:
        low = "—"  # rows measured before these figures were recorded
        if r.get("recall_at_0.1%") is not None:
            low = f"{r['recall_at_0.1%']:.2%} / {r['recall_at_0.5%']:.2%}"
        area = f"{r['one_minus_roc_area_percent']:.3f}" if "one_minus_roc_area_percent" in r else "—"
        lines.append(
            f"| {r['row']} | {r['what']} | {low} | {area} | {r['accuracy']:.2%} | {r['recall']:.2%} | "
            f"{r['fpr']:.2%} "
            f"({r['confusion'][0][1]}/{sum(r['confusion'][0])}) | {r['threshold']:.3f} | "
            f"{r['best_epoch']} / {r['epochs_run']} | {r['train_seconds']:.0f} | "
            f"{r['filter_msgs_per_s']:.0f} |"
        )
    return "\n".join(lines)


def pooled_table(names: list[str]) -> str:
    """Each row's test errors summed over every split it was measured on."""
    caches = {SEED: OUT / "results.json"}
    caches.update({int(path.parent.name[6:]): path for path in OUT.glob("split-*/results.json")})
    measured = {seed: json.loads(path.read_text()) for seed, path in sorted(caches.items()) if path.is_file()}
    errors = ("spam missed", "ham marked spam", "spam recall", "ham FPR", "seed: missed / FP")
    lines = [table_head("row", "splits", *errors)]
    for name in names:
        found = {seed: results[name] for seed, results in measured.items() if name in results}
        if not found:
            continue
        (ham_ok, fp), (missed, caught) = np.sum([r["confusion"] for r in found.values()], axis=0).tolist()
        each = ", ".join(
            f"{seed}: {r['confusion'][1][0]} / {r['confusion'][0][1]}" for seed, r in found.items()
        )
        lines.append(
            f"| {name} | {len(found)} | {missed} of {missed + caught} | {fp} of {fp + ham_ok} | "
            f"{caught / (missed + caught):.2%} | {fp / (fp + ham_ok):.2%} | {each} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--rows", default=",".join(row.name for row in ROWS))
    parser.add_argument("--seed", type=int, default=SEED, help="the split's and the initial weights'")
    parser.add_argument(
        "--pooled", metavar="ROWS", help="sum these rows' test errors over every split measured, and stop"
    )
    parser.add_argument("--fresh", action="store_true", help="retrain rows already measured")
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="measure msgs/s again for the rows trained (a quiet machine)",
    )
    args = parser.parse_args()
    if args.pooled:
        print(pooled_table(args.pooled.split(",")))
        return
    out = workdir(args.seed)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "results.json"
    done: dict[str, Any] = json.loads(cache.read_text()) if cache.is_file() else {}
    raws, labels = load_corpus()
    print(f"{len(raws)} messages: {int(labels.sum())} spam, {int((labels == 0).sum())} ham")
    wanted = args.rows.split(",")
    if args.fresh:  # the rows asked for are trained again; the others stay in the cache
        done = {name: result for name, result in done.items() if name not in wanted}
    if args.speed_only:
        for row in ROWS:
            if row.name in wanted and row.name in done:
                texts = splits_for(raws, labels, row.parts, args.seed).test["Text"].tolist()
                done[row.name].update(speed(out / row.name, texts))
        cache.write_text(json.dumps(done, indent=2))
    for row in ROWS:
        if row.name not in wanted or row.name in done or args.speed_only:
            continue
        print(f"training {row.name}: {row.what} ...", flush=True)
        done[row.name] = measure(row, raws, labels, args.seed)
        cache.write_text(json.dumps(done, indent=2))
        print(table([done[row.name]]), flush=True)
    print(table([done[row.name] for row in ROWS if row.name in done]))


if __name__ == "__main__":
    main()
