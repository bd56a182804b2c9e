"""The frozen-layers fine-tuning recipe: which parameters train, the loop, and evaluation.

With dropout 0 the frozen blocks below the first trainable one give the same output for an example
in every epoch, so by default that output is computed once (``cache_frozen``) and only the
trainable part runs per step, its last block only where the head reads: the same losses as the
straightforward loop, several times faster.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import TrainingError, first_line
from .metrics import Metrics, compute_metrics, threshold_sweep
from .model import SpamClassifier

# Declared torch-free in train_options, where the command line reads their defaults.
from .train_options import TRAINABLE_CHOICES as TRAINABLE_CHOICES
from .train_options import TrainingConfig as TrainingConfig

_DEFAULT_CONFIG = TrainingConfig()


def set_trainable(classifier: SpamClassifier, trainable: str) -> int:
    """Freeze everything, then unfreeze what ``trainable`` names; returns the first block that trains.

    The new head always trains. ``last-block`` (the recipe) adds the last transformer block and the
    final LayerNorm; ``last-two-blocks`` the last two; ``all`` every parameter; ``head`` nothing more.
    """
    gpt = classifier.gpt
    n_layer = gpt.config.n_layer
    first_block = {"last-block": n_layer - 1, "last-two-blocks": n_layer - 2, "all": 0, "head": n_layer}
    if trainable not in first_block:
        raise TrainingError(
            f"unknown --trainable {trainable!r}; choose one of {', '.join(TRAINABLE_CHOICES)}"
        )
    start = max(first_block[trainable], 0)
    for parameter in classifier.parameters():
        parameter.requires_grad = trainable == "all"
    for block in gpt.h[start:]:
        block.requires_grad_(True)
    if trainable != "head":
        gpt.ln_f.requires_grad_(True)
    gpt.lm_head.requires_grad_(True)
    return start


def count_trainable(classifier: torch.nn.Module) -> int:
    return sum(p.numel() for p in classifier.parameters() if p.requires_grad)


@dataclass
class EvalPoint:
    step: int
    examples_seen: int
    train_loss: float
    validation_loss: float


@dataclass
class EpochRecord:
    """Loss and accuracy after an epoch, on the whole train and validation splits."""

    epoch: int
    train_loss: float
    validation_loss: float
    train_accuracy: float
    validation_accuracy: float
    seconds: float


@dataclass
class TrainingRecord:
    config: dict[str, Any]
    trainable_parameters: int
    inputs_sha256: str = ""  # of the three splits' ids and labels and the pooling: what --resume checks
    epochs: list[EpochRecord] = field(default_factory=list)
    eval_points: list[EvalPoint] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    test: dict[str, Any] = field(default_factory=dict)
    test_threshold_sweep: list[dict[str, float | None]] = field(default_factory=list)
    test_spam_probability: list[float] = field(default_factory=list)
    train_accuracy: float = 0.0
    validation_accuracy: float = 0.0
    best_epoch: int = 0  # the epoch whose weights were kept (the last one unless keep_best)
    class_weights: list[float] = field(default_factory=list)  # of the loss, not-spam then spam
    validation_spam_probability: list[float] = field(default_factory=list)  # for the threshold
    # Of the training split's first windows: their ham, with its later windows, helps to place a
    # threshold for a small budget (spamfilter.calibration). Not written to training.json.
    train_spam_probability: list[float] = field(default_factory=list, repr=False)
    seconds: float = 0.0
    # train --members: each member's seed, kept epoch, validation losses and seconds (the epochs
    # and curves above are the first member's, the scores and accuracies the ensemble's)
    members: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        del record["train_spam_probability"]  # thousands of scores nobody reads back
        if not self.members:
            del record["members"]  # a single run's record stays as it was
        return record

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingRecord:
        """The record :meth:`to_dict` wrote."""
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        known["epochs"] = [EpochRecord(**e) for e in known.get("epochs", [])]
        known["eval_points"] = [EvalPoint(**p) for p in known.get("eval_points", [])]
        return cls(**known)


class _Inputs:
    """One split as model inputs: token ids plus, when cached, the frozen blocks' output."""

    def __init__(
        self,
        classifier: SpamClassifier,
        ids: np.ndarray,
        labels: np.ndarray,
        start_block: int,
        cache: bool,
        device: torch.device,
    ) -> None:
        self.ids = torch.tensor(ids, dtype=torch.long, device=device)  # a copy: inputs may be read-only
        self.labels = torch.tensor(labels, dtype=torch.long, device=device)
        self.start_block = start_block
        self.hidden: torch.Tensor | None = None
        if cache and start_block > 0:
            gpt = classifier.gpt
            chunks = []
            with torch.no_grad():
                for begin in range(0, len(self.ids), 32):
                    chunks.append(gpt.blocks_before(self.ids[begin : begin + 32], start_block))
            self.hidden = torch.cat(chunks)  # (N, T, C)

    def __len__(self) -> int:
        return len(self.ids)

    def logits(self, classifier: SpamClassifier, index: torch.Tensor | slice) -> torch.Tensor:
        ids = self.ids[index]
        if self.hidden is None:
            return classifier(ids)
        return classifier.logits_from_block(self.hidden[index], ids, self.start_block)

    def training_logits(self, classifier: SpamClassifier, index: torch.Tensor) -> torch.Tensor:
        """(B, R, 2): the logits each row is trained on (:meth:`SpamClassifier.training_logits`)."""
        ids = self.ids[index]
        if self.hidden is None:
            return classifier.training_logits(classifier.gpt.embed(ids), ids, 0)
        return classifier.training_logits(self.hidden[index], ids, self.start_block)

    def features(self, classifier: SpamClassifier) -> np.ndarray:
        """(N, C) float32: what the head reads of every row, from the frozen blocks' cached output
        where there is one (a second full pass over gpt2-small would take as long as the cache)."""
        parts = []
        with torch.no_grad():
            for index in _batches(len(self), EVAL_BATCH_SIZE):
                ids = self.ids[index]
                if self.hidden is None:
                    parts.append(classifier.features(ids))
                else:
                    parts.append(classifier.features_from_block(self.hidden[index], ids, self.start_block))
        size = classifier.gpt.config.n_embd
        return torch.cat(parts).float().cpu().numpy() if parts else np.zeros((0, size), dtype=np.float32)


EVAL_BATCH_SIZE = 32  # batch size of whole-split evaluation (no gradients: larger than training's)


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(b, min(b + batch_size, n)) for b in range(0, n, batch_size)]


def _loss_and_accuracy(
    classifier: SpamClassifier, data: _Inputs, batch_size: int, max_batches: int | None = None
) -> tuple[float, float]:
    total_loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for i, index in enumerate(_batches(len(data), batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            logits = data.logits(classifier, index)
            labels = data.labels[index]
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += int((logits.argmax(dim=-1) == labels).sum().item())
            seen += len(labels)
    return (total_loss / seen, correct / seen) if seen else (float("nan"), float("nan"))


def spam_probabilities(
    classifier: SpamClassifier, data: _Inputs, batch_size: int = EVAL_BATCH_SIZE
) -> np.ndarray:
    out = []
    with torch.no_grad():
        for index in _batches(len(data), batch_size):
            out.append(torch.softmax(data.logits(classifier, index), dim=-1)[:, 1])
    return torch.cat(out).cpu().numpy() if out else np.zeros(0)


ProgressCallback = Callable[[int, int, float], None]  # (step, total steps, loss)
EpochCallback = Callable[[EpochRecord], None]
StageCallback = Callable[[str], None]  # a phase of the run begins (for a log: what it is doing)


def epoch_of_step(step: int, total_steps: int, epochs: int) -> int:
    """The epoch (1-based) that training step ``step`` (1-based, of ``total_steps``) belongs to.

    Every epoch has the same number of steps (the last partial batch is dropped), which is what
    lets a :data:`ProgressCallback` tell the epoch from its (step, total steps) arguments.
    """
    if total_steps <= 0 or epochs <= 0:
        return 1
    steps_per_epoch = max(total_steps // epochs, 1)
    return min((max(step, 1) - 1) // steps_per_epoch + 1, epochs)


def train_classifier(
    classifier: SpamClassifier,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    config: TrainingConfig = _DEFAULT_CONFIG,
    *,
    device: str | torch.device = "cpu",
    on_step: ProgressCallback | None = None,
    on_epoch: EpochCallback | None = None,
    on_stage: StageCallback | None = None,
    state_path: Path | None = None,
    resume: bool = False,
    features: dict[str, np.ndarray] | None = None,
) -> TrainingRecord:
    """Fine-tune ``classifier`` in place on (ids, labels) arrays and evaluate it.

    Mirrors the reference recipe: AdamW, shuffled batches with the last partial batch dropped,
    a loss estimate on ``eval_batches`` batches every ``eval_every`` steps (the recipe's loss
    curves), and test metrics at the end. After each epoch the loss and accuracy are computed on
    the whole train and validation splits (the recipe prints them on ``eval_batches`` batches,
    which can read 100% on 40 messages); after the last epoch they are the record's
    ``train_accuracy`` and ``validation_accuracy``. With ``state_path`` the state after each
    finished epoch (weights, optimizer, shuffling generator, record, the best epoch's weights and
    the weight average) is saved there; ``resume`` continues from it, giving the same result as an
    uninterrupted run. With ``config.weight_average`` the epoch figures, the best epoch and the
    final weights are the average's.
    """
    started = time.perf_counter()
    stage = on_stage or (lambda _: None)
    device = torch.device(device)
    torch.manual_seed(config.seed)
    classifier.to(device)
    start_block = set_trainable(classifier, config.trainable)
    record = TrainingRecord(
        config=asdict(config),
        trainable_parameters=count_trainable(classifier),
        inputs_sha256=_inputs_sha256(_reading(classifier), train, validation, test),
    )
    classifier.eval()  # dropout is 0 anyway; eval mode keeps the cached and live paths identical
    if config.cache_frozen and start_block > 0:  # a full forward pass over every message: it takes a while
        stage(f"computing the {start_block} frozen blocks' output once for all epochs")
    splits = [
        _Inputs(classifier, ids, labels, start_block, config.cache_frozen, device)
        for ids, labels in (train, validation, test)
    ]
    train_data, validation_data, test_data = splits
    weights = _class_weights(train[1]) if config.weighted_loss else None
    record.class_weights = weights.tolist() if weights is not None else []
    loss_weight = weights.to(device) if weights is not None else None
    optimizer = torch.optim.AdamW(
        [p for p in classifier.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = len(train_data) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    step = examples_seen = 0
    first_epoch = 1
    last_epoch: EpochRecord | None = None  # of this process: the final model's whole-split figures
    best = _BestEpoch(classifier)
    average = _WeightAverage(classifier, config.weight_average) if config.weight_average else None
    if resume and state_path is not None and state_path.is_file():
        first_epoch, step, examples_seen = _restore_state(
            state_path, classifier, optimizer, generator, record, best, average
        )
    for epoch in range(first_epoch, config.epochs + 1):
        if config.keep_best and best.out_of_patience(epoch, config.patience):
            stage(
                f"stopping early: no better validation loss in the {config.patience} epochs after "
                f"epoch {best.epoch}"
            )
            break
        epoch_started = time.perf_counter()
        order = torch.randperm(len(train_data), generator=generator).to(device)
        for b in range(steps_per_epoch):
            index = order[b * config.batch_size : (b + 1) * config.batch_size]
            optimizer.zero_grad()
            logits = train_data.training_logits(classifier, index)  # (B, R, 2)
            labels = train_data.labels[index].repeat_interleave(logits.shape[1])
            loss = F.cross_entropy(logits.flatten(0, 1), labels, weight=loss_weight)
            loss.backward()
            optimizer.step()
            if average is not None:
                average.update()
            step += 1
            examples_seen += len(index)
            record.step_losses.append(loss.item())
            if step % config.eval_every == 0:
                train_loss, _ = _loss_and_accuracy(
                    classifier, train_data, config.batch_size, config.eval_batches
                )
                val_loss, _ = _loss_and_accuracy(
                    classifier, validation_data, config.batch_size, config.eval_batches
                )
                record.eval_points.append(EvalPoint(step, examples_seen, train_loss, val_loss))
            if on_step is not None:
                on_step(step, total_steps, loss.item())
        # Per-epoch figures on the whole splits (cheap with the frozen blocks cached), of the
        # averaged weights where they are averaged: those are the ones a kept epoch keeps.
        if average is not None:
            average.swap()
        train_loss, train_accuracy = _loss_and_accuracy(classifier, train_data, EVAL_BATCH_SIZE)
        val_loss, val_accuracy = _loss_and_accuracy(classifier, validation_data, EVAL_BATCH_SIZE)
        epoch_record = EpochRecord(
            epoch, train_loss, val_loss, train_accuracy, val_accuracy, time.perf_counter() - epoch_started
        )
        record.epochs.append(epoch_record)
        last_epoch = epoch_record
        best.offer(epoch_record, classifier)
        if average is not None:
            average.swap()  # training goes on from the optimizer's own weights
        if state_path is not None:
            _save_state(
                state_path,
                classifier,
                optimizer,
                generator,
                record,
                epoch,
                step,
                examples_seen,
                best,
                average,
            )
        if on_epoch is not None:
            on_epoch(epoch_record)
    if average is not None:
        average.swap()  # the model is the average from here on
    record.best_epoch = record.epochs[-1].epoch if record.epochs else 0
    if config.keep_best and best.epoch and best.epoch != record.best_epoch:
        best.restore(classifier)
        record.best_epoch = best.epoch
        last_epoch = next(e for e in record.epochs if e.epoch == best.epoch)
    if last_epoch is not None:  # the model has not changed since: no second pass over the splits
        record.train_accuracy = last_epoch.train_accuracy
        record.validation_accuracy = last_epoch.validation_accuracy
    else:  # resumed after the last epoch had finished
        record.train_accuracy = _loss_and_accuracy(classifier, train_data, EVAL_BATCH_SIZE)[1]
        record.validation_accuracy = _loss_and_accuracy(classifier, validation_data, EVAL_BATCH_SIZE)[1]
    stage("evaluating on the test split")
    probabilities = spam_probabilities(classifier, test_data)
    test_metrics: Metrics = compute_metrics(test[1], probabilities)
    record.test = test_metrics.to_dict()
    record.test_threshold_sweep = [asdict(point) for point in threshold_sweep(test[1], probabilities)]
    record.test_spam_probability = probabilities.tolist()
    record.validation_spam_probability = spam_probabilities(classifier, validation_data).tolist()
    record.train_spam_probability = spam_probabilities(classifier, train_data).tolist()
    if features is not None:  # what the head reads of each split, for `spamfilter learn`
        for name, data in zip(("train", "validation", "test"), splits, strict=True):
            features[name] = data.features(classifier)
    record.seconds = time.perf_counter() - started
    return record


def _class_weights(labels: np.ndarray) -> torch.Tensor:
    """Inverse class frequency, scaled so that a balanced split gets (1, 1): each class then adds
    as much to the loss as it would after undersampling, without discarding any message."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=2).astype(np.float64)
    if (counts == 0).any():
        raise TrainingError("the training split needs both spam and not-spam messages")
    return torch.tensor(counts.sum() / (2 * counts), dtype=torch.float32)


class _BestEpoch:
    """The trainable weights of the epoch with the lowest validation loss so far (a copy on the CPU:
    only what trains, so gpt2-small's frozen blocks are not copied)."""

    def __init__(self, classifier: SpamClassifier) -> None:
        self.names = [name for name, p in classifier.named_parameters() if p.requires_grad]
        self.epoch = 0
        self.loss = float("inf")
        self.weights: dict[str, torch.Tensor] = {}

    def offer(self, record: EpochRecord, classifier: SpamClassifier) -> None:
        if record.validation_loss < self.loss:  # NaN never improves
            self.epoch, self.loss = record.epoch, record.validation_loss
            parameters = dict(classifier.named_parameters())
            self.weights = {name: parameters[name].detach().cpu().clone() for name in self.names}

    def out_of_patience(self, epoch: int, patience: int) -> bool:
        """Whether ``patience`` epochs have passed since the best one (before running ``epoch``)."""
        return patience > 0 and self.epoch > 0 and epoch - 1 - self.epoch >= patience

    def restore(self, classifier: SpamClassifier) -> None:
        parameters = dict(classifier.named_parameters())
        with torch.no_grad():
            for name, value in self.weights.items():
                parameters[name].copy_(value)

    def state(self) -> dict[str, object]:
        return {"epoch": self.epoch, "loss": self.loss, "weights": self.weights}

    def load(self, state: dict[str, object]) -> None:
        self.epoch = int(state["epoch"])  # type: ignore[call-overload]
        self.loss = float(state["loss"])  # type: ignore[arg-type]
        self.weights = dict(state["weights"])  # type: ignore[call-overload]


class _WeightAverage:
    """An exponential moving average of the trainable weights, updated after every step.

    The decay is warmed up as (1 + n) / (10 + n) after n updates (at most ``decay``), so the
    random initial weights fade out within the first steps instead of lingering for 1 / (1 - decay).
    ``swap`` exchanges the average with the live weights in place: called twice, nothing changed."""

    def __init__(self, classifier: SpamClassifier, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise TrainingError(f"the weight average's decay must lie between 0 and 1, not {decay}")
        self.decay = decay
        self.updates = 0
        # the live parameters, found once: update runs after every step
        self.live = {name: p for name, p in classifier.named_parameters() if p.requires_grad}
        self.weights = {name: p.detach().clone() for name, p in self.live.items()}

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, value in self.weights.items():
            value.lerp_(self.live[name], 1.0 - decay)

    @torch.no_grad()
    def swap(self) -> None:
        for name, value in self.weights.items():
            live = self.live[name].clone()
            self.live[name].copy_(value)
            value.copy_(live)

    def state(self) -> dict[str, object]:
        return {"updates": self.updates, "weights": {k: v.cpu() for k, v in self.weights.items()}}

    def load(self, state: dict[str, object]) -> None:
        self.updates = int(state["updates"])  # type: ignore[call-overload]
        saved: dict[str, torch.Tensor] = state["weights"]  # type: ignore[assignment]
        if set(saved) != set(self.weights):
            raise ValueError("its weight average holds other parameters")
        for name, value in self.weights.items():
            value.copy_(saved[name])


def _reading(classifier: SpamClassifier) -> str:
    """How the model reads its input, for the resume check: the pooling, and the attention window
    where one is set (a state saved without one keeps the digest it had)."""
    window = classifier.gpt.config.attention_window
    return classifier.pooling if window is None else f"{classifier.pooling}/attention-window {window}"


def inputs_digest(classifier: SpamClassifier, *splits: tuple[np.ndarray, np.ndarray]) -> str:
    """What a saved state must have been trained on to be continued: the reading and the splits."""
    return _inputs_sha256(_reading(classifier), *splits)


def _inputs_sha256(reading: str, *splits: tuple[np.ndarray, np.ndarray]) -> str:
    digest = hashlib.sha256(reading.encode())
    for ids, labels in splits:
        for array in (ids, labels):
            array = np.ascontiguousarray(array, dtype=np.int64)
            digest.update(repr(array.shape).encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def _save_state(
    path: Path,
    classifier: SpamClassifier,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    record: TrainingRecord,
    epoch: int,
    step: int,
    examples_seen: int,
    best: _BestEpoch,
    average: _WeightAverage | None,
) -> None:
    """Everything needed to continue after ``epoch``; written to a scratch file, then renamed."""
    scratch = path.with_name(path.name + ".partial")
    torch.save(
        {
            "epoch": epoch,
            "step": step,
            "examples_seen": examples_seen,
            "model": classifier.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "record": record.to_dict(),
            "best": best.state(),
            **({"average": average.state()} if average is not None else {}),
        },
        scratch,
    )
    scratch.replace(path)


def _restore_state(
    path: Path,
    classifier: SpamClassifier,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    record: TrainingRecord,
    best: _BestEpoch,
    average: _WeightAverage | None,
) -> tuple[int, int, int]:
    """Load a saved state (``weights_only``: no code from the file); returns (next epoch, step, seen)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        # a state saved before the weight average was an option ran without one
        saved_config = {"weight_average": 0.0, **state["record"]["config"]}
        differing = sorted(
            k
            for k in saved_config.keys() | record.config.keys()
            if saved_config.get(k) != record.config.get(k)
        )
        if differing:
            raise ValueError(f"it was saved with other training options ({', '.join(differing)})")
        if state["record"].get("inputs_sha256") != record.inputs_sha256:
            raise ValueError(
                "it was saved for other training data, --max-length, --pooling or --attention-window"
            )
        classifier.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        if "best" in state:
            best.load(state["best"])
        if average is not None:  # the options match, so a state saved with an average has one
            average.load(state["average"])
    except Exception as error:  # torch.load and load_state_dict raise many types
        raise TrainingError(f"cannot resume from {path}: {first_line(error)}") from None
    saved = state["record"]
    record.epochs = [EpochRecord(**e) for e in saved["epochs"]]
    record.eval_points = [EvalPoint(**p) for p in saved["eval_points"]]
    record.step_losses = list(saved["step_losses"])
    return int(state["epoch"]) + 1, int(state["step"]), int(state["examples_seen"])
