"""Shared fixtures: the reference data beside the project and tiny GPT-2 checkpoints in the real
Hugging Face file formats (``config.json`` + ``model.safetensors``), built by the tests because
pretrained weights cannot be downloaded here."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import SHARED_DATA, copy_model

# The tests never touch the user's folders: the model pointer and caches go to a scratch folder.
_SCRATCH_HOME = tempfile.mkdtemp(prefix="spamfilter-tests-")
os.environ["XDG_DATA_HOME"] = os.path.join(_SCRATCH_HOME, "data")
os.environ["SPAMFILTER_CACHE"] = os.path.join(_SCRATCH_HOME, "cache")
os.environ.pop("SPAMFILTER_MODEL", None)

SMS_FILE = SHARED_DATA / "sms_spam_collection" / "SMSSpamCollection"
GPT2_TOKENIZER_DIR = SHARED_DATA / "gpt2"


def tiny_hf_config(n_embd: int = 32, n_layer: int = 2, n_head: int = 2, n_positions: int = 128):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=50257,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


def write_hf_checkpoint(folder: Path, layout: str = "save_pretrained", seed: int = 0, **config):
    """A random GPT-2 saved as ``save_pretrained`` does, or re-keyed as the hub's files are."""
    import torch
    from safetensors.torch import save_file
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(tiny_hf_config(**config)).eval()
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "save_pretrained":
        model.save_pretrained(folder, safe_serialization=True)
    elif layout == "hub":
        # The hub's openai-community files: no prefix, causal-mask buffers, no lm_head.
        n_pos = model.config.n_positions
        tensors = {
            k.removeprefix("transformer."): v.contiguous()
            for k, v in model.state_dict().items()
            if k != "lm_head.weight"
        }
        for i in range(model.config.n_layer):
            tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, n_pos, n_pos))
        save_file(tensors, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
    else:
        raise ValueError(layout)
    return model


@pytest.fixture(scope="session")
def sms_file() -> Path:
    if not SMS_FILE.is_file():
        pytest.fail(f"reference data missing: {SMS_FILE}")
    return SMS_FILE


TINY_CONFIG = {"n_embd": 128, "n_layer": 2, "n_head": 2, "n_positions": 256, "vocab_size": 50257}


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, sms_file: Path) -> Path:
    """A model directory trained end to end through the real CLI on the full SMS data: a small
    GPT-2 (2 layers, 128 dims) from random weights with every layer trained."""
    root = tmp_path_factory.mktemp("trained")
    out = root / "model"
    cached = os.environ.get("SPAMFILTER_TEST_MODEL")
    if cached and not os.environ.get("CI"):
        # Development only: reuse a model trained by an earlier run (trained here and kept there
        # when the folder does not exist yet). CI always trains its own.
        if not Path(cached, "spamfilter.json").is_file():
            shutil.rmtree(cached, ignore_errors=True)
            shutil.copytree(_train_tiny_model(root / "fresh", sms_file), cached)
        shutil.copytree(cached, out)
        return out
    return _train_tiny_model(root, sms_file)


def _train_tiny_model(root: Path, sms_file: Path) -> Path:
    from click.testing import CliRunner

    from spamfilter.cli import cli

    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(TINY_CONFIG))
    out = root / "model"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--model",
            str(root / "config.json"),
            "--weights",
            "random",
            "--trainable",
            "all",
            "--data",
            str(sms_file),
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture()
def model_copy(trained_model: Path, tmp_path: Path) -> Path:
    """The session's model copied for one test that rewrites it (learn, TELL, a retrain)."""
    return copy_model(trained_model, tmp_path / "model")


# --- helpers shared by the test files --------------------------------------------------------


def default_model_file(model: Path) -> Path:
    """The ONNX file that filter and serve load from ``model`` (its default variant: int8 where it
    agrees with fp32): the one to damage in a fault test."""
    from spamfilter.modeldir import open_model_directory

    directory = open_model_directory(model)
    return directory.variant_file(directory.default_variant)[0]


def split_messages(data: bytes) -> list[bytes]:
    """An mbox's messages, each with its exact bytes."""
    from spamfilter.mail import split_mbox

    return list(split_mbox(io.BytesIO(data)))


def make_email(
    subject: str,
    body: str,
    *,
    sender: str = "someone@example.org",
    newline: str = "\n",
    extra: str = "",
) -> bytes:
    """An RFC 822 message as an MTA hands it on: Return-Path first, 8-bit UTF-8 text; ``extra`` is
    more header lines (each ending with ``newline``)."""
    lines = [
        f"Return-Path: <{sender}>",
        f"From: <{sender}>",
        "To: alice@example.org",
        f"Subject: {subject}",
        "Date: Mon, 4 Mar 2024 09:12:41 +0000",
        f"Message-ID: <{'.'.join(subject.lower().split()) or 'empty'}@example.org>",
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 8bit",
    ]
    return (newline.join(lines) + newline + extra + newline + body + newline).encode("utf-8")


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    """``messages`` as an mbox file (a From_ line added where a message has none)."""
    with open(path, "wb") as out:
        for raw in messages:
            if not raw.startswith(b"From "):
                out.write(b"From sender@example.org Mon Jan  1 00:00:00 2024\n")
            out.write(raw.rstrip(b"\n") + b"\n\n")
    return path


def write_split_csv(frame, path: Path) -> Path:  # noqa: ANN001 - a pandas DataFrame
    """A split as the CSV that ``filter`` and ``eval`` read: ``Label`` (spam / not spam) and ``Text``."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Label", "Text"])
        for label, text in zip(frame["Label"], frame["Text"], strict=True):
            writer.writerow(["spam" if label == 1 else "not spam", text])
    return path


@pytest.fixture(scope="session")
def test_csv(tmp_path_factory: pytest.TempPathFactory, sms_file: Path) -> Path:
    """The SMS test split (300 messages) as a labelled CSV."""
    from spamfilter.data import balance, random_split, read_labelled

    return write_split_csv(
        random_split(balance(read_labelled(sms_file))).test, tmp_path_factory.mktemp("data") / "test.csv"
    )


class StandIn:
    """A test's stand-in for ``runtime.Classifier``: delegates to a real one (it satisfies
    ``pipeline.Scorer``); subclasses change ``spam_probability`` to cause what cannot be caused
    on purpose here (an onnxruntime failure, a signal at an exact moment)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    @property
    def provider(self) -> str:
        return str(self.real.provider)

    @property
    def variant(self) -> str:
        return str(self.real.variant)

    @property
    def threshold(self) -> float:
        return float(self.real.threshold)

    def spam_probability(self, texts: Sequence[str]) -> np.ndarray:
        return self.real.spam_probability(texts)
