"""The model: one attention implementation, computing every position or only the pooled one."""

from __future__ import annotations

import pytest
import torch

from spamfilter.model import (
    GPT,
    LINE_END_MIN_TOKENS,
    LINE_ENDS_READ,
    NEWLINE_IDS,
    POOLINGS,
    Block,
    GPTConfig,
    SpamClassifier,
    add_classification_head,
    first_line_length,
    set_attention_window,
)

PAD = 50256
SHAPE = {"n_embd": 32, "n_layer": 3, "n_head": 2, "n_positions": 128}


def _classifier(pooling: str) -> SpamClassifier:
    torch.manual_seed(0)
    return SpamClassifier(add_classification_head(GPT(GPTConfig(**SHAPE))), pooling).eval()


def _ids() -> torch.Tensor:
    """Six right-padded rows of 16 tokens: 1 to 16 real tokens, one row without padding."""
    ids = torch.randint(0, PAD, (6, 16), generator=torch.Generator().manual_seed(1))
    for row, length in enumerate([1, 3, 7, 10, 15, 16]):
        ids[row, length:] = PAD
    return ids


def _plain_logits(classifier: SpamClassifier, ids: torch.Tensor) -> torch.Tensor:
    """Every block at every position, then the head at the pooled position: (B, T) -> (B, 2)."""
    gpt = classifier.gpt
    hidden = gpt.ln_f(gpt.h[2](gpt.h[1](gpt.h[0](gpt.embed(ids)))))  # (B, T, C)
    if classifier.pooling == "last":
        return gpt.lm_head(hidden[:, -1])
    lengths = (ids != PAD).sum(dim=1)  # (B,): right padding, at least one real token a row
    return gpt.lm_head(hidden[torch.arange(len(ids)), lengths - 1])


def test_block_at_chosen_positions_equals_the_full_block_there() -> None:
    torch.manual_seed(0)
    block = Block(GPTConfig(**SHAPE)).eval()
    x = torch.randn(5, 12, 32)
    only = torch.tensor([0, 11, 4, 7, 11])
    with torch.no_grad():
        full = block(x)  # (B, T, C)
        some = block(x, only)  # (B, 1, C)
    assert some.shape == (5, 1, 32)
    torch.testing.assert_close(some[:, 0], full[torch.arange(5), only], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_every_path_gives_the_plain_full_forward(pooling: str) -> None:
    classifier = _classifier(pooling)
    ids = _ids()
    with torch.no_grad():
        expected = _plain_logits(classifier, ids)
        torch.testing.assert_close(classifier(ids), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(classifier.forward_pooled(ids), expected, atol=1e-5, rtol=1e-5)
        inputs = [classifier.gpt.embed(ids)]  # of blocks 0, 1, 2, then the last block's output
        for block in classifier.gpt.h:
            inputs.append(block(inputs[-1]))
        for start, x in enumerate(inputs):
            logits = classifier.logits_from_block(x, ids, start)
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["last-token", "line-ends"])
def test_logits_do_not_depend_on_the_padding_after_the_last_token(pooling: str) -> None:
    classifier = _classifier(pooling)
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(
            classifier.forward_pooled(ids[:, :10])[:3],
            classifier.forward_pooled(ids)[:3],
            atol=1e-5,
            rtol=1e-5,
        )


def _lines(seed: int, lengths: list[int]) -> list[int]:
    """Random ordinary tokens in lines of ``lengths`` tokens, each line ended by "\n" or "\n\n"."""
    generator = torch.Generator().manual_seed(seed)
    ids: list[int] = []
    for length in lengths:
        ids += torch.randint(300, 40000, (length,), generator=generator).tolist()
        ids.append(NEWLINE_IDS[len(ids) % 2])
    return ids


def _reads(ids: list[int]) -> list[int]:
    """What line-ends pooling should read, written out plainly: the last token of each line that
    ends at least LINE_END_MIN_TOKENS past the first line's end (the first LINE_ENDS_READ - 1 such),
    then the last real token."""
    last = max(t for t, token in enumerate(ids) if token != PAD)
    first_end = next((t for t, token in enumerate(ids) if token in NEWLINE_IDS), len(ids))
    ends = [
        t
        for t in range(last)
        if ids[t] not in NEWLINE_IDS and ids[t + 1] in NEWLINE_IDS and t >= first_end + LINE_END_MIN_TOKENS
    ]
    return [*ends[: LINE_ENDS_READ - 1], last]


def test_line_ends_read_the_most_spam_like_line_end() -> None:
    classifier = _classifier("line-ends")
    rows = [_lines(2, [3, 6, 9, 2, 12, 5]), _lines(3, [1] * 60)[:110], _lines(4, [20]) + [PAD] * 5]
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [PAD] * (width - len(row)) for row in rows])
    with torch.no_grad():
        hidden = classifier.gpt.run_blocks(classifier.gpt.embed(ids))  # every position
        every = classifier.gpt.lm_head(hidden)  # (B, T, 2)
        odds = every[:, :, 1] - every[:, :, 0]
        expected = torch.stack(
            [
                every[b, max(_reads(row), key=lambda t, b=b: float(odds[b, t]))]
                for b, row in enumerate(ids.tolist())
            ]
        )
        torch.testing.assert_close(classifier(ids), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(classifier.forward_pooled(ids), expected, atol=1e-5, rtol=1e-5)
    assert len(_reads(ids[1].tolist())) == LINE_ENDS_READ  # more lines than are read: the first ones


def test_text_appended_after_a_line_cannot_lower_line_ends_odds() -> None:
    """A spammer's padding after the offer's last line: line-ends still reads the offer's end."""
    classifier = _classifier("line-ends")
    offer = _lines(5, [4, 7, 11, 6])[:-1]  # ends without a newline: its last token is read as the last
    padded = offer + [NEWLINE_IDS[1]] + _lines(6, [9, 8, 12])
    with torch.no_grad():
        before, after = (classifier(torch.tensor([row]))[0] for row in (offer, padded))
    assert after[1] - after[0] >= before[1] - before[0] - 1e-5
    last_token = _classifier("last-token")
    with torch.no_grad():
        changed = [last_token(torch.tensor([row]))[0] for row in (offer, padded)]
    assert not torch.allclose(changed[0], changed[1])  # where last-token reads only the padding's end


def test_parameter_names_are_hugging_face_names() -> None:
    names = set(GPT(GPTConfig(n_embd=32, n_layer=1, n_head=2, n_positions=64)).state_dict())
    block = {
        f"h.0.{name}.{kind}"
        for name in ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"]
        for kind in ["weight", "bias"]
    }
    assert names == {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias", "lm_head.weight"} | block


def test_unknown_pooling_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown pooling 'first'"):
        SpamClassifier(add_classification_head(GPT(GPTConfig(**SHAPE))), "first")


# --------------------------------------------------------------------------- an attention window


def _windowed(pooling: str, window: int) -> SpamClassifier:
    """``_classifier``'s weights with an attention window: the same parameters, read nearer."""
    classifier = _classifier(pooling)
    set_attention_window(classifier.gpt, window)
    return classifier


def _plain_windowed_attention(
    block: Block, x: torch.Tensor, window: int, first_line: list[int]
) -> torch.Tensor:
    """One block written out with an explicit mask: query t sees key s when s <= t and either
    t - s < window or s is in the row's first line. (B, T, C) -> (B, T, C)."""
    B, T, C = x.shape
    h = block.ln_1(x)
    q, k, v = block.attn.c_attn(h).split(C, dim=2)
    heads = block.attn.n_head

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(B, T, heads, C // heads).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-1, -2) / (C // heads) ** 0.5  # (B, nh, T, T)
    t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = torch.stack([(s <= t) & ((t - s < window) | (s < n)) for n in first_line])  # (B, T, T)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    y = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(B, T, C)
    x = x + block.attn.c_proj(y)
    return x + block.mlp(block.ln_2(x))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_an_attention_window_is_the_written_out_mask_on_every_path(pooling: str) -> None:
    window = 4
    classifier = _windowed(pooling, window)
    rows = [_lines(7, [3, 9, 6, 12]), _lines(8, [70]), _lines(9, [2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2])]
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [PAD] * (width - len(row)) for row in rows])
    # the first line, its newline included, where it ends within FIRST_LINE_SEEN tokens
    first_line = [4, 0, 3]
    assert first_line_length(ids).tolist() == first_line
    with torch.no_grad():
        x = classifier.gpt.embed(ids)
        inputs = [x]
        for block in classifier.gpt.h:
            inputs.append(_plain_windowed_attention(block, inputs[-1], window, first_line))
        hidden = classifier.gpt.ln_f(inputs[-1])
        torch.testing.assert_close(classifier.gpt.run_blocks(x, seen=classifier.gpt.seen(ids)), hidden)
        every = classifier.gpt.lm_head(hidden)
        pooled = classifier.pooled_index(ids)
        reads = pooled if pooled.dim() == 2 else pooled[:, None]
        odds = every[:, :, 1] - every[:, :, 0]
        chosen = reads.gather(1, odds.gather(1, reads).argmax(dim=1, keepdim=True))[:, 0]
        expected = every[torch.arange(len(ids)), chosen]
        torch.testing.assert_close(classifier(ids), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(classifier.forward_pooled(ids), expected, atol=1e-5, rtol=1e-5)
        for start, block_input in enumerate(inputs):
            logits = classifier.logits_from_block(block_input, ids, start)
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(classifier.gpt.blocks_before(ids, start), block_input)


def test_text_far_before_a_line_cannot_change_how_it_is_read() -> None:
    """A page of ham before the offer: with a window, a line of the offer is read as it would be
    after any other text once that text lies more than (window - 1) x blocks back; the Subject stays
    seen. (Read here at the offer's last token, as every line end is read.)"""
    window = 5
    classifier = _windowed("last-token", window)
    subject, offer = _lines(10, [4]), _lines(11, [30, 8])
    reach = (window - 1) * classifier.gpt.config.n_layer  # how far back a position's state can see
    one, other = _lines(12, [10, 9, 12]), _lines(13, [6, 6, 6, 5, 6])
    assert len(one) == len(other) == 34 and len(offer) > reach

    def read(model: SpamClassifier, first: list[int], page: list[int]) -> torch.Tensor:
        return model.forward_pooled(torch.tensor([first + page + offer]))[0]

    with torch.no_grad():
        torch.testing.assert_close(read(classifier, subject, one), read(classifier, subject, other))
        full = _classifier("last-token")
        assert not torch.allclose(read(full, subject, one), read(full, subject, other))  # without: it does
        changed_subject = [subject[0] + 1, *subject[1:]]
        assert not torch.allclose(read(classifier, subject, one), read(classifier, changed_subject, one))


def test_an_attention_window_is_saved_with_the_configuration() -> None:
    config = GPTConfig(**SHAPE, attention_window=64)
    assert GPTConfig.from_dict(config.to_dict()) == config
    assert GPTConfig.from_dict(GPTConfig(**SHAPE).to_dict()).attention_window is None  # GPT-2's own
    gpt = set_attention_window(GPT(GPTConfig(**SHAPE)), 16)
    assert gpt.config.attention_window == 16 and all(block.attn.window == 16 for block in gpt.h)
    with pytest.raises(ValueError, match="at least 1"):
        GPTConfig(**SHAPE, attention_window=0)
