"""``train --members N``: N runs of the recipe from different initial weights, read as one model.

Each member is an ordinary training run (``train_loop.train_classifier``) with its own seed: member
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
from .metrics import compute_metrics, threshold_sweep
from .model import SpamClassifier, SpamEnsemble
from .train_loop import EpochCallback, ProgressCallback, TrainingRecord, inputs_digest, train_classifier
from .train_options import MEMBER_SEED_STEP, TrainOptions

Arrays = tuple[np.ndarray, np.ndarray]  # token ids (N, T) and labels (N,)
FINISHED_MEMBER = "member-{}.pt"  # in the output directory until the model directory is complete
_BATCH = 32


def member_seed(seed: int, member: int) -> int:
    return seed + member * MEMBER_SEED_STEP


def finished_members(out: Path) -> list[Path]:
    """The member files an interrupted run left in ``out``, in member order."""
    return sorted(out.glob(FINISHED_MEMBER.format("*")), key=lambda path: path.name)


def train_members(
    options: TrainOptions,
    build: Callable[[int], SpamClassifier],
    train: Arrays,
    validation: Arrays,
    test: Arrays,
    *,
    state_path: Path,
    stage: Callable[[str], None],
    on_step: ProgressCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> tuple[SpamEnsemble, TrainingRecord]:
    """Train ``options.members`` classifiers (``build(seed)`` makes each, untrained) and return them
    as one ensemble, with the first member's record (its epochs, its curves) holding the ensemble's
    scores and a summary of every member (``TrainingRecord.members``)."""
    config = options.training
    if not options.resume:  # members an earlier run left are not this run's
        for leftover in finished_members(options.out):
            leftover.unlink()
    members, records = [], []
    for index in range(options.members):
        seed = member_seed(config.seed, index)
        stage(f"member {index + 1} of {options.members} (seed {seed})")
        classifier = build(seed)
        finished = options.out / FINISHED_MEMBER.format(index)
        if options.resume and finished.is_file():
            record = _load_member(finished, classifier)
            expected = asdict(replace(config, seed=seed))
            if record.config != expected or record.inputs_sha256 != inputs_digest(
                classifier, train, validation, test
            ):
                raise TrainingError(
                    f"cannot resume from {finished}: it was trained with other options or data"
                )
        else:
            record = train_classifier(
                classifier,
                train,
                validation,
                test,
                replace(config, seed=seed),
                device=options.device,
                on_step=on_step,
                on_epoch=on_epoch,
                on_stage=stage,
                state_path=state_path,
                resume=options.resume,
            )
            # the state first: stopped between the two, this member trains again, where the other
            # order would leave a finished member's state for the next member to resume from
            state_path.unlink(missing_ok=True)
            _save_member(finished, classifier, record)
        members.append(classifier.to(options.device))  # a member read from its file is on the CPU
        records.append(record)
    ensemble = SpamEnsemble(members).to(options.device).eval()
    return ensemble, ensemble_record(ensemble, records, train, validation, test)


def ensemble_record(
    ensemble: SpamEnsemble, records: list[TrainingRecord], train: Arrays, validation: Arrays, test: Arrays
) -> TrainingRecord:
    """The first member's record with the ensemble's scores and accuracies, and every member's
    seed, kept epoch and validation losses."""
    parts = (("train", train), ("validation", validation), ("test", test))
    scores = {name: spam_probabilities(ensemble, ids) for name, (ids, _) in parts}
    record = replace(
        records[0],
        trainable_parameters=sum(r.trainable_parameters for r in records),
        test=compute_metrics(test[1], scores["test"]).to_dict(),
        test_threshold_sweep=[asdict(point) for point in threshold_sweep(test[1], scores["test"])],
        test_spam_probability=scores["test"].tolist(),
        validation_spam_probability=scores["validation"].tolist(),
        train_spam_probability=scores["train"].tolist(),
        train_accuracy=_accuracy(scores["train"], train[1]),
        validation_accuracy=_accuracy(scores["validation"], validation[1]),
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
    return record


def spam_probabilities(model: SpamClassifier | SpamEnsemble, ids: np.ndarray) -> np.ndarray:
    """P(spam) of each row of right-padded ``ids``, through torch."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for begin in range(0, len(ids), _BATCH):
            batch = torch.as_tensor(ids[begin : begin + _BATCH], dtype=torch.long, device=device)
            out.append(torch.softmax(model(batch), dim=-1)[:, 1].double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


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
