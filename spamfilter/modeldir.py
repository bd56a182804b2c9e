"""The model directory's layout and its up-front check (no torch: the filter path reads it)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
LABELS = ("not spam", "spam")  # index = class id
ONNX_FILE = "model.onnx"
MANIFEST_FILE = "spamfilter.json"
CHECKPOINT_FILE = "model.pt"
TRAINING_RECORD = "training.json"
TRAINING_PLOT = "training.png"
_REQUIRED_KEYS = ("format_version", "labels", "max_length", "pad_token_id", "pooling", "threshold")


class ModelDirectoryError(Exception):
    """A model directory that is missing, incomplete or does not match its manifest."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def data_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "spamfilter"


def default_model_dir() -> Path:
    """Where ``train`` writes and ``filter`` / ``classify`` / ``eval`` look without ``--model``:
    ``$SPAMFILTER_MODEL`` if set, else ``$XDG_DATA_HOME/spamfilter/model``."""
    override = os.environ.get("SPAMFILTER_MODEL")
    return Path(override) if override else data_home() / "model"


@dataclass(frozen=True)
class ModelDirectory:
    path: Path
    manifest: dict[str, Any]

    @property
    def onnx_path(self) -> Path:
        return self.path / self.manifest.get("onnx", {}).get("file", ONNX_FILE)

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    @property
    def pad_token_id(self) -> int:
        return int(self.manifest["pad_token_id"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @property
    def pooling(self) -> str:
        return str(self.manifest["pooling"])


def open_model_directory(path: Path, verify_sha256: bool = True) -> ModelDirectory:
    """Check ``path`` up front: every file present (named with its path), manifest complete, and
    ``model.onnx`` equal to the sha256 recorded at export (a truncated or swapped file is caught
    before onnxruntime sees it)."""
    from .tokenizer import TOKENIZER_FILES

    if not path.is_dir():
        raise ModelDirectoryError(f"no model directory at {path}: train one with 'spamfilter train' or pass --model DIR")
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ModelDirectoryError(f"{manifest_path} is missing: {path} is not a spamfilter model directory")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelDirectoryError(f"{manifest_path} is not readable JSON: {error}") from None
    if not isinstance(manifest, dict):
        raise ModelDirectoryError(f"{manifest_path} is not a spamfilter manifest")
    missing_keys = [key for key in _REQUIRED_KEYS if key not in manifest]
    if missing_keys:
        raise ModelDirectoryError(f"{manifest_path} lacks {', '.join(missing_keys)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ModelDirectoryError(
            f"{manifest_path} has format_version {manifest['format_version']}; this spamfilter reads {FORMAT_VERSION}"
        )
    directory = ModelDirectory(path, manifest)
    for required in (directory.onnx_path, *(path / name for name in TOKENIZER_FILES)):
        if not required.is_file():
            raise ModelDirectoryError(f"{required} is missing from the model directory")
    expected = manifest.get("onnx", {}).get("sha256")
    if verify_sha256 and expected and sha256_file(directory.onnx_path) != expected:
        raise ModelDirectoryError(
            f"{directory.onnx_path} does not match the sha256 in {MANIFEST_FILE}: the file is damaged or replaced; export again"
        )
    return directory
