"""filter on real mail: mbox in -> mbox out, pipeline mode, and training on mailboxes."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_email, split_messages
from safetensors.numpy import load_file

from spamfilter.cli import cli
from spamfilter.learn import FEATURES_FILE
from spamfilter.mail import remove_spam_headers

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SPAM_TEXT = "WINNER!! You have won a 1000 pound prize. Call 09061701461 to claim now. Free entry!"
HAM_TEXT = "Are we still meeting for lunch tomorrow at noon? Let me know."


def run(args: list[str], data: bytes | None = None):
    return CliRunner().invoke(cli, args, input=data)


def test_mbox_round_trip_keeps_every_byte(trained_model: Path) -> None:
    original = (EXAMPLES / "sample.mbox").read_bytes()
    result = run(["filter", str(EXAMPLES / "sample.mbox"), "--model", str(trained_model)])
    assert result.exit_code == 0, result.output
    out = split_messages(result.stdout_bytes)
    assert len(out) == len(split_messages(original)) == 10
    assert all(m.count(b"\nX-Spam-Flag: ") == 1 and b"\nX-Spam-Status: " in m for m in out)
    assert b"".join(remove_spam_headers(m) for m in out) == original
    assert "10 messages" in result.stderr


def test_mbox_from_stdin_with_crlf_and_hostile_messages(trained_model: Path) -> None:
    bodies = [
        make_email("prize", SPAM_TEXT, newline="\r\n"),
        make_email("lunch", HAM_TEXT + " <|endoftext|> literally", newline="\r\n"),
        b"Subject: =?utf-8?B?broken?=\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\n"
        b"\xff\xfe\x00ok\r\n",
        b"no header separator at all, just text\r\n",
        make_email("html", "", newline="\r\n", extra="Content-Type: text/html\r\n").replace(
            b"\r\n\r\n", b"\r\n\r\n<p>Cheap <b>meds</b> &amp; more</p>", 1
        ),
        b"Subject: huge\r\n\r\n" + b"A" * 700_000 + b"\r\n",
    ]
    mbox = b"".join(b"From sender@example.org Mon Mar  4 09:12:45 2024\r\n" + m + b"\r\n" for m in bodies)
    result = run(["filter", "-", "--model", str(trained_model)], mbox)
    assert result.exit_code == 0, result.output
    out = split_messages(result.stdout_bytes)
    assert len(out) == len(bodies)
    for before, after in zip(split_messages(mbox), out, strict=True):
        assert b"\r\nX-Spam-Flag: " in after and b"\r\nX-Spam-Status: " in after
        assert remove_spam_headers(after) == before


def test_spam_output_splits_the_mailbox(trained_model: Path, tmp_path: Path) -> None:
    mbox = b"".join(
        b"From a@example.org Mon Mar  4 09:12:45 2024\n" + m + b"\n"
        for m in (make_email("prize", SPAM_TEXT), make_email("lunch", HAM_TEXT))
    )
    spam_box = tmp_path / "spam.mbox"
    result = run(["filter", "-", "--model", str(trained_model), "--spam-output", str(spam_box)], mbox)
    assert result.exit_code == 0, result.output
    assert [b"Subject: lunch" in m for m in split_messages(result.stdout_bytes)] == [True]
    assert [b"Subject: prize" in m for m in split_messages(spam_box.read_bytes())] == [True]


def test_pipeline_mode_tags_one_message(trained_model: Path) -> None:
    message = make_email("Free prize", SPAM_TEXT, extra="X-Spam-Flag: NO\nX-Spam-Status: No, old\n")
    result = run(["filter", "--model", str(trained_model)], message)
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.startswith(b"X-Spam-Flag: YES\nX-Spam-Status: Yes, score=")
    assert result.stdout_bytes.count(b"X-Spam-Flag") == 1
    assert remove_spam_headers(result.stdout_bytes) == remove_spam_headers(message)


@pytest.mark.parametrize(("text", "code"), [(SPAM_TEXT, 1), (HAM_TEXT, 0)])
def test_exit_code_is_the_verdict(trained_model: Path, text: str, code: int) -> None:
    result = run(
        ["filter", "--model", str(trained_model), "--exit-code", "--format", "email"], make_email("x", text)
    )
    assert result.exit_code == code


def test_pipeline_mode_is_fail_safe(tmp_path: Path) -> None:
    message = make_email("hello", HAM_TEXT)
    result = run(["filter", "--model", str(tmp_path / "missing")], message)
    assert result.exit_code == 0
    assert result.stdout_bytes == message
    assert "passed through untagged" in result.stderr


def test_pipeline_mode_strict_asks_for_a_retry(tmp_path: Path) -> None:
    result = run(["filter", "--model", str(tmp_path / "missing"), "--strict"], make_email("hello", HAM_TEXT))
    assert result.exit_code == 75
    assert result.stdout_bytes == b""


def test_pipeline_mode_keeps_a_huge_message_whole(trained_model: Path) -> None:
    message = make_email("big", HAM_TEXT + "\n" + "filler line\n" * 100_000)
    assert len(message) > 512 * 1024
    result = run(["filter", "--model", str(trained_model), "--format", "email"], message)
    assert result.exit_code == 0
    assert remove_spam_headers(result.stdout_bytes) == message
    # Classified from its first 512 KB: spam after the cap cannot change the score.
    tail_spam = message + (SPAM_TEXT + "\n").encode() * 50
    again = run(["filter", "--model", str(trained_model), "--format", "email"], tail_spam)
    score = re.compile(rb"score=([0-9.]+)")
    assert score.search(again.stdout_bytes).group(1) == score.search(result.stdout_bytes).group(1)  # type: ignore[union-attr]
    assert remove_spam_headers(again.stdout_bytes) == tail_spam


def test_pipeline_mode_streams_what_the_model_does_not_read(trained_model: Path) -> None:
    """A 300 MB message (an MTA's pipe transport hands over whatever it was sent) was read whole
    and copied while tagged: the process grew by about three times its size. Only its first
    512 KiB are held now; the rest is copied through, every byte."""
    head = make_email("big", HAM_TEXT + "\n")
    chunk = b"x" * 1023 + b"\n"
    count = 300 * 1024  # 300 MiB of body
    command = [sys.executable, "-m", "spamfilter", "filter", "-m", str(trained_model), "--format", "email"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None

    def feed() -> None:
        assert process.stdin is not None
        process.stdin.write(head)
        for _ in range(count):
            process.stdin.write(chunk)
        process.stdin.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    digest, size, first, peak_kib = hashlib.sha256(), 0, b"", 0
    while block := process.stdout.read(1 << 20):
        first = first or block
        digest.update(block)
        size += len(block)
        # The process's own peak (its rusage would count the test's memory it was forked from).
        status = Path(f"/proc/{process.pid}/status").read_text()
        peak_kib = int(status.split("VmHWM:")[1].split()[0]) if "VmHWM:" in status else peak_kib
    feeder.join()
    process.stdout.close()
    assert process.wait(timeout=60) == 0
    assert first.startswith(b"X-Spam-") and remove_spam_headers(first)[: len(head)] == head
    tagged_head = first[: first.index(head)] + head
    expected = hashlib.sha256(tagged_head)
    for _ in range(count):
        expected.update(chunk)
    assert (size, digest.hexdigest()) == (len(tagged_head) + count * len(chunk), expected.hexdigest())
    assert 0 < peak_kib / 1024 < 300, f"peak {peak_kib / 1024:.0f} MiB for a 300 MiB message"


@pytest.mark.parametrize("strict", [(), ("--strict",)])
def test_pipeline_mode_passes_a_message_with_endless_headers_untagged(
    trained_model: Path, strict: tuple[str, ...]
) -> None:
    """Such a message can never be tagged: deferring it (--strict's 75) would only retry it until
    it bounced, so it goes through untagged either way."""
    message = b"Subject: padded\n" + b"X-Pad: " + b"p" * 600_000 + b"\n\nHello\n"
    result = run(["filter", "--model", str(trained_model), "--format", "email", *strict], message)
    assert result.exit_code == 0 and result.stdout_bytes == message
    assert "the header block is over 524288 bytes" in result.stderr


def test_bytes_before_the_first_from_line_pass_through_and_are_counted(trained_model: Path) -> None:
    mbox = (
        b"junk before the mailbox\n"
        + b"From a@example.org Mon Mar  4 09:12:45 2024\n"
        + make_email("x", HAM_TEXT)
    )
    result = run(["filter", "-", "--model", str(trained_model), "--format", "mbox"], mbox)
    assert result.exit_code == 0 and remove_spam_headers(result.stdout_bytes) == mbox
    assert result.stdout_bytes.startswith(b"junk before the mailbox\nFrom ")
    assert "1 non-message chunks passed through" in result.stderr


@pytest.mark.parametrize("cut", [b"From b@example.org Mon Mar  4 09:1", b"From "], ids=["date cut", "bare"])
def test_an_mbox_cut_inside_its_last_from_line_keeps_the_message_before(
    trained_model: Path, cut: bytes
) -> None:
    """A file cut off inside its last From_ line: the cut line was tagged as a message, its fields
    written before its 'From ', which then no longer followed an empty line, so the message before
    it took in the fields and the broken line on the next read. The cut line now passes through as
    it came, and every message read comes out whole."""
    first = b"From a@example.org Mon Mar  4 09:12:45 2024\n" + make_email("x", HAM_TEXT) + b"\n"
    result = run(["filter", "-", "--model", str(trained_model), "--format", "mbox"], first + cut)
    assert result.exit_code == 0, result.output
    out = result.stdout_bytes
    assert out.endswith(b"\n\n" + cut) and remove_spam_headers(out) == first + cut
    pieces = split_messages(out)  # read again: the first message whole, then the cut line alone
    assert [remove_spam_headers(p) for p in pieces] == [first, cut] and out.count(b"X-Spam-Flag:") == 1
    assert "1 non-message chunks passed through" in result.stderr


def _write_mbox(path: Path, texts: list[str], subject: str) -> None:
    path.write_bytes(
        b"".join(
            b"From a@example.org Mon Mar  4 09:12:45 2024\n" + make_email(subject, t) + b"\n" for t in texts
        )
    )


def test_train_on_mailboxes(tmp_path: Path) -> None:
    spam_texts = [f"{SPAM_TEXT} offer {i}" for i in range(20)]
    ham_texts = [f"{HAM_TEXT} note {i}" for i in range(20)] + [f"{HAM_TEXT} " * 12 for _ in range(4)]
    _write_mbox(tmp_path / "spam.mbox", spam_texts, "prize")
    ham_dir = tmp_path / "ham"  # a folder of .eml files
    ham_dir.mkdir()
    for i, text in enumerate(ham_texts):
        (ham_dir / f"{i:03d}.eml").write_bytes(make_email("lunch", text))
    (tmp_path / "config.json").write_text(
        json.dumps({"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 128})
    )
    out = tmp_path / "model"
    result = run([
        "train", "--model", str(tmp_path / "config.json"), "--weights", "random",
        "--spam", str(tmp_path / "spam.mbox"), "--ham", str(ham_dir),
        "--max-length", "64", "--epochs", "1", "--out", str(out), "--device", "cpu", "--progress",
        "--augment", "--interleave",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "spamfilter.json").read_text())
    assert "training…" in result.stderr and "epoch 1/1: train loss" in result.stderr  # a line per phase
    # --augment: the 30 training messages, two copies of each spam with ham text around it, then
    # (--interleave) one more with ham sentences between its lines, then the further windows of the
    # long ham (the four of 144 words, past the 64-token window).
    assert manifest["recipe"]["augment"] is True and manifest["recipe"]["interleave"] is True
    train_labels = load_file(out / FEATURES_FILE)["train_labels"]
    real_spam = int(train_labels[:30].sum())
    copies, windows = train_labels[30 : 30 + 3 * real_spam], train_labels[30 + 3 * real_spam :]
    assert len(copies) == 3 * real_spam and copies.all()
    assert len(windows) > 0 and not windows.any()
    assert manifest["max_length"] == 64
    assert manifest["recipe"]["split_sizes"] == [30, 4, 10]  # all 44 kept (mail: no undersampling), 70/10/20
    assert "spam.mbox" in manifest["recipe"]["data"]
    assert manifest["training_data"] == {"kind": "mail", "messages": 44, "spam": 20}


@pytest.mark.parametrize(
    ("option", "spam_text"),
    [("--link-copies", SPAM_TEXT + " http://prize.example/{}"), ("--subject-copies", SPAM_TEXT + " {}")],
)
def test_training_copies_add_one_spam_copy_per_training_spam(
    tmp_path: Path, option: str, spam_text: str
) -> None:
    """--link-copies copies every training message that shows a link (only the spam here);
    --subject-copies every training spam. The copies follow the real messages, labelled spam, and
    the manifest records the option."""
    _write_mbox(tmp_path / "spam.mbox", [spam_text.format(i) for i in range(20)], "prize")
    _write_mbox(tmp_path / "ham.mbox", [f"{HAM_TEXT} note {i}" for i in range(20)], "lunch")
    (tmp_path / "config.json").write_text(
        json.dumps({"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 128})
    )
    out = tmp_path / "model"
    result = run([
        "train", "--model", str(tmp_path / "config.json"), "--weights", "random", "--epochs", "1",
        "--spam", str(tmp_path / "spam.mbox"), "--ham", str(tmp_path / "ham.mbox"), "--max-length", "64",
        "--out", str(out), "--device", "cpu", option,
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "spamfilter.json").read_text())
    assert manifest["recipe"][option[2:].replace("-", "_")] is True
    train_labels = load_file(out / FEATURES_FILE)["train_labels"]
    real = manifest["recipe"]["split_sizes"][0]
    copies = train_labels[real:]
    assert len(copies) == int(train_labels[:real].sum()) > 0 and copies.all()


def test_train_rejects_data_and_mailboxes_together(tmp_path: Path, sms_file: Path) -> None:
    box = tmp_path / "x.mbox"
    _write_mbox(box, ["hi"], "x")
    result = run(["train", "--data", str(sms_file), "--spam", str(box), "--ham", str(box)])
    assert result.exit_code == 2 and "either --data or --spam/--ham" in result.output


def test_single_message_with_from_line_and_exit_code_is_pipeline_mode(trained_model: Path) -> None:
    # procmail hands a message over with its mbox From_ line: --exit-code must still give the verdict.
    message = b"From a@example.org Mon Mar  4 09:12:45 2024\n" + make_email("prize", SPAM_TEXT)
    result = run(["filter", "--model", str(trained_model), "--exit-code"], message)
    assert result.exit_code == 1
    assert result.stdout_bytes.startswith(b"From a@example.org Mon Mar  4 09:12:45 2024\nX-Spam-Flag: YES\n")


def test_strict_failure_says_it_will_be_retried(tmp_path: Path) -> None:
    result = run(["filter", "--model", str(tmp_path / "missing"), "--strict"], make_email("hello", HAM_TEXT))
    assert result.exit_code == 75 and "retry" in result.stderr and "passed through" not in result.stderr


def test_empty_pipeline_input_invents_no_message(trained_model: Path) -> None:
    result = run(["filter", "--model", str(trained_model), "--format", "email"], b"")
    assert result.exit_code == 0 and result.stdout_bytes == b"" and "empty input" in result.stderr


def test_progress_flag_shows_a_live_count_on_stderr(trained_model: Path) -> None:
    result = run(["filter", str(EXAMPLES / "sample.mbox"), "--model", str(trained_model), "--progress"])
    assert result.exit_code == 0
    lines = [line for line in result.stderr.splitlines() if "trained on SMS" not in line]  # domain guard
    assert "10 messages" in lines[0]  # the progress line, before the summary
    assert split_messages(result.stdout_bytes) and "10 messages" not in result.stdout


def test_maildir_in_tagged_copies_out(trained_model: Path, tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "cur" / "1700000000.1.host:2,S").write_bytes(make_email("prize", SPAM_TEXT))
    (maildir / "new" / "1700000001.2.host").write_bytes(make_email("lunch", HAM_TEXT, newline="\r\n"))
    (maildir / "tmp" / "1700000002.3.host").write_bytes(b"delivery in progress")
    out = tmp_path / "tagged"
    result = run(["filter", str(maildir), "--model", str(trained_model), "-o", str(out)])
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["cur/1700000000.1.host:2,S", "new/1700000001.2.host"]
    for name in written:
        before, after = (maildir / name).read_bytes(), (out / name).read_bytes()
        assert remove_spam_headers(after) == before and after.count(b"X-Spam-Flag: ") == 1
    assert (out / written[0]).read_bytes().startswith(b"X-Spam-Flag: YES\n")
    assert (out / written[1]).read_bytes().startswith(b"X-Spam-Flag: NO\r\n")
    assert "2 messages" in result.stderr


def test_eml_folder_needs_an_output_folder_outside_it(trained_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mails"
    folder.mkdir()
    (folder / "a.eml").write_bytes(make_email("lunch", HAM_TEXT))
    assert run(["filter", str(folder), "--model", str(trained_model)]).exit_code == 2
    inside = run(["filter", str(folder), "--model", str(trained_model), "-o", str(folder / "out")])
    assert inside.exit_code == 2 and "outside the input folder" in inside.output
    result = run(["filter", str(folder), "--model", str(trained_model), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0 and (tmp_path / "out" / "a.eml").read_bytes().count(b"X-Spam-Status") == 1


def _maildir(root: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "cur" / "1700000000.1.host:2,S").write_bytes(make_email("prize", SPAM_TEXT))
    (root / "new" / "1700000001.2.host").write_bytes(make_email("lunch", HAM_TEXT))
    return root


def test_a_link_in_a_shared_maildir_is_not_followed_and_copies_are_private(
    trained_model: Path, tmp_path: Path
) -> None:
    """A local user who plants ``new/123.host -> /etc/shadow`` in a shared Maildir got the file
    copied, tagged, into the output, readable by everyone (copies were 0644). Links (to files or
    to cur/, new/) are skipped; copies are 0600 in 0700 folders, as a Maildir's own files are."""
    maildir = _maildir(tmp_path / "Maildir")
    (maildir / "cur" / ("1700000004." + "x" * 240)).write_bytes(make_email("long name", HAM_TEXT))
    secret = tmp_path / "secret"
    secret.write_bytes(make_email("root only", "the secret"))
    (maildir / "new" / "1700000002.3.host").symlink_to(secret)
    out = tmp_path / "tagged"
    result = run(["filter", str(maildir), "--model", str(trained_model), "-o", str(out)])
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["cur/1700000000.1.host:2,S", "cur/1700000004." + "x" * 240, "new/1700000001.2.host"]
    assert all((out / name).stat().st_mode & 0o777 == 0o600 for name in written)  # a 251-byte name too
    assert (out / "new").stat().st_mode & 0o777 == 0o700
    linked = tmp_path / "Linked"
    linked.mkdir()
    (linked / "cur").symlink_to(maildir / "cur")  # a Maildir whose folders are links elsewhere
    (linked / "new").mkdir()
    (linked / "new" / "1700000003.4.host").write_bytes(make_email("x", HAM_TEXT))
    result = run(["filter", str(linked), "--model", str(trained_model), "-o", str(tmp_path / "out2")])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "out2").rglob("*") if p.is_file()] == ["1700000003.4.host"]


def test_a_link_planted_in_the_output_folder_is_replaced_not_written_through(
    trained_model: Path, tmp_path: Path
) -> None:
    """With -o in a shared folder, a local user who created the output's new/ first, holding a
    link named like a message, had a root-owned file replaced by the tagged message. Each file is
    now made under a fresh name (O_EXCL, O_NOFOLLOW) and renamed over the link, and a folder on
    the way that is a link is refused."""
    from spamfilter.pipeline import filter_folder
    from spamfilter.runtime import Classifier
    from spamfilter.verdict import Decision

    maildir = _maildir(tmp_path / "Maildir")
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    out = tmp_path / "tagged"
    (out / "new").mkdir(parents=True)
    (out / "new" / "1700000001.2.host").symlink_to(victim)
    classifier = Classifier.load(trained_model)
    filter_folder(maildir, out, classifier, Decision().for_model(classifier.threshold))
    assert victim.read_text() == "root's file\n"
    landed = out / "new" / "1700000001.2.host"
    assert not landed.is_symlink() and remove_spam_headers(landed.read_bytes()) == make_email(
        "lunch", HAM_TEXT
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    second = tmp_path / "tagged2"
    second.mkdir()
    (second / "cur").symlink_to(elsewhere)  # the folder itself a link: nothing written through it
    with pytest.raises(OSError):
        filter_folder(maildir, second, classifier, Decision().for_model(classifier.threshold))
    assert list(elsewhere.iterdir()) == []


def test_a_message_that_vanishes_or_is_not_a_regular_file_is_skipped(
    trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mail client moving a message from new/ to cur/ while a cron run reads the folder stopped
    the whole run (18,000 of 20,000 written, 'cannot write the output'). Such a file is skipped
    and counted; the others are tagged."""
    from spamfilter import pipeline

    maildir = _maildir(tmp_path / "Maildir")
    listed = pipeline.folder_files(maildir)
    monkeypatch.setattr(pipeline, "folder_files", lambda source: [*listed, "new/1700000009.gone.host"])
    out = tmp_path / "tagged"
    result = run(["filter", str(maildir), "--model", str(trained_model), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
        "1700000000.1.host:2,S",
        "1700000001.2.host",
    ]
    assert "1 non-message chunks passed through" in result.stderr


def test_a_fifo_as_input_is_read_without_waiting_for_a_writer(trained_model: Path, tmp_path: Path) -> None:
    """Opening a FIFO waits for a writer: ``filter box.fifo`` hung for ever, deaf to SIGTERM. It
    is now opened without waiting: with no writer it is an empty input at once; a process
    substitution (``<(zcat box.gz)``), a pipe with its writer, is read as before."""
    import os

    fifo = tmp_path / "box.fifo"
    os.mkfifo(fifo)
    command = [sys.executable, "-m", "spamfilter", "filter", "-m", str(trained_model), "-q"]
    alone = subprocess.run([*command, str(fifo)], capture_output=True, timeout=60)
    assert alone.returncode == 0 and alone.stdout == b"", alone.stderr
    box = b"From a@example.org Mon Mar  4 09:12:45 2024\n" + make_email("x", HAM_TEXT)
    piped = subprocess.run(
        ["bash", "-c", '"$@" <(printf %s "$BOX")', "bash", *command, "--format", "mbox"],
        env={**os.environ, "BOX": box.decode()},
        capture_output=True,
        timeout=120,
    )
    assert piped.returncode == 0, piped.stderr
    assert remove_spam_headers(piped.stdout) == box and piped.stdout.count(b"X-Spam-Flag:") == 1


def test_the_spam_output_cannot_be_the_output(trained_model: Path, tmp_path: Path) -> None:
    """Both writers on one file overwrote each other: 15 messages came out of 16."""
    box = tmp_path / "in.mbox"
    box.write_bytes(b"From a@example.org Mon Mar  4 09:12:45 2024\n" + make_email("x", HAM_TEXT))
    same = str(tmp_path / "out.mbox")
    result = run(["filter", str(box), "-m", str(trained_model), "-o", same, "--spam-output", same])
    assert result.exit_code == 2 and "is the --output file" in result.output


def test_an_mbox_message_over_the_cap_is_one_line_after_the_ones_before(
    trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sparse 8 GiB mbox (4 KiB on disk) or /dev/zero read as one message until a MemoryError
    traceback. A message over MAX_MBOX_MESSAGE_BYTES (one line of it is not read further either)
    stops the run with one line, exit 1, the messages before it written."""
    from spamfilter import formats

    monkeypatch.setattr(formats, "MAX_MBOX_MESSAGE_BYTES", 1 << 20)
    first = b"From a@example.org Mon Mar  4 09:12:45 2024\n" + make_email("x", HAM_TEXT) + b"\n"
    huge = b"From b@example.org Mon Mar  4 09:12:45 2024\nSubject: y\n\n" + b"z" * (3 << 20)
    box = tmp_path / "in.mbox"
    box.write_bytes(first + huge)
    out = tmp_path / "out.mbox"
    result = run(["filter", str(box), "-m", str(trained_model), "-o", str(out), "-q"])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and "mbox message 2 is larger than 1048576 bytes" in result.stderr
    assert remove_spam_headers(out.read_bytes()) == first


def test_a_model_answering_nan_passes_the_mail_untagged_in_one_line(
    trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A head with NaN weights (a valid sha256 over damaged numbers) ended each run in a
    traceback from the verdict's rounding; now the chunk goes out untagged, as for any model
    error, with one line."""
    import numpy as np

    from spamfilter.runtime import Classifier

    monkeypatch.setattr(
        Classifier, "spam_probability", lambda self, texts, heads=None: np.full(len(texts), np.nan)
    )
    box = tmp_path / "in.mbox"
    box.write_bytes(b"From a@example.org Mon Mar  4 09:12:45 2024\n" + make_email("x", HAM_TEXT))
    result = run(["filter", str(box), "-m", str(trained_model), "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "not a number" in result.stderr and result.stdout_bytes == box.read_bytes()


def test_a_second_run_into_the_same_output_folder_replaces_its_copies(
    trained_model: Path, tmp_path: Path
) -> None:
    """A nightly cron job failed from its second run on: an existing -o DIR was refused ('File ...
    is a directory'). A folder's copies now replace those of the run before; a folder as the
    output of a stream INPUT is still refused, in words that say why."""
    maildir = _maildir(tmp_path / "Maildir")
    out = tmp_path / "tagged"
    for _ in range(2):
        result = run(["filter", str(maildir), "--model", str(trained_model), "-o", str(out), "-q"])
        assert result.exit_code == 0, result.output
    copy = out / "new" / "1700000001.2.host"
    assert remove_spam_headers(copy.read_bytes()) == make_email("lunch", HAM_TEXT)
    assert copy.read_bytes().count(b"X-Spam-Flag:") == 1
    box = tmp_path / "in.mbox"
    box.write_bytes(b"From a@example.org Mon Mar  4 09:12:45 2024\n" + make_email("x", HAM_TEXT))
    refused = run(["filter", str(box), "--model", str(trained_model), "-o", str(out)])
    assert (
        refused.exit_code == 2 and "is a folder: a folder is the output of a folder INPUT" in refused.output
    )
