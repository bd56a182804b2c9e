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
DYNAMIC_ONNX_FILE = "model.dynamic.onnx"  # last-token pooling only: accepts shorter inputs
INT8_ONNX_FILE = "model.int8.onnx"
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


LAST_MODEL_POINTER = "last-model"  # in data_home(): the directory that train wrote last


def default_model_dir() -> Path:
    """Where ``filter`` / ``classify`` / ``eval`` look without ``--model``: ``$SPAMFILTER_MODEL`` if
    set, else the directory ``train`` wrote last, else ``$XDG_DATA_HOME/spamfilter/model`` (where
    ``train`` writes without ``--out``)."""
    override = os.environ.get("SPAMFILTER_MODEL")
    if override:
        return Path(override)
    try:
        last = Path((data_home() / LAST_MODEL_POINTER).read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError):
        last = None
    return last if last is not None and last.is_dir() else data_home() / "model"


def train_output_dir() -> Path:
    """Where ``train`` writes without ``--out``: ``$SPAMFILTER_MODEL``, else the user data folder."""
    override = os.environ.get("SPAMFILTER_MODEL")
    return Path(override) if override else data_home() / "model"


def remember_model_dir(path: Path) -> None:
    """Record ``path`` as the model directory that train wrote last (best effort)."""
    try:
        data_home().mkdir(parents=True, exist_ok=True)
        (data_home() / LAST_MODEL_POINTER).write_text(str(path.resolve()) + "\n", encoding="utf-8")
    except OSError:
        pass  # a read-only home must not fail a finished training run


@dataclass(frozen=True)
class ModelDirectory:
    path: Path
    manifest: dict[str, Any]

    @property
    def onnx_path(self) -> Path:
        return self.path / self.manifest.get("onnx", {}).get("file", ONNX_FILE)

    @property
    def default_variant(self) -> str:
        return str(self.manifest.get("default_variant", "fp32"))

    def variant_file(self, variant: str) -> tuple[Path, str | None, bool]:
        """(file, expected sha256, has a dynamic sequence axis) for ``fp32`` or ``int8``.

        fp32 uses the dynamic-length export where there is one: its answers equal the fixed one's.
        """
        extra = self.manifest.get("variants", {})
        if variant == "int8":
            if "int8" not in extra:
                raise ModelDirectoryError(
                    f"{self.path} has no int8 model: run 'spamfilter export {self.path} --quantize int8'"
                )
            entry = extra["int8"]
        elif variant == "fp32" and "fp32-dynamic" in extra:
            entry = extra["fp32-dynamic"]
        elif variant == "fp32":
            entry = {**self.manifest.get("onnx", {}), "file": self.onnx_path.name, "dynamic_length": False}
        else:
            raise ModelDirectoryError(f"unknown model variant {variant!r}; choose fp32 or int8")
        return self.path / entry["file"], entry.get("sha256"), bool(entry.get("dynamic_length"))

    def checked_variant_file(self, variant: str) -> tuple[Path, bool]:
        """The variant's file after checking it exists and matches its recorded sha256, so a truncated
        or swapped file is caught before onnxruntime sees it."""
        path, expected, dynamic = self.variant_file(variant)
        if not path.is_file():
            raise ModelDirectoryError(f"{path} is missing from the model directory")
        if expected and sha256_file(path) != expected:
            raise ModelDirectoryError(
                f"{path} does not match the sha256 in {MANIFEST_FILE}: "
                "the file is damaged or replaced; export again"
            )
        return path, dynamic

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


def open_model_directory(path: Path) -> ModelDirectory:
    """Check ``path`` up front: every file present (named with its path) and the manifest complete.
    The sha256 of a model file is checked where it is loaded (``checked_variant_file``), so that only
    the variant actually used is read for it."""
    from .tokenizer import TOKENIZER_FILES

    if not path.is_dir():
        raise ModelDirectoryError(
            f"no model directory at {path}: train one with 'spamfilter train' or pass --model DIR"
        )
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
            f"{manifest_path} has format_version {manifest['format_version']}; "
            f"this spamfilter reads {FORMAT_VERSION}"
        )
    directory = ModelDirectory(path, manifest)
    for required in (directory.onnx_path, *(path / name for name in TOKENIZER_FILES)):
        if not required.is_file():
            raise ModelDirectoryError(f"{required} is missing from the model directory")
    return directory
