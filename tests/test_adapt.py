"""``spamfilter.adapt``: next-token pretraining on unlabelled mail before the classifier is trained."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import make_email, write_hf_checkpoint

from spamfilter.adapt import RECORD_FILE, STATE_FILE, AdaptOptions, adapt, lm_loss, read_streams
from spamfilter.cli import cli
from spamfilter.errors import TrainingError, UsageError
from spamfilter.interrupts import Interrupted, stop_on_signals
from spamfilter.weights import load_pretrained

SUBJECTS = ["meeting on monday", "the quarterly report", "lunch plans", "your invoice", "project update"]
BODY = (
    "Hello team, the meeting about the {0} is on monday at ten in the small room. "
    "Please bring the numbers for the {0} and the notes from last week. Thanks, Alice\n"
)


def write_mail(folder: Path, n: int = 40) -> Path:
    """A folder of plain messages whose language a tiny model can pick up in a few steps."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        subject = SUBJECTS[i % len(SUBJECTS)]
        body = BODY.format(subject) * (1 + i % 3)
        (folder / f"{i:03d}.eml").write_bytes(make_email(f"{subject} {i}", body))
    return folder


def options(tmp_path: Path, **changes: object) -> AdaptOptions:
    weights = tmp_path / "start"
    if not weights.is_dir():
        write_hf_checkpoint(weights, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    mail = tmp_path / "mail"
    if not mail.is_dir():
        write_mail(mail)
    base = AdaptOptions(
        mail=[mail],
        out=tmp_path / "adapted",
        weights=str(weights),
        steps=30,
        context=32,
        batch_size=4,
        lr=3e-3,
        warmup=3,
        held_out=0.2,
        save_every=5,
        held_out_windows=16,
        seed=5,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_adaptation_lowers_the_language_model_loss_on_held_out_mail(tmp_path: Path) -> None:
    record = adapt(options(tmp_path))
    # The held-out messages were never trained on; a random start predicts ~ln(50257) = 10.8.
    assert record.held_out_loss_before > 10
    assert record.held_out_loss_after < record.held_out_loss_before - 2, record.held_out_losses
    assert record.steps == 30 and len(record.losses) == 30 and record.held_out_messages == 8
    out = tmp_path / "adapted"
    saved = json.loads((out / RECORD_FILE).read_text())
    assert saved["held_out_loss_after"] == record.held_out_loss_after
    assert not (out / STATE_FILE).exists()  # finished: nothing to resume
    # The checkpoint is the adapted model: reloaded, it gives the held-out loss recorded.
    gpt = load_pretrained(out)
    start = load_pretrained(tmp_path / "start")
    streams = read_streams([tmp_path / "mail"], 0.2, 5, 32)
    window = torch.from_numpy(streams.held_out[:33])[None]
    with torch.no_grad():
        assert float(lm_loss(gpt, window)) < float(lm_loss(start, window)) - 2


def test_the_checkpoint_is_a_hugging_face_gpt2(tmp_path: Path) -> None:
    from transformers import GPT2LMHeadModel

    adapt(options(tmp_path, steps=3))
    ours = load_pretrained(tmp_path / "adapted")
    theirs = GPT2LMHeadModel.from_pretrained(tmp_path / "adapted").eval()
    ids = torch.tensor([[464, 3329, 318, 319, 41237, 13]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, rtol=1e-4, atol=1e-4)


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_pretrained(out).state_dict()


def test_a_run_stopped_by_an_exception_resumes_to_the_uninterrupted_run(tmp_path: Path) -> None:
    whole = adapt(options(tmp_path, out=tmp_path / "whole"))

    class Crash(Exception):
        pass

    def crash_at_step_13(step: int, total: int, loss: float) -> None:
        if step == 13:
            raise Crash  # as a kill would: only the state saved at step 10 survives

    with pytest.raises(Crash):
        adapt(options(tmp_path, out=tmp_path / "cut"), on_step=crash_at_step_13)
    state = torch.load(tmp_path / "cut" / STATE_FILE, weights_only=True)
    assert state["step"] == 10
    resumed = adapt(options(tmp_path, out=tmp_path / "cut", resume=True))
    assert resumed.losses == whole.losses  # the same batches, in the same order
    assert resumed.held_out_losses == whole.held_out_losses
    cut, reference = _final_weights(tmp_path / "cut"), _final_weights(tmp_path / "whole")
    for name, tensor in reference.items():
        assert torch.equal(cut[name], tensor), name


def test_sigterm_saves_the_step_reached_and_resumes_from_it(tmp_path: Path) -> None:
    whole = adapt(options(tmp_path, out=tmp_path / "whole"))

    def terminate_at_step_7(step: int, total: int, loss: float) -> None:
        if step == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    with stop_on_signals(), pytest.raises(Interrupted):
        adapt(options(tmp_path, out=tmp_path / "cut"), on_step=terminate_at_step_7)
    # Stopped between steps 7 and 8, saved there (not at the last multiple of save_every).
    assert torch.load(tmp_path / "cut" / STATE_FILE, weights_only=True)["step"] == 7
    resumed = adapt(options(tmp_path, out=tmp_path / "cut", resume=True))
    assert resumed.losses == whole.losses
    cut, reference = _final_weights(tmp_path / "cut"), _final_weights(tmp_path / "whole")
    assert all(torch.equal(cut[name], tensor) for name, tensor in reference.items())


def test_resume_refuses_other_mail_or_settings_and_needs_a_state(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="nothing to resume"):
        adapt(options(tmp_path, resume=True))

    def stop(step: int, total: int, loss: float) -> None:
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        adapt(options(tmp_path), on_step=stop)
    with pytest.raises(TrainingError, match="lr"):
        adapt(options(tmp_path, resume=True, lr=1e-2))
    (tmp_path / "mail" / "new.eml").write_bytes(make_email("another", "a message added since"))
    with pytest.raises(TrainingError, match="inputs_sha256"):
        adapt(options(tmp_path, resume=True))


HOSTILE = {
    "binary.eml": bytes(range(256)) * 64,
    "nul.eml": b"Subject: nul\x00bytes\n\nbody\x00with\x00nuls\n",
    "no-body.eml": b"Subject: only a header\n",
    "empty.eml": b"",
    "bad-mime.eml": (
        b"Subject: broken\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\n\n"
        b"--\nContent-Transfer-Encoding: base64\n\n!!!not base64!!!\n--"
    ),
    "endoftext.eml": make_email("special", "<|endoftext|> a literal special token " * 20),
    "deep-html.eml": b"Subject: deep\nContent-Type: text/html\n\n" + b"<div>" * 20000 + b"text",
    "long-header.eml": b"Subject: " + b"x" * 200000 + b"\n\nshort body\n",
    "bad-charset.eml": (
        b"Subject: =?x-unknown?Q?caf=E9?=\nContent-Type: text/plain; charset=nonsense\n\n\xe9\xff\n"
    ),
}


def test_hostile_and_malformed_mail_does_not_crash(tmp_path: Path) -> None:
    mail = write_mail(tmp_path / "mail", n=12)
    for name, raw in HOSTILE.items():
        (mail / name).write_bytes(raw)
    warnings: list[str] = []
    record = adapt(options(tmp_path, steps=4), on_warning=warnings.append)
    assert record.steps == 4 and record.held_out_loss_after == record.held_out_loss_after  # not NaN
    assert torch.isfinite(torch.tensor(record.losses)).all()


def test_too_little_mail_is_one_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "one.eml").write_bytes(make_email("alone", "one message"))
    with pytest.raises(UsageError, match="at least 2"):
        adapt(options(tmp_path, mail=[empty]))
    short = tmp_path / "short"
    short.mkdir()
    for name in ("a", "b"):
        (short / f"{name}.eml").write_bytes(make_email(name, "a short message"))
    with pytest.raises(UsageError, match="context"):
        adapt(options(tmp_path, mail=[short], context=64))


def test_spamfilter_train_fine_tunes_from_the_adapted_checkpoint(tmp_path: Path) -> None:
    adapt(options(tmp_path, steps=3))
    spam, ham = tmp_path / "spam", tmp_path / "ham"
    spam.mkdir()
    ham.mkdir()
    for i in range(24):
        offer = "buy cheap pills now, best price " * 3
        (spam / f"{i}.eml").write_bytes(make_email(f"cheap pills {i}", offer))
        (ham / f"{i}.eml").write_bytes(make_email(f"meeting {i}", BODY.format("report")))
    args = ["train", "--weights", str(tmp_path / "adapted"), "--spam", str(spam), "--ham", str(ham)]
    args += ["--epochs", "1", "--max-length", "32", "--quantize", "none", "--out", str(tmp_path / "model")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    base = json.loads((tmp_path / "model" / "spamfilter.json").read_text())["base_model"]
    assert base["weights"] == str(tmp_path / "adapted") and base["config"]["n_embd"] == 32
