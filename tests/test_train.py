"""The frozen-layers recipe: what trains, that only it changes, and that caching changes nothing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from conftest import write_hf_checkpoint

from spamfilter.cli import cli
from spamfilter.errors import TrainingError, UsageError
from spamfilter.export import load_checkpoint
from spamfilter.finetune import mail_settings
from spamfilter.model import (
    GPT,
    POOLINGS,
    GPTConfig,
    SpamClassifier,
    add_classification_head,
    set_attention_window,
)
from spamfilter.train_loop import TrainingConfig, count_trainable, set_trainable, train_classifier
from spamfilter.train_options import LABELLED_RECIPE, MAIL_RECIPE, TrainOptions


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
@pytest.mark.parametrize("pooling", POOLINGS)
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


def test_per_epoch_figures_are_on_the_whole_splits() -> None:
    # 96 training messages (12 batches of 8) and 80 validation ones (10 batches): more than the
    # 5 batches of a step-wise loss estimate. The validation split holds 40 training messages
    # twice, once with each label: on the whole split every classifier scores exactly 50%, while
    # its first 5 batches (the 40 with their true labels) score what the training reached.
    ids, labels = _toy_data(96, 8, 2)
    validation = (np.concatenate([ids[:40], ids[:40]]), np.concatenate([labels[:40], 1 - labels[:40]]))
    classifier = _classifier("last-token", n_embd=32, n_layer=2, n_head=2, n_positions=64)
    config = TrainingConfig(epochs=4, lr=3e-3, trainable="all", weight_decay=0.0)
    record = train_classifier(classifier, (ids, labels), validation, validation, config)
    last = record.epochs[-1]
    assert last.epoch == 4
    assert (last.train_accuracy, last.validation_accuracy) == (
        record.train_accuracy,
        record.validation_accuracy,
    )
    assert last.validation_accuracy == 0.5
    # The trained model, evaluated here on every message, gives the same losses.
    with torch.no_grad():
        for (split_ids, split_labels), loss in (
            ((ids, labels), last.train_loss),
            (validation, last.validation_loss),
        ):
            logits = classifier(torch.as_tensor(split_ids))
            expected = torch.nn.functional.cross_entropy(logits, torch.as_tensor(split_labels)).item()
            assert loss == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("pooling", POOLINGS)
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


@pytest.mark.parametrize(
    ("trainable", "cache_frozen"), [("last-block", True), ("all", True), ("last-block", False)]
)
def test_the_features_for_learn_are_what_the_trained_head_reads(trainable: str, cache_frozen: bool) -> None:
    """train_classifier hands `spamfilter learn` each split's features from its frozen-block cache
    (no second full pass): they must equal the full forward's, and the head on them the logits."""
    pooling = "last-token"
    classifier = _classifier(pooling, n_embd=32, n_layer=3, n_head=2, n_positions=64)
    train, validation, test = _toy_data(16, 12, 0), _toy_data(8, 12, 1), _toy_data(6, 12, 2)
    features: dict[str, np.ndarray] = {}
    config = TrainingConfig(epochs=1, batch_size=8, lr=1e-2, trainable=trainable, cache_frozen=cache_frozen)
    train_classifier(classifier, train, validation, test, config, features=features)
    assert sorted(features) == ["test", "train", "validation"]
    for name, (ids, _) in {"train": train, "validation": validation, "test": test}.items():
        with torch.no_grad():
            full = classifier.features(torch.as_tensor(ids))
            logits = classifier(torch.as_tensor(ids))
        assert features[name].shape == (len(ids), 32) and features[name].dtype == np.float32
        torch.testing.assert_close(torch.from_numpy(features[name]), full, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(classifier.gpt.lm_head(torch.from_numpy(features[name])), logits)


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
    with pytest.raises(TrainingError, match="other training options"):
        _train_small(data, TrainingConfig(epochs=2, lr=1e-3), state_path=state, resume=True)
    with pytest.raises(TrainingError, match="other training data"):
        _train_small(_toy_data(16, 12, 6), TrainingConfig(epochs=1), state_path=state, resume=True)
    windowed = _classifier(n_embd=32, n_layer=2, n_head=2, n_positions=64)
    set_attention_window(windowed.gpt, 4)  # the same weights read otherwise: not the run that was saved
    with pytest.raises(TrainingError, match="--attention-window"):
        train_classifier(windowed, data, data, data, TrainingConfig(epochs=1), state_path=state, resume=True)


def _small_sms(folder: Path, sms_file: Path) -> Path:
    """20 spam and 20 ham lines of the SMS collection: a split of 28 / 4 / 8, 3 steps an epoch."""
    lines = sms_file.read_text(encoding="utf-8").splitlines()
    chosen = [line for line in lines if line.startswith("spam\t")][:20]
    chosen += [line for line in lines if line.startswith("ham\t")][:20]
    path = folder / "small.tsv"
    path.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return path


def _train(*args: str) -> Result:
    return CliRunner().invoke(cli, ["train", "--device", "cpu", "--epochs", "2", *args])


def test_manifest_names_the_architecture_that_was_loaded(tmp_path: Path, sms_file: Path) -> None:
    write_hf_checkpoint(tmp_path / "weights", n_embd=32, n_layer=2, n_head=2, n_positions=128)
    data = str(_small_sms(tmp_path, sms_file))
    result = _train("--weights", str(tmp_path / "weights"), "--data", data, "--out", str(tmp_path / "model"))
    assert result.exit_code == 0, result.output
    base = json.loads((tmp_path / "model" / "spamfilter.json").read_text())["base_model"]
    assert base["architecture"] == "custom" and base["weights"] == str(tmp_path / "weights")
    config = base["config"]
    assert (config["n_layer"], config["n_embd"], config["n_head"], config["n_positions"]) == (2, 32, 2, 128)
    # A size name that the weights do not have is refused, before any training.
    result = _train(
        "--model", "gpt2-small", "--weights", str(tmp_path / "weights"),
        "--data", data, "--out", str(tmp_path / "other"),
    )  # fmt: skip
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "does not match --weights" in error[0], result.output
    assert not (tmp_path / "other" / "spamfilter.json").exists()


def test_attention_window_option_trains_and_exports_the_window(tmp_path: Path, sms_file: Path) -> None:
    write_hf_checkpoint(tmp_path / "weights", n_embd=32, n_layer=2, n_head=2, n_positions=128)
    data = str(_small_sms(tmp_path, sms_file))

    def trained(*window: str) -> tuple[dict, list[int | None]]:
        out = tmp_path / f"model{'-'.join(window)}"
        result = _train("--weights", str(tmp_path / "weights"), "--data", data, *window, "--out", str(out))
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "spamfilter.json").read_text())
        classifier, _ = load_checkpoint(out / "model.pt")
        return manifest, [block.attn.window for block in classifier.gpt.h]

    manifest, windows = trained("--attention-window", "8")
    assert manifest["base_model"]["config"]["attention_window"] == 8 and windows == [8, 8]
    assert manifest["recipe"]["attention_window"] == 8
    # weights whose config has a window keep it by default; 0 reads every earlier position
    config = tmp_path / "weights" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "attention_window": 16}))
    assert trained()[1] == [16, 16]
    manifest, windows = trained("--attention-window", "0")
    assert windows == [None, None] and manifest["recipe"]["attention_window"] == 0
    result = _train("--weights", str(tmp_path / "weights"), "--data", data, "--attention-window", "-1")
    assert result.exit_code == 2 and "--attention-window" in result.output
    for bad in (0, True, "64", 6.5):  # a hostile or mistaken config.json: one line, no traceback
        config.write_text(json.dumps({**json.loads(config.read_text()), "attention_window": bad}))
        result = _train(
            "--weights", str(tmp_path / "weights"), "--data", data, "--out", str(tmp_path / "bad")
        )
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert result.exit_code == 1 and len(errors) == 1 and "attention_window" in errors[0], result.output
        assert "Traceback" not in result.output


def test_mail_from_random_weights_reads_through_the_recipe_window() -> None:
    """The mail recipe's window is for a model that learns its attention from the start; pretrained
    weights keep the attention they were pretrained with; SMS has none; an explicit value wins."""
    mail = TrainOptions(spam=[Path("Junk")], ham=[Path("INBOX")], weights="random")
    assert mail_settings(mail).attention_window == MAIL_RECIPE.attention_window == 64
    assert mail_settings(replace(mail, weights="gpt2-folder")).attention_window is None
    assert mail_settings(replace(mail, weights=None)).attention_window is None
    assert mail_settings(replace(mail, attention_window=0)).attention_window == 0
    assert mail_settings(TrainOptions(weights="random")).attention_window is None  # SMS


def test_weight_average_option_reaches_the_training_and_the_manifest(tmp_path: Path, sms_file: Path) -> None:
    write_hf_checkpoint(tmp_path / "weights", n_embd=32, n_layer=2, n_head=2, n_positions=128)
    data = str(_small_sms(tmp_path, sms_file))
    out = tmp_path / "model"
    result = _train(
        "--weights", str(tmp_path / "weights"), "--data", data, "--weight-average", "0.9", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "spamfilter.json").read_text())["recipe"]["weight_average"] == 0.9
    for bad in ("1", "-0.1", "x"):
        result = _train("--weights", str(tmp_path / "weights"), "--data", data, "--weight-average", bad)
        assert result.exit_code == 2 and "--weight-average" in result.output, result.output
    mail = TrainOptions(spam=[Path("Junk")], ham=[Path("INBOX")], weights="random")
    assert mail_settings(mail).training.weight_average == MAIL_RECIPE.weight_average
    assert mail_settings(replace(mail, weight_average=0.0)).training.weight_average == 0.0
    assert mail_settings(replace(mail, weight_average=0.9)).training.weight_average == 0.9
    assert mail_settings(TrainOptions()).training.weight_average == LABELLED_RECIPE.weight_average == 0.0


def test_max_windows_option_is_recorded_and_read_by_the_filter(tmp_path: Path, sms_file: Path) -> None:
    """train --max-windows N: the model records N, and the filter reads a long text in N windows."""
    from spamfilter.runtime import Classifier

    write_hf_checkpoint(tmp_path / "weights", n_embd=32, n_layer=2, n_head=2, n_positions=128)
    data = str(_small_sms(tmp_path, sms_file))
    out = tmp_path / "model"
    weights = str(tmp_path / "weights")
    result = _train("--weights", weights, "--data", data, "--max-windows", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "spamfilter.json").read_text())["recipe"]["max_windows"] == 2
    classifier = Classifier.load(out, variant="fp32")
    classifier.spam_probability(["Subject\n" + "an ordinary line of text\n" * 400])
    assert classifier.windows_scored == 2
    for bad in ("0", "65", "x"):
        result = _train("--weights", weights, "--data", data, "--max-windows", bad)
        assert result.exit_code == 2 and "--max-windows" in result.output, result.output
    with pytest.raises(UsageError, match="--max-windows 0"):
        mail_settings(TrainOptions(max_windows=0))


def _flipped_validation(n: int = 64) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Training data and the same messages with the other label: the better the model fits the
    training split, the worse its validation loss, so the best epoch comes early."""
    ids, labels = _toy_data(n, 8, 7)
    return (ids, labels), (ids, 1 - labels)


def test_keep_best_restores_the_epoch_with_the_lowest_validation_loss() -> None:
    train, validation = _flipped_validation()
    classifier = _classifier("last-token", n_embd=32, n_layer=2, n_head=2, n_positions=64)
    config = TrainingConfig(epochs=5, lr=3e-3, trainable="all", weight_decay=0.0, keep_best=True)
    record = train_classifier(classifier, train, validation, validation, config)
    losses = [e.validation_loss for e in record.epochs]
    assert len(losses) == 5
    assert record.best_epoch == int(np.argmin(losses)) + 1 < 5
    with torch.no_grad():
        logits = classifier(torch.as_tensor(validation[0]))
        loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(validation[1])).item()
    assert loss == pytest.approx(min(losses), rel=1e-4)  # the kept weights are that epoch's
    assert record.validation_accuracy == record.epochs[record.best_epoch - 1].validation_accuracy


def test_patience_stops_after_epochs_without_a_better_validation_loss() -> None:
    train, validation = _flipped_validation()
    classifier = _classifier("last-token", n_embd=32, n_layer=2, n_head=2, n_positions=64)
    config = TrainingConfig(epochs=8, lr=3e-3, trainable="all", weight_decay=0.0, keep_best=True, patience=2)
    record = train_classifier(classifier, train, validation, validation, config)
    assert len(record.epochs) == record.best_epoch + 2 < 8


def test_weighted_loss_weights_each_class_by_its_inverse_frequency() -> None:
    ids, _ = _toy_data(32, 8, 3)
    labels = np.array([1] * 8 + [0] * 24, dtype=np.int64)  # one spam in four, as mail
    config = TrainingConfig(epochs=1, batch_size=32, lr=1e-9, trainable="all", weighted_loss=True)
    fresh = _classifier("last-token", n_embd=32, n_layer=2, n_head=2, n_positions=64)
    with torch.no_grad():
        logits = fresh(torch.as_tensor(ids))
    weight = torch.tensor([32 / (2 * 24), 32 / (2 * 8)])
    expected = torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels), weight=weight).item()
    record = train_classifier(
        _classifier("last-token", n_embd=32, n_layer=2, n_head=2, n_positions=64),
        (ids, labels),
        (ids, labels),
        (ids, labels),
        config,
    )
    assert record.class_weights == pytest.approx([32 / 48, 2.0])
    assert record.step_losses[0] == pytest.approx(expected, rel=1e-5)


def test_weight_average_is_the_moving_average_of_every_step_and_is_what_is_kept() -> None:
    data = _toy_data(48, 12, 8)
    classifier = _classifier("last-token", n_embd=32, n_layer=2, n_head=2, n_positions=64)
    names = [n for n, p in classifier.named_parameters() if p.requires_grad]
    parameters = dict(classifier.named_parameters())
    expected = {n: parameters[n].detach().clone() for n in names}  # the average starts at the start
    decay = 0.9

    def after_step(step: int, total: int, loss: float) -> None:  # the optimizer's weights of each step
        rate = 1 - min(decay, (1 + step) / (10 + step))
        for n in names:
            expected[n] += rate * (parameters[n].detach() - expected[n])

    config = TrainingConfig(epochs=2, lr=3e-3, trainable="all", weight_average=decay)
    record = train_classifier(classifier, data, data, data, config, on_step=after_step)
    assert len(record.step_losses) == 12
    for n in names:
        torch.testing.assert_close(parameters[n].detach(), expected[n], rtol=1e-5, atol=1e-6)
    # the epoch's figures are the averaged weights', the ones the model keeps
    with torch.no_grad():
        logits = classifier(torch.as_tensor(data[0]))
    loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(data[1])).item()
    assert record.epochs[-1].validation_loss == pytest.approx(loss, rel=1e-4)
    # and they are not the optimizer's last weights: the same run without the average ends elsewhere
    plain = _classifier("last-token", n_embd=32, n_layer=2, n_head=2, n_positions=64)
    train_classifier(plain, data, data, data, replace(config, weight_average=0.0))
    assert not torch.allclose(dict(plain.named_parameters())[names[0]], parameters[names[0]])


def test_resume_with_a_weight_average_gives_the_uninterrupted_run(tmp_path) -> None:
    data = _toy_data(48, 12, 9)
    config = TrainingConfig(epochs=3, lr=1e-3, weight_average=0.95, keep_best=True)
    whole = _classifier(n_embd=32, n_layer=2, n_head=2, n_positions=64)
    train_classifier(whole, data, data, data, config)
    state = tmp_path / "training-state.pt"

    def stop_after_first(record) -> None:  # noqa: ANN001
        if record.epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        _train_small(data, config, on_epoch=stop_after_first, state_path=state)
    resumed = _classifier(n_embd=32, n_layer=2, n_head=2, n_positions=64)
    train_classifier(resumed, data, data, data, config, state_path=state, resume=True)
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("decay", [1.0, -0.5, 1.5])
def test_a_weight_average_decay_outside_0_1_is_refused(decay: float) -> None:
    data = _toy_data(16, 12, 5)
    with pytest.raises(TrainingError, match="between 0 and 1"):
        _train_small(data, TrainingConfig(epochs=1, weight_average=decay))


def test_keep_best_with_a_weight_average_keeps_the_best_epochs_average() -> None:
    train, validation = _flipped_validation()
    classifier = _classifier("last-token", n_embd=32, n_layer=2, n_head=2, n_positions=64)
    config = TrainingConfig(
        epochs=5, lr=3e-3, trainable="all", weight_decay=0.0, keep_best=True, weight_average=0.9
    )
    record = train_classifier(classifier, train, validation, validation, config)
    losses = [e.validation_loss for e in record.epochs]
    assert record.best_epoch == int(np.argmin(losses)) + 1 < len(losses)
    with torch.no_grad():
        logits = classifier(torch.as_tensor(validation[0]))
    loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(validation[1])).item()
    assert loss == pytest.approx(min(losses), rel=1e-4)  # the kept weights are that epoch's average


def test_a_state_saved_before_the_weight_average_resumes_without_one(tmp_path) -> None:
    data = _toy_data(16, 12, 5)
    state = tmp_path / "state.pt"
    _train_small(data, TrainingConfig(epochs=1), state_path=state)
    saved = torch.load(state, weights_only=True)
    del saved["record"]["config"]["weight_average"]  # as the state of an older release has it
    torch.save(saved, state)
    resumed = _train_small(data, TrainingConfig(epochs=1), state_path=state, resume=True)
    assert [e.epoch for e in resumed.epochs] == [1]
    with pytest.raises(TrainingError, match=r"other training options \(weight_average\)"):
        _train_small(data, TrainingConfig(epochs=1, weight_average=0.9), state_path=state, resume=True)
    with pytest.raises(TrainingError, match=r"other training options \(epochs, weight_average\)"):
        _train_small(data, TrainingConfig(epochs=2, weight_average=0.9), state_path=state, resume=True)


def test_a_weight_average_that_is_not_a_number_is_refused_before_training() -> None:
    mail = TrainOptions(spam=[Path("Junk")], ham=[Path("INBOX")], weights="random")
    for bad in (float("nan"), 1.0, -0.1):
        with pytest.raises(UsageError, match="--weight-average"):
            mail_settings(replace(mail, weight_average=bad))
