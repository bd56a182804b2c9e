"""``spamfilter adapt``: the command over spamfilter.adapt, and train --weights on what it wrote."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_email, write_hf_checkpoint

from spamfilter.cli import cli

BODY = "Hello team, the meeting about the {0} is on monday at ten in the small room. Thanks, Alice\n"


def test_adapt_command_writes_a_checkpoint_that_train_accepts(tmp_path: Path) -> None:
    start, mail = tmp_path / "start", tmp_path / "mail"
    write_hf_checkpoint(start, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    mail.mkdir()
    for i in range(30):
        (mail / f"{i}.eml").write_bytes(make_email(f"report {i}", BODY.format(f"report {i}") * (1 + i % 3)))
    out = tmp_path / "adapted"
    args = ["adapt", "--mail", str(mail), "--out", str(out), "--weights", str(start)]
    args += ["--steps", "4", "--context", "32", "--batch-size", "2", "--lr", "0.003", "--seed", "5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "held-out loss" in result.stdout and "step 4/4" in result.stderr
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    # a finished run keeps no state: --resume says so in one line instead of starting over
    again = CliRunner().invoke(cli, [*args, "--resume"])
    assert again.exit_code == 1 and "nothing to resume" in again.output and "Traceback" not in again.output
    # train --weights takes the adapted checkpoint
    spam, ham = tmp_path / "spam", tmp_path / "ham"
    spam.mkdir()
    ham.mkdir()
    for i in range(24):
        (spam / f"{i}.eml").write_bytes(
            make_email(f"cheap pills {i}", "buy cheap pills now, best price " * 3)
        )
        (ham / f"{i}.eml").write_bytes(make_email(f"meeting {i}", BODY.format("report")))
    train = ["train", "--weights", str(out), "--spam", str(spam), "--ham", str(ham), "--epochs", "1"]
    train += ["--max-length", "32", "--quantize", "none", "--out", str(tmp_path / "model")]
    trained = CliRunner().invoke(cli, train)
    assert trained.exit_code == 0, trained.output
    base = json.loads((tmp_path / "model" / "spamfilter.json").read_text())["base_model"]
    assert base["weights"] == str(out) and base["config"]["n_embd"] == 32


def test_adapt_continues_windowed_weights_under_the_shape_that_names_them(tmp_path: Path) -> None:
    """``adapt --model SHAPE --weights DIR`` where DIR's config.json carries an attention window
    (weights an earlier adaptation or training wrote): the same sizes, so the same shape; other
    sizes are still refused in one line."""
    start, mail = tmp_path / "start", tmp_path / "mail"
    write_hf_checkpoint(start, n_embd=32, n_layer=1, n_head=2, n_positions=64)
    config = json.loads((start / "config.json").read_text())
    (start / "config.json").write_text(json.dumps({**config, "attention_window": 16}))
    mail.mkdir()
    for i in range(30):
        (mail / f"{i}.eml").write_bytes(make_email(f"report {i}", BODY.format(f"report {i}")))
    shape = tmp_path / "shape.json"
    shape.write_text(json.dumps({"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 64}))
    args = ["adapt", "--mail", str(mail), "--weights", str(start), "--steps", "2", "--context", "32"]
    args += ["--batch-size", "2", "--model", str(shape)]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "adapted")])
    assert result.exit_code == 0, result.output
    shape.write_text(json.dumps({"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64}))
    refused = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "other")])
    assert refused.exit_code != 0 and "does not match" in refused.output
    assert "Traceback" not in refused.output


def test_adapt_bad_input_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["adapt", "--mail", str(empty), "--out", str(tmp_path / "o")])
    assert result.exit_code in (1, 2) and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def _start_and_mail(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A tiny start checkpoint, and 24 spam and 24 ham messages in two folders."""
    start, spam, ham = tmp_path / "start", tmp_path / "spam", tmp_path / "ham"
    write_hf_checkpoint(start, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    spam.mkdir()
    ham.mkdir()
    for i in range(24):
        (spam / f"{i}.eml").write_bytes(
            make_email(f"cheap pills {i}", "buy cheap pills now, best price " * 3)
        )
        (ham / f"{i}.eml").write_bytes(make_email(f"meeting {i}", BODY.format(f"report {i}")))
    return start, spam, ham


def test_train_adapts_on_its_training_split_then_fine_tunes(tmp_path: Path) -> None:
    import torch

    from spamfilter.export import load_checkpoint
    from spamfilter.weights import load_pretrained

    start, spam, ham = _start_and_mail(tmp_path)
    out = tmp_path / "model"
    train = ["train", "--weights", str(start), "--spam", str(spam), "--ham", str(ham), "--epochs", "1"]
    train += ["--max-length", "32", "--quantize", "none", "--out", str(out), "--adapt-steps", "8"]
    result = CliRunner().invoke(cli, train)
    assert result.exit_code == 0, result.output
    assert "adapting to the training split's text (8 steps)" in result.output
    manifest = json.loads((out / "spamfilter.json").read_text())
    recipe, adaptation = manifest["recipe"], manifest["recipe"]["adaptation"]
    assert recipe["adapt_steps"] == 8 and adaptation["steps"] == 8
    # the training split's messages only: the validation and test messages were never read
    assert adaptation["messages"] == recipe["split_sizes"][0] < sum(recipe["split_sizes"])
    assert adaptation["held_out_loss_after"] < adaptation["held_out_loss_before"]
    assert manifest["base_model"]["weights"] == str(start)  # where it started, not the scratch folder
    assert not (out / "adapted").exists()  # its weights are in the model
    # the default trainable part is the last block: the embedding is the adapted one, not the start's
    classifier = load_checkpoint(out / "model.pt")[0]
    started = load_pretrained(str(start)).wte.weight.detach()
    assert not torch.equal(classifier.gpt.wte.weight.detach(), started)


def test_train_adapts_random_weights_of_a_named_shape(tmp_path: Path) -> None:
    """``--model SHAPE --weights random --adapt-steps``: the adapted weights carry the recipe's
    attention window in their configuration, and are still the shape that ``--model`` names."""
    _, spam, ham = _start_and_mail(tmp_path)
    shape = tmp_path / "shape.json"
    shape.write_text(json.dumps({"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 64}))
    out = tmp_path / "model"
    train = ["train", "--model", str(shape), "--weights", "random", "--trainable", "all"]
    train += ["--spam", str(spam), "--ham", str(ham), "--epochs", "1", "--max-length", "32"]
    train += ["--attention-window", "16", "--quantize", "none", "--out", str(out), "--adapt-steps", "4"]
    result = CliRunner().invoke(cli, train)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "spamfilter.json").read_text())
    assert manifest["recipe"]["adaptation"]["steps"] == 4
    assert manifest["base_model"]["config"]["attention_window"] == 16
    assert manifest["base_model"]["weights"] == "random initialisation"  # not the scratch folder


def test_train_resumed_after_its_adaptation_reuses_it(tmp_path: Path) -> None:
    from spamfilter.finetune import fine_tune
    from spamfilter.train_loop import TrainingConfig
    from spamfilter.train_options import TrainOptions

    start, spam, ham = _start_and_mail(tmp_path)
    options = TrainOptions(
        weights=str(start),
        spam=[spam],
        ham=[ham],
        max_length=32,
        adapt_steps=6,
        training=TrainingConfig(epochs=2),
        out=tmp_path / "model",
        quantize=None,
    )

    class Stop(Exception):
        pass

    def stop_after_first(record: object) -> None:
        raise Stop

    first: list[str] = []
    with pytest.raises(Stop):
        fine_tune(options, on_epoch=stop_after_first, on_stage=first.append)
    assert any(stage.startswith("adaptation:") for stage in first), first
    adapted = (tmp_path / "model" / "adapted" / "model.safetensors").read_bytes()
    stages: list[str] = []
    result = fine_tune(replace(options, resume=True), on_stage=stages.append)
    assert not any(stage.startswith("adaptation:") for stage in stages), stages  # not adapted again
    assert [epoch.epoch for epoch in result.record.epochs] == [1, 2]
    assert result.manifest.recipe["adaptation"]["steps"] == 6 and len(adapted) > 0
    assert not (tmp_path / "model" / "adapted").exists()


def test_a_finished_adaptation_is_reused_only_as_it_was_run(tmp_path: Path) -> None:
    from spamfilter.adapt import RECORD_FILE, AdaptRecord
    from spamfilter.finetune import finished_adaptation
    from spamfilter.train_options import AdaptOptions
    from spamfilter.weights import WEIGHTS_FILE

    folder = tmp_path / "adapted"
    folder.mkdir()
    options = AdaptOptions(mail=[], out=folder, steps=6, context=32, lr=1e-3, warmup=1, seed=5)
    settings = {name: getattr(options, name) for name in ("model", "steps", "context", "batch_size")}
    settings |= {"lr": options.lr, "warmup": options.warmup, "seed": options.seed}
    record = AdaptRecord(6, 40, 2, 900, 60, 10.8, 9.1, 1.0, options=settings)
    assert finished_adaptation(folder, options) is None  # nothing there
    (folder / RECORD_FILE).write_text(json.dumps(record.to_dict()))
    assert finished_adaptation(folder, options) is None  # a record without its weights
    (folder / WEIGHTS_FILE).write_bytes(b"weights")
    assert finished_adaptation(folder, options) == record
    assert finished_adaptation(folder, replace(options, steps=7)) is None  # another run's settings
    assert finished_adaptation(folder, replace(options, seed=6)) is None
    for damaged in ("{", "[]", '{"steps": 6}', json.dumps({**record.to_dict(), "options": 3})):
        (folder / RECORD_FILE).write_text(damaged)  # torn, or another version's: adapted again
        assert finished_adaptation(folder, options) is None
