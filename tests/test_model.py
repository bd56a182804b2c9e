"""The model: one attention implementation, computing every position or only the pooled one."""

from __future__ import annotations

import pytest
import torch

from spamfilter.model import GPT, Block, GPTConfig, SpamClassifier, add_classification_head

PAD = 50256
SHAPE = {"n_embd": 32, "n_layer": 3, "n_head": 2, "n_positions": 64}


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


@pytest.mark.parametrize("pooling", ["last", "last-token"])
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


def test_last_token_logits_do_not_depend_on_the_padding_after_it() -> None:
    classifier = _classifier("last-token")
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(
            classifier.forward_pooled(ids[:, :10])[:3],
            classifier.forward_pooled(ids)[:3],
            atol=1e-5,
            rtol=1e-5,
        )


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
