"""GPT-2 in torch with Hugging Face's parameter names, plus the spam-classification head.

Parameter names follow Hugging Face's GPT-2 (``wte``, ``wpe``, ``h.N.attn.c_attn``, ``ln_f``), so
loading pretrained weights is a state-dict copy plus a transpose of the Conv1D weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("last", "last-token")
"""``last``: the hidden state at the last (padded) position, as the reference recipe does.
``last-token``: the hidden state at each message's last real token; under the causal mask it does
not depend on the padding after it, so shorter inputs give identical answers."""


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GPTConfig:
        """Accepts our own keys and Hugging Face ``config.json`` (extra keys ignored)."""
        known = {k: values[k] for k in cls.__dataclass_fields__ if k in values}
        return cls(**known)


GPT2_SIZES: dict[str, GPTConfig] = {
    "gpt2-small": GPTConfig(n_embd=768, n_layer=12, n_head=12),
    "gpt2-medium": GPTConfig(n_embd=1024, n_layer=24, n_head=16),
    "gpt2-large": GPTConfig(n_embd=1280, n_layer=36, n_head=20),
    "gpt2-xl": GPTConfig(n_embd=1600, n_layer=48, n_head=25),
}


def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Row b's position ``index[b]``: (B, T, C), (B,) -> (B, 1, C)."""
    return x[torch.arange(x.shape[0], device=x.device), index][:, None]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # qkv with bias
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor, only: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); with ``only`` (B,) -> (B, 1, C), row b's output at position
        ``only[b]`` alone: one query there, keys and values up to it."""
        B, T, C = x.shape
        if only is None:
            q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
            mask = None
        else:
            weight, bias = self.c_attn.weight, self.c_attn.bias
            q = F.linear(take(x, only), weight[:C], bias[:C])  # (B, 1, C)
            k, v = F.linear(x, weight[C:], bias[C:]).split(C, dim=2)  # (B, T, C) each
            visible = torch.arange(T, device=x.device) <= only[:, None]  # (B, T): causal
            mask = visible[:, None, None, :]  # (B, 1, 1, T)
        q = q.view(B, -1, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, Tq, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=only is None)
        y = y.transpose(1, 2).reshape(B, -1, C)  # (B, Tq, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, only: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); with ``only`` (B,) -> (B, 1, C) at those positions alone."""
        h = self.ln_1(x)  # (B, T, C): keys and values need every position
        if only is not None:
            x = take(x, only)  # (B, 1, C)
        x = x + self.attn(h, only)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2. ``forward(input_ids)`` returns ``lm_head`` outputs at every position: next-token
    logits ``(B, T, vocab)`` for the language model, class logits ``(B, T, 2)`` once
    :func:`add_classification_head` has replaced the head."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # GPT-2 ties the output head to the embedding
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        if self.config.n_positions < T:
            raise ValueError(f"sequence of {T} tokens exceeds the context of {self.config.n_positions}")
        positions = torch.arange(T, device=input_ids.device)
        return self.wte(input_ids) + self.wpe(positions)  # (B, T, C)

    def run_blocks(self, x: torch.Tensor, start: int = 0, only: torch.Tensor | None = None) -> torch.Tensor:
        """Blocks ``start..`` then the final LayerNorm: (B, T, C) -> (B, T, C); with ``only`` (B,)
        -> (B, 1, C), the last block computing those positions alone (see :class:`Block`)."""
        blocks = self.h[start:]
        for i, block in enumerate(blocks):
            x = block(x, only if i == len(blocks) - 1 else None)
        if only is not None and not blocks:
            x = take(x, only)  # (B, 1, C)
        return self.ln_f(x)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.run_blocks(self.embed(input_ids)))


NUM_CLASSES = 2


def add_classification_head(model: GPT) -> GPT:
    """Replace the tied language-model head by a fresh ``Linear(n_embd, 2)``."""
    model.lm_head = nn.Linear(model.config.n_embd, NUM_CLASSES)
    return model


def last_token_index(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Index of each row's last non-padding token (0 for an all-padding row): (B,).

    Works for right padding; a message made only of padding tokens reads position 0.
    """
    is_real = (input_ids != pad_token_id).to(torch.int64)  # (B, T)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
    return (is_real * positions).amax(dim=1)


class SpamClassifier(nn.Module):
    """``input_ids (B, T) -> logits (B, 2)``: the module that is trained and exported to ONNX."""

    def __init__(self, gpt: GPT, pooling: str = "last", pad_token_id: int = 50256) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        if gpt.lm_head.out_features != NUM_CLASSES:
            raise ValueError("the model has no classification head; call add_classification_head")
        self.gpt = gpt
        self.pooling = pooling
        self.pad_token_id = pad_token_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The plain full forward: every block at every position, then the pooled position."""
        hidden = self.gpt.run_blocks(self.gpt.embed(input_ids))  # (B, T, C)
        return self.gpt.lm_head(take(hidden, self.pooled_index(input_ids))[:, 0])

    def logits_from_block(self, x: torch.Tensor, input_ids: torch.Tensor, start: int) -> torch.Tensor:
        """Class logits from the input ``x`` (B, T, C) of block ``start``, for training.

        The logits of :meth:`forward` with less work: only the pooled position reaches the head,
        so the last block computes keys and values for every position but queries, attention
        output and MLP for that position alone.
        """
        return self.gpt.lm_head(self.features_from_block(x, input_ids, start))

    def features_from_block(self, x: torch.Tensor, input_ids: torch.Tensor, start: int) -> torch.Tensor:
        """What the head reads, from the input ``x`` (B, T, C) of block ``start``: (B, C)."""
        return self.gpt.run_blocks(x, start, only=self.pooled_index(input_ids))[:, 0]

    def features(self, input_ids: torch.Tensor) -> torch.Tensor:
        """What the head reads: the pooled position after the final LayerNorm, (B, T) -> (B, C). The
        head is linear, so ``lm_head(features(ids))`` are the logits; ``spamfilter learn`` retrains
        the head on these."""
        return self.features_from_block(self.gpt.embed(input_ids), input_ids, 0)

    def forward_pooled(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The logits of :meth:`forward`, with the last block computed only where the head reads
        (what the exported ONNX model runs: about 7 % less work for GPT-2 small)."""
        return self.logits_from_block(self.gpt.embed(input_ids), input_ids, 0)

    def pooled_index(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The position the head reads in each row: (B, T) -> (B,)."""
        if self.pooling == "last":
            return torch.full_like(input_ids[:, 0], input_ids.shape[1] - 1)
        return last_token_index(input_ids, self.pad_token_id)
