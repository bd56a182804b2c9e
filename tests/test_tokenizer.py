"""The packaged GPT-2 encoding: same ids as tiktoken's "gpt2", offline, padding and truncation."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken
from conftest import GPT2_TOKENIZER_DIR
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from spamfilter.tokenizer import PAD_TOKEN_ID, Tokenizer, _packaged_ranks, load_encoding

SAMPLES = [
    "Do you have time",
    "WINNER!! As a valued network customer you have been selected to receive a £900 prize reward!",
    "Ok lar... Joking wif u oni...",
    "naïve café – 日本語のテキスト 🙂\n\ttabs  and   spaces",
    "",
]


@pytest.fixture(autouse=True)
def _no_tiktoken_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken's loaders copy every file they read into $TMPDIR/data-gym-cache; "" turns that off."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")


def _reference_encoding() -> tiktoken.Encoding:
    # tiktoken's own "gpt2" definition, fed the reference files instead of its download URLs.
    from tiktoken_ext.openai_public import r50k_pat_str

    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(GPT2_TOKENIZER_DIR / "vocab.bpe"),
        encoder_json_file=str(GPT2_TOKENIZER_DIR / "encoder.json"),
    )
    return tiktoken.Encoding(
        "gpt2-ref",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
        explicit_n_vocab=50257,
    )


def test_known_ids() -> None:
    assert Tokenizer().encode("Do you have time") == [5211, 345, 423, 640]


@pytest.mark.parametrize("text", SAMPLES)
def test_same_ids_as_tiktoken_gpt2(text: str) -> None:
    assert Tokenizer().encode(text) == _reference_encoding().encode(text, disallowed_special=())


def test_endoftext_literal_is_ordinary_text() -> None:
    ids = Tokenizer().encode("free <|endoftext|> prize")
    assert PAD_TOKEN_ID not in ids
    assert Tokenizer().encoding.decode(ids) == "free <|endoftext|> prize"


def test_pad_and_truncate() -> None:
    tokenizer = Tokenizer()
    rows = tokenizer.pad([[1, 2, 3], list(range(10))], max_length=5)
    assert rows.dtype.name == "int64" and rows.shape == (2, 5)
    assert rows[0].tolist() == [1, 2, 3, PAD_TOKEN_ID, PAD_TOKEN_ID]
    assert rows[1].tolist() == [0, 1, 2, 3, 4]


def test_damaged_tokenizer_files_are_rejected(tmp_path: Path) -> None:
    shutil.copy(GPT2_TOKENIZER_DIR / "encoder.json", tmp_path / "encoder.json")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nĠ t\n")
    with pytest.raises(ValueError, match="not GPT-2's"):
        load_encoding(tmp_path)


def test_missing_tokenizer_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="encoder.json"):
        load_encoding(tmp_path)


def test_packaged_ranks_are_those_tiktoken_builds_from_the_gpt2_files() -> None:
    reference = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(GPT2_TOKENIZER_DIR / "vocab.bpe"),
        encoder_json_file=str(GPT2_TOKENIZER_DIR / "encoder.json"),
    )
    assert _packaged_ranks() == reference


def test_loading_writes_nothing_where_a_local_user_could_plant_a_file(tmp_path: Path) -> None:
    """tiktoken's own loader reads and writes $TMPDIR/data-gym-cache/<sha1 of the file's path>: a
    FIFO planted there by another user hung every process that loaded the tokenizer. The encoding
    is built from the model's files without that cache (the old loader would block here until the
    timeout)."""
    model = tmp_path / "model"
    model.mkdir()
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(GPT2_TOKENIZER_DIR / name, model / name)
    cache = tmp_path / "tmp" / "data-gym-cache"
    cache.mkdir(parents=True)
    for name in ("encoder.json", "vocab.bpe"):
        os.mkfifo(cache / hashlib.sha1(str(model / name).encode()).hexdigest())
    planted = sorted(p.name for p in cache.iterdir())
    environment = {
        k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")
    }
    code = f"import spamfilter.tokenizer as t; print(t.Tokenizer({str(model)!r}).encode('Do you have time'))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**environment, "TMPDIR": str(tmp_path / "tmp")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[5211, 345, 423, 640]"
    assert sorted(p.name for p in cache.iterdir()) == planted  # nothing added


def test_damaged_packaged_ranks_are_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from spamfilter import tokenizer

    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(GPT2_TOKENIZER_DIR / name, tmp_path / name)
    (tmp_path / tokenizer.RANKS_FILE).write_bytes(b"IQ== 0\n")
    monkeypatch.setattr(tokenizer, "packaged_tokenizer_dir", lambda: tmp_path)
    _packaged_ranks.cache_clear()
    try:
        with pytest.raises(ValueError, match="damaged: reinstall"):
            _packaged_ranks()
    finally:
        _packaged_ranks.cache_clear()
