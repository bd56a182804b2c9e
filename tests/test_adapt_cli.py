"""``spamfilter adapt``: the command over spamfilter.adapt, and train --weights on what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_adapt_bad_input_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["adapt", "--mail", str(empty), "--out", str(tmp_path / "o")])
    assert result.exit_code in (1, 2) and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
