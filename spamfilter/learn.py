"""``spamfilter learn``: corrections kept with the model, and its head retrained on them, without
torch (the base install and ``serve --allow-tell`` learn).

Training writes ``learn.safetensors``: for every message of the train, validation and test splits,
the vector the classification head reads (the pooled position after the final LayerNorm). The head
is one linear layer; the trunk does not change, so those vectors stay valid however often the head
changes. A correction's vectors come from the ONNX graph's ``features`` output (added in memory to
graphs exported before it existed), and the new head is written over the old one's values in every
ONNX file of the directory (:mod:`spamfilter.onnx_head`), which then switches to them in one rename
(:mod:`spamfilter.modelupdate`): no export, no torch.

How the head is retrained (:mod:`spamfilter.head`): from the current head, as little as the
corrections need, the training messages measuring the distance (the Bregman divergence of their
log-loss; refitting the head on them instead is what changed held-out verdicts while learning
nothing: RESULTS section 14). Each correction first weighs as a training message of its class, and
all double while some are still scored against their class. The threshold is never lowered, and
raised where the new head marks more validation ham as spam than the old one did.

A retrain is kept unless the held-out (test) split got worse beyond what chance explains on a split
of its size: more ham marked spam than before plus two binomial standard deviations of the count
at the false-positive budget (at least one), or more spam missed than before plus the larger of
one message, 1 % of the spam and two standard deviations. Otherwise the directory is unchanged and
the caller is told which figure moved, by how much, and what was allowed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .corrections import CORRECTIONS_DIR, Corrections, read_correction
from .errors import ModelDirectoryError, SpamfilterError, first_line
from .formats import message_text
from .head import Anchor, Head, apply_head, teach
from .lockfile import locked
from .metrics import compute_metrics
from .modeldir import (
    DYNAMIC_ONNX_FILE,
    INT8_ONNX_FILE,
    ONNX_FILE,
    ModelDirectory,
    open_model_directory,
    sha256_file,
)
from .onnx_head import feature_rows, read_head, replace_head, with_features_output
from .windows import discounts, windows_of

if TYPE_CHECKING:
    from .model import SpamModel

FEATURES_FILE = "learn.safetensors"
SPLITS = ("train", "validation", "test")
EX_REFUSED = 3  # exit code of a retrain that was refused: the model directory is unchanged
_Z = 2.0  # standard deviations of the held-out counts that a retrain may move them by
_FEATURE_BATCH = 32
_PLAIN_NAMES = {"fp32-dynamic": DYNAMIC_ONNX_FILE, "int8": INT8_ONNX_FILE}


class RetrainRefused(SpamfilterError):
    """A retrain that would have made the model worse on the held-out split."""

    exit_code = EX_REFUSED


# --------------------------------------------------------------------------- features


def pooled_features(classifier: SpamModel, ids: np.ndarray, device: str = "cpu") -> np.ndarray:
    """(N, C) float32: what the head reads of each row of token ids, through torch (training)."""
    import torch

    classifier = classifier.to(device).eval()
    out = []
    with torch.no_grad():
        for begin in range(0, len(ids), 32):
            batch = torch.tensor(ids[begin : begin + 32], dtype=torch.long, device=device)
            out.append(classifier.features(batch).float().cpu())
    size = classifier.gpt.lm_head.in_features  # an ensemble's: its members' side by side
    return torch.cat(out).numpy() if out else np.zeros((0, size), dtype=np.float32)


def features_session(directory: ModelDirectory, variant: str | None = None) -> Any:
    """An onnxruntime session of the directory's default variant, the one the filter and the
    service score with, with its ``features`` output (added in memory where the export has none);
    the file's sha256 is checked first. The same variant: with ``line-ends`` pooling the graph
    chooses the line end whose features it outputs, and int8 and fp32 can choose differently, so
    a head taught on one variant's features of a message is applied to the same features."""
    import onnxruntime as ort

    from .runtime import available_cores

    path = directory.checked_variant_file(variant or directory.default_variant)
    options = ort.SessionOptions()
    options.intra_op_num_threads = available_cores()
    options.log_severity_level = 3
    data = path.read_bytes()
    try:
        # the head's width, an ensemble's included (its members' features side by side), as the
        # graph itself holds it: no manifest field to agree with
        width = read_head(data).size
    except ModelDirectoryError as error:
        raise ModelDirectoryError(f"cannot use {path}: {error}") from None
    try:
        model = with_features_output(data, width)
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except ModelDirectoryError:
        raise
    except Exception as error:  # onnxruntime's own (Fail, InvalidProtobuf...), the graph editor's
        # A broken file whose recorded sha256 matches it (written so, or its manifest edited too)
        raise ModelDirectoryError(f"cannot use {path}: {first_line(error)}") from None


class WindowFeatures(NamedTuple):
    """What the head reads of texts, as the filter reads them: ``features`` (N, C), one row per
    window (or per position read with line-ends pooling); ``owners`` (N,) the text of each row;
    ``discounts`` per text, the log-odds the filter takes off its highest row for the windows it
    read (:func:`spamfilter.windows.combine`)."""

    features: np.ndarray
    owners: np.ndarray
    discounts: np.ndarray


def window_features(directory: ModelDirectory, texts: Sequence[str], session: Any = None) -> WindowFeatures:
    """The feature rows the head reads of every window the filter reads of each text (as reduced
    by :func:`spamfilter.formats.message_text`), see :class:`WindowFeatures`."""
    from .tokenizer import Tokenizer

    recipe = directory.recipe
    tokenizer = Tokenizer(directory.path)
    rows = tokenizer.encode_batch([text[: recipe.chars_kept] for text in texts])
    windows, owners = windows_of(rows, recipe.max_length, recipe.max_windows, recipe.end_at_paragraph)
    ids = tokenizer.pad(windows, recipe.max_length, recipe.pad_token_id)
    session = session or features_session(directory)
    features, windows_read = feature_rows(session, ids, _FEATURE_BATCH)
    if not len(features):
        features = np.zeros((0, read_head(directory.onnx_path.read_bytes()).size), np.float32)
    return WindowFeatures(
        features,
        np.asarray(owners, dtype=np.int64)[windows_read],
        discounts(owners, len(texts), recipe.window_discount),
    )


def current_head(directory: ModelDirectory) -> Head:
    """The head in use: the one in the directory's fp32 ONNX model."""
    return read_head(directory.onnx_path.read_bytes())


# safetensors, read and written with numpy alone (8-byte header length, JSON header, raw data).
_DTYPES = {"F32": "<f4", "I64": "<i8", "F64": "<f8", "I32": "<i4"}


def _save_safetensors(tensors: dict[str, np.ndarray], path: str) -> None:
    header: dict[str, Any] = {}
    offset = 0
    blobs = []
    for name, array in tensors.items():
        code = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}[np.asarray(array).dtype]
        blob = np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
        header[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        for blob in blobs:
            out.write(blob)


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    base = 8 + length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        array = np.frombuffer(data[base + begin : base + end], dtype=_DTYPES[entry["dtype"]])
        tensors[name] = array.reshape(entry["shape"])
    return tensors


def write_features(folder: Path, features: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Path:
    """``learn.safetensors``: the features (what the head reads) and labels of the three splits,
    written atomically."""
    tensors: dict[str, np.ndarray] = {}
    for name in SPLITS:
        tensors[f"{name}_features"] = np.ascontiguousarray(features[name], dtype=np.float32)
        tensors[f"{name}_labels"] = np.asarray(labels[name], dtype=np.int64)
    target = folder / FEATURES_FILE
    handle, scratch = tempfile.mkstemp(prefix=".learn-", dir=folder)
    os.close(handle)
    try:
        _save_safetensors(tensors, scratch)
        os.replace(scratch, target)
    finally:
        Path(scratch).unlink(missing_ok=True)
    return target


def read_features(folder: Path) -> dict[str, np.ndarray]:
    """``{split}_features`` (N, C) float32 and ``{split}_labels`` (N,) int64 of the three splits."""
    path = folder / FEATURES_FILE
    if not path.is_file():
        raise ModelDirectoryError(
            f"{path} is missing: this model was trained before 'learn' existed; train it again"
        )
    try:
        tensors = _load_safetensors(path)
        return {key: tensors[key] for name in SPLITS for key in (f"{name}_features", f"{name}_labels")}
    except (OSError, ValueError, KeyError, TypeError, struct.error, RecursionError) as error:
        raise ModelDirectoryError(f"{path} is damaged ({first_line(error)}); train again") from None


def training_anchor(saved: dict[str, np.ndarray]) -> tuple[Anchor, np.ndarray]:
    """The training split as the retrain's anchor, weighted by the recipe's class weights (inverse
    class frequency, (1, 1) for a balanced split), and those two class weights."""
    labels = np.asarray(saved["train_labels"], dtype=np.int64)
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    class_weight = counts.sum() / (2 * np.maximum(counts, 1))
    return Anchor(saved["train_features"], labels, class_weight[labels]), class_weight


# --------------------------------------------------------------------------- the held-out check


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
    weight: float = 1.0  # how many training messages of its class each correction finally weighed

    def lines(self) -> list[str]:
        c = self.corrections
        return [
            f"retrained the head on {c['spam']} spam and {c['ham']} ham corrections in {self.seconds:.1f} s"
            f" (each weighing {self.weight:g} training messages of its class)",
            f"held-out split before: {self.before.line()}",
            f"held-out split after:  {self.after.line()}",
        ]


def _held_out(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> HeldOut:
    from .verdict import Decision  # the one owner of how P(spam) becomes a verdict

    decide = Decision(model_threshold=threshold)
    flagged = np.asarray([decide.verdict(float(p)).spam for p in probabilities], dtype=bool)
    spam = labels == 1
    return HeldOut(
        threshold=threshold,
        ham_marked_spam=int((flagged & ~spam).sum()),
        ham=int((~spam).sum()),
        spam_missed=int((~flagged & spam).sum()),
        spam=int(spam.sum()),
    )


def allowed_increase(count: int, total: int, budget: float = 0.0) -> int:
    """How many more of ``total`` held-out messages a retrain may get wrong before that is more than
    chance on a split this size: two binomial standard deviations of the count at the larger of the
    rate before, the budget and one message, and at least one message."""
    if total <= 0:
        return 0
    rate = min(max(count / total, budget, 1 / total), 0.5)
    return max(1, math.ceil(_Z * math.sqrt(total * rate * (1 - rate))))


def worse(before: HeldOut, after: HeldOut, target_fpr: float | None = None) -> str | None:
    """Why ``after`` is worse than ``before`` on the held-out split beyond chance, else None."""
    ham_allowed = allowed_increase(before.ham_marked_spam, before.ham, target_fpr or 0.0)
    if after.ham_marked_spam > before.ham_marked_spam + ham_allowed:
        return (
            f"it marks more held-out ham as spam ({after.ham_marked_spam} of {after.ham} instead of "
            f"{before.ham_marked_spam}; chance explains up to {ham_allowed} more)"
        )
    spam_allowed = max(allowed_increase(before.spam_missed, before.spam), math.ceil(0.01 * before.spam))
    if after.spam_missed > before.spam_missed + spam_allowed:
        return (
            f"it misses more held-out spam ({after.spam_missed} of {after.spam} instead of "
            f"{before.spam_missed}; chance explains up to {spam_allowed} more)"
        )
    return None


def threshold_for(
    head: Head, start: Head, validation: np.ndarray, labels: np.ndarray, current: float
) -> float:
    """The threshold for ``head``: ``current``, raised where needed so that ``head`` marks no more
    validation ham as spam than ``start`` did at ``current`` (the false-positive budget the model
    was calibrated to holds), never lowered (a validation split's few highest ham say too little
    to move it down on). Raised to halfway between the highest ham left unflagged and the next
    validation score above it, the margin the recipe's calibration leaves."""
    ham = labels == 0
    if not ham.any():
        return current
    allowed = int((apply_head(start, validation[ham]) >= current).sum())
    ham_scores = np.sort(apply_head(head, validation[ham]))[::-1]
    if len(ham_scores) <= allowed or ham_scores[allowed] < current:
        return current
    highest_unflagged = ham_scores[allowed]
    scores = apply_head(head, validation)
    higher = scores[scores > highest_unflagged]
    cut = (highest_unflagged + higher.min()) / 2 if len(higher) else np.nextafter(highest_unflagged, 2.0)
    if cut <= highest_unflagged:  # two adjacent floats: just above the ham
        cut = np.nextafter(highest_unflagged, 2.0)
    return float(max(cut, current))


# --------------------------------------------------------------------------- retraining the head

LOCK_FILE = ".learn.lock"


@contextlib.contextmanager
def _exclusive(model_dir: Path) -> Iterator[None]:
    """One retrain of a model directory at a time (the service's and a cron job's, say): a second
    one would write model files from a head the first one's record does not describe."""
    try:
        with locked(model_dir / LOCK_FILE, wait=False):
            yield
    except BlockingIOError:
        raise SpamfilterError(f"another retrain of {model_dir} is running; try again when it ends") from None


def retrain(model_dir: Path, on_stage: Callable[[str], None] | None = None) -> LearnResult:
    """Retrain the head of ``model_dir`` on its corrections, and switch the model directory to the
    new head if the held-out split did not get worse; ``RetrainRefused`` if it did (the directory
    is then unchanged)."""
    open_model_directory(model_dir)  # a missing directory is named before a lock file is made in it
    with _exclusive(model_dir):
        return _retrain(model_dir, on_stage)


@dataclass(frozen=True)
class _Taught:
    features: np.ndarray  # the windows learnt from
    labels: np.ndarray  # their messages' labels
    owners: np.ndarray  # their messages
    message_labels: np.ndarray
    discounts: np.ndarray  # per message, what the filter takes off its highest window


def _corrections_taught(
    directory: ModelDirectory, corrections: list[tuple[str, int, Path]], start: Head
) -> _Taught:
    """The corrections as the filter reads them, every window of each, and the windows learnt from:
    a ham message's every window (the filter scores a message by its highest window, so none may
    say spam), a spam message's highest-scoring one under the current head (its others may be
    ordinary text)."""
    cap = directory.recipe.chars_kept
    texts = [message_text(read_correction(path))[:cap] for _, _, path in corrections]
    read = window_features(directory, texts)
    features, owners = read.features, read.owners
    message_labels = np.asarray([label for _, label, _ in corrections], dtype=np.int64)
    current = apply_head(start, features)
    taught: list[int] = []
    for message, label in enumerate(message_labels):
        mine = np.flatnonzero(owners == message)
        taught.extend(mine.tolist() if label == 0 else [int(mine[np.argmax(current[mine])])])
    rows = np.asarray(taught, dtype=np.int64)
    return _Taught(features[rows], message_labels[owners[rows]], owners[rows], message_labels, read.discounts)


def _retrain(model_dir: Path, on_stage: Callable[[str], None] | None) -> LearnResult:
    stage = on_stage or (lambda _: None)
    started = time.perf_counter()
    directory = open_model_directory(model_dir)
    manifest = directory.manifest
    saved = read_features(model_dir)
    corrections = list(Corrections(model_dir))
    if not corrections and not Corrections(model_dir).learnt():  # (all forgotten: retrain without them)
        raise SpamfilterError(f"no corrections in {model_dir / CORRECTIONS_DIR}: learn --spam/--ham MESSAGES")
    Corrections(model_dir).remember_all()  # the memory of near-duplicates, in step with the files
    start = current_head(directory)
    width = saved["train_features"].shape[1] if saved["train_features"].ndim == 2 else -1
    if width != start.size:  # a features file of another model: numpy's shape error before
        raise ModelDirectoryError(
            f"{model_dir / FEATURES_FILE} holds features of width {width}, the model's head reads "
            f"{start.size}: it belongs to another model (train again)"
        )
    # Every retrain starts from the head the directory was trained with and learns every correction
    # kept: the head depends on the corrections, not on the order of retrains, and forgetting one
    # takes it back out.
    trained = _trained_head(model_dir)
    original = trained or start
    stage(f"reading {len(corrections)} corrections")
    taught = _corrections_taught(directory, corrections, original)
    anchor, class_weight = training_anchor(saved)
    test_x, test_y = saved["test_features"], saved["test_labels"]
    before = _held_out(apply_head(start, test_x), test_y, manifest.threshold)
    original_threshold = float(
        manifest.metrics.get("learnt", {}).get("original_threshold", manifest.threshold)
    )
    validation_x, validation_y = saved["validation_features"], saved["validation_labels"]

    def threshold(head: Head) -> float:
        return threshold_for(head, original, validation_x, validation_y, original_threshold)

    stage("retraining the head")
    result = teach(
        original,
        taught.features,
        taught.labels,
        threshold,
        anchor,
        taught.owners,
        class_weight[taught.labels],
        discounts=taught.discounts,
    )
    head, cut = result.head, threshold(result.head)
    test_probabilities = apply_head(head, test_x)
    after = _held_out(test_probabilities, test_y, cut)
    labels = taught.message_labels
    counts_by_class = {"spam": int(labels.sum()), "ham": int((labels == 0).sum())}
    outcome = LearnResult(
        counts_by_class, before, after, result.unlearnt, time.perf_counter() - started, result.scale
    )
    # Without corrections (all forgotten) the retrain takes them back out of the head, as the user
    # asked: there is nothing of theirs to check.
    reason = worse(before, after, _target_fpr(manifest.recipe)) if corrections else None
    if reason is not None:
        unlearnt = f"; {result.unlearnt} of them could not be learnt at all" if result.unlearnt else ""
        raise RetrainRefused(
            f"retrain refused, the model is unchanged: learning the {len(corrections)} corrections "
            f"(each weighing {result.scale:g} training messages{unlearnt}) {reason}; a message filed "
            f"under the wrong class in {model_dir / CORRECTIONS_DIR} would do this"
        )
    stage("writing the new head into the model files")
    if trained is None:
        _remember_trained_head(model_dir, saved, start)
    record = {
        **counts_by_class,
        "before": asdict(before),
        "after": asdict(after),
        "weight": result.scale,
        "method": "head retrained from the trained head, anchored to the training features (numpy)",
        "original_threshold": original_threshold,
    }
    metrics = {
        **manifest.metrics,
        "test": compute_metrics(test_y, test_probabilities, cut).to_dict(),
        "learnt": record,
    }
    write_head(model_dir, head, threshold=cut, metrics=metrics)
    from .evaluate import EvalReport, write_report

    # The model directory's test report, as train writes it, for the head now in use.
    write_report(EvalReport.of(test_y, test_probabilities, cut, variant="fp32", provider="cpu"), model_dir)
    Corrections(model_dir).mark_learnt({key: label for key, label, _ in corrections})
    return replace(outcome, seconds=time.perf_counter() - started)


def _target_fpr(recipe: dict[str, Any]) -> float | None:
    value = recipe.get("target_fpr")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


TRAINED_HEAD = ("trained_head_weight", "trained_head_bias")  # in FEATURES_FILE


def _trained_head(model_dir: Path) -> Head | None:
    """The head training wrote, where an earlier retrain kept it in ``learn.safetensors``."""
    try:
        tensors = _load_safetensors(model_dir / FEATURES_FILE)
        if all(key in tensors for key in TRAINED_HEAD):
            return Head(tensors[TRAINED_HEAD[0]], tensors[TRAINED_HEAD[1]])
    except (OSError, ValueError, KeyError, TypeError, struct.error, RecursionError):
        pass
    return None


def _remember_trained_head(model_dir: Path, saved: dict[str, np.ndarray], trained: Head) -> None:
    """Keep the trained head in ``learn.safetensors`` before the first retrain switches the model
    away from it (replaced atomically; the file only gains two tensors)."""
    tensors = {key: np.asarray(value) for key, value in saved.items()}
    tensors[TRAINED_HEAD[0]], tensors[TRAINED_HEAD[1]] = trained.weight, trained.bias
    handle, scratch = tempfile.mkstemp(prefix=".learn-", dir=model_dir)
    os.close(handle)
    try:
        _save_safetensors(tensors, scratch)
        os.replace(scratch, model_dir / FEATURES_FILE)
    finally:
        Path(scratch).unlink(missing_ok=True)


def write_head(model_dir: Path, head: Head, *, threshold: float, metrics: dict[str, Any]) -> None:
    """Switch ``model_dir`` to ``head`` (written over the head in every ONNX file it names), with
    ``threshold`` and ``metrics`` in its manifest, in one rename; a process killed at any instant
    leaves the old model or the new one."""
    from .modelupdate import STAGING_PREFIX, readable_manifest, remove_leftovers, update_model_directory

    current = readable_manifest(model_dir)
    if current is None:
        raise ModelDirectoryError(f"{model_dir} has no readable manifest")
    remove_leftovers(model_dir, current)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=model_dir))
    try:
        new_files: dict[str, tuple[str, str]] = {}
        files = [
            (current.onnx.file, current.onnx.sha256),
            *((v.file, v.sha256) for v in current.variants.values()),
        ]
        for key, (name, expected) in zip(["fp32", *current.variants], files, strict=True):
            plain = _PLAIN_NAMES.get(key, ONNX_FILE)
            graph = (model_dir / name).read_bytes()
            # A damaged file (the sha256 check refuses it where it is loaded) must not come out of
            # a retrain with a new sha256 recorded for it, and so be loaded as if whole.
            if expected and hashlib.sha256(graph).hexdigest() != expected:
                raise ModelDirectoryError(
                    f"{model_dir / name} does not match the sha256 in its manifest: the model is "
                    "damaged (export or train it again); nothing was changed"
                )
            (staging / plain).write_bytes(replace_head(graph, head))
            new_files[key] = (plain, sha256_file(staging / plain))
        built = replace(
            current,
            onnx=replace(current.onnx, file=new_files["fp32"][0], sha256=new_files["fp32"][1]),
            variants={
                key: replace(variant, file=new_files[key][0], sha256=new_files[key][1])
                for key, variant in current.variants.items()
            },
            threshold=threshold,
            metrics=metrics,
        )
        final = update_model_directory(model_dir, staging, built, current)
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    remove_leftovers(model_dir, final)
