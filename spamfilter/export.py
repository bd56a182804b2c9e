"""ONNX export and the self-contained model directory that ``filter`` runs.

The directory holds ``model.onnx`` (inputs ``input_ids`` int64 ``[batch, max_length]``, output
``logits`` float32 ``[batch, 2]``, and a second output ``features`` float32 ``[batch, C]``: the
pooled vector the head reads, so that a runtime can apply another head, a user's, without a
second model), ``spamfilter.json``, the GPT-2 tokenizer files, the torch checkpoint ``model.pt``
and the training record with its plot. The head stays fp32 in the int8 variant, so that
``spamfilter learn`` can replace it in every file without torch (:mod:`spamfilter.onnx_head`).
"""

from __future__ import annotations

import json
import os
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
from .model import (
    GPT,
    NUM_CLASSES,
    GPTConfig,
    SpamClassifier,
    SpamEnsemble,
    SpamModel,
    add_classification_head,
)
from .modeldir import (
    CHECKPOINT_FILE,
    DYNAMIC_ONNX_FILE,
    FORMAT_VERSION,
    INT8_ONNX_FILE,
    ONNX_FILE,
    TRAINING_PLOT,
    TRAINING_RECORD,
    Manifest,
    OnnxFile,
    Variant,
    sha256_file,
)
from .modelupdate import (  # noqa: F401  (re-exported: the atomic update's names as before)
    GENERATED,
    STAGING_PREFIX,
    readable_manifest,
    referenced_files,
    remove_leftovers,
    update_model_directory,
)
from .onnx_head import FEATURES_OUTPUT, HEAD_WEIGHT, READ_FEATURES_OUTPUT
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
from .train_options import MAX_MEMBERS

PARITY_TOLERANCE = 1e-4
PARITY_EXAMPLES = 64  # test messages run through both torch and onnxruntime
INT8_MIN_AGREEMENT = 0.99  # int8 becomes the default variant only at this verdict agreement
ONNX_OPSET = 17
PADDING_FREE_POOLINGS = ("last-token", "line-ends")  # answers that do not depend on padding


class _PooledForward(torch.nn.Module):
    """What is exported: the logits of ``SpamClassifier.forward_pooled`` (the same logits with less
    work; the parity check compares them with the plain ``forward``), and the pooled features the
    head reads to compute them; for ``line-ends`` also the features at every position read
    (``read_features``), among which the head chose."""

    def __init__(self, classifier: SpamModel) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        classifier = self.classifier
        read = classifier.read_features(input_ids)  # (B, K, C)
        features = classifier.most_spam_like(read)
        outputs = (classifier.gpt.lm_head(features), features)
        return (*outputs, read) if _reads_several(classifier) else outputs


def _reads_several(classifier: SpamModel) -> bool:
    """Whether the head reads several positions of a window (its choice among them exported). Not
    an ensemble's: its members choose their positions with heads of their own, so another head (a
    user's, a retrained one) reads the features they chose, as the graph's own head does; choosing
    itself among rows of every member's features at one position, it would score another function."""
    return classifier.pooling == "line-ends" and not isinstance(classifier, SpamEnsemble)


def export_onnx(classifier: SpamModel, path: Path, max_length: int, dynamic_length: bool = False) -> None:
    """Write ``classifier`` as ONNX with a dynamic batch axis and a fixed ``max_length``
    (or, with ``dynamic_length``, a dynamic sequence axis too)."""
    classifier = classifier.eval().cpu()
    example = torch.full((2, max_length), PAD_TOKEN_ID, dtype=torch.long)
    example[:, 0] = 0
    reads = int(_reads_several(classifier))  # the third output, every position read
    with warnings.catch_warnings():
        # The TorchScript exporter warns about its deprecation and about traced index arithmetic;
        # the parity check below is what proves the graph right.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _PooledForward(classifier),
            (example,),
            str(path),
            input_names=["input_ids"],
            output_names=["logits", FEATURES_OUTPUT, READ_FEATURES_OUTPUT][: 2 + reads],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"} if dynamic_length else {0: "batch"},
                "logits": {0: "batch"},
                FEATURES_OUTPUT: {0: "batch"},
                **({READ_FEATURES_OUTPUT: {0: "batch"}} if reads else {}),
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def check_parity(
    classifier: SpamModel, session: Any, name: str, input_ids: np.ndarray, batch_size: int = 16
) -> float:
    """Largest absolute logit difference between torch and the onnxruntime ``session`` (of the file
    ``name``) on right-padded ``input_ids``, both run through the package's batching path (trimmed
    batches where the ONNX model accepts them).

    Raises ``ExportError`` above ``PARITY_TOLERANCE``, or where either gives a non-finite logit.
    """
    classifier = classifier.eval().cpu()

    def torch_logits(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return classifier(torch.as_tensor(ids)).numpy()

    trim, pad = accepts_shorter_inputs(session), classifier.pad_token_id
    expected = _batched(torch_logits, input_ids, batch_size, trim, pad)
    actual = _batched(session_logits(session), input_ids, batch_size, trim, pad)
    for source, logits in (("torch", expected), ("onnxruntime", actual)):
        if not np.isfinite(logits).all():  # NaN would pass any comparison with the tolerance below
            raise ExportError(
                f"{source} gives non-finite logits (nan or inf) for {name}: the model's weights are not "
                "usable (training diverged: a smaller --lr or --weight-decay)"
            )
    worst = float(np.abs(expected - actual).max()) if len(input_ids) else 0.0
    if not worst <= PARITY_TOLERANCE:
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


def save_checkpoint(classifier: SpamModel, path: Path, max_length: int, extra: dict[str, Any]) -> None:
    """The torch checkpoint: plain dicts, strings, numbers and tensors (``weights_only``-loadable)."""
    torch.save(
        {
            "format_version": FORMAT_VERSION,
            "config": classifier.gpt.config.to_dict(),  # an ensemble's: its members'
            "members": len(classifier.members) if isinstance(classifier, SpamEnsemble) else 1,
            "pooling": classifier.pooling,
            "pad_token_id": classifier.pad_token_id,
            "max_length": max_length,
            "state_dict": classifier.state_dict(),
            **extra,
        },
        path,
    )


def load_checkpoint(path: Path) -> tuple[SpamModel, dict[str, Any]]:
    """A classifier from ``model.pt`` (never unpickles code: ``weights_only=True``)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        config = GPTConfig.from_dict(data["config"])
        count = data.get("members", 1)
        if not isinstance(count, int) or not 1 <= count <= MAX_MEMBERS:
            raise ValueError(f"members {count!r} is not 1 to {MAX_MEMBERS}")
        members = [
            SpamClassifier(add_classification_head(GPT(config)), data["pooling"], data["pad_token_id"])
            for _ in range(count)
        ]
        classifier = members[0] if len(members) == 1 else SpamEnsemble(members)
        classifier.load_state_dict(data["state_dict"])
    except FileNotFoundError:
        raise ExportError(f"checkpoint not found: {path}") from None
    except Exception as error:  # torch.load raises many types (unpickling, zip, key, shape errors)
        raise ExportError(f"{path} is not a spamfilter checkpoint: {first_line(error)}") from None
    return classifier.eval(), data


def load_single_checkpoint(path: Path) -> tuple[SpamClassifier, dict[str, Any]]:
    """:func:`load_checkpoint` for what only a single classifier can do (its own kernels compared)."""
    classifier, data = load_checkpoint(path)
    if isinstance(classifier, SpamEnsemble):
        raise ExportError(f"{path} holds {len(classifier.members)} members (train --members): not one model")
    return classifier, data


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
    "head": "fp32",
}


def quantize_int8(
    source: Path,
    target: Path,
    *,
    weights: str = "int8",
    per_channel: bool = False,
    reduce_range: bool = True,
    head_fp32: bool = True,
) -> None:
    """Dynamic int8 quantization of the weights of every MatMul (activations quantized at run time),
    the head's excepted (``head_fp32``): it is 2 x C weights, nothing to gain, and in fp32 its
    values can be replaced in place after a retrain (``spamfilter learn``).

    The defaults are ``INT8_SCHEME``; the other settings exist for the benchmark that compares them.
    """
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    # The quantizer turns a Gemm into MatMul + Add first, the MatMul named after the Gemm.
    # line-ends pooling also runs the head over every position read, to choose one: there the
    # exporter folded the head's weight into a transposed copy under another name
    head = {HEAD_WEIGHT, *_copies_of_head(graph)}
    head_nodes = [node.name for node in graph.node if head & set(node.input)] if head_fp32 else []
    head_nodes += [f"{name}_MatMul" for name in head_nodes]

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
            nodes_to_exclude=head_nodes,
        )
    finally:
        root.setLevel(level)


def _copies_of_head(graph: Any) -> list[str]:
    """The initializers that hold a head transposed, (C, 2): line-ends pooling runs the head over
    every position read to choose one, and the exporter folds its weight into a transposed copy under
    another name; an ensemble's members choose with heads of their own, held only so."""
    return [t.name for t in graph.initializer if len(t.dims) == 2 and t.dims[1] == NUM_CLASSES]


def write_model_directory(
    out: Path,
    classifier: SpamModel,
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
    ``model.onnx`` (fp32, fixed length) must agree with torch. With last-token or line-ends pooling
    the answer does not depend on padding, so ``model.dynamic.onnx`` also accepts shorter inputs
    (checked against torch at the trimmed length). ``quantize="int8"`` adds ``model.int8.onnx`` and records
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


def _build(
    folder: Path,
    classifier: SpamModel,
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
    if classifier.pooling in PADDING_FREE_POOLINGS:
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
            dynamic_length=classifier.pooling in PADDING_FREE_POOLINGS,
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
    _take_learnt_head(classifier, path.parent)
    missing = [key for key in ("max_length", "test_input_ids", "test_labels") if key not in data]
    if missing:
        raise ExportError(f"{path} carries no {', '.join(missing)} to verify the export with")
    manifest = write_model_directory(
        target,
        classifier,
        max_length=int(data["max_length"]),
        test_ids=data["test_input_ids"].numpy(),
        test_labels=data["test_labels"].numpy(),
        manifest=_with_learnt_record(dict(data.get("manifest", {})), path.parent),
        write_checkpoint=target.resolve() != path.parent.resolve(),
        quantize=quantize,
    )
    if target.resolve() != path.parent.resolve():
        _carry_memory(path.parent, target)
    return target, manifest


def _carry_memory(source: Path, target: Path) -> None:
    """The training mail's memory (train --remember-training) goes with the model: its threshold
    was chosen on the scores the memory gives. A target without one in the source keeps none."""
    from .memory import MEMORY_FILE

    kept = source / MEMORY_FILE
    if kept.is_file():
        shutil.copyfile(kept, target / MEMORY_FILE)
    else:
        (target / MEMORY_FILE).unlink(missing_ok=True)


def _with_learnt_record(record: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The checkpoint's record, with the threshold and figures of the head in use where ``learn``
    changed it (the checkpoint keeps the ones training wrote)."""
    current = readable_manifest(folder)
    if current is not None and isinstance(current.metrics.get("learnt"), dict):
        return {**record, "threshold": current.threshold, "metrics": dict(current.metrics)}
    return record


def _take_learnt_head(classifier: SpamModel, folder: Path) -> None:
    """The head in use where the checkpoint's directory has one: ``spamfilter learn`` without torch
    retrains the head in the ONNX files and leaves the checkpoint as training wrote it."""
    manifest = readable_manifest(folder)
    if manifest is None or not (folder / manifest.onnx.file).is_file():
        return
    from .onnx_head import read_head

    try:
        head = read_head((folder / manifest.onnx.file).read_bytes())
    except (OSError, ModelDirectoryError):
        return  # the export checks the checkpoint's own head as before
    linear = classifier.gpt.lm_head
    if tuple(linear.weight.shape) == head.weight.shape:
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(head.weight))
            linear.bias.copy_(torch.from_numpy(head.bias))


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
