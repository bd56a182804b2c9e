"""Explanations through the command line: filter --explain (mbox, pipeline mode, folder) writes
the Report field per policy and the same bytes whichever way the message went through."""

from __future__ import annotations

import email
from pathlib import Path

from click.testing import CliRunner
from conftest import make_email, split_messages

from spamfilter.cli import cli

SPAM_TEXT = "WINNER!! You have won a 1000 pound prize. Call 09061701461 to claim now. Free entry!"
HAM_TEXT = "Are we still meeting for lunch tomorrow at noon? Let me know."


def run(args: list[str], data: bytes | None = None):
    return CliRunner().invoke(cli, args, input=data)


def _mbox(messages: list[bytes]) -> bytes:
    return b"".join(b"From someone@example.org Mon Mar  4 09:12:41 2024\n" + m + b"\n" for m in messages)


def _messages() -> list[bytes]:
    return [
        make_email("Prize", SPAM_TEXT),
        make_email("Lunch", HAM_TEXT),
        make_email("Hostile", SPAM_TEXT + "\r\nBcc: x@example.org\x00 \x1b[31m ünï 😀"),
    ]


def _fields(raw: bytes) -> email.message.Message:
    return email.message_from_bytes(raw)


def test_filter_explain_per_policy_and_same_bytes(trained_model: Path, tmp_path: Path) -> None:
    messages = _messages()
    source = tmp_path / "in.mbox"
    source.write_bytes(_mbox(messages))
    # fp32: the mbox's messages are scored in one model call, pipeline mode's one at a time, and
    # int8 scales its activations per call (its last digits of P depend on the batch, and on the
    # CPU's int8 kernels); fp32's P does not, so every byte can be compared on any CPU.
    model = ["--model", str(trained_model), "--variant", "fp32"]
    outputs = {}
    for policy in ("off", "spam", "all"):
        result = run(["filter", str(source), *model, "--explain", policy])
        assert result.exit_code == 0, result.output
        outputs[policy] = split_messages(result.stdout_bytes)
        assert len(outputs[policy]) == len(messages)
    verdicts = [_fields(m)["X-Spam-Flag"] == "YES" for m in outputs["off"]]
    assert any(verdicts) and not all(verdicts), "the test needs a spam and a ham verdict"
    for i, spam in enumerate(verdicts):
        assert _fields(outputs["off"][i])["X-Spam-Report"] is None
        assert (_fields(outputs["spam"][i])["X-Spam-Report"] is not None) is spam
        report = _fields(outputs["all"][i])["X-Spam-Report"]
        assert report is not None and report.startswith("P(spam)=")
        # safe: printable ASCII lines folded with a tab, nothing smuggled into the header
        header = outputs["all"][i].split(b"\n\n", 1)[0]
        assert all(0x20 <= b <= 0x7E or b in (0x09, 0x0A) for b in header.split(b"\n", 1)[1])
        assert b"\nBcc:" not in header
    # pipeline mode (one message on stdin) writes the mbox's bytes for each message
    for i, raw in enumerate(messages):
        result = run(["filter", *model, "--format", "email", "--explain", "all"], raw)
        assert result.exit_code == 0, result.output
        mbox_message = outputs["all"][i].split(b"\n", 1)[1]  # without its From_ line
        assert (
            result.stdout_bytes == mbox_message.rstrip(b"\n") + b"\n" or result.stdout_bytes == mbox_message
        )
    # a folder of .eml files: the same bytes again
    folder = tmp_path / "mail"
    folder.mkdir()
    for i, raw in enumerate(messages):
        (folder / f"{i}.eml").write_bytes(raw)
    result = run(["filter", str(folder), "-o", str(tmp_path / "out"), *model, "--explain", "all"])
    assert result.exit_code == 0, result.output
    for i in range(len(messages)):
        tagged = (tmp_path / "out" / f"{i}.eml").read_bytes()
        assert _fields(tagged)["X-Spam-Report"] == _fields(outputs["all"][i])["X-Spam-Report"]


def _local_and_ray_agree(model: Path, messages: list[bytes], tmp_path: Path, *options: str) -> bytes:
    """``filter`` of ``messages`` as an mbox and as a folder, locally and on the Ray engine: the
    same bytes both ways (asserted); the local mbox's output."""
    source = tmp_path / "in.mbox"
    source.write_bytes(_mbox(messages))
    folder = tmp_path / "mail"
    folder.mkdir()
    for i, raw in enumerate(messages):
        (folder / f"{i}.eml").write_bytes(raw)
    local = run(["filter", str(source), "--model", str(model), *options])
    assert local.exit_code == 0, local.output
    local_folder = tmp_path / "local"
    result = run(["filter", str(folder), "-o", str(local_folder), "--model", str(model), *options])
    assert result.exit_code == 0, result.output
    out = tmp_path / "ray"
    result = run(
        ["filter", "--engine", "ray", "-m", str(model), str(source), str(folder), "-o", str(out), *options]
    )
    assert result.exit_code == 0, result.output
    assert (out / "in.mbox").read_bytes() == local.stdout_bytes
    for i in range(len(messages)):
        assert (out / "mail" / f"{i}.eml").read_bytes() == (local_folder / f"{i}.eml").read_bytes()
    return local.stdout_bytes


def test_ray_engine_writes_filters_bytes_with_explanations(trained_model: Path, tmp_path: Path) -> None:
    messages = _messages()
    local = _local_and_ray_agree(trained_model, messages, tmp_path, "--explain", "all")
    assert local.count(b"X-Spam-Report:") == len(messages)


def _labelled_csv(path: Path) -> Path:
    import csv

    rows = [("spam", SPAM_TEXT), ("not spam", HAM_TEXT)] * 4
    # a ham written as spam is written: the model will call it spam (a false positive to list)
    rows += [("not spam", SPAM_TEXT + " <script>alert(1)</script>"), ("spam", HAM_TEXT + " lunch")]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Label", "Text"])
        writer.writerows(rows)
    return path


def test_eval_prints_low_fpr_figures_and_writes_error_pages(trained_model: Path, tmp_path: Path) -> None:
    data = _labelled_csv(tmp_path / "labelled.csv")
    for name in ("errors.md", "errors.html"):
        page = tmp_path / name
        result = run(["eval", str(data), "--model", str(trained_model), "--report", str(page)])
        assert result.exit_code == 0, result.output
        assert "(1 - ROC area)" in result.stdout and "at 0.1" not in result.stdout.split("ROC area")[0]
        assert "spam recall" in result.stdout and "target 0.1 %" in result.stdout
        text = page.read_text(encoding="utf-8")
        assert "False positives" in text and "Missed spam" in text
        # the mislabelled ham is listed as a false positive with its phrases, escaped in HTML
        assert "#8" in text and "1000 pound prize" in text and "&lt;script&gt;" in text
        assert "<script>" not in text
        assert "phrases towards spam" in text and "phrases towards ham" in text
        assert "false positives 1, missed spam 1" in text
    # a folder PATH still gets eval.json as before
    result = run(["eval", str(data), "--model", str(trained_model), "--report", str(tmp_path / "folder")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "folder" / "eval.json").is_file()


def test_eval_online_replays_and_prints_trec_figures(trained_model: Path, tmp_path: Path) -> None:
    def dated(i: int, subject: str, body: str) -> bytes:
        raw = make_email(f"{subject} {i}", body)
        date = f"Date: Mon, {1 + i % 28} Apr 2024 09:12:41 +0000" if i % 7 else "Date: not a date"
        return raw.replace(b"Date: Mon, 4 Mar 2024 09:12:41 +0000", date.encode())

    spam = [dated(i, "Prize", SPAM_TEXT + f" code {i}") for i in range(0, 36, 2)]
    ham = [dated(i, "Lunch", HAM_TEXT + f" room {i}") for i in range(1, 36, 2)]
    (tmp_path / "spam.mbox").write_bytes(_mbox(spam))
    (tmp_path / "ham.mbox").write_bytes(_mbox(ham))
    plot = tmp_path / "curve.png"
    args = ["eval", "--online", "--spam", str(tmp_path / "spam.mbox"), "--ham", str(tmp_path / "ham.mbox")]
    args += ["--model", str(trained_model), "--interval", "5", "--feedback", "errors", "--block", "12"]
    result = run([*args, "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "online replay of 36 messages" in out and "feedback: errors" in out
    assert "(1 - ROCA) %:" in out and "spam recall at 0.1 % ham FPR" in out
    assert "| 25-36 |" in out  # the learning curve's last block of 12
    assert "without a plausible Date" in out
    assert plot.read_bytes().startswith(b"\x89PNG")
    # a replay needs mail, not a CSV
    refused = run(["eval", "--online", str(_labelled_csv(tmp_path / "x.csv")), "--model", str(trained_model)])
    assert refused.exit_code == 2 and "--spam and --ham" in refused.output


def test_classify_explain_prints_phrases_of_the_text(trained_model: Path) -> None:
    plain = run(["classify", SPAM_TEXT, "--model", str(trained_model)])
    result = run(["classify", SPAM_TEXT, "--model", str(trained_model), "--explain"])
    assert result.exit_code == 0, result.output
    first, *phrases = result.stdout.splitlines()
    assert first == plain.stdout.splitlines()[0] and first.startswith("spam\t")
    assert 1 <= len(phrases) <= 3
    for line in phrases:
        effect, quoted = line.split(": ", 1)
        assert float(effect.split()[0]) > 0  # towards the spam verdict
        assert quoted.strip('"') in SPAM_TEXT  # a span of the message


def test_a_remembered_spam_moves_every_engine_alike_and_the_report_names_the_memory(
    trained_model: Path, tmp_path: Path
) -> None:
    """The memory of corrected mail (memory.py) counts in Classifier.spam_probability: filter (an
    mbox, a folder), pipeline mode and the Ray engine write the same bytes, each Report naming it."""
    import shutil

    from support import SHARED_DATA

    from spamfilter.corrections import Corrections
    from spamfilter.mail import iter_mail_source
    from spamfilter.pipeline import message_text

    model = Path(shutil.copytree(trained_model, tmp_path / "model"))
    spam = next(
        raw
        for raw in iter_mail_source(SHARED_DATA / "spamassassin" / "spam.mbox")
        if len(message_text(raw).split()) > 60
    )
    Corrections(model).add(spam, 1)  # filed for everyone, as learn --spam or a TELL would
    padded = make_email("Re: lunch", f"{HAM_TEXT}\n\n{message_text(spam)}")
    messages = [padded, make_email("Lunch", HAM_TEXT)]
    # fp32: pipeline mode scores the message alone, the mbox with the other (see the test above)
    options = ("--variant", "fp32", "--explain", "all")
    tagged = split_messages(_local_and_ray_agree(model, messages, tmp_path, *options))
    assert b"memory +10.00 holds 100% of a spam reported" in tagged[0]
    assert b"memory" not in tagged[1]
    piped = run(["filter", "--model", str(model), *options, "-"], padded)
    assert piped.exit_code == 0, piped.output
    # the same message, less the mbox's From_ line and the blank line that ends it there
    assert piped.stdout_bytes.rstrip(b"\n") == tagged[0].split(b"\n", 1)[1].rstrip(b"\n")
    explained = run(["classify", message_text(padded), "--model", str(model), "--explain"])
    assert "  memory +10.00 holds 100% of a spam reported" in explained.stdout, explained.output
