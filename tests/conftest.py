"""Shared fixtures: the reference data beside the project and tiny GPT-2 checkpoints in the real
Hugging Face file formats (``config.json`` + ``model.safetensors``), built by the tests because
pretrained weights cannot be downloaded here."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

# The tests never touch the user's folders: the model pointer and caches go to a scratch folder.
_SCRATCH_HOME = tempfile.mkdtemp(prefix="spamfilter-tests-")
os.environ["XDG_DATA_HOME"] = os.path.join(_SCRATCH_HOME, "data")
os.environ["SPAMFILTER_CACHE"] = os.path.join(_SCRATCH_HOME, "cache")
os.environ.pop("SPAMFILTER_MODEL", None)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
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
    from click.testing import CliRunner

    from spamfilter.cli import cli

    root = tmp_path_factory.mktemp("trained")
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
