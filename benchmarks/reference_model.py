"""The reference recipe's classifier as the tutorial's code computes it, for the "reference" way of
the benchmarks.

spamfilter's own torch model (``spamfilter.model``) is already a fast eager implementation (one fused
QKV projection, ``scaled_dot_product_attention``, ``nn.LayerNorm`` and ``F.gelu`` kernels), so
timing it would flatter the baseline. The reference recipe's model is built differently, and this
module rebuilds that structure (written here from its description, same arithmetic):

- attention: separate query / key / value projections, scores = Q Kᵀ with the upper triangle
  filled with -inf from a registered context-length mask, softmax(scores / sqrt(head size)),
  dropout modules (inactive in eval mode);
- LayerNorm written out as mean / biased variance / scale and shift;
- GELU written out as its tanh approximation with ``torch.pow``;
- the classification head applied at every position, the last position's logits taken.

``from_classifier`` copies the weights of a spamfilter ``SpamClassifier`` (pooling ``last``) so that
both compute the same logits; ``benchmarks.bench_filter`` checks that before timing.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from spamfilter.model import Block, SpamClassifier


class WrittenOutLayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        variance = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * ((x - mean) / torch.sqrt(variance + self.eps)) + self.shift


class WrittenOutGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.sqrt(torch.tensor(2.0 / math.pi))
        return 0.5 * x * (1 + torch.tanh(c * (x + 0.044715 * torch.pow(x, 3))))


class MaskedAttention(nn.Module):
    mask: torch.Tensor  # the registered buffer (nn.Module's __getattr__ would type it Tensor | Module)

    def __init__(self, dim: int, heads: int, context: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(0.0)
        self.register_buffer("mask", torch.triu(torch.ones(context, context), diagonal=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def heads(projection: nn.Linear) -> torch.Tensor:
            return projection(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.query), heads(self.key), heads(self.value)
        scores = q @ k.transpose(2, 3)
        scores.masked_fill_(self.mask.bool()[:t, :t], -torch.inf)
        weights = self.dropout(torch.softmax(scores / k.shape[-1] ** 0.5, dim=-1))
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, d))


class ReferenceBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context: int, eps: float) -> None:
        super().__init__()
        self.norm1 = WrittenOutLayerNorm(dim, eps)
        self.attention = MaskedAttention(dim, heads, context)
        self.norm2 = WrittenOutLayerNorm(dim, eps)
        self.feed_forward = nn.Sequential(nn.Linear(dim, 4 * dim), WrittenOutGELU(), nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm1(x)))
        return x + self.dropout(self.feed_forward(self.norm2(x)))


class ReferenceClassifier(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, context: int, vocab: int, eps: float) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, dim)
        self.position_embedding = nn.Embedding(context, dim)
        self.dropout = nn.Dropout(0.0)
        self.blocks = nn.Sequential(*(ReferenceBlock(dim, heads, context, eps) for _ in range(layers)))
        self.final_norm = WrittenOutLayerNorm(dim, eps)
        self.head = nn.Linear(dim, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.dropout(self.token_embedding(ids) + self.position_embedding(positions))
        logits = self.head(self.final_norm(self.blocks(x)))  # (B, T, 2): the head at every position
        return logits[:, -1, :]

    @classmethod
    def from_classifier(cls, classifier: SpamClassifier) -> ReferenceClassifier:
        """The same weights as a spamfilter ``SpamClassifier`` with pooling ``last``."""
        gpt = classifier.gpt
        config = gpt.config
        model = cls(
            config.n_embd,
            config.n_layer,
            config.n_head,
            config.n_positions,
            config.vocab_size,
            config.layer_norm_epsilon,
        )
        with torch.no_grad():
            model.token_embedding.weight.copy_(gpt.wte.weight)
            model.position_embedding.weight.copy_(gpt.wpe.weight)
            for ours, theirs in zip(model.blocks, gpt.h, strict=True):
                # nn.Sequential and nn.ModuleList yield plain nn.Module: narrow to the blocks they hold
                assert isinstance(ours, ReferenceBlock) and isinstance(theirs, Block)
                weights = theirs.attn.c_attn.weight.split(config.n_embd, dim=0)
                biases = theirs.attn.c_attn.bias.split(config.n_embd, dim=0)
                projections = (ours.attention.query, ours.attention.key, ours.attention.value)
                for linear, weight, bias in zip(projections, weights, biases, strict=True):
                    linear.weight.copy_(weight)
                    linear.bias.copy_(bias)
                _copy_linear(ours.attention.out, theirs.attn.c_proj)
                _copy_linear(cast(nn.Linear, ours.feed_forward[0]), theirs.mlp.c_fc)
                _copy_linear(cast(nn.Linear, ours.feed_forward[2]), theirs.mlp.c_proj)
                _copy_norm(ours.norm1, theirs.ln_1)
                _copy_norm(ours.norm2, theirs.ln_2)
            _copy_norm(model.final_norm, gpt.ln_f)
            _copy_linear(model.head, gpt.lm_head)
        return model.eval()


def _copy_linear(target: nn.Linear, source: nn.Linear) -> None:
    target.weight.copy_(source.weight)
    if target.bias is not None:
        target.bias.copy_(source.bias)


def _copy_norm(target: WrittenOutLayerNorm, source: nn.LayerNorm) -> None:
    target.scale.copy_(source.weight)
    target.shift.copy_(source.bias)
