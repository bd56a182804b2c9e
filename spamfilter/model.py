"""GPT-2 in torch with Hugging Face's parameter names, plus the spam-classification head.

Parameter names follow Hugging Face's GPT-2 (``wte``, ``wpe``, ``h.N.attn.c_attn``, ``ln_f``), so
loading pretrained weights is a state-dict copy plus a transpose of the Conv1D weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, cast

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


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # qkv with bias
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
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

    def run_blocks(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Blocks ``start..`` then the final LayerNorm: (B, T, C) -> (B, T, C)."""
        for block in self.h[start:]:
            x = block(x)
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


def pool(hidden: torch.Tensor, input_ids: torch.Tensor, pooling: str, pad_token_id: int) -> torch.Tensor:
    """Pick the position the classifier reads: (B, T, C) -> (B, C)."""
    if pooling == "last":
        return hidden[:, -1, :]
    if pooling == "last-token":
        index = last_token_index(input_ids, pad_token_id)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


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
        return self.head(self.gpt.run_blocks(self.gpt.embed(input_ids)), input_ids)

    def logits_from_block(self, x: torch.Tensor, input_ids: torch.Tensor, start: int) -> torch.Tensor:
        """Class logits from the input ``x`` (B, T, C) of block ``start``, for training.

        The same answer as running blocks ``start..`` and :meth:`head`, with less work: only the
        pooled position reaches the head, so the last block computes keys and values for every
        position but queries, attention output and MLP for that position alone.
        """
        gpt = self.gpt
        for block in gpt.h[start:-1]:
            x = block(x)
        if start >= len(gpt.h):
            return self.head(gpt.ln_f(x), input_ids)
        B, T, C = x.shape
        block = cast(Block, gpt.h[-1])
        attn = block.attn
        nh, hs = attn.n_head, C // attn.n_head
        h = block.ln_1(x)  # (B, T, C)
        mask: torch.Tensor | None = None  # `last`: the last position sees every key
        if self.pooling == "last":
            # plain slicing (no index arithmetic), so that an exported graph keeps a dynamic batch
            query_input, residual = h[:, -1], x[:, -1]
        else:
            index = last_token_index(input_ids, self.pad_token_id)
            rows = torch.arange(B, device=x.device)
            query_input, residual = h[rows, index], x[rows, index]
            visible = torch.arange(T, device=x.device)[None, :] <= index[:, None]  # causal: keys up to it
            mask = visible[:, None, None, :]
        weight, bias = attn.c_attn.weight, attn.c_attn.bias
        k, v = F.linear(h, weight[C:], bias[C:]).split(C, dim=2)  # (B, T, C) each
        q = F.linear(query_input, weight[:C], bias[:C]).view(B, nh, 1, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, 1, hs)
        pooled = residual + attn.c_proj(y.reshape(B, C))  # (B, C)
        pooled = pooled + block.mlp(block.ln_2(pooled))
        return gpt.lm_head(gpt.ln_f(pooled))

    def forward_pooled(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The logits of :meth:`forward`, with the last block computed only where the head reads
        (what the exported ONNX model runs: about 7 % less work for GPT-2 small)."""
        return self.logits_from_block(self.gpt.embed(input_ids), input_ids, 0)

    def head(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Class logits from the final hidden states: (B, T, C) -> (B, 2)."""
        return self.gpt.lm_head(pool(hidden, input_ids, self.pooling, self.pad_token_id))
