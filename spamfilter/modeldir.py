"""The model directory's layout and its up-front check (no torch: the filter path reads it)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelDirectoryError
from .mail.text import MESSAGE_BYTES_READ, TEXT_CHARS_READ, chars_kept
from .windows import discount_recorded, windows_recorded

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

# The recipe's defaults, declared here once (torch-free: the command line reads them for its help
# without loading the training code). POOLINGS: the model's ways of pooling (model.py builds them).
POOLINGS = ("last", "last-token", "line-ends")
DEFAULT_POOLING = "line-ends"  # padding after a spam's lines cannot lower it (README Training)
MAX_LENGTH_LIMIT = 1 << 16  # tokens per window a manifest may name (GPT-2's context is 1,024)
VOCABULARY_SIZE = 50257  # GPT-2's token ids: 0 to 50256 (the padding token, <|endoftext|>)
MAIL_MAX_LENGTH = 256  # tokens per window for mail; see finetune.default_max_length
MAIL_TARGET_FPR = 0.001  # the share of ham a mail model's threshold may mark spam


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
class OnnxFile:
    """``model.onnx``: the fixed-length fp32 export and how it was checked against torch."""

    file: str = ONNX_FILE
    sha256: str | None = None
    opset: int | None = None
    parity_max_abs_diff: float | None = None
    parity_examples: int | None = None


@dataclass(frozen=True)
class Variant:
    """Another ONNX file of the directory (``fp32-dynamic``, ``int8``) and what was measured of it."""

    file: str
    sha256: str | None = None
    dynamic_length: bool = False  # accepts inputs shorter than max_length
    quantization: dict[str, Any] | None = None
    agreement_with_fp32: float | None = None  # share of test verdicts equal to fp32's
    max_abs_probability_diff: float | None = None  # largest P(spam) difference from fp32 on the test split
    accuracy: float | None = None
    measured_on: str | None = None  # machine and integer instruction set (int8 differs with them)


@dataclass(frozen=True)
class ModelRecipe:
    """How a model reads a message, typed, in one object: what the runtime, the filter, learn and
    training must agree on. Read from ``spamfilter.json`` (``Manifest.model_recipe``), where each
    value is stored once: ``max_length``, ``pad_token_id`` and ``pooling`` at the top level as every
    manifest has them, ``max_windows``, ``window_discount`` and ``target_fpr`` in its ``recipe`` (absent from
    manifests written before windows, the discount or calibration: one window, no discount, no
    target). The reading caps are the mail
    reader's (:mod:`spamfilter.mail.text`), the same for every model."""

    max_length: int  # tokens per window
    pad_token_id: int
    pooling: str
    max_windows: int = 1  # windows the threshold was calibrated for (windows.windows_recorded)
    window_discount: float = 0.0  # log-odds off per ln(windows read) (windows.discount_recorded)
    end_at_paragraph: bool = (
        False  # later windows start at a paragraph where one is near (windows.split_windows)
    )
    target_fpr: float | None = None  # the ham false-positive share the threshold was chosen for
    message_bytes: int = MESSAGE_BYTES_READ  # of a message handed over alone
    text_chars: int = TEXT_CHARS_READ  # of a message's extracted text

    @property
    def chars_kept(self) -> int:
        """Characters of a text tokenized at most: the mail reader's cap for this ``max_length``
        (:func:`spamfilter.mail.text.chars_kept`, decided there once)."""
        return chars_kept(self.max_length)


@dataclass(frozen=True)
class Manifest:
    """``spamfilter.json``: what any runtime needs to use the model, and where it came from."""

    max_length: int
    pad_token_id: int
    pooling: str
    threshold: float
    onnx: OnnxFile = field(default_factory=OnnxFile)
    variants: dict[str, Variant] = field(default_factory=dict)
    default_variant: str = "fp32"
    onnx_evaluation: dict[str, float] = field(default_factory=dict)  # n, fp32_accuracy
    base_model: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)  # kind (sms, mail, labelled), sizes
    format_version: int = FORMAT_VERSION
    labels: tuple[str, ...] = LABELS
    spamfilter_version: str = ""
    checkpoint: str | None = None  # the torch checkpoint's file name; None: model.pt (older manifests)

    @property
    def model_recipe(self) -> ModelRecipe:
        """The typed recipe (backward compatible: any manifest of this format version has one)."""
        target = self.recipe.get("target_fpr")
        numeric = isinstance(target, (int, float)) and not isinstance(target, bool)
        target_fpr = float(target) if numeric and target is not None else None
        return ModelRecipe(
            max_length=self.max_length,
            pad_token_id=self.pad_token_id,
            pooling=self.pooling,
            max_windows=windows_recorded(self.recipe),
            window_discount=discount_recorded(self.recipe),
            end_at_paragraph=self.recipe.get("end_at_paragraph") is True,
            target_fpr=target_fpr,
        )

    @property
    def trained_on(self) -> str:
        """``sms``, ``mail``, ``labelled`` (a CSV of unknown kind) or ``""`` (not recorded). Models
        written before the field existed are recognised by their data file's name."""
        kind = str(self.training_data.get("kind", ""))
        if not kind and str(self.recipe.get("data", "")).endswith("SMSSpamCollection"):
            return "sms"
        return kind

    def mail_warning(self) -> str | None:
        """One line for a filter run over mail with a model trained on SMS, else None."""
        if self.trained_on != "sms":
            return None
        return (
            "this model was trained on SMS messages: its accuracy on email is unknown (SMS models "
            "mark much legitimate mail as spam); train one on mail: "
            "spamfilter train --spam SPAM_MAIL --ham WANTED_MAIL"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; fields that were not measured are left out."""
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["onnx"] = _without_none(data["onnx"])
        data["variants"] = {name: _without_none(entry) for name, entry in data["variants"].items()}
        if data["checkpoint"] is None:
            del data["checkpoint"]
        return data

    @classmethod
    def from_dict(cls, data: Any, origin: Path) -> Manifest:
        """A manifest read from ``origin``; ``ModelDirectoryError`` names what is wrong with it."""
        if not isinstance(data, dict):
            raise ModelDirectoryError(f"{origin} is not a spamfilter manifest")
        missing = [key for key in _REQUIRED_KEYS if key not in data]
        if missing:
            raise ModelDirectoryError(f"{origin} lacks {', '.join(missing)}")
        if data["format_version"] != FORMAT_VERSION:
            raise ModelDirectoryError(_format_version_mismatch(origin, data["format_version"]))
        try:
            manifest = cls(
                max_length=int(data["max_length"]),
                pad_token_id=int(data["pad_token_id"]),
                pooling=str(data["pooling"]),
                threshold=float(data["threshold"]),
                onnx=OnnxFile(**data.get("onnx", {})),
                variants={name: Variant(**entry) for name, entry in data.get("variants", {}).items()},
                default_variant=str(data.get("default_variant", "fp32")),
                onnx_evaluation=dict(data.get("onnx_evaluation", {})),
                base_model=dict(data.get("base_model", {})),
                recipe=dict(data.get("recipe", {})),
                metrics=dict(data.get("metrics", {})),
                training_data=dict(data.get("training_data", {})),
                labels=tuple(data["labels"]),
                spamfilter_version=str(data.get("spamfilter_version", "")),
                checkpoint=str(data["checkpoint"]) if data.get("checkpoint") else None,
            )
        except (TypeError, ValueError, AttributeError, OverflowError) as error:
            raise ModelDirectoryError(f"{origin} is not a spamfilter manifest: {error}") from None
        wrong = manifest._out_of_range()
        if wrong:
            raise ModelDirectoryError(f"{origin} is not a spamfilter manifest: {wrong}")
        return manifest

    def _out_of_range(self) -> str | None:
        """What no model this package writes has: a window of no tokens (the windows' loop never
        ended on it: every filter run hung), a padding id outside GPT-2's vocabulary, a threshold
        that is not a probability (NaN made every verdict a traceback)."""
        if not 1 <= self.max_length <= MAX_LENGTH_LIMIT:
            return f"max_length {self.max_length} is not 1 to {MAX_LENGTH_LIMIT}"
        config = self.base_model.get("config") if isinstance(self.base_model, dict) else None
        context = config.get("n_positions") if isinstance(config, dict) else None
        if isinstance(context, int) and not isinstance(context, bool) and self.max_length > context:
            # the graph's position table has no row past its context: onnxruntime's Gather error
            return f"max_length {self.max_length} is more than the model's context of {context} tokens"
        if not 0 <= self.pad_token_id < VOCABULARY_SIZE:
            return f"pad_token_id {self.pad_token_id} is not a token id (0 to {VOCABULARY_SIZE - 1})"
        if not 0.0 <= self.threshold <= 1.0:  # NaN fails both comparisons
            return f"threshold {self.threshold} is not a probability (0 to 1)"
        return None

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def _format_version_mismatch(origin: Path, found: Any) -> str:
    """What to do about a manifest of another format: which spamfilter wrote it decides the fix."""
    newer = isinstance(found, int) and not isinstance(found, bool) and found > FORMAT_VERSION
    older = isinstance(found, int) and not isinstance(found, bool) and found < FORMAT_VERSION
    if newer:
        return (
            f"{origin} was written by a newer spamfilter (format_version {found}; this one reads "
            f"{FORMAT_VERSION}): upgrade spamfilter (pull and reinstall it), or retrain with "
            "`spamfilter train`"
        )
    if older:
        return (
            f"{origin} was written by an older spamfilter (format_version {found}; this one reads "
            f"{FORMAT_VERSION}): retrain with `spamfilter train`, or use the spamfilter that wrote it"
        )
    return (
        f"{origin} has format_version {found!r}, not one a spamfilter writes: retrain with `spamfilter train`"
    )


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class ModelDirectory:
    path: Path
    manifest: Manifest

    @property
    def onnx_path(self) -> Path:
        return self.path / self.manifest.onnx.file

    @property
    def checkpoint_path(self) -> Path:
        return self.path / (self.manifest.checkpoint or CHECKPOINT_FILE)

    @property
    def default_variant(self) -> str:
        return self.manifest.default_variant

    def variant_file(self, variant: str) -> tuple[Path, str | None]:
        """(file, expected sha256) for ``fp32`` or ``int8``.

        fp32 uses the dynamic-length export where there is one: its answers equal the fixed one's.
        """
        extra = self.manifest.variants
        if variant == "int8":
            if "int8" not in extra:
                raise ModelDirectoryError(
                    f"{self.path} has no int8 model: run 'spamfilter export {self.path} --quantize int8'"
                )
            return self.path / extra["int8"].file, extra["int8"].sha256
        if variant == "fp32" and "fp32-dynamic" in extra:
            return self.path / extra["fp32-dynamic"].file, extra["fp32-dynamic"].sha256
        if variant == "fp32":
            return self.onnx_path, self.manifest.onnx.sha256
        raise ModelDirectoryError(f"unknown model variant {variant!r}; choose fp32 or int8")

    def checked_variant_file(self, variant: str) -> Path:
        """The variant's file after checking it exists and matches its recorded sha256, so a truncated
        or swapped file is caught before onnxruntime sees it."""
        path, expected = self.variant_file(variant)
        if not path.is_file():
            raise ModelDirectoryError(f"{path} is missing from the model directory")
        if expected and sha256_file(path) != expected:
            raise ModelDirectoryError(
                f"{path} does not match the sha256 in {MANIFEST_FILE}: "
                "the file is damaged or replaced; export again"
            )
        return path

    @functools.cached_property
    def recipe(self) -> ModelRecipe:
        """The model's recipe, made once from the manifest: what the runtime reads ``max_length``,
        the pad token, windows and the text cap from."""
        return self.manifest.model_recipe

    @property
    def max_length(self) -> int:
        return self.manifest.max_length

    @property
    def pad_token_id(self) -> int:
        return self.manifest.pad_token_id

    @property
    def threshold(self) -> float:
        return self.manifest.threshold


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
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except PermissionError:
        raise ModelDirectoryError(
            f"permission denied reading {manifest_path}; check the file's owner/mode"
        ) from None
    except OSError as error:
        raise ModelDirectoryError(f"cannot read {manifest_path}: {error.strerror or error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelDirectoryError(f"{manifest_path} is not readable JSON: {error}") from None
    except RecursionError:  # arrays nested thousands deep
        raise ModelDirectoryError(f"{manifest_path} is not a spamfilter manifest: nested too deep") from None
    directory = ModelDirectory(path, Manifest.from_dict(data, manifest_path))
    for required in (directory.onnx_path, *(path / name for name in TOKENIZER_FILES)):
        if not required.is_file():
            raise ModelDirectoryError(f"{required} is missing from the model directory")
    return directory
