"""The frozen-layers recipe: what trains, that only it changes, and that caching changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spamfilter.model import GPT, GPTConfig, SpamClassifier, add_classification_head
from spamfilter.train import TrainingConfig, count_trainable, set_trainable, train_classifier


def _classifier(pooling: str = "last", **shape) -> SpamClassifier:
    torch.manual_seed(0)
    return SpamClassifier(add_classification_head(GPT(GPTConfig(**shape))), pooling)


def test_recipe_trains_7090946_parameters_of_gpt2_small() -> None:
    classifier = _classifier()  # gpt2-small's shape
    set_trainable(classifier, "last-block")
    assert count_trainable(classifier) == 7_090_946


@pytest.mark.parametrize(
    ("trainable", "expected"),
    [("head", 2 * 32 + 2), ("last-two-blocks", 2 * 12_704 + 64 + 66), ("all", None)],
)
def test_other_trainable_choices(trainable: str, expected: int | None) -> None:
    classifier = _classifier(n_embd=32, n_layer=3, n_head=2, n_positions=64)
    set_trainable(classifier, trainable)
    total = sum(p.numel() for p in classifier.parameters())
    assert count_trainable(classifier) == (total if expected is None else expected)


def _toy_data(n: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 50256, size=(n, length), dtype=np.int64)
    for i in range(n):
        ids[i, rng.integers(1, length) :] = 50256
    return ids, (ids[:, 0] % 2).astype(np.int64)


def test_a_training_step_changes_only_trainable_parameters() -> None:
    classifier = _classifier(n_embd=32, n_layer=3, n_head=2, n_positions=64)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    data = _toy_data(16, 12, 0)
    train_classifier(classifier, data, data, data, TrainingConfig(epochs=1, batch_size=8, lr=1e-2))
    trainable = {n for n, p in classifier.named_parameters() if p.requires_grad}
    assert trainable == {n for n in before if n.startswith(("gpt.h.2.", "gpt.ln_f.", "gpt.lm_head."))}
    for name, value in classifier.state_dict().items():
        changed = not torch.equal(value, before[name])
        assert changed == (name in trainable), name


@pytest.mark.parametrize("trainable", ["last-block", "last-two-blocks", "head"])
@pytest.mark.parametrize("pooling", ["last", "last-token"])
def test_cached_frozen_blocks_give_the_straightforward_losses(trainable: str, pooling: str) -> None:
    data = _toy_data(40, 16, 1)
    records = []
    for cache in (False, True):
        classifier = _classifier(pooling, n_embd=32, n_layer=3, n_head=2, n_positions=64)
        config = TrainingConfig(
            epochs=2, batch_size=8, lr=1e-3, trainable=trainable, eval_every=2, cache_frozen=cache
        )
        records.append(train_classifier(classifier, data, data, data, config))
    straight, cached = records
    assert len(straight.step_losses) == 10
    np.testing.assert_allclose(cached.step_losses, straight.step_losses, rtol=1e-4, atol=1e-6)
    assert [p.validation_loss for p in cached.eval_points] == pytest.approx(
        [p.validation_loss for p in straight.eval_points], rel=1e-4
    )


def test_learns_a_separable_toy_task() -> None:
    # Spam iff the first token is even: the head must learn to read position 0 through attention.
    data = _toy_data(96, 8, 2)
    classifier = _classifier("last-token", n_embd=32, n_layer=2, n_head=2, n_positions=64)
    record = train_classifier(
        classifier, data, data, data, TrainingConfig(epochs=30, lr=3e-3, trainable="all", weight_decay=0.0)
    )
    assert record.train_accuracy >= 0.9
    assert record.test["n"] == 96


@pytest.mark.parametrize("pooling", ["last", "last-token"])
@pytest.mark.parametrize("start", [0, 1, 2, 3])
def test_logits_from_block_equal_the_full_forward(pooling: str, start: int) -> None:
    classifier = _classifier(pooling, n_embd=32, n_layer=3, n_head=2, n_positions=64).eval()
    ids = torch.as_tensor(_toy_data(6, 16, 4)[0])
    with torch.no_grad():
        x = classifier.gpt.embed(ids)
        for block in classifier.gpt.h[:start]:
            x = block(x)
        torch.testing.assert_close(
            classifier.logits_from_block(x, ids, start), classifier(ids), atol=1e-5, rtol=1e-5
        )


class Interrupt(Exception):
    """Stands in for Ctrl-C after an epoch (KeyboardInterrupt itself would stop pytest)."""


def _train_small(train, config: TrainingConfig, **options):  # noqa: ANN001, ANN003, ANN202
    """A fresh small classifier trained on ``train`` (also its validation and test data)."""
    classifier = _classifier(n_embd=32, n_layer=2, n_head=2, n_positions=64)
    return train_classifier(classifier, train, train, train, config, **options)


def test_resume_after_an_interrupted_epoch_gives_the_uninterrupted_run(tmp_path) -> None:
    data = _toy_data(48, 12, 5)
    config = TrainingConfig(epochs=3, lr=1e-3, eval_every=2)
    whole = _train_small(data, config)

    state = tmp_path / "training-state.pt"

    def stop_after_first(record) -> None:
        if record.epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        _train_small(data, config, on_epoch=stop_after_first, state_path=state)
    assert state.is_file()
    # A fresh process would start from a fresh model: the saved state brings back the rest.
    resumed = _train_small(data, config, state_path=state, resume=True)
    assert len(resumed.step_losses) == len(whole.step_losses) == 18
    np.testing.assert_allclose(resumed.step_losses, whole.step_losses, rtol=1e-6, atol=1e-7)
    assert [e.epoch for e in resumed.epochs] == [1, 2, 3]
    assert resumed.test["accuracy"] == whole.test["accuracy"]


def test_resume_refuses_a_state_from_other_options_or_data(tmp_path) -> None:
    data = _toy_data(16, 12, 5)
    state = tmp_path / "state.pt"
    _train_small(data, TrainingConfig(epochs=1), state_path=state)
    with pytest.raises(ValueError, match="other training options"):
        _train_small(data, TrainingConfig(epochs=2, lr=1e-3), state_path=state, resume=True)
    with pytest.raises(ValueError, match="other training data"):
        _train_small(_toy_data(16, 12, 6), TrainingConfig(epochs=1), state_path=state, resume=True)
