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
