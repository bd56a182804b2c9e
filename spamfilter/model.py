"""GPT-2 in torch with Hugging Face's parameter names, plus the spam-classification head.

Parameter names follow Hugging Face's GPT-2 (``wte``, ``wpe``, ``h.N.attn.c_attn``, ``ln_f``), so
loading pretrained weights is a state-dict copy plus a transpose of the Conv1D weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("last", "last-token", "line-ends")
"""``last``: the hidden state at the last (padded) position, as the reference recipe does.
``last-token``: the hidden state at each message's last real token; under the causal mask it does
not depend on the padding after it, so shorter inputs give identical answers.
``line-ends``: the hidden state, among the window's line ends and its last token, that the head
finds most spam-like. Under the causal mask the state at a line end is what the model reads of the
window cut there, so ham text appended after a spam's own lines cannot lower its verdict; like
``last-token`` it does not depend on padding."""

NEWLINE_IDS = (198, 628)  # GPT-2's "\n" and "\n\n"
LINE_END_MIN_TOKENS = 16  # line ends read after the first line (the Subject): a shorter prefix says little
LINE_ENDS_READ = 32  # positions the head reads per window at most: the first line ends, then the last token
_NOWHERE = 1 << 40  # beyond any position
FIRST_LINE_SEEN = (
    64  # with an attention window, a first line this long at most stays in sight of every position
)


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    layer_norm_epsilon: float = 1e-5
    # None: GPT-2's causal attention over every earlier position. N: each position attends to the
    # text's first line (the Subject, at most FIRST_LINE_SEEN tokens) and to the N positions up to
    # itself, so text far before a line cannot change how it is read
    attention_window: int | None = None

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        window = self.attention_window
        if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
            raise ValueError(f"attention_window {window!r} must be a whole number of positions, at least 1")

    def same_shape(self, other: GPTConfig) -> bool:
        """Whether weights of this configuration fit ``other``'s: every size equal. The attention
        window is how the weights are read, not a size: weights adapted or trained with a window
        are still the shape of a configuration that names none."""
        return replace(self, attention_window=other.attention_window) == other

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
    """Row b's positions ``index[b]``: (B, T, C), (B,) -> (B, 1, C); (B, K) -> (B, K, C)."""
    if index.dim() == 1:
        index = index[:, None]
    return torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[2]))


def visible_keys(
    queries: torch.Tensor, length: int, window: int | None, seen: torch.Tensor | None = None
) -> torch.Tensor:
    """Which of ``length`` keys each query position sees: queries (Q,) or (B, K) -> (Q, length) or
    (B, K, length). Causal; with a ``window``, only the ``window`` positions up to the query, and
    with ``seen`` (B,) also each row's first ``seen[b]`` positions: then (B, Q or K, length)."""
    keys = torch.arange(length, device=queries.device)
    visible = keys <= queries[..., None]
    if window is None:
        return visible
    near = keys > queries[..., None] - window
    if seen is not None:
        head = keys < seen[:, None, None]  # (B, 1, length)
        near = near | head
    return visible & near


def first_line_length(input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B,): the tokens of each row's first line, its newline included, where it ends
    within ``FIRST_LINE_SEEN`` tokens; else 0. Tensor operations only: the exported graph computes it."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    is_newline = (input_ids == NEWLINE_IDS[0]) | (input_ids == NEWLINE_IDS[1])
    first_end = torch.where(is_newline, positions, _NOWHERE).amin(dim=1)  # (B,)
    return torch.where(first_end < FIRST_LINE_SEEN, first_end + 1, torch.zeros_like(first_end))


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.window = config.attention_window
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # qkv with bias
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(
        self, x: torch.Tensor, only: torch.Tensor | None = None, seen: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); with ``only`` (B,) or (B, K) -> (B, 1, C) or (B, K, C), row b's
        output at positions ``only[b]`` alone: attention from there, over keys and values up to
        each. ``seen`` (B,): each row's first positions that stay visible under an attention window."""
        B, T, C = x.shape
        if only is None:
            q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
            # the plain causal mask is SDPA's own (is_causal); a window needs one written out
            visible = None
            if self.window is not None:
                visible = visible_keys(torch.arange(T, device=x.device), T, self.window, seen)
                visible = visible[:, None] if visible.dim() == 3 else visible  # (B, 1, T, T) or (T, T)
        else:
            # every position through the whole c_attn, then the queries taken: one plain Linear, which
            # the int8 export quantizes (slices of its weight stayed fp32 there, 8 % of the run time)
            queries, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
            q = take(queries, only)  # (B, 1 or K, C)
            reads = only if only.dim() == 2 else only[:, None]  # (B, K)
            visible = visible_keys(reads, T, self.window, seen)[:, None]  # (B, 1, K, T)
        # An additive mask rather than a boolean one, the same softmax: the ONNX export of SDPA with
        # a boolean mask adds a pass over every score that replaces NaN (rows with no visible key,
        # which a causal mask never has), 12 % of the run time (benchmarks/RESULTS.md section 27).
        mask = None
        if visible is not None:  # one Where from two scalars: no zero tensor filled first
            mask = torch.where(visible, q.new_zeros(()), q.new_full((), -math.inf))
        q = q.view(B, -1, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, Tq, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
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

    def forward(
        self, x: torch.Tensor, only: torch.Tensor | None = None, seen: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); with ``only`` (B,) or (B, K) -> (B, 1 or K, C) at those positions
        alone; ``seen`` as :class:`CausalSelfAttention` takes it."""
        h = self.ln_1(x)  # (B, T, C): keys and values need every position
        if only is not None:
            x = take(x, only)  # (B, 1, C)
        x = x + self.attn(h, only, seen)
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

    def seen(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """What every position may attend to beyond its attention window: the first line's length
        per row (B,); None without a window (every earlier position is visible anyway)."""
        return None if self.config.attention_window is None else first_line_length(input_ids)

    def blocks_before(self, input_ids: torch.Tensor, stop: int) -> torch.Tensor:
        """The input of block ``stop``: the embedding through blocks ``..stop - 1``, (B, T) -> (B, T, C)."""
        x, seen = self.embed(input_ids), self.seen(input_ids)
        for block in self.h[:stop]:
            x = block(x, None, seen)
        return x

    def run_blocks(
        self,
        x: torch.Tensor,
        start: int = 0,
        only: torch.Tensor | None = None,
        seen: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Blocks ``start..`` then the final LayerNorm: (B, T, C) -> (B, T, C); with ``only`` (B,) or
        (B, K) -> (B, 1 or K, C), the last block computing those positions alone (see :class:`Block`).
        ``seen``: :meth:`seen` of the input ids, for a model with an attention window."""
        blocks = self.h[start:]
        for i, block in enumerate(blocks):
            x = block(x, only if i == len(blocks) - 1 else None, seen)
        if only is not None and not blocks:
            x = take(x, only)  # (B, 1, C)
        return self.ln_f(x)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.run_blocks(self.embed(input_ids), seen=self.seen(input_ids)))


NUM_CLASSES = 2


def set_attention_window(model: GPT, window: int | None) -> GPT:
    """``model`` with attention ``window`` (None or 0: GPT-2's, every earlier position, as
    ``--attention-window 0`` says); the weights stay as they are, and the configuration saved with
    them says it."""
    window = window or None
    model.config = replace(model.config, attention_window=window)
    for attention in model.modules():
        if isinstance(attention, CausalSelfAttention):
            attention.window = window
    return model


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
        hidden = self.gpt.run_blocks(self.gpt.embed(input_ids), seen=self.gpt.seen(input_ids))  # (B, T, C)
        return self.gpt.lm_head(self.most_spam_like(take(hidden, self.pooled_index(input_ids))))

    def logits_from_block(self, x: torch.Tensor, input_ids: torch.Tensor, start: int) -> torch.Tensor:
        """Class logits from the input ``x`` (B, T, C) of block ``start``, for training.

        The logits of :meth:`forward` with less work: only the pooled positions reach the head,
        so the last block computes its projection (queries, keys, values) for every position but
        attention, output and MLP for those positions alone.
        """
        return self.gpt.lm_head(self.features_from_block(x, input_ids, start))

    def training_logits(self, x: torch.Tensor, input_ids: torch.Tensor, start: int) -> torch.Tensor:
        """(B, R, 2): the logits a training step fits to each row's label, from the input ``x`` of
        block ``start``. For ``line-ends``, those at the most spam-like line end and at the last
        token: the label holds at the message's end as well, and that steady signal keeps the
        choice of line end from wandering while the head is still untrained. Otherwise the
        pooled logits alone (R = 1)."""
        hidden = self.reads_from_block(x, input_ids, start)  # (B, K, C)
        if self.pooling != "line-ends":
            return self.gpt.lm_head(hidden)
        chosen = self.gpt.lm_head(self.most_spam_like(hidden))  # (B, 2)
        return torch.stack([chosen, self.gpt.lm_head(hidden[:, -1])], dim=1)

    def reads_from_block(self, x: torch.Tensor, input_ids: torch.Tensor, start: int) -> torch.Tensor:
        """Every position the head reads, after the final LayerNorm, from the input ``x`` (B, T, C)
        of block ``start``: (B, K, C), K = 1 but for ``line-ends``."""
        return self.gpt.run_blocks(x, start, only=self.pooled_index(input_ids), seen=self.gpt.seen(input_ids))

    def features_from_block(self, x: torch.Tensor, input_ids: torch.Tensor, start: int) -> torch.Tensor:
        """What the head reads, from the input ``x`` (B, T, C) of block ``start``: (B, C)."""
        return self.most_spam_like(self.reads_from_block(x, input_ids, start))

    def features(self, input_ids: torch.Tensor) -> torch.Tensor:
        """What the head reads: the pooled position after the final LayerNorm, (B, T) -> (B, C). The
        head is linear, so ``lm_head(features(ids))`` are the logits; ``spamfilter learn`` retrains
        the head on these (with ``line-ends``, at the position the model's own head chose)."""
        return self.features_from_block(self.gpt.embed(input_ids), input_ids, 0)

    def read_features(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Every position the head reads: (B, T) -> (B, K, C); :meth:`most_spam_like` picks the
        features among them."""
        return self.reads_from_block(self.gpt.embed(input_ids), input_ids, 0)

    def forward_pooled(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The logits of :meth:`forward`, with the last block computed only where the head reads
        (what the exported ONNX model runs: attention, output and MLP of the last block at the
        read positions only)."""
        return self.logits_from_block(self.gpt.embed(input_ids), input_ids, 0)

    def pooled_index(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The positions the head reads in each row: (B, T) -> (B,), or (B, K) for ``line-ends``."""
        if self.pooling == "last":
            return torch.full_like(input_ids[:, 0], input_ids.shape[1] - 1)
        last = last_token_index(input_ids, self.pad_token_id)
        if self.pooling == "last-token":
            return last
        return line_end_index(input_ids, last)

    def most_spam_like(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, K, C) -> (B, C): the read position whose spam log-odds are highest (K = 1: that one)."""
        if hidden.shape[1] == 1:
            return hidden[:, 0]
        logits = self.gpt.lm_head(hidden)  # (B, K, 2)
        chosen = (logits[:, :, 1] - logits[:, :, 0]).argmax(dim=1, keepdim=True)  # (B, 1)
        # a one-hot sum rather than a gather: exact, and the exported features keep their static width
        one_hot = torch.arange(hidden.shape[1], device=hidden.device) == chosen  # (B, K)
        return (hidden * one_hot[:, :, None].to(hidden.dtype)).sum(dim=1)


def line_end_index(input_ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """The positions ``line-ends`` reads, (B, T) -> (B, LINE_ENDS_READ): the last tokens of the
    row's first lines at least ``LINE_END_MIN_TOKENS`` past its first line, then its last token
    (repeated where a row has fewer line ends). Only tensor operations, so the exported graph
    computes them too."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]  # (1, T)
    is_newline = (input_ids == NEWLINE_IDS[0]) | (input_ids == NEWLINE_IDS[1])  # (B, T)
    # values, not the traced length, mark "no position": the exported graph keeps a dynamic length
    first_end = torch.where(is_newline, positions, _NOWHERE).amin(dim=1, keepdim=True)  # (B, 1)
    # a line's last token, not the newline after it: the state there is the same whatever follows,
    # so text appended after a spam's last line leaves the spam's own reading exactly as it was
    ends_line = torch.cat([is_newline[:, 1:], torch.zeros_like(is_newline[:, :1])], dim=1) & ~is_newline
    readable = ends_line & (positions >= first_end + LINE_END_MIN_TOKENS) & (positions < last[:, None])
    keys = torch.where(readable, positions, positions + _NOWHERE)  # the earliest line ends sort first
    padding = torch.zeros_like(first_end).expand(-1, LINE_ENDS_READ - 1) + 2 * _NOWHERE  # short rows
    earliest = torch.topk(torch.cat([keys, padding], dim=1), LINE_ENDS_READ - 1, dim=1, largest=False)
    ends = torch.where(earliest.values < _NOWHERE, earliest.values, last[:, None])  # (B, K - 1)
    return torch.cat([ends, last[:, None]], dim=1)


class _CombinedHead(nn.Module):
    """Where an ensemble keeps what a classifier keeps in its ``gpt``: the members' shape
    (``config``) and the head the exported graph's logits come from (``lm_head``), so that the head
    is named in the ONNX file as a single classifier's is and ``learn`` replaces it alike."""

    def __init__(self, config: GPTConfig, width: int) -> None:
        super().__init__()
        self.config = config
        self.lm_head = nn.Linear(width, NUM_CLASSES)


class SpamEnsemble(nn.Module):
    """Several classifiers of one shape and pooling, trained from different initial weights, read
    as one: each reads the window as it was trained to (with ``line-ends``, choosing its own line
    end), and the verdict's log-odds are the mean of theirs.

    Runs of the mail recipe that differ only in their seed rank the few highest-scoring ham very
    differently, and at a small false-positive rate that decides recall (benchmarks/RESULTS.md
    section 30); their mean ranks better than any run alone. The mean is a linear head over the
    members' chosen features side by side, (B, M * C): its weight is the members' heads side by side
    divided by M, its bias their mean. So the exported graph has one head and one ``features``
    output, as a single classifier's has, and ``learn`` retrains that head over all members'
    features (the members keep choosing their line ends with their own heads)."""

    def __init__(self, members: list[SpamClassifier]) -> None:
        super().__init__()
        first = members[0]
        for member in members[1:]:
            if member.pooling != first.pooling or member.gpt.config != first.gpt.config:
                raise ValueError("the members of an ensemble must share their shape and pooling")
        self.members = nn.ModuleList(members)
        self.pooling = first.pooling
        self.pad_token_id = first.pad_token_id
        width = first.gpt.config.n_embd
        self.gpt = _CombinedHead(first.gpt.config, width * len(members))
        with torch.no_grad():
            heads = [member.gpt.lm_head for member in members]
            self.gpt.lm_head.weight.copy_(torch.cat([h.weight for h in heads], dim=1) / len(members))
            self.gpt.lm_head.bias.copy_(torch.stack([h.bias for h in heads]).mean(dim=0))

    @property
    def classifiers(self) -> list[SpamClassifier]:
        return [cast(SpamClassifier, member) for member in self.members]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.gpt.lm_head(self.features(input_ids))

    def features(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, M * C): each member's pooled features, side by side."""
        return torch.cat([member.features(input_ids) for member in self.classifiers], dim=1)

    def read_features(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, K, M * C): every position read, each member's features side by side (the
        members read the same positions: they depend on the ids alone)."""
        return torch.cat([member.read_features(input_ids) for member in self.classifiers], dim=2)

    def most_spam_like(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, K, M * C) -> (B, M * C): each member's choice among its own features."""
        parts = hidden.chunk(len(self.members), dim=2)
        chosen = [member.most_spam_like(part) for member, part in zip(self.classifiers, parts, strict=True)]
        return torch.cat(chosen, dim=1)


SpamModel = SpamClassifier | SpamEnsemble  # what is exported, checked and scored as one model
