"""GPT-2 byte-pair encoding from the files shipped in the package: no network, no torch.

tiktoken's own ``get_encoding("gpt2")`` downloads ``encoder.json`` and ``vocab.bpe`` on first use;
building the ``Encoding`` from the packaged copies (checked against the sha256 values tiktoken
itself checks) gives the very same ids offline.

The merge ranks are not rebuilt from those two files in every process: tiktoken's conversion took
a third of a second, most of the start of a one-message filter, and it copies each file it reads
into ``$TMPDIR/data-gym-cache`` under a name any local user can predict and take first (a FIFO
there would hang every filter). The same ranks ship in tiktoken's own format,
``r50k_base.tiktoken``, the file OpenAI publishes for that encoding (tiktoken's sha256), read in
50 ms. The two GPT-2 files are still required and checked: the ranks stand for exactly those files.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import tiktoken

ENCODER_JSON = "encoder.json"
VOCAB_BPE = "vocab.bpe"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
_SIZES = {ENCODER_JSON: 1_042_301, VOCAB_BPE: 456_318}  # checked before a file is read whole
TOKENIZER_FILES = (ENCODER_JSON, VOCAB_BPE)
RANKS_FILE = "r50k_base.tiktoken"  # the merge ranks of those two files, as tiktoken stores them
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"

END_OF_TEXT = "<|endoftext|>"
PAD_TOKEN_ID = 50256  # GPT-2's <|endoftext|>, used as the padding token by the recipe
VOCAB_SIZE = 50257

# The pre-tokenisation pattern of tiktoken's "gpt2" / "r50k_base" encodings.
_R50K_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def packaged_tokenizer_dir() -> Path:
    """The folder inside the installed package that holds ``encoder.json`` and ``vocab.bpe``."""
    return Path(str(resources.files("spamfilter") / "assets"))


@functools.lru_cache(maxsize=4)
def load_encoding(directory: str | Path | None = None) -> tiktoken.Encoding:
    """The GPT-2 encoding for the tokenizer files in ``directory`` (default: the packaged copy).

    Raises ``ValueError`` if a file is missing or its sha256 is not the expected one.
    """
    folder = Path(directory) if directory is not None else packaged_tokenizer_dir()
    for name in TOKENIZER_FILES:
        if not (folder / name).is_file():
            raise ValueError(f"tokenizer file missing: {folder / name}")
    for name, sha256 in ((VOCAB_BPE, VOCAB_BPE_SHA256), (ENCODER_JSON, ENCODER_JSON_SHA256)):
        if not _has_sha256(folder / name, sha256):
            raise ValueError(f"tokenizer files in {folder} are not GPT-2's: {name} has another sha256")
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=_R50K_PATTERN,
        mergeable_ranks=_packaged_ranks(),
        special_tokens={END_OF_TEXT: PAD_TOKEN_ID},
        explicit_n_vocab=VOCAB_SIZE,
    )


def _has_sha256(path: Path, sha256: str) -> bool:
    return (
        path.stat().st_size == _SIZES[path.name] and hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    )


@functools.lru_cache(maxsize=1)
def _packaged_ranks() -> dict[bytes, int]:
    """The merge ranks of GPT-2's files, from ``RANKS_FILE`` (lines of base64 token and rank)."""
    path = packaged_tokenizer_dir() / RANKS_FILE
    data = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != RANKS_SHA256:
        raise ValueError(f"{path} is missing or damaged: reinstall spamfilter")
    return {
        base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines())
    }


class Tokenizer:
    """Encodes messages to fixed-length id rows the way the recipe does."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.encoding = load_encoding(directory)

    def encode(self, text: str) -> list[int]:
        # disallowed_special=() makes a literal "<|endoftext|>" in a message ordinary text:
        # a message must never be able to inject the padding token or raise an error.
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=1)

    def pad(
        self, rows: Iterable[Sequence[int]], max_length: int, pad_token_id: int = PAD_TOKEN_ID
    ) -> np.ndarray:
        """Truncate each row to ``max_length`` and right-pad it with ``pad_token_id``: int64 array."""
        return pad_rows(rows, max_length, pad_token_id)


def pad_rows(
    rows: Iterable[Sequence[int] | np.ndarray], max_length: int, pad_token_id: int = PAD_TOKEN_ID
) -> np.ndarray:
    """Each row truncated to ``max_length`` and right-padded with ``pad_token_id``: an int64 array."""
    rows = list(rows)
    out = np.full((len(rows), max_length), pad_token_id, dtype=np.int64)
    for i, row in enumerate(rows):
        clipped = row[:max_length]
        out[i, : len(clipped)] = clipped
    return out


def unpad(ids: np.ndarray, pad_token_id: int = PAD_TOKEN_ID) -> list[np.ndarray]:
    """The rows of a right-padded id array without their padding (at least one id each). A message
    never holds the padding id itself: its text is encoded as ordinary text."""
    rows = []
    for row in ids:
        real = np.flatnonzero(row != pad_token_id)
        rows.append(row[: int(real[-1]) + 1 if len(real) else 1])
    return rows
