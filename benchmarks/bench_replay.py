"""Filters as they live: the SpamAssassin corpus replayed in date order, each message scored before
its label is seen, then learnt (TREC spam track's immediate-feedback protocol).

The 3,250 messages of ``../shared/data/spamassassin`` are put in the order of their Date headers
(:func:`spamfilter.replay.order_messages`; 18 have no plausible date and keep their place). The
earliest 40 % (1,300 messages: 259 spam, 1,041 ham, up to 2002-09-08) are the past a filter
starts from; the later 60 % (1,950: 241 spam, 1,709 ham) are replayed. Every filter gets the same
past and the same replay:

- spamfilter: the README's mail recipe (2 x 128 GPT-2 from random weights, the ``mail`` row of
  ``bench_recipe``) trained on the past (85 % train, 15 % validation, shuffled with seed 123), then
  during the replay its head retrained as ``learn`` retrains it (``spamfilter.head``; ``--head
  newton`` for a plain refit) on every label fed back so far, every ``--interval`` messages (the
  trunk is never retrained); rows: ``spamfilter-batch`` (no feedback), ``spamfilter`` (every
  label), ``spamfilter-batched`` (every ``--sa-batch`` messages), ``spamfilter-errors`` (only the
  mistakes at its threshold); ``spamfilter-batch-memory`` (the head never retrained) and
  ``spamfilter-memory`` (the head every ``--sa-batch``) with every label remembered at once as a
  correction is (``spamfilter.memory``: near-duplicates of reported spam and ham); the same with
  ``+past`` with the past's training split remembered from the start, as ``train
  --remember-training`` keeps it (``spamfilter-batch+past``: that memory alone, no feedback);
- bogofilter: ``-s``/``-n`` on the past into a private database, then each message scored (``-t``,
  its spamicity to 16 places, by which it is ranked) and registered under its true label: what
  ``-u`` and the user's corrections (``-Sn``/``-Ns``, and unsure messages filed) leave behind;
  ``bogofilter-text`` the same on what spamfilter reads (the reader's text, no header field);
- SpamAssassin: ``sa-learn`` on the past into a private Bayes database, then per block of
  ``--sa-batch`` messages ``spamassassin -L`` (local rules + Bayes, no network tests) scores the
  block and ``sa-learn`` learns it; ranked by its score.

    python -m benchmarks.bench_replay                       # every filter (an hour or more on 2 cores)
    python -m benchmarks.bench_replay --filters spamfilter  # some
    python -m benchmarks.bench_replay --interval 50 --feedback errors
    python -m benchmarks.bench_replay --filters spamassassin --sa-resume   # after an interruption
    python -m benchmarks.bench_replay --from-state ...      # spamfilter from an unfinished training run
    python -m benchmarks.bench_replay --row members3-L1 --seed 7 --filters spamfilter-batch,spamfilter-batched

The spamfilter model is cached in ``benchmarks/.work/replay/model`` (delete it to train again),
each filter's replay scores in ``benchmarks/.work/replay/<filter>.json``; another ``--row`` than
``mail`` in ``benchmarks/.work/replay/<row>/``, another ``--seed`` than 123 in a ``seed-N`` folder
under it (spamfilter only: the peers do not depend on the row or the seed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spamfilter.replay import (
    FEEDBACK,
    HeadFilter,
    HeadTrainer,
    OnlineFilter,
    curve_table,
    fit_head_newton,
    head_probability,
    learning_curve,
    model_head,
    one_minus_roca_percent,
    order_messages,
    plot_learning_curve,
    recall_at_fpr,
    replay,
    retrain_anchored,
    window_features,
)

from .bench_recipe import MEMBERS3_L1, MEMBERS3_L1_LINKS, MEMBERS3_L1_LINKS_ADAPT
from .common import DEFAULT_WORKDIR, script_parser, table_head
from .mail_corpus import MAIL, SEED, load_corpus, shape_file, state_classifier, train_row

OUT = DEFAULT_WORKDIR / "replay"
ROW = MAIL  # the recipe spamfilter is trained with (--row; another row replays in OUT / its name)
RUN_SEED = SEED  # the initial weights, the batches and the past's shuffle (--seed; another in OUT / seed-N)
REPLAY_ROWS = {row.name: row for row in (MAIL, MEMBERS3_L1, MEMBERS3_L1_LINKS, MEMBERS3_L1_LINKS_ADAPT)}
PAST_SHARE = 0.4  # the earliest 40 % train; the later 60 % are replayed
VALIDATION_SHARE = 0.15  # of the past, for the recipe's best epoch and threshold


def replay_folder(row: str, seed: int) -> Path:
    """Where a row's model and replays are cached: the mail row's with seed 123 in OUT itself,
    another row's in a folder of its own, another seed's in a ``seed-N`` folder under it."""
    folder = OUT if row == MAIL.name else OUT / row
    return folder if seed == SEED else folder / f"seed-{seed}"


def temporal_split(raws: list[bytes], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Indexes of the past and of the replay (each in date order), and the undated count."""
    order, undated = order_messages(raws)
    cut = int(PAST_SHARE * len(order))
    return order[:cut], order[cut:], undated


def past_split(past: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The past's train and validation messages (shuffled with the seed)."""
    shuffled = np.random.default_rng(RUN_SEED).permutation(past)
    cut = int(len(shuffled) * (1 - VALIDATION_SHARE))
    return shuffled[:cut], shuffled[cut:]


def train_model(raws: list[bytes], labels: np.ndarray, past: np.ndarray, replayed: np.ndarray) -> Path:
    """The mail recipe on the past; its test split is the replayed messages (the batch figure)."""
    from spamfilter.data import Splits
    from spamfilter.mail import extract_text

    out = OUT / "model"
    if (out / "spamfilter.json").is_file():
        return out

    def frame(indexes: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"Label": labels[indexes], "Text": [extract_text(raws[i]) for i in indexes]})

    train, validation = past_split(past)
    splits = Splits(frame(train), frame(validation), frame(replayed))
    _, seconds = train_row(
        ROW,
        splits,
        out,
        model=str(shape_file(OUT, ROW.layers)),
        seed=RUN_SEED,
        data_origin="mail: SpamAssassin public corpus, the earliest 40 % by date (benchmark)",
    )
    print(f"trained in {seconds:.0f} s", flush=True)
    return out


# --------------------------------------------------------------------------- peers


def mbox_of(raws: list[bytes], indexes: Sequence[int] | np.ndarray) -> bytes:
    """An mbox of the messages (``From `` lines escaped), each with an ``X-Replay-Index`` header
    first, so that a peer's output can be matched to its message whatever it reorders."""
    out = []
    for i in indexes:
        raw = b"X-Replay-Index: %d\n" % i + raws[i]
        raw = re.sub(rb"(?m)^(>*From )", rb">\1", raw)
        out.append(b"From replay@localhost Thu Jan  1 00:00:00 1970\n" + raw.rstrip(b"\n") + b"\n\n")
    return b"".join(out)


def text_message(raw: bytes) -> bytes:
    """A message of the reader's text alone (the Subject line and the body as spamfilter reads
    them): no header field for a peer to learn the corpus's collection from (RESULTS section 24)."""
    from spamfilter.mail import extract_text

    return b"\n" + extract_text(raw).encode("utf-8") + b"\n"


def run_tool(argv: list[str], stdin: bytes = b"", ok: tuple[int, ...] = (0,)) -> bytes:
    done = subprocess.run(["nice", "-n", "10", *argv], input=stdin, capture_output=True, timeout=900)
    if done.returncode not in ok:
        raise RuntimeError(
            f"{argv[0]} exited {done.returncode}: {done.stderr.decode(errors='replace')[:300]}"
        )
    return done.stdout


class Bogofilter:
    """bogofilter with a private database: each message scored (``-t``: its spamicity to 16
    places, for the ranking), then registered under its true label (``-s``/``-n``). That is what
    ``-u`` with the user's corrections leaves in the database (``-u`` registers a message as it
    classified it, a correction moves it with ``-Sn``/``-Ns``, and an unsure one is registered once
    the user says what it is), in one step."""

    threshold = 0.99  # bogofilter's default spam_cutoff

    def __init__(self, raws: list[bytes], folder: Path) -> None:
        self.raws = raws
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.base = ["bogofilter", "-C", "-d", str(folder)]

    def train(self, indexes: np.ndarray, labels: np.ndarray) -> None:
        for label, flag in ((1, "-s"), (0, "-n")):
            chosen = indexes[labels[indexes] == label]
            run_tool([*self.base, flag, "-M"], mbox_of(self.raws, chosen))

    def score(self, indexes: Sequence[int]) -> np.ndarray:
        terse = [*self.base, "-t", "--terse-format=%1.1c %0.16f"]
        return np.asarray([float(run_tool(terse, self.raws[i], ok=(0, 1, 2)).split()[1]) for i in indexes])

    def learn(self, indexes: Sequence[int], labels: Sequence[int]) -> None:
        for index, label in zip(indexes, labels, strict=True):
            run_tool([*self.base, "-s" if label == 1 else "-n"], self.raws[index])


class SpamAssassin:
    """SpamAssassin 4 offline (``-L``: local rules and Bayes, no network tests) with a private Bayes
    database (``HOME`` is a folder of the benchmark's: ``~/.spamassassin``; no auto-learning, no
    expiry). Messages are scored a block at a time (one ``spamassassin --mbox`` process) and the
    block is then learnt with one ``sa-learn`` per class: its start-up costs seconds, so per
    message it would take hours on 2 cores. Ranked by its score."""

    threshold = 5.0  # required_score
    _SCORE = re.compile(rb"^X-Spam-ReplayScore: (-?[0-9.]+)", re.MULTILINE)
    _INDEX = re.compile(rb"^X-Replay-Index: (\d+)", re.MULTILINE)

    def __init__(self, raws: list[bytes], folder: Path, fresh: bool = True) -> None:
        self.raws = raws
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
        (folder / ".spamassassin").mkdir(parents=True, exist_ok=True)
        (folder / ".spamassassin" / "user_prefs").write_text(
            "use_bayes 1\nbayes_auto_learn 0\nbayes_auto_expire 0\nadd_header all ReplayScore _SCORE_\n"
        )
        self.env = {**os.environ, "HOME": str(folder)}

    def _run(self, argv: list[str], mbox: bytes) -> bytes:
        # SpamAssassin reads an mbox from a plain file only (not a pipe)
        batch = Path(self.env["HOME"]) / "batch.mbox"
        batch.write_bytes(mbox)
        done = subprocess.run(
            ["nice", "-n", "10", *argv, "--mbox", str(batch)], capture_output=True, timeout=1800, env=self.env
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} exited {done.returncode}: {done.stderr.decode(errors='replace')[:300]}"
            )
        return done.stdout

    def train(self, indexes: np.ndarray, labels: np.ndarray) -> None:
        self.learn(indexes.tolist(), labels[indexes].tolist())

    def score(self, indexes: Sequence[int]) -> np.ndarray:
        out = self._run(["spamassassin", "-L"], mbox_of(self.raws, indexes))
        found: dict[int, float] = {}
        for chunk in re.split(rb"(?m)^From replay@localhost ", out):
            index, score = self._INDEX.search(chunk), self._SCORE.search(chunk)
            if index and score:
                found[int(index.group(1))] = float(score.group(1))
        missing = [i for i in indexes if i not in found]
        if missing:
            raise RuntimeError(f"spamassassin gave no score for {len(missing)} messages")
        return np.asarray([found[i] for i in indexes])

    def learn(self, indexes: Sequence[int], labels: Sequence[int]) -> None:
        for label, flag in ((1, "--spam"), (0, "--ham")):
            chosen = [i for i, y in zip(indexes, labels, strict=True) if y == label]
            if chosen:
                self._run(["sa-learn", flag], mbox_of(self.raws, chosen))


class Kept:
    """A filter whose scores are written to a file after every block (a run that cannot finish
    still leaves the blocks it replayed)."""

    def __init__(self, inner: OnlineFilter, path: Path, first: int) -> None:
        self.inner, self.path, self.threshold = inner, path, inner.threshold
        self.kept: dict[str, Any] = {"first": first, "indexes": [], "scores": []}

    def score(self, indexes: Sequence[int]) -> np.ndarray:
        scores = self.inner.score(indexes)
        self.kept["indexes"] += [int(i) for i in indexes]
        self.kept["scores"] += scores.tolist()
        self.path.write_text(json.dumps(self.kept))
        return scores

    def learn(self, indexes: Sequence[int], labels: Sequence[int]) -> None:
        self.inner.learn(indexes, labels)


# --------------------------------------------------------------------------- spamfilter


class Taught(HeadFilter):
    """``learn``'s own rule (``spamfilter.head.teach``) instead of one retrain: every message fed
    back so far is a correction weighing a training message of its class (shared among its
    windows), and all their weights double until each one scores on its side of the threshold by
    ``LEARNT_MARGIN`` (at most ``MAX_DOUBLINGS`` times), as ``spamfilter learn`` and the service's
    corrections retrain a head. Every update starts from the trained head."""

    def __init__(self, inner: HeadFilter) -> None:
        self.__dict__.update(inner.__dict__)
        self.messages: list[int] = []
        self.message_labels: list[int] = []
        self.scales: list[float] = []

    def learn(self, indexes: Sequence[int], labels: Sequence[int]) -> None:
        from spamfilter.head import Anchor, Head, teach

        self.messages.extend(indexes)
        self.message_labels.extend(labels)
        rows = [self.windows_of[m] for m in self.messages]
        owners = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
        y = np.repeat(np.asarray(self.message_labels, dtype=np.int64), [len(r) for r in rows])
        taught = teach(
            Head(*self.start),
            self.features[np.concatenate(rows)],
            y,
            self.threshold,
            Anchor(self.trained.features, self.trained.labels, self.trained.weights),
            owners=owners,
            base_weights=self.class_weight[y],
        )
        self.scales.append(taught.scale)
        self.weight = taught.head.weight.astype(np.float64)
        self.bias = taught.head.bias.astype(np.float64)


class Retrained:
    """The whole model trained again, every ``every`` messages, on the past's training split and
    every message replayed so far (the past's validation split stays the validation): what a mail
    server that retrains each night on its users' mail would run. Each model scores the messages
    up to the next retrain (fp32, every window, as ``filter`` scores), with its own threshold."""

    def __init__(
        self, raws: list[bytes], labels: np.ndarray, past: np.ndarray, replayed: np.ndarray, every: int
    ) -> None:
        self.raws, self.labels, self.every = raws, labels, every
        self.train_part, self.validation = past_split(past)
        self.replayed = list(replayed)
        self.seen: list[int] = []
        self.folder = OUT / f"retrained-{every}"
        self.train_seconds: list[float] = []
        self._load(OUT / "model")

    def _load(self, model: Path) -> None:
        from spamfilter.runtime import Classifier

        self.classifier = Classifier.load(model, variant="fp32")
        self.threshold = self.classifier.threshold

    def score(self, indexes: Sequence[int]) -> np.ndarray:
        from spamfilter.mail import extract_text

        return np.asarray(self.classifier.spam_probability([extract_text(self.raws[i]) for i in indexes]))

    def learn(self, indexes: Sequence[int], labels: Sequence[int]) -> None:
        from spamfilter.data import Splits
        from spamfilter.mail import extract_text

        self.seen.extend(indexes)
        if len(self.seen) % self.every or len(self.seen) == len(self.replayed):
            return
        out = self.folder / f"after-{len(self.seen)}"
        if not (out / "spamfilter.json").is_file():

            def frame(chosen: np.ndarray) -> pd.DataFrame:
                texts = [extract_text(self.raws[i]) for i in chosen]
                return pd.DataFrame({"Label": self.labels[chosen], "Text": texts})

            train = np.concatenate([self.train_part, np.asarray(self.seen, dtype=np.int64)])
            validation = frame(self.validation)
            # the test split is not used for anything here: the validation split stands in
            _, seconds = train_row(
                ROW, Splits(frame(train), validation, validation), out, model=str(shape_file(OUT, ROW.layers))
            )
            self.train_seconds.append(seconds)
        self._load(out)


class Frozen:
    """A filter that is never updated: the batch figure over the same order."""

    def __init__(self, inner: HeadFilter) -> None:
        self.inner = inner
        self.threshold = inner.threshold

    def score(self, indexes: Sequence[int]) -> np.ndarray:
        return self.inner.score(indexes)

    def learn(self, indexes: Sequence[int], labels: Sequence[int]) -> None:
        pass


class Remembering:
    """The filter as the service runs it: each label fed back is remembered at once as a correction
    is (``spamfilter.memory``, through ``HeadFilter``'s own memory), while the head is retrained
    only every ``every`` labels (never with ``every`` 0), as ``--learn-after`` retrains it.
    ``labels``: False for a filter that is told nothing (the batch figure of a model whose memory
    holds only its training mail)."""

    def __init__(self, inner: HeadFilter, every: int, labels: bool = True) -> None:
        self.inner, self.every, self.labels = inner, every, labels
        self.threshold = inner.threshold
        self.waiting: tuple[list[int], list[int]] = ([], [])

    def score(self, indexes: Sequence[int]) -> np.ndarray:
        return self.inner.score(indexes)

    def learn(self, indexes: Sequence[int], labels: Sequence[int]) -> None:
        assert self.inner.texts is not None
        if not self.labels:
            return
        for index, label in zip(indexes, labels, strict=True):
            self.inner.memory = self.inner.memory.with_entry(
                str(index), int(label), self.inner.texts[index], 0.0
            )
        self.waiting[0].extend(indexes)
        self.waiting[1].extend(labels)
        if self.every and len(self.waiting[0]) >= self.every:
            self.inner.learn(*self.waiting)  # (remembers them again: the same entries)
            self.waiting = ([], [])


def spamfilter_filter(
    model: Path, raws: list[bytes], replayed: np.ndarray, trainer: HeadTrainer
) -> tuple[HeadFilter, float]:
    """The replayed messages' window features (cached: the trunk never changes), indexed by their
    position in the corpus."""
    from spamfilter.mail import extract_text

    cache = OUT / "features.npz"
    if not cache.is_file():
        started = time.perf_counter()
        features, owners, discounts = window_features(model, [extract_text(raws[i]) for i in replayed])
        seconds = time.perf_counter() - started
        every = np.zeros(len(raws))  # by the message's position in the corpus, as the owners
        every[replayed] = discounts
        np.savez(cache, features=features, owners=replayed[owners], discounts=every, seconds=seconds)
    saved = np.load(cache)
    print(
        f"spamfilter: {len(saved['owners'])} windows of {len(replayed)} messages through the trunk in "
        f"{float(saved['seconds']):.0f} s ({1000 * float(saved['seconds']) / len(replayed):.0f} ms/message)",
        flush=True,
    )
    weight, bias, base_x, base_y, threshold = model_head(model)
    online = HeadFilter(
        weight,
        bias,
        threshold,
        saved["features"],
        saved["owners"],
        base_x,
        base_y,
        trainer,
        # a cache written before the discount: the models of then had none
        discounts=saved.get("discounts"),
    )
    return online, float(saved["seconds"])


_FROM_STATE: dict[Path, tuple[tuple[Any, ...], float]] = {}  # the trunk's pass, once per run


def state_filter(
    state: Path,
    raws: list[bytes],
    labels: np.ndarray,
    past: np.ndarray,
    replayed: np.ndarray,
    trainer: HeadTrainer,
) -> tuple[HeadFilter, float]:
    """The same filter from a training run's saved state (its latest finished epoch's weights)
    where the run has not finished: what the model directory's files would hold, computed here
    (the head, the train split's first-window features, the threshold calibrated on the
    validation split for the recipe's 0.5 % FPR over each message's windows)."""
    if state in _FROM_STATE:
        (weight, bias, threshold, features, owners, base_x, base_y), seconds = _FROM_STATE[state]
        return HeadFilter(weight, bias, threshold, features, owners, base_x, base_y, trainer), seconds
    import torch

    from spamfilter.learn import pooled_features
    from spamfilter.mail import extract_text
    from spamfilter.mail.text import chars_kept  # no model directory here: the cap for this max_length
    from spamfilter.metrics import calibrate_threshold
    from spamfilter.tokenizer import Tokenizer
    from spamfilter.windows import MAX_WINDOWS, windows_of

    saved = torch.load(state, map_location="cpu", weights_only=True)
    classifier = state_classifier(saved)
    epochs = saved["record"]["epochs"]
    print(
        f"spamfilter from the state after epoch {saved['epoch']}: validation losses "
        f"{[round(e['validation_loss'], 4) for e in epochs]}",
        flush=True,
    )
    tokenizer = Tokenizer()
    length = MAIL.max_length

    def windows(indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = tokenizer.encode_batch([extract_text(raws[i])[: chars_kept(length)] for i in indexes])
        found, owners = windows_of(rows, length, MAX_WINDOWS)
        return pooled_features(classifier, tokenizer.pad(found, length, 50256)), indexes[owners]

    train, validation = past_split(past)
    started = time.perf_counter()
    features, owners = windows(replayed)
    seconds = time.perf_counter() - started
    train_rows = tokenizer.encode_batch([extract_text(raws[i])[: chars_kept(length)] for i in train])
    base_x = pooled_features(classifier, tokenizer.pad(train_rows, length, 50256))
    head = classifier.gpt.lm_head
    weight, bias = (
        head.weight.detach().numpy().astype(np.float64),
        head.bias.detach().numpy().astype(np.float64),
    )
    val_x, val_owner = windows(validation)
    val_scores = np.zeros(len(raws))
    np.maximum.at(val_scores, val_owner, head_probability(val_x, weight, bias))
    threshold = calibrate_threshold(
        labels[validation], val_scores[validation], MAIL.target_fpr or 0.005
    ).threshold
    _FROM_STATE[state] = ((weight, bias, threshold, features, owners, base_x, labels[train]), seconds)
    return state_filter(state, raws, labels, past, replayed, trainer)


# --------------------------------------------------------------------------- the table


def run_one(
    name: str,
    args: argparse.Namespace,
    raws: list[bytes],
    labels: np.ndarray,
    past: np.ndarray,
    replayed: np.ndarray,
    model: Path | None,
) -> dict[str, Any]:
    interval, feedback = args.interval, args.feedback
    online: OnlineFilter
    trunk_seconds = 0.0  # spamfilter's pass through the trunk, done once before its replays
    source = name
    start = 0  # where in the replay this run starts (a resumed SpamAssassin run)
    if name == "spamfilter-retrained":
        if model is None:
            raise SystemExit("spamfilter-retrained needs the finished model (not --from-state)")
        online = Retrained(raws, labels, past, replayed, args.retrain_every)
        interval = args.retrain_every
    elif name.startswith("spamfilter"):
        trainer = retrain_anchored if args.head == "package" else fit_head_newton
        if model is None:
            state = OUT / "model" / "training-state.pt"
            source = "the training run's state after its latest finished epoch"
            inner, trunk_seconds = state_filter(state, raws, labels, past, replayed, trainer)
        else:
            inner, trunk_seconds = spamfilter_filter(model, raws, replayed, trainer)
            source = str(model)
        if args.head == "teach":
            inner = Taught(inner)
        online = Frozen(inner) if name == "spamfilter-batch" else inner
        remembering = name.removesuffix("+past")
        if remembering in ("spamfilter-memory", "spamfilter-batch-memory") or name == "spamfilter-batch+past":
            from spamfilter.formats import message_text
            from spamfilter.memory import Memory

            inner.texts = [message_text(raw) for raw in raws]
            if name.endswith("+past"):  # the past's training split, as train --remember-training keeps it
                kept = past_split(past)[0]
                inner.memory = Memory.of((f"past-{i}", int(labels[i]), inner.texts[i], 0.0) for i in kept)
            every = args.sa_batch if remembering == "spamfilter-memory" else 0
            online = Remembering(inner, every, labels=name != "spamfilter-batch+past")
        if name == "spamfilter-batch":
            interval = len(replayed)
        elif name == "spamfilter-errors":
            feedback = "errors"
        elif name == "spamfilter-batched":
            interval = args.sa_batch
    elif name in ("bogofilter", "bogofilter-text"):
        # bogofilter-text reads what spamfilter reads: the reader's text, no header field
        messages = raws if name == "bogofilter" else [text_message(raw) for raw in raws]
        bogofilter = Bogofilter(messages, OUT / f"{name}-db")
        bogofilter.train(past, labels)
        online = bogofilter
    elif name == "spamassassin":
        home = OUT / "spamassassin-home"
        if args.sa_resume:
            # An interrupted run's database holds the past and every block before the one it was
            # scoring (its batch file): the replay continues from there, its scores kept per block.
            found = re.search(rb"X-Replay-Index: (\d+)", (home / "batch.mbox").read_bytes())
            if found is None:
                raise SystemExit(f"no interrupted SpamAssassin replay in {home}")
            start = int(np.flatnonzero(replayed == int(found.group(1)))[0])
            print(f"spamassassin: continuing from message {start + 1} of the replay", flush=True)
            spamassassin = SpamAssassin(raws, home, fresh=False)
        else:
            spamassassin = SpamAssassin(raws, home)
            started = time.perf_counter()
            spamassassin.train(past, labels)
            print(f"spamassassin: the past learnt in {time.perf_counter() - started:.0f} s", flush=True)
        online = Kept(spamassassin, OUT / "spamassassin.partial.json", start)
        interval = args.sa_batch
    else:
        raise SystemExit(f"unknown filter {name}")
    started = time.perf_counter()
    result = replay(
        online,
        replayed[start:],
        labels,
        interval=interval,
        feedback=feedback,
        on_block=lambda done, total: (
            print(f"  {name}: {done}/{total}", flush=True) if done % 390 < interval or done == total else None
        ),
    )
    wall = time.perf_counter() - started
    for line in result.cost_lines():
        print(f"  {name}: {line}", flush=True)
    return {
        "name": name,
        "source": source,
        "first": start,
        "interval": result.interval,
        "feedback": result.feedback,
        "labels": result.labels.tolist(),
        "scores": result.scores.tolist(),
        "verdicts": result.verdicts.tolist(),
        "fed_back": result.fed_back,
        "updates": result.updates,
        "score_seconds": result.score_seconds + trunk_seconds,
        "learn_seconds": result.learn_seconds,
        "wall_seconds": wall,
        **result.figures(),
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        table_head(
            *("filter", "interval, feedback", "(1 - ROCA) %", "spam recall at 0.1 % FPR", "at 0.5 % FPR"),
            *("missed / FP at its threshold", "scoring ms/msg", "updates ms/msg", "replay s"),
        )
    ]
    for r in results:
        n = len(r["labels"])
        how = "none" if r["name"] == "spamfilter-batch" else f"{r['interval']}, {r['feedback']}"
        if r.get("first"):
            how += f" (messages {r['first'] + 1}-{r['first'] + n} only)"
        lines.append(
            f"| {r['name']} | {how} | {r['one_minus_roca_percent']:.3f} | {r['recall_at_0.001']:.1%} | "
            f"{r['recall_at_0.005']:.1%} | {r['spam_missed']} / {r['ham_marked_spam']} | "
            f"{1000 * r['score_seconds'] / n:.1f} | {1000 * r['learn_seconds'] / n:.1f} | "
            f"{r['wall_seconds']:.0f} |"
        )
    return "\n".join(lines)


def same_stretch_table(results: list[dict[str, Any]], kept: dict[str, Any]) -> str:
    """Every filter's figures over the stretch of the replay that an unfinished SpamAssassin run
    scored (``spamassassin.partial.json``), SpamAssassin's included."""
    first, count = int(kept["first"]), len(kept["scores"])
    labels = np.asarray(results[0]["labels"][first : first + count])
    rows = [(r["name"], np.asarray(r["scores"][first : first + count])) for r in results]
    rows.append(("spamassassin", np.asarray(kept["scores"])))
    lines = [
        f"messages {first + 1}-{first + count} of the replay: {int(labels.sum())} spam, "
        f"{int((labels == 0).sum())} ham",
        "",
        table_head("filter", "(1 - ROCA) %", "spam recall at 0.1 % FPR", "at 0.5 % FPR"),
    ]
    for name, scores in rows:
        lines.append(
            f"| {name} | {one_minus_roca_percent(labels, scores):.3f} | "
            f"{recall_at_fpr(labels, scores, 0.001):.1%} | {recall_at_fpr(labels, scores, 0.005):.1%} |"
        )
    return "\n".join(lines)


FILTERS = (
    "spamfilter-batch",
    "spamfilter",
    "spamfilter-batched",
    "spamfilter-errors",
    "spamfilter-retrained",
    "spamfilter-batch-memory",
    "spamfilter-memory",
    "spamfilter-batch+past",
    "spamfilter-batch-memory+past",
    "spamfilter-memory+past",
    "bogofilter",
    "bogofilter-text",
    "spamassassin",
)


HEADS = ("package", "newton", "teach")
_HEAD_ROWS = ("spamfilter", "spamfilter-batched", "spamfilter-errors")  # the rows a head retrain changes


def code_stamp() -> str:
    """A digest of the package code a spamfilter row's scores come from (the head's retrain, the
    replay, the memory): a cached row made by other code is said to be so (a row cached before a
    change to the memory was once reused beside rows made after it)."""
    import hashlib

    import spamfilter

    package = Path(spamfilter.__file__).parent
    digest = hashlib.sha256()
    for name in ("head.py", "replay.py", "memory.py", "windows.py"):
        digest.update((package / name).read_bytes())
    return digest.hexdigest()[:16]


def row_name(name: str, head: str) -> str:
    """A filter's row (and cache file): the head retrain named where it is not the package's."""
    return f"{name}+{head}" if name in _HEAD_ROWS and head != "package" else name


def main() -> None:
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        # One BLAS thread, set before numpy loads: the head's regressions (129 x 129 systems) ran
        # 10-30 times slower with OpenBLAS's threads on a loaded 2-core machine (13-70 ms each
        # with one thread), and a mail server would run its retrain beside the filter anyway.
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "benchmarks.bench_replay", *sys.argv[1:]])
    parser = script_parser(__doc__)
    parser.add_argument("--filters", default=",".join(FILTERS), help=f"some of {','.join(FILTERS)}")
    parser.add_argument("--interval", type=int, default=1, help="spamfilter's head retrain every N messages")
    parser.add_argument("--feedback", choices=FEEDBACK, default="all")
    parser.add_argument(
        "--sa-batch", type=int, default=100, help="SpamAssassin's block (and spamfilter-batched's)"
    )
    parser.add_argument("--block", type=int, default=195, help="messages per point of the learning curve")
    parser.add_argument(
        "--head",
        choices=HEADS,
        default="package",
        help="spamfilter's head retrain: the package's (spamfilter.head), plain Newton, or learn's "
        "rule (teach: weights doubled until every label is learnt)",
    )
    parser.add_argument(
        "--retrain-every",
        type=int,
        default=390,
        help="spamfilter-retrained: the whole model trained again after every N messages",
    )
    parser.add_argument("--fresh", action="store_true", help="replay the filters asked for again")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument(
        "--sa-resume",
        action="store_true",
        help="continue an interrupted SpamAssassin replay from its database",
    )
    parser.add_argument(
        "--from-state", action="store_true", help="spamfilter from the unfinished training run's last epoch"
    )
    parser.add_argument(
        "--row",
        choices=list(REPLAY_ROWS),
        default=MAIL.name,
        help="spamfilter's recipe (bench_recipe's row); another than mail replays spamfilter only, "
        "in a folder of its own",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=SEED,
        help="spamfilter's initial weights, batches and validation part of the past; another than "
        f"{SEED} replays spamfilter only, in a folder of its own",
    )
    args = parser.parse_args()
    global OUT, ROW, RUN_SEED
    OUT, ROW, RUN_SEED = replay_folder(args.row, args.seed), REPLAY_ROWS[args.row], args.seed
    if (args.row != MAIL.name or args.seed != SEED) and not all(
        name.startswith("spamfilter") for name in args.filters.split(",")
    ):
        raise SystemExit("--row and --seed: the peers replay with the default row and seed only")
    raws, labels = load_corpus()
    past, replayed, undated = temporal_split(raws, labels)
    print(
        f"past {len(past)} ({int(labels[past].sum())} spam), replay {len(replayed)} "
        f"({int(labels[replayed].sum())} spam), {undated} without a plausible date",
        flush=True,
    )
    wanted = args.filters.split(",")
    model = None
    if args.from_state:
        print("spamfilter: from the training run's saved state, not a finished model directory", flush=True)
    elif any(w.startswith("spamfilter") for w in wanted):
        model = train_model(raws, labels, past, replayed)
    if args.train_only:
        return
    stamp = code_stamp()
    for name in wanted:  # one file per filter: filters may be replayed by separate runs at once
        row = row_name(name, args.head)
        cache = OUT / f"{row}.json"
        if cache.is_file() and not args.fresh:
            if row.startswith("spamfilter") and json.loads(cache.read_text()).get("code") != stamp:
                print(f"{row}: cached by other scoring code than this (--fresh replays it again)", flush=True)
            continue
        print(f"replaying {row} ...", flush=True)
        result = run_one(name, args, raws, labels, past, replayed, model)
        cache.write_text(json.dumps({**result, "name": row, "code": stamp}))
    rows = [row_name(name, head) for name in FILTERS for head in HEADS]
    done = {
        row: json.loads((OUT / f"{row}.json").read_text()) for row in rows if (OUT / f"{row}.json").is_file()
    }
    results = [done[row] for row in dict.fromkeys(rows) if row in done]
    print(table(results))
    curves = {
        r["name"]: learning_curve(
            np.asarray(r["labels"]), np.asarray(r["scores"]), np.asarray(r["verdicts"]), args.block
        )
        for r in results
        if not r.get("first")  # a resumed run's curve would not line up with the others'
    }
    print()
    print(curve_table(curves))
    partial = OUT / "spamassassin.partial.json"
    kept = done.get("spamassassin") or (json.loads(partial.read_text()) if partial.is_file() else None)
    if kept is not None and (kept["first"] > 0 or len(kept["scores"]) < len(replayed)):
        print("\nSpamAssassin replayed part of the messages; every filter over the same ones:\n")
        print(same_stretch_table([r for r in results if r["name"] != "spamassassin"], kept))
    plot_learning_curve(curves, OUT / "learning_curve.png")
    print(f"\nlearning curve plotted in {OUT / 'learning_curve.png'}")


if __name__ == "__main__":
    main()
