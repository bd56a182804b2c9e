"""ONNX export and the self-contained model directory that ``filter`` runs.

The directory holds ``model.onnx`` (inputs ``input_ids`` int64 ``[batch, max_length]``, output
``logits`` float32 ``[batch, 2]``), ``spamfilter.json``, the GPT-2 tokenizer files, the torch
checkpoint ``model.pt`` and the training record with its plot.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .model import GPT, GPTConfig, SpamClassifier, add_classification_head
from .modeldir import (
    CHECKPOINT_FILE,
    FORMAT_VERSION,
    LABELS,
    MANIFEST_FILE,
    ONNX_FILE,
    TRAINING_PLOT,
    TRAINING_RECORD,
    sha256_file,
)
from .tokenizer import PAD_TOKEN_ID, TOKENIZER_FILES, packaged_tokenizer_dir

PARITY_TOLERANCE = 1e-4
ONNX_OPSET = 17


class ExportError(Exception):
    """An export that failed or whose ONNX model does not agree with torch."""


def export_onnx(classifier: SpamClassifier, path: Path, max_length: int) -> None:
    """Write ``classifier`` as ONNX with a dynamic batch axis and a fixed ``max_length``."""
    classifier = classifier.eval().cpu()
    example = torch.full((2, max_length), PAD_TOKEN_ID, dtype=torch.long)
    example[:, 0] = 0
    with warnings.catch_warnings():
        # The TorchScript exporter warns about its deprecation and about traced index arithmetic;
        # the parity check below is what proves the graph right.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            classifier,
            (example,),
            str(path),
            input_names=["input_ids"],
            output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def check_parity(classifier: SpamClassifier, path: Path, input_ids: np.ndarray,
                 batch_size: int = 16) -> float:
    """Largest absolute logit difference between torch and onnxruntime on ``input_ids``.

    Raises ``ExportError`` above ``PARITY_TOLERANCE``.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    classifier = classifier.eval().cpu()
    worst = 0.0
    with torch.no_grad():
        for begin in range(0, len(input_ids), batch_size):
            batch = input_ids[begin : begin + batch_size]
            expected = classifier(torch.as_tensor(batch)).numpy()
            actual = session.run(["logits"], {"input_ids": batch})[0]
            worst = max(worst, float(np.abs(expected - actual).max()))
    if worst > PARITY_TOLERANCE:
        raise ExportError(
            f"onnxruntime and torch disagree on {path.name}: max |logit difference| {worst:.2e} "
            f"> {PARITY_TOLERANCE:.0e}"
        )
    return worst


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
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ExportError(f"{path} is not a spamfilter checkpoint: {reason}") from None
    return classifier.eval(), data


def write_model_directory(
    out: Path,
    classifier: SpamClassifier,
    *,
    max_length: int,
    sample_ids: np.ndarray,
    manifest: dict[str, Any],
    training_record: dict[str, Any] | None = None,
    write_checkpoint: bool = True,
) -> dict[str, Any]:
    """Export and verify, then write every file of the model directory; returns the manifest.

    The ONNX model is written and checked against torch first, in a scratch file: a failed export
    never replaces a working model directory's ``model.onnx``.
    """
    out.mkdir(parents=True, exist_ok=True)
    scratch = out / f".{ONNX_FILE}.partial"
    try:
        export_onnx(classifier, scratch, max_length)
        parity = check_parity(classifier, scratch, sample_ids)
    except ExportError:
        scratch.unlink(missing_ok=True)
        raise
    scratch.replace(out / ONNX_FILE)
    for name in TOKENIZER_FILES:
        shutil.copyfile(packaged_tokenizer_dir() / name, out / name)
    if write_checkpoint:
        save_checkpoint(classifier, out / CHECKPOINT_FILE, max_length, {"manifest": manifest})
    if training_record is not None:
        (out / TRAINING_RECORD).write_text(json.dumps(training_record, indent=2) + "\n")
        from .plots import plot_training

        plot_training(training_record, out / TRAINING_PLOT)
    full = {
        "format_version": FORMAT_VERSION,
        "labels": list(LABELS),
        "max_length": max_length,
        "pad_token_id": classifier.pad_token_id,
        "pooling": classifier.pooling,
        "threshold": 0.5,
        **manifest,
        "onnx": {
            "file": ONNX_FILE,
            "sha256": sha256_file(out / ONNX_FILE),
            "opset": ONNX_OPSET,
            "parity_max_abs_diff": parity,
            "parity_examples": len(sample_ids),
        },
        "spamfilter_version": __version__,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(full, indent=2) + "\n")
    return full
