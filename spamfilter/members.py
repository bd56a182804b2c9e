"""``train --members N``: N runs of the recipe from different initial weights, read as one model.

Each member is an ordinary training run (``finetune.fine_tune``'s, as a single run) with its own seed: member
``i`` uses ``seed + i * MEMBER_SEED_STEP`` for its initial weights (the first member's are those a
single run would have) and for the order of its batches. A finished member's weights and record are
kept in the output directory (``member-<i>.pt``) until the model directory is complete, so that
``--resume`` continues with the first member not finished, from its own saved state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from .errors import TrainingError, first_line
from .learn import pooled_features
from .metrics import compute_metrics, threshold_sweep
from .model import SpamClassifier, SpamEnsemble
from .train_loop import TrainingRecord, inputs_digest
from .train_options import MEMBER_SEED_STEP, TrainOptions

Arrays = tuple[np.ndarray, np.ndarray]  # token ids (N, T) and labels (N,)
FINISHED_MEMBER = "member-{}.pt"  # in the output directory until the model directory is complete


def member_seed(seed: int, member: int) -> int:
    return seed + member * MEMBER_SEED_STEP


def finished_members(out: Path) -> list[Path]:
    """The member files an interrupted run left in ``out``, in member order."""
    return sorted(out.glob(FINISHED_MEMBER.format("*")), key=lambda path: path.name)


TrainRun = Callable[[SpamClassifier, int], TrainingRecord]  # one run of the recipe with this seed


def train_members(
    options: TrainOptions,
    build: Callable[[int], SpamClassifier],
    train_run: TrainRun,
    splits: dict[str, Arrays],
    state_path: Path,
    stage: Callable[[str], None],
) -> tuple[SpamEnsemble, TrainingRecord, dict[str, np.ndarray]]:
    """Train ``options.members`` classifiers (``build(seed)`` makes each untrained, ``train_run``
    trains it as a single run is trained, saving its state in ``state_path``) and return them as
    one ensemble; the first member's record (its epochs, its curves) holding the ensemble's scores
    and a summary of every member (``TrainingRecord.members``); and what the ensemble's head reads
    of each split (``train``, ``validation``, ``test``), for ``spamfilter learn``."""
    if not options.resume:  # members an earlier run left are not this run's
        for leftover in finished_members(options.out):
            leftover.unlink()
    members, records = [], []
    for index in range(options.members):
        seed = member_seed(options.training.seed, index)
        stage(f"member {index + 1} of {options.members} (seed {seed})")
        classifier = build(seed)
        finished = options.out / FINISHED_MEMBER.format(index)
        if options.resume and finished.is_file():
            record = _load_member(finished, classifier)
            expected = asdict(replace(options.training, seed=seed))
            digest = inputs_digest(classifier, splits["train"], splits["validation"], splits["test"])
            if record.config != expected or record.inputs_sha256 != digest:
                raise TrainingError(
                    f"cannot resume from {finished}: it was trained with other options or data"
                )
        else:
            record = train_run(classifier, seed)
            # the state first: stopped between the two, this member trains again, where the other
            # order would leave a finished member's state for the next member to resume from
            state_path.unlink(missing_ok=True)
            _save_member(finished, classifier, record)
        members.append(classifier.to(options.device))  # a member read from its file is on the CPU
        records.append(record)
    ensemble = SpamEnsemble(members).to(options.device).eval()
    features = {name: pooled_features(ensemble, ids, options.device) for name, (ids, _) in splits.items()}
    return ensemble, ensemble_record(ensemble, records, splits, features), features


def ensemble_record(
    ensemble: SpamEnsemble,
    records: list[TrainingRecord],
    splits: dict[str, Arrays],
    features: dict[str, np.ndarray],
) -> TrainingRecord:
    """The first member's record with the ensemble's scores and accuracies (from the features its
    head reads: the head is linear, no second pass over the splits), and every member's seed, kept
    epoch and validation losses."""
    head = ensemble.gpt.lm_head
    weight, bias = head.weight.detach().cpu().double().numpy(), head.bias.detach().cpu().double().numpy()
    scores = {}
    for name, rows in features.items():
        logits = rows.astype(np.float64) @ weight.T + bias
        scores[name] = 1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))  # softmax's spam column
    labels = {name: truth for name, (_, truth) in splits.items()}
    return replace(
        records[0],
        trainable_parameters=sum(r.trainable_parameters for r in records),
        test=compute_metrics(labels["test"], scores["test"]).to_dict(),
        test_threshold_sweep=[asdict(point) for point in threshold_sweep(labels["test"], scores["test"])],
        test_spam_probability=scores["test"].tolist(),
        validation_spam_probability=scores["validation"].tolist(),
        train_spam_probability=scores["train"].tolist(),
        train_accuracy=_accuracy(scores["train"], labels["train"]),
        validation_accuracy=_accuracy(scores["validation"], labels["validation"]),
        seconds=sum(r.seconds for r in records),
        members=[
            {
                "seed": int(r.config["seed"]),
                "best_epoch": r.best_epoch,
                "validation_losses": [round(e.validation_loss, 6) for e in r.epochs],
                "seconds": r.seconds,
            }
            for r in records
        ],
    )


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((probabilities >= 0.5) == (labels == 1))) if len(labels) else 0.0


def _save_member(path: Path, classifier: SpamClassifier, record: TrainingRecord) -> None:
    scratch = path.with_name(path.name + ".partial")
    state = {key: value.cpu() for key, value in classifier.state_dict().items()}
    torch.save({"model": state, "record": record.to_dict()}, scratch)
    scratch.replace(path)


def _load_member(path: Path, classifier: SpamClassifier) -> TrainingRecord:
    """A finished member's weights into ``classifier``, and its record (``weights_only``: no code)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        classifier.load_state_dict(saved["model"])
        record = TrainingRecord.from_dict(saved["record"])
    except Exception as error:  # torch.load raises many types (unpickling, zip, key, shape errors)
        raise TrainingError(f"cannot resume from {path}: {first_line(error)}") from None
    return record
