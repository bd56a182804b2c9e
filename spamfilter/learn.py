"""``spamfilter learn``: corrections kept with the model, and its head retrained on them.

Training writes ``learn.safetensors``: for every message of the train, validation and test splits,
the vector the classification head reads (the pooled position after the final LayerNorm). The
head is one linear layer, so retraining it on those vectors plus the corrected messages' is a small
logistic regression, and the vectors stay valid however often the head changes. The trunk does not
change: a correction moves the decision, not what the model has learnt to read.

A retrain is kept only if the held-out (test) split did not get worse: no more ham marked spam,
and no more spam missed beyond one message or 1 % of the spam. Otherwise the model directory is
left as it was and the caller is told why.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .corrections import CORRECTIONS_DIR, Corrections
from .errors import ModelDirectoryError, SpamfilterError, first_line
from .metrics import calibrate_threshold, compute_metrics
from .model import SpamClassifier
from .modeldir import open_model_directory
from .pipeline import message_text
from .runtime import chars_kept
from .windows import combine, windows_of, windows_recorded

FEATURES_FILE = "learn.safetensors"
SPLITS = ("train", "validation", "test")
EX_REFUSED = 3  # exit code of a retrain that was refused: the model directory is unchanged

_L2_TO_CURRENT_HEAD = 1e-3  # keeps the new head near the old one where the corrections allow
_MAX_DOUBLINGS = 12  # corrections' weight grows until they are learnt or by at most 2**12


class RetrainRefused(SpamfilterError):
    """A retrain that would have made the model worse on the held-out split."""

    exit_code = EX_REFUSED


# --------------------------------------------------------------------------- features


def pooled_features(classifier: SpamClassifier, ids: np.ndarray, device: str = "cpu") -> np.ndarray:
    """(N, C) float32: what the head reads of each row of token ids."""
    classifier = classifier.to(device).eval()
    out = []
    with torch.no_grad():
        for begin in range(0, len(ids), 32):
            batch = torch.tensor(ids[begin : begin + 32], dtype=torch.long, device=device)
            out.append(classifier.features(batch).float().cpu())
    size = classifier.gpt.config.n_embd
    return torch.cat(out).numpy() if out else np.zeros((0, size), dtype=np.float32)


def write_features(folder: Path, features: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Path:
    """``learn.safetensors``: the features (what the head reads) and labels of the three splits,
    written atomically."""
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    for name in SPLITS:
        tensors[f"{name}_features"] = np.ascontiguousarray(features[name], dtype=np.float32)
        tensors[f"{name}_labels"] = np.asarray(labels[name], dtype=np.int64)
    target = folder / FEATURES_FILE
    handle, scratch = tempfile.mkstemp(prefix=".learn-", dir=folder)
    os.close(handle)
    try:
        save_file(tensors, scratch)
        os.replace(scratch, target)
    finally:
        Path(scratch).unlink(missing_ok=True)
    return target


def _read_features(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    path = folder / FEATURES_FILE
    if not path.is_file():
        raise ModelDirectoryError(
            f"{path} is missing: this model was trained before 'learn' existed; train it again"
        )
    try:
        tensors = load_file(path)
        return {key: tensors[key] for name in SPLITS for key in (f"{name}_features", f"{name}_labels")}
    except Exception as error:  # safetensors raises its own errors for damaged files
        raise ModelDirectoryError(f"{path} is damaged ({first_line(error)}); train again") from None


# --------------------------------------------------------------------------- retraining the head


@dataclass(frozen=True)
class HeldOut:
    """Errors on the held-out split at a threshold."""

    threshold: float
    ham_marked_spam: int
    ham: int
    spam_missed: int
    spam: int

    def line(self) -> str:
        return (
            f"{self.ham_marked_spam}/{self.ham} ham marked spam, {self.spam_missed}/{self.spam} spam "
            f"missed at threshold {self.threshold:.4f}"
        )


@dataclass(frozen=True)
class LearnResult:
    corrections: dict[str, int]  # spam, ham
    before: HeldOut
    after: HeldOut
    unlearnt: int  # corrections the new head still scores against their class
    seconds: float  # the whole retrain: reading, the regression, and writing the model files

    def lines(self) -> list[str]:
        c = self.corrections
        return [
            f"retrained the head on {c['spam']} spam and {c['ham']} ham corrections in {self.seconds:.1f} s",
            f"held-out split before: {self.before.line()}",
            f"held-out split after:  {self.after.line()}",
        ]


def _held_out(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> HeldOut:
    spam = labels == 1
    return HeldOut(
        threshold=threshold,
        ham_marked_spam=int(((probabilities >= threshold) & ~spam).sum()),
        ham=int((~spam).sum()),
        spam_missed=int(((probabilities < threshold) & spam).sum()),
        spam=int(spam.sum()),
    )


def worse(before: HeldOut, after: HeldOut) -> str | None:
    """Why ``after`` is worse than ``before`` on the held-out split, else None."""
    if after.ham_marked_spam > before.ham_marked_spam:
        return (
            f"it marks more held-out ham as spam ({after.ham_marked_spam} instead of "
            f"{before.ham_marked_spam})"
        )
    allowed = max(1, math.ceil(0.01 * before.spam))
    if after.spam_missed > before.spam_missed + allowed:
        return f"it misses more held-out spam ({after.spam_missed} instead of {before.spam_missed})"
    return None


def _probabilities(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> np.ndarray:
    return torch.softmax(features @ weight.T + bias, dim=-1)[:, 1].detach().numpy().astype(np.float64)


def fit_head(
    weight: torch.Tensor,
    bias: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    sample_weight: torch.Tensor,
    iterations: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted logistic regression for the (2, C) head from the current one (L-BFGS, full batch)."""
    start_weight, start_bias = weight.detach().clone(), bias.detach().clone()
    new_weight = start_weight.clone().requires_grad_(True)
    new_bias = start_bias.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [new_weight, new_bias], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe"
    )
    total = sample_weight.sum()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        losses = F.cross_entropy(features @ new_weight.T + new_bias, labels, reduction="none")
        drift = ((new_weight - start_weight) ** 2).sum() + ((new_bias - start_bias) ** 2).sum()
        loss = (losses * sample_weight).sum() / total + _L2_TO_CURRENT_HEAD * drift
        loss.backward()
        return loss

    optimizer.step(closure)
    return new_weight.detach(), new_bias.detach()


LOCK_FILE = ".learn.lock"


@contextlib.contextmanager
def _exclusive(model_dir: Path) -> Iterator[None]:
    """One retrain of a model directory at a time (the service's and a cron job's, say): a second
    one would write model files from a head the first one's record does not describe."""
    with open(model_dir / LOCK_FILE, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpamfilterError(
                f"another retrain of {model_dir} is running; try again when it ends"
            ) from None
        yield


def retrain(model_dir: Path, on_stage: Callable[[str], None] | None = None) -> LearnResult:
    """Retrain the head of ``model_dir`` on its training features and its corrections, and write
    the model directory again if the held-out split did not get worse; ``RetrainRefused`` if it did
    (the directory is then unchanged)."""
    open_model_directory(model_dir)  # a missing directory is named before a lock file is made in it
    with _exclusive(model_dir):
        return _retrain(model_dir, on_stage)


def _retrain(model_dir: Path, on_stage: Callable[[str], None] | None) -> LearnResult:
    from .export import load_checkpoint, write_model_directory
    from .tokenizer import Tokenizer

    stage = on_stage or (lambda _: None)
    started = time.perf_counter()
    directory = open_model_directory(model_dir)
    manifest = directory.manifest
    saved = _read_features(model_dir)
    classifier, checkpoint = load_checkpoint(directory.checkpoint_path)
    corrections = list(Corrections(model_dir))
    if not corrections and not Corrections(model_dir).learnt():  # (all forgotten: retrain without them)
        raise SpamfilterError(f"no corrections in {model_dir / CORRECTIONS_DIR}: learn --spam/--ham MESSAGES")
    stage(f"reading {len(corrections)} corrections")
    tokenizer = Tokenizer()
    # The corrections as the filter reads them: every window of each (windows.py).
    texts = [message_text(path.read_bytes())[: chars_kept(manifest.max_length)] for _, _, path in corrections]
    windows, owners = windows_of(
        tokenizer.encode_batch(texts), manifest.max_length, windows_recorded(manifest.recipe)
    )
    ids = tokenizer.pad(windows, manifest.max_length, manifest.pad_token_id)
    window_features = torch.from_numpy(
        pooled_features(classifier, ids.reshape(len(windows), manifest.max_length))
    )
    message_labels = np.asarray([label for _, label, _ in corrections], dtype=np.int64)
    head = classifier.gpt.lm_head
    taught = _taught_windows(_probabilities(window_features, head.weight, head.bias), owners, message_labels)
    correction_features = window_features[torch.from_numpy(taught)]
    correction_labels = torch.from_numpy(message_labels[owners[taught]])

    train_x = torch.from_numpy(saved["train_features"])
    train_y = torch.from_numpy(saved["train_labels"])
    counts = torch.bincount(train_y, minlength=2).double()
    class_weight = (counts.sum() / (2 * counts.clamp(min=1))).float()  # as the recipe's weighted loss
    test_x, test_y = torch.from_numpy(saved["test_features"]), saved["test_labels"]
    before = _held_out(_probabilities(test_x, head.weight, head.bias), test_y, manifest.threshold)

    stage("retraining the head")
    features = torch.cat([train_x, correction_features])
    labels = torch.cat([train_y, correction_labels])
    # Each correction first counts as much as a training message of its class; while the new head
    # still scores some against their class, their weight doubles (a user's correction must stick).
    scale = 1.0
    for _ in range(_MAX_DOUBLINGS + 1):
        sample_weight = torch.cat([class_weight[train_y], class_weight[correction_labels] * scale])
        weight, bias = fit_head(head.weight, head.bias, features, labels, sample_weight)
        threshold = _threshold(manifest.recipe, saved, weight, bias, manifest.threshold)
        scores = combine(_probabilities(window_features, weight, bias), owners, len(texts))
        unlearnt = int(((scores >= threshold) != (message_labels == 1)).sum())
        if unlearnt == 0:
            break
        scale *= 2
    test_probabilities = _probabilities(test_x, weight, bias)
    after = _held_out(test_probabilities, test_y, threshold)
    counts_by_class = {"spam": int(message_labels.sum()), "ham": int((message_labels == 0).sum())}
    result = LearnResult(counts_by_class, before, after, unlearnt, time.perf_counter() - started)
    # Without corrections (all forgotten) the retrain takes them back out of the head, as the user
    # asked: there is nothing of theirs to check, and the current head is the one carrying them.
    reason = worse(before, after) if corrections else None
    if reason is not None:
        raise RetrainRefused(
            f"retrain refused, the model is unchanged: {reason}; check the corrections in "
            f"{model_dir / CORRECTIONS_DIR} (a message filed under the wrong class?)"
        )

    stage("exporting the retrained model")
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    record: dict[str, Any] = dict(checkpoint.get("manifest", {}))
    record["threshold"] = threshold
    record["metrics"] = {
        **dict(record.get("metrics", {})),
        "test": compute_metrics(test_y, test_probabilities, threshold).to_dict(),
        "learnt": {**counts_by_class, "before": asdict(before), "after": asdict(after)},
    }
    write_model_directory(
        model_dir,
        classifier,
        max_length=manifest.max_length,
        test_ids=checkpoint["test_input_ids"].numpy(),
        test_labels=checkpoint["test_labels"].numpy(),
        manifest=record,
        quantize="int8" if "int8" in manifest.variants else None,
    )
    from .evaluate import EvalReport, write_report

    # The model directory's test report, as train writes it, for the head now in use.
    write_report(
        EvalReport.of(test_y, test_probabilities, threshold, variant="torch", provider="cpu"), model_dir
    )
    Corrections(model_dir).mark_learnt({key: label for key, label, _ in corrections})
    return replace(result, seconds=time.perf_counter() - started)


def _taught_windows(current: np.ndarray, owners: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The windows a correction is learnt from, as indexes: a ham message's every window (the
    filter scores a message by its highest window, so none may say spam), a spam message's
    highest-scoring window under the current head (its others may be ordinary text)."""
    taught: list[int] = []
    for message, label in enumerate(labels):
        mine = np.flatnonzero(owners == message)
        taught.extend(mine.tolist() if label == 0 else [int(mine[np.argmax(current[mine])])])
    return np.asarray(taught, dtype=np.int64)


def _threshold(
    recipe: dict[str, Any],
    saved: dict[str, np.ndarray],
    weight: torch.Tensor,
    bias: torch.Tensor,
    current: float,
) -> float:
    """The threshold for the new head: chosen again on the validation split for the recipe's
    false-positive budget where it had one, else the current one."""
    target = recipe.get("target_fpr")
    if target is None:
        return current
    validation = _probabilities(torch.from_numpy(saved["validation_features"]), weight, bias)
    try:
        return calibrate_threshold(saved["validation_labels"], validation, float(target)).threshold
    except ValueError:  # a validation split with one class: keep the current threshold
        return current
