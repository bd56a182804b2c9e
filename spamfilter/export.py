"""ONNX export and the self-contained model directory that ``filter`` runs.

The directory holds ``model.onnx`` (inputs ``input_ids`` int64 ``[batch, max_length]``, output
``logits`` float32 ``[batch, 2]``), ``spamfilter.json``, the GPT-2 tokenizer files, the torch
checkpoint ``model.pt`` and the training record with its plot.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .errors import ExportError, ModelDirectoryError, first_line
from .model import GPT, GPTConfig, SpamClassifier, add_classification_head
from .modeldir import (
    CHECKPOINT_FILE,
    DYNAMIC_ONNX_FILE,
    FORMAT_VERSION,
    INT8_ONNX_FILE,
    MANIFEST_FILE,
    ONNX_FILE,
    TRAINING_PLOT,
    TRAINING_RECORD,
    Manifest,
    OnnxFile,
    Variant,
    sha256_file,
)
from .runtime import (
    LogitsFunction,
    accepts_shorter_inputs,
    batched_logits,
    cpu_instruction_set,
    create_session,
    session_logits,
    softmax_spam,
)
from .tokenizer import PAD_TOKEN_ID, TOKENIZER_FILES, packaged_tokenizer_dir, unpad

PARITY_TOLERANCE = 1e-4
PARITY_EXAMPLES = 64  # test messages run through both torch and onnxruntime
INT8_MIN_AGREEMENT = 0.99  # int8 becomes the default variant only at this verdict agreement
ONNX_OPSET = 17


class _PooledForward(torch.nn.Module):
    """What is exported: ``SpamClassifier.forward_pooled``, the same logits with less work (the
    parity check compares it with the plain ``forward``)."""

    def __init__(self, classifier: SpamClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.classifier.forward_pooled(input_ids)


def export_onnx(
    classifier: SpamClassifier, path: Path, max_length: int, dynamic_length: bool = False
) -> None:
    """Write ``classifier`` as ONNX with a dynamic batch axis and a fixed ``max_length``
    (or, with ``dynamic_length``, a dynamic sequence axis too)."""
    classifier = classifier.eval().cpu()
    example = torch.full((2, max_length), PAD_TOKEN_ID, dtype=torch.long)
    example[:, 0] = 0
    with warnings.catch_warnings():
        # The TorchScript exporter warns about its deprecation and about traced index arithmetic;
        # the parity check below is what proves the graph right.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _PooledForward(classifier),
            (example,),
            str(path),
            input_names=["input_ids"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"} if dynamic_length else {0: "batch"},
                "logits": {0: "batch"},
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def check_parity(
    classifier: SpamClassifier, session: Any, name: str, input_ids: np.ndarray, batch_size: int = 16
) -> float:
    """Largest absolute logit difference between torch and the onnxruntime ``session`` (of the file
    ``name``) on right-padded ``input_ids``, both run through the package's batching path (trimmed
    batches where the ONNX model accepts them).

    Raises ``ExportError`` above ``PARITY_TOLERANCE``.
    """
    classifier = classifier.eval().cpu()

    def torch_logits(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return classifier(torch.as_tensor(ids)).numpy()

    trim, pad = accepts_shorter_inputs(session), classifier.pad_token_id
    expected = _batched(torch_logits, input_ids, batch_size, trim, pad)
    actual = _batched(session_logits(session), input_ids, batch_size, trim, pad)
    worst = float(np.abs(expected - actual).max()) if len(input_ids) else 0.0
    if worst > PARITY_TOLERANCE:
        raise ExportError(
            f"onnxruntime and torch disagree on {name}: max |logit difference| {worst:.2e} "
            f"> {PARITY_TOLERANCE:.0e}"
        )
    return worst


def onnx_probabilities(
    session: Any, input_ids: np.ndarray, batch_size: int = 16, pad_token_id: int = PAD_TOKEN_ID
) -> np.ndarray:
    """P(spam) from an onnxruntime session (or an ONNX file) on right-padded ids."""
    if isinstance(session, (str, Path)):
        session = create_session(Path(session))
    trim = accepts_shorter_inputs(session)
    logits = _batched(session_logits(session), input_ids, batch_size, trim, pad_token_id)
    return softmax_spam(logits)


def _batched(
    logits: LogitsFunction, input_ids: np.ndarray, batch_size: int, trim: bool, pad_token_id: int
) -> np.ndarray:
    rows = unpad(input_ids, pad_token_id)
    return batched_logits(
        rows,
        logits,
        batch_size=batch_size,
        max_length=input_ids.shape[1],
        pad_token_id=pad_token_id,
        trim=trim,
    )


def save_checkpoint(classifier: SpamClassifier, path: Path, max_length: int, extra: dict[str, Any]) -> None:
    """The torch checkpoint: plain dicts, strings, numbers and tensors (``weights_only``-loadable)."""
    torch.save(
        {
            "format_version": FORMAT_VERSION,
            "config": classifier.gpt.config.to_dict(),
            "pooling": classifier.pooling,
            "pad_token_id": classifier.pad_token_id,
            "max_length": max_length,
            "state_dict": classifier.state_dict(),
            **extra,
        },
        path,
    )


def load_checkpoint(path: Path) -> tuple[SpamClassifier, dict[str, Any]]:
    """A classifier from ``model.pt`` (never unpickles code: ``weights_only=True``)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        gpt = add_classification_head(GPT(GPTConfig.from_dict(data["config"])))
        classifier = SpamClassifier(gpt, data["pooling"], data["pad_token_id"])
        classifier.load_state_dict(data["state_dict"])
    except FileNotFoundError:
        raise ExportError(f"checkpoint not found: {path}") from None
    except Exception as error:  # torch.load raises many types (unpickling, zip, key, shape errors)
        raise ExportError(f"{path} is not a spamfilter checkpoint: {first_line(error)}") from None
    return classifier.eval(), data


# How the int8 model is made. onnxruntime's x86 kernels multiply uint8 activations by int8 weights
# with VPMADDUBSW, which adds pairs of products into int16 and saturates on CPUs without VNNI (most
# AVX2 servers), while VNNI CPUs compute them exactly: with full-range int8 weights the same model
# scored differently by CPU (by up to 0.06-0.13 in P(spam) on the test suite's small models). 7-bit
# weights (reduce_range) keep every pair sum below 2**15, so the integer arithmetic is exact on every
# CPU. Per-tensor scales: onnxruntime's per-channel option made a GPT-2-small-shaped model less
# exact, not more (benchmarks/bench_quantize.py measures the options; benchmarks/RESULTS.md).
INT8_SCHEME = {
    "method": "dynamic",
    "weights": "int8",
    "per_channel": False,
    "reduce_range": True,
    "activations": "uint8, scaled per batch at run time",
}


def quantize_int8(
    source: Path, target: Path, *, weights: str = "int8", per_channel: bool = False, reduce_range: bool = True
) -> None:
    """Dynamic int8 quantization of the weights of every MatMul (activations quantized at run time).

    The defaults are ``INT8_SCHEME``; the other settings exist for the benchmark that compares them.
    """
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[weights]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its pre-processing hint (a root-logger warning) is not for our graphs
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=weight_type,
            per_channel=per_channel,
            reduce_range=reduce_range,
        )
    finally:
        root.setLevel(level)


def write_model_directory(
    out: Path,
    classifier: SpamClassifier,
    *,
    max_length: int,
    test_ids: np.ndarray,
    test_labels: np.ndarray,
    manifest: dict[str, Any],
    training_record: dict[str, Any] | None = None,
    write_checkpoint: bool = True,
    quantize: str | None = None,
) -> Manifest:
    """Export and verify, then write every file of the model directory; returns the manifest.
    ``manifest`` describes where the model came from: ``base_model``, ``recipe``, ``training_data``
    and ``metrics``, and holds the decision ``threshold`` (default 0.5) that the verdicts compared
    below are taken at.

    Every file is built and checked in a staging folder first; the directory changes from the old
    model to the new one in a single step (``update_model_directory``): a failed or killed export
    never damages a working model directory.
    ``model.onnx`` (fp32, fixed length) must agree with torch. With last-token pooling the answer
    does not depend on padding, so ``model.dynamic.onnx`` also accepts shorter inputs (checked
    against torch at the trimmed length). ``quantize="int8"`` adds ``model.int8.onnx`` and records
    how often its verdicts agree with fp32 on the test messages.
    """
    if quantize not in (None, "int8"):
        raise ExportError(f"unknown quantization {quantize!r}; only int8 is supported")
    out.mkdir(parents=True, exist_ok=True)
    current = readable_manifest(out)
    remove_leftovers(out, current)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))
    try:
        full = _build(
            staging,
            classifier,
            max_length,
            test_ids,
            test_labels,
            manifest,
            training_record,
            write_checkpoint,
            quantize,
        )
        if not write_checkpoint:  # the directory's own checkpoint stays, and stays named
            kept = (current.checkpoint or CHECKPOINT_FILE) if current is not None else CHECKPOINT_FILE
            full = replace(full, checkpoint=kept if (out / kept).is_file() else None)
        full = update_model_directory(out, staging, full, current)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    remove_leftovers(out, full)
    return full


# --------------------------------------------------------------------------- updating a directory
#
# A model directory changes as a whole: the manifest names its model files (and its checkpoint), so
# a new model's files are moved in under names the current manifest does not use (the plain names,
# or the plain names with a generation tag: model.int8.g1f2e3d4c.onnx), and the new manifest then
# replaces the old one with one rename. Until that rename the directory is the old model, after it
# the new one; the old model's files are removed after it, or by the next update where a process
# was killed first.

STAGING_PREFIX = ".export-"  # + the exporting process's id: a staging folder of a live one is kept
GENERATED = re.compile(r"model(\.dynamic|\.int8)?(\.g[0-9a-f]{8})?\.onnx|model(\.g[0-9a-f]{8})?\.pt")


def readable_manifest(folder: Path) -> Manifest | None:
    """The manifest of ``folder`` where it has one that reads, else None."""
    try:
        data = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        return Manifest.from_dict(data, folder / MANIFEST_FILE)
    except (OSError, ValueError, ModelDirectoryError):
        return None


def referenced_files(manifest: Manifest) -> set[str]:
    files = {manifest.onnx.file, *(variant.file for variant in manifest.variants.values())}
    return files | {manifest.checkpoint or CHECKPOINT_FILE}


def _tagged(name: str, tag: str | None) -> str:
    if tag is None:
        return name
    stem, suffix = name.rsplit(".", 1)
    return f"{stem}.g{tag}.{suffix}"


def update_model_directory(out: Path, staging: Path, built: Manifest, current: Manifest | None) -> Manifest:
    """Move the model in ``staging`` (files under their plain names, ``built`` naming them so)
    into ``out``, switching from ``current`` in one rename; returns the manifest written."""
    in_use = referenced_files(current) if current is not None else set()
    tag = secrets.token_hex(4) if in_use & {ONNX_FILE, CHECKPOINT_FILE} else None
    names = {
        path.name: _tagged(path.name, tag) if GENERATED.fullmatch(path.name) else path.name
        for path in staging.iterdir()
        if path.name != MANIFEST_FILE
    }
    final = replace(
        built,
        onnx=replace(built.onnx, file=names.get(built.onnx.file, built.onnx.file)),
        variants={
            key: replace(variant, file=names.get(variant.file, variant.file))
            for key, variant in built.variants.items()
        },
        checkpoint=names.get(CHECKPOINT_FILE, built.checkpoint),
    )
    for name, target in names.items():
        _fsync(staging / name)
        os.replace(staging / name, out / target)  # unused names, or files that are the same for both
    final.write(staging / MANIFEST_FILE)
    _fsync(staging / MANIFEST_FILE)
    _fsync(out)
    os.replace(staging / MANIFEST_FILE, out / MANIFEST_FILE)  # the switch
    _fsync(out)
    return final


def remove_leftovers(out: Path, manifest: Manifest | None) -> None:
    """Remove what earlier updates of ``out`` left: staging folders of processes that are gone, and
    model files that ``manifest`` (the directory's, where it reads) does not name. Only entries of
    our own naming, and only real folders and files: a link is never followed nor removed."""
    in_use = referenced_files(manifest) if manifest is not None else None
    for entry in os.scandir(out):
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
            if not _exporter_alive(entry.name):
                shutil.rmtree(entry.path, ignore_errors=True)
        elif (
            in_use is not None
            and GENERATED.fullmatch(entry.name)
            and entry.name not in in_use
            and entry.is_file(follow_symlinks=False)
        ):
            os.unlink(entry.path)


def _exporter_alive(name: str) -> bool:
    """Whether the process that made the staging folder ``name`` still runs (folders of older
    versions carry no process id: theirs are gone)."""
    pid = name[len(STAGING_PREFIX) :].split("-", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync(path: Path) -> None:
    """On disk before what depends on it is renamed into place (a power cut, not only a kill)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _build(
    folder: Path,
    classifier: SpamClassifier,
    max_length: int,
    test_ids: np.ndarray,
    test_labels: np.ndarray,
    manifest: dict[str, Any],
    training_record: dict[str, Any] | None,
    write_checkpoint: bool,
    quantize: str | None,
) -> Manifest:
    parity_ids = test_ids[:PARITY_EXAMPLES]
    export_onnx(classifier, folder / ONNX_FILE, max_length)
    # one session per file, used for its parity check and then for the test messages
    session = create_session(folder / ONNX_FILE)
    fixed = check_parity(classifier, session, ONNX_FILE, parity_ids)
    variants: dict[str, Variant] = {}
    fastest_fp32 = folder / ONNX_FILE
    if classifier.pooling == "last-token":
        fastest_fp32 = folder / DYNAMIC_ONNX_FILE
        export_onnx(classifier, fastest_fp32, max_length, dynamic_length=True)
        session = create_session(fastest_fp32)
        check_parity(classifier, session, DYNAMIC_ONNX_FILE, parity_ids)
        variants["fp32-dynamic"] = Variant(DYNAMIC_ONNX_FILE, sha256_file(fastest_fp32), dynamic_length=True)
    fp32 = onnx_probabilities(session, test_ids, pad_token_id=classifier.pad_token_id)
    del session  # an fp32 gpt2-small session holds ~0.5 GB
    threshold = float(manifest.get("threshold", 0.5))  # the verdicts compared are the ones filter gives
    evaluation = {"n": len(test_ids), "fp32_accuracy": _accuracy(fp32, test_labels, threshold)}
    if quantize == "int8":
        quantize_int8(fastest_fp32, folder / INT8_ONNX_FILE)
        int8 = onnx_probabilities(folder / INT8_ONNX_FILE, test_ids, pad_token_id=classifier.pad_token_id)
        variants["int8"] = Variant(
            INT8_ONNX_FILE,
            sha256_file(folder / INT8_ONNX_FILE),
            dynamic_length=classifier.pooling == "last-token",
            quantization=INT8_SCHEME,
            agreement_with_fp32=(
                float(np.mean((int8 >= threshold) == (fp32 >= threshold))) if len(fp32) else 1.0
            ),
            max_abs_probability_diff=float(np.abs(int8 - fp32).max()) if len(fp32) else 0.0,
            accuracy=_accuracy(int8, test_labels, threshold),
            measured_on=cpu_instruction_set(),
        )
    for name in TOKENIZER_FILES:
        shutil.copyfile(packaged_tokenizer_dir() / name, folder / name)
    if write_checkpoint:
        extra = {
            "manifest": manifest,
            "test_input_ids": torch.tensor(test_ids),
            "test_labels": torch.tensor(test_labels),
        }
        save_checkpoint(classifier, folder / CHECKPOINT_FILE, max_length, extra)
    if training_record is not None:
        (folder / TRAINING_RECORD).write_text(json.dumps(training_record, indent=2) + "\n")
        from .plots import plot_training

        plot_training(training_record, folder / TRAINING_PLOT)
    int8_agreement = variants["int8"].agreement_with_fp32 if "int8" in variants else None
    full = Manifest(
        max_length=max_length,
        pad_token_id=classifier.pad_token_id,
        pooling=classifier.pooling,
        threshold=threshold,
        onnx=OnnxFile(ONNX_FILE, sha256_file(folder / ONNX_FILE), ONNX_OPSET, fixed, len(parity_ids)),
        variants=variants,
        default_variant="int8" if (int8_agreement or 0.0) >= INT8_MIN_AGREEMENT else "fp32",
        onnx_evaluation=evaluation,
        base_model=dict(manifest.get("base_model", {})),
        recipe=dict(manifest.get("recipe", {})),
        metrics=dict(manifest.get("metrics", {})),
        training_data=dict(manifest.get("training_data", {})),
        spamfilter_version=__version__,
        checkpoint=CHECKPOINT_FILE if write_checkpoint else None,
    )
    return full


def _accuracy(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    return float(np.mean((probabilities >= threshold) == (labels == 1))) if len(labels) else float("nan")


def reexport(checkpoint: Path, out: Path | None = None, quantize: str | None = None) -> tuple[Path, Manifest]:
    """Export a checkpoint (``model.pt``, or the model directory holding one) again, verified on
    the test messages it carries; returns the model directory written and its manifest."""
    path = checkpoint
    if checkpoint.is_dir():
        existing = readable_manifest(checkpoint)
        path = checkpoint / (existing.checkpoint if existing and existing.checkpoint else CHECKPOINT_FILE)
    target = out or path.parent
    classifier, data = load_checkpoint(path)
    missing = [key for key in ("max_length", "test_input_ids", "test_labels") if key not in data]
    if missing:
        raise ExportError(f"{path} carries no {', '.join(missing)} to verify the export with")
    manifest = write_model_directory(
        target,
        classifier,
        max_length=int(data["max_length"]),
        test_ids=data["test_input_ids"].numpy(),
        test_labels=data["test_labels"].numpy(),
        manifest=dict(data.get("manifest", {})),
        write_checkpoint=target.resolve() != path.parent.resolve(),
        quantize=quantize,
    )
    return target, manifest


def describe_export(target: Path, manifest: Manifest) -> list[str]:
    """What an export wrote and how it checked, a line per model file."""
    evaluation = manifest.onnx_evaluation
    lines = [
        f"exported {target / manifest.onnx.file}: max |logit difference| vs torch "
        f"{manifest.onnx.parity_max_abs_diff:.1e}; fp32 test accuracy {evaluation['fp32_accuracy']:.2%}"
    ]
    int8 = manifest.variants.get("int8")
    if int8 is not None:
        lines.append(
            f"int8: {target / int8.file}: test accuracy {int8.accuracy:.2%}, verdicts agree with fp32 on "
            f"{int8.agreement_with_fp32:.2%} of {evaluation['n']:.0f} test messages (largest P(spam) "
            f"difference {int8.max_abs_probability_diff:.3f}, {int8.measured_on}); default variant "
            f"{manifest.default_variant}"
        )
    return lines
