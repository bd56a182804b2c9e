"""What the mail benchmarks share: the SpamAssassin public corpus of ``../shared/data/spamassassin``,
its one split (70/10/20, seed 123: RESULTS section 10), the mail recipe's row and how a row is
trained into a model directory, and a training run's saved state scored as the filter scores.

Nothing runs on import; torch and the training code load inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spamfilter.data import Splits, random_split
from spamfilter.mail import extract_text, iter_mail_source
from spamfilter.windows import MAX_WINDOWS

from .common import DEFAULT_WORKDIR

if TYPE_CHECKING:
    from spamfilter.finetune import TrainResult
    from spamfilter.model import SpamClassifier
    from spamfilter.train_loop import EpochRecord

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "spamassassin"
SOURCES = (("spam.mbox", 1), ("easy_ham.mbox", 0), ("hard_ham.mbox", 0))
SEED = 123  # the split and the initial weights unless a benchmark's --seed says otherwise
# A 2-layer x 128 GPT-2 from random weights (no pretrained weights reach the benchmark machine).
SHAPE = {"n_embd": 128, "n_layer": 2, "n_head": 2, "n_positions": 512, "vocab_size": 50257}
RECIPE_OUT = DEFAULT_WORKDIR / "recipe"  # bench_recipe's rows; other benchmarks reuse its mail row


@dataclass(frozen=True)
class Row:
    """One way of training: the mail recipe's settings unless a row changes them."""

    name: str
    what: str
    parts: str = "text"
    pooling: str = "last-token"
    max_length: int = 256
    balance: str = "weight"
    keep_best: bool = True
    target_fpr: float | None = 0.001
    epochs: int = 8
    lr: float = 5e-4
    augment: bool = False
    interleave: bool = False
    link_copies: bool | None = None  # None: the recipe's
    subject_copies: bool | None = None  # None: the recipe's
    adapt_steps: int | None = None  # None: the recipe's (train --adapt-steps)
    # 0: every earlier position, as every row before the window was measured; None: the recipe's
    attention_window: int | None = 0
    # 0: the optimizer's last weights, as every row before the average was measured; None: the recipe's
    weight_average: float | None = 0.0
    max_windows: int = MAX_WINDOWS  # windows read per message at most (train --max-windows)
    members: int = 1  # runs read as one model (train --members)
    layers: int = SHAPE["n_layer"]  # blocks of each run's GPT-2 (its width stays SHAPE's)
    extra: dict[str, Any] = field(default_factory=dict)


MAIL = Row("mail", "the mail recipe: all ham, weighted loss, best epoch (of 8), threshold for 0.1 % FPR")
# The ablations train at most 3 epochs (hours of rows otherwise on 2 cores). The recipe's best epoch
# is the second (validation loss 0.157, 0.038, 0.080, 0.044, ...): within that budget.
BASE = replace(MAIL, epochs=3)


# --------------------------------------------------------------------------- the corpus and its split


def load_corpus() -> tuple[list[bytes], np.ndarray]:
    """Every message, spam first, in the mailboxes' order (the order the split shuffles)."""
    raws, labels = [], []
    for name, label in SOURCES:
        for raw in iter_mail_source(CORPUS / name, None):
            raws.append(raw)
            labels.append(label)
    return raws, np.asarray(labels, dtype=np.int64)


def split_indexes(labels: np.ndarray, seed: int = SEED) -> Splits:
    """The split, as frames of ``Label`` and ``Index`` (the message's place in the corpus).
    ``random_split``'s shuffle depends only on the row count and the seed, so whatever a benchmark
    reads of the messages, the same messages land in each part."""
    return random_split(pd.DataFrame({"Label": labels, "Index": np.arange(len(labels))}), seed=seed)


def text_splits(
    raws: list[bytes], labels: np.ndarray, seed: int = SEED, read: Callable[[bytes], str] = extract_text
) -> Splits:
    """The split as training reads it: frames of ``Label`` and ``Text`` (``read`` of each message)."""

    def texts(part: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {"Label": part["Label"].to_numpy(), "Text": [read(raws[i]) for i in part["Index"]]}
        )

    cut = split_indexes(labels, seed)
    return Splits(texts(cut.train), texts(cut.validation), texts(cut.test))


def messages_of(part: pd.DataFrame, raws: list[bytes], label: int | None = None) -> list[bytes]:
    """The raw messages of a part of ``split_indexes`` (only those labelled ``label`` if given)."""
    chosen = part if label is None else part[part["Label"] == label]
    return [raws[i] for i in chosen["Index"]]


# --------------------------------------------------------------------------- training a row


def recipe_dir(seed: int = SEED) -> Path:
    """bench_recipe's folder for a split: ``recipe/`` for the default seed, ``recipe/split-<seed>/``."""
    return RECIPE_OUT if seed == SEED else RECIPE_OUT / f"split-{seed}"


def shape_file(folder: Path, layers: int = SHAPE["n_layer"]) -> Path:
    """SHAPE (with ``layers`` blocks) as a config.json that ``--model`` reads, written into ``folder``."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("shape.json" if layers == SHAPE["n_layer"] else f"shape-L{layers}.json")
    path.write_text(json.dumps({**SHAPE, "n_layer": layers}))
    return path


def print_epoch(epoch: EpochRecord) -> None:
    print(
        f"  epoch {epoch.epoch}: validation loss {epoch.validation_loss:.4f} "
        f"acc {epoch.validation_accuracy:.2%} ({epoch.seconds:.0f} s)",
        flush=True,
    )


def train_row(
    row: Row,
    splits: Splits,
    out: Path,
    *,
    model: str | None,
    weights: str = "random",
    seed: int = SEED,
    resume: bool = False,
    data_origin: str = "mail: SpamAssassin public corpus (benchmark)",
) -> tuple[TrainResult, float]:
    """``row``'s recipe trained on ``splits`` into the model directory ``out``; the result and the
    seconds the whole ``fine_tune`` call took. ``seed`` seeds the initial weights and the batches."""
    import time

    from spamfilter.finetune import TrainOptions, fine_tune
    from spamfilter.train_loop import TrainingConfig

    options = TrainOptions(
        model=model,
        weights=weights,
        max_length=row.max_length,
        pooling=row.pooling,
        balance=row.balance,
        keep_best=row.keep_best,
        target_fpr=row.target_fpr,
        augment=row.augment,
        interleave=row.interleave,
        link_copies=row.link_copies,
        subject_copies=row.subject_copies,
        adapt_steps=row.adapt_steps,
        attention_window=row.attention_window,
        weight_average=row.weight_average,
        max_windows=row.max_windows,
        members=row.members,
        training=TrainingConfig(epochs=row.epochs, lr=row.lr, trainable="all", seed=seed, **row.extra),
        out=out,
        resume=resume,
    )
    started = time.perf_counter()
    result = fine_tune(options, splits=splits, data_origin=data_origin, on_epoch=print_epoch)
    return result, time.perf_counter() - started


# --------------------------------------------------------------------------- a training state


def state_classifier(state: dict[str, Any], best: bool = False) -> SpamClassifier:
    """The mail row's classifier with the weights of a loaded ``training-state.pt``: its latest
    finished epoch's, or with ``best`` the best epoch's so far (what the run would keep)."""
    import torch

    from spamfilter.model import GPT, GPTConfig, SpamClassifier, add_classification_head
    from spamfilter.tokenizer import PAD_TOKEN_ID

    gpt = GPT(GPTConfig.from_dict(SHAPE))
    classifier = SpamClassifier(add_classification_head(gpt), MAIL.pooling, PAD_TOKEN_ID)
    classifier.load_state_dict(state["model"])
    # a run with a weight average keeps the average, not the last step's weights
    kept = state["best"] if best else state.get("average")
    if kept is not None:
        with torch.no_grad():
            parameters = dict(classifier.named_parameters())
            for name, value in kept["weights"].items():
                parameters[name].copy_(value)
    return classifier.eval()


def state_scores(
    classifier: SpamClassifier, texts: list[str], max_length: int = MAIL.max_length
) -> np.ndarray:
    """P(spam) of each text as the filter scored it for models trained before every window was read
    (the highest of at most 4 windows), through torch (fp32)."""
    import torch

    from spamfilter.finetune import windowed_probabilities
    from spamfilter.tokenizer import Tokenizer

    tokenizer = Tokenizer()
    rows = tokenizer.encode_batch(texts)
    ids = torch.from_numpy(tokenizer.pad(rows, max_length))
    with torch.no_grad():
        first = torch.cat(
            [torch.softmax(classifier(ids[i : i + 32]), -1)[:, 1] for i in range(0, len(ids), 32)]
        )
    # as the models these benchmarks measured were read: at most 4 windows, no discount
    return windowed_probabilities(
        classifier, tokenizer, rows, first.double().numpy(), max_length, max_windows=4
    )
