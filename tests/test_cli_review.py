"""Bad options and inputs found by review: each one line and its exit code (README's table) before
anything is read or written, never a traceback, and never a message that was read lost."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from spamfilter.cli import cli


def _usage_error(result: Result) -> str:
    """The one ``Error:`` line of a usage error (exit 2) that has no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


# --- 1. NaN and infinity where a number is taken ------------------------------------------------

NOT_FINITE = ["nan", "NaN", "inf", "-inf"]


@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize(
    "args",
    [
        ["filter", "--threshold", "{}", "-"],
        ["classify", "--threshold", "{}", "text"],
        ["eval", "--threshold", "{}", "data.csv"],
        ["eval", "--target-fpr", "{}", "data.csv"],
        ["filter", "--engine", "ray", "--gpus-per-worker", "{}", "x"],
        ["serve", "--threshold", "{}"],
        ["serve", "--timeout", "{}"],
        ["serve", "--batch-wait-ms", "{}"],
        ["serve", "--log-interval", "{}"],
        ["train", "--lr", "{}"],
        ["train", "--weight-decay", "{}"],
        ["train", "--target-fpr", "{}"],
        ["train", "--window-discount", "{}"],
        ["train", "--weight-average", "{}"],
        ["adapt", "--mail", ".", "--out", "{out}", "--lr", "{}"],
    ],
)
def test_a_number_that_is_not_finite_is_a_usage_error(tmp_path: Path, args: list[str], value: str) -> None:
    out = tmp_path / "out"
    (tmp_path / "data.csv").write_text("label,text\nspam,win\n")
    argv = [a.format(value, out=out) if "{" in a else a for a in args]
    result = CliRunner().invoke(cli, argv, input="Subject: hi\n\nhello\n", catch_exceptions=True)
    line = _usage_error(result)
    assert value in line and "finite" in line or "range" in line, line
    assert not out.exists()  # adapt: nothing written


def test_filter_with_a_nan_threshold_loses_no_message(tmp_path: Path) -> None:
    """The review's case: a NaN threshold crashed in the verdict after the input was read; now it
    is refused before anything is read (the library refuses it too, for the Python API)."""
    from spamfilter.errors import UsageError
    from spamfilter.verdict import Decision

    with pytest.raises(UsageError, match="not a probability"):
        Decision(threshold=float("nan"))
    with pytest.raises(UsageError, match="not a probability"):
        Decision(0.5, 1.5)


# --- 2. training options that cannot work -------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--seed", "-1"],
        ["train", "--seed", "99999999999"],
        ["train", "--seed", str(2**32 - 1), "--members", "2"],
        ["adapt", "--mail", ".", "--out", "{out}", "--seed", "-1"],
        ["adapt", "--mail", ".", "--out", "{out}", "--seed", "99999999999"],
    ],
)
def test_a_seed_out_of_range_is_a_usage_error_before_anything_is_written(
    tmp_path: Path, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = [a.format(out=out) for a in args]
    if argv[0] == "train":
        argv += ["--out", str(out), "--data", str(tmp_path / "missing.csv")]
        (tmp_path / "missing.csv").write_text("label,text\n")
    line = _usage_error(CliRunner().invoke(cli, argv))
    assert "--seed" in line, line
    assert not out.exists()


# --- 3. CSV: the input's own columns are never overwritten, and every row keeps its fields ----------


class _Half:
    """A stand-in model: P(spam) 0.75 for every text (no model needed to read and write a CSV)."""

    provider, variant, threshold = "test", "fp32", 0.5

    def spam_probability(self, texts: list[str]) -> np.ndarray:
        return np.full(len(texts), 0.75)


def _filter_csv(data: str) -> tuple[list[list[str]], object]:
    from spamfilter import pipeline
    from spamfilter.verdict import Decision

    out = io.StringIO(newline="")
    try:
        pipeline.filter_csv(io.StringIO(data, newline=""), out, _Half(), Decision(0.5))
    except Exception as error:  # noqa: BLE001 - the test looks at what was written before it
        return list(csv.reader(io.StringIO(out.getvalue(), newline=""))), error
    return list(csv.reader(io.StringIO(out.getvalue(), newline=""))), None


@pytest.mark.parametrize("truth", ["label", "Label", "LABEL", "spam_probability", "Spam_Probability"])
def test_a_csv_column_named_as_an_output_is_kept_and_the_outputs_named_apart(truth: str) -> None:
    rows, error = _filter_csv(f"{truth},Text\r\nham,hello\r\nspam,win\r\n")
    assert error is None
    assert rows[0] == [truth, "Text", "spamfilter_label", "spamfilter_spam_probability"]
    assert [row[:2] for row in rows[1:]] == [["ham", "hello"], ["spam", "win"]]  # the truth as it was
    assert [row[2:] for row in rows[1:]] == [["spam", "0.750000"]] * 2


def test_a_csv_without_those_columns_gets_label_and_spam_probability() -> None:
    rows, error = _filter_csv("id,Text\r\n1,hello\r\n")
    assert error is None and rows == [
        ["id", "Text", "label", "spam_probability"],
        ["1", "hello", "spam", "0.750000"],
    ]


def test_a_csv_that_has_the_renamed_columns_too_is_a_usage_error() -> None:
    from spamfilter.errors import UsageError

    rows, error = _filter_csv("label,Text,SpamFilter_Label\r\nham,hello,x\r\n")
    assert isinstance(error, UsageError) and "'SpamFilter_Label'" in str(error)
    assert rows == []


@pytest.mark.parametrize("bad", ["3,x,extra", "3"])
def test_a_csv_row_of_another_width_stops_the_run_after_the_rows_before_it(bad: str) -> None:
    from spamfilter.errors import DataError

    rows, error = _filter_csv(f"id,Text\n1,hello\n2,world\n{bad}\n4,never read\n")
    assert isinstance(error, DataError)
    assert f"line 4 has {bad.count(',') + 1} fields, the header 2" in str(error)
    assert rows == [  # every row read before it is written, labelled
        ["id", "Text", "label", "spam_probability"],
        ["1", "hello", "spam", "0.750000"],
        ["2", "world", "spam", "0.750000"],
    ]


def test_a_short_csv_row_that_holds_its_text_is_kept_with_empty_fields() -> None:
    rows, error = _filter_csv("Text,id\nhello,1\nworld\n")
    assert error is None
    assert rows[2] == ["world", "", "spam", "0.750000"]


@pytest.mark.parametrize("bad", ["spam,x,extra", "spam"])
def test_eval_refuses_a_row_of_another_width_as_filter_does(tmp_path: Path, bad: str) -> None:
    data = tmp_path / "data.csv"
    data.write_text(f"label,text\nham,hello\n{bad}\n")
    result = CliRunner().invoke(cli, ["eval", str(data), "--model", str(tmp_path / "no-model")])
    assert result.exit_code == 1, result.output
    assert f"line 3 has {bad.count(',') + 1} fields, the header 2" in result.output
    assert "Traceback" not in result.output


# --- 4. and 7. stdout that cannot be written, a closed stdin, Ctrl-C, a missing column --------------


def _run(
    args: list[str], stdout: Any = subprocess.PIPE, stdin: Any = subprocess.DEVNULL
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spamfilter", *args],
        stdout=stdout,
        stdin=stdin,
        stderr=subprocess.PIPE,
        timeout=300,
    )


def _labelled(tmp_path: Path) -> Path:
    data = tmp_path / "data.csv"
    data.write_text("label,text\nspam,WIN a FREE prize now\nham,lunch tomorrow?\n")
    return data


@pytest.mark.parametrize("command", ["classify", "eval"])
def test_a_full_disk_on_stdout_is_one_line_and_exit_1(
    trained_model: Path, tmp_path: Path, command: str
) -> None:
    target = ["hello there"] if command == "classify" else [str(_labelled(tmp_path))]
    with open("/dev/full", "wb") as full:
        result = _run([command, "--model", str(trained_model), *target], stdout=full)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.decode().splitlines()
    assert lines == ["Error: cannot write the output: No space left on device"], lines


@pytest.mark.parametrize("command", ["classify", "eval"])
def test_a_closed_stdout_stops_quietly_with_141(trained_model: Path, tmp_path: Path, command: str) -> None:
    target = ["hello there"] if command == "classify" else [str(_labelled(tmp_path))]
    read, write = os.pipe()
    os.close(read)
    try:
        result = _run([command, "--model", str(trained_model), *target], stdout=write)
    finally:
        os.close(write)
    assert result.returncode == 141, result.stderr
    assert b"Traceback" not in result.stderr and b"Error" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    "options", [["--format", "email"], ["--format", "email", "--strict"], [], ["--exit-code"]]
)
def test_filter_with_stdin_closed_is_one_line(tmp_path: Path, options: list[str]) -> None:
    """Started with stdin closed (``<&-``): Python has no sys.stdin, and filter's read of it was an
    AttributeError traceback. --strict keeps its promise of 75, --exit-code's failure is 0 (1 is spam)."""
    argv = [sys.executable, "-m", "spamfilter", "filter", "--model", str(tmp_path / "none"), *options]
    closing = f"import os, sys; os.close(0); os.execv(sys.executable, {argv!r})"
    result = subprocess.run(
        [sys.executable, "-c", closing], capture_output=True, timeout=60, stdin=subprocess.DEVNULL
    )
    expected = 75 if "--strict" in options else 0 if "--exit-code" in options else 1
    assert result.returncode == expected, result.stderr
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and "stdin is closed" in lines[0], lines


@pytest.mark.parametrize("command", ["eval", "learn"])
def test_ctrl_c_in_eval_and_learn_exits_130_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    import spamfilter.cli.learn
    import spamfilter.labelled

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(spamfilter.labelled, "read_labelled_texts", interrupted)
    monkeypatch.setattr(spamfilter.cli.learn, "_learn", interrupted)
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: hi\n\nhello\n")
    args = ["eval", str(_labelled(tmp_path))] if command == "eval" else ["learn", "--spam", str(message)]
    result = CliRunner().invoke(cli, [*args, "--model", str(tmp_path / "none")])
    assert result.exit_code == 130, result.output
    assert "Aborted" not in result.output and "interrupted" in result.output


@pytest.mark.parametrize("command", ["eval", "train"])
def test_a_csv_without_its_label_or_text_column_is_a_usage_error(tmp_path: Path, command: str) -> None:
    data = tmp_path / "data.csv"
    data.write_text("kind,words\nspam,win\nham,hi\n")
    shape = tmp_path / "tiny.json"
    shape.write_text('{"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 128, "vocab_size": 50257}')
    train = ["train", "--data", str(data), "--out", str(tmp_path / "out"), "--device", "cpu"]
    train += ["--weights", "random", "--model", str(shape)]
    args = ["eval", str(data), "--model", str(tmp_path / "none")] if command == "eval" else train
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "needs a label column and a text column" in result.output


# --- 4. and 5. eval's files checked before it runs ----------------------------------------------------


@pytest.mark.parametrize(
    ("option", "path", "says"),
    [
        ("--report", "model", "is a model directory"),
        ("--report", "nowhere/x.md", "there is no folder"),
        ("--report", "nowhere/deeper", "there is no folder"),
        ("--report", "a-file", "is not a folder"),
        ("--report", "folder.md", "not a regular file"),
        ("--report", "/dev/full", "is not a folder"),
    ],
)
def test_eval_checks_its_report_path_before_it_evaluates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str, path: str, says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "spamfilter.json").write_text("{}")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "folder.md").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    # no model is needed: the check comes first
    line = _usage_error(CliRunner().invoke(cli, ["eval", str(_labelled(tmp_path)), option, path]))
    assert says in line, line
    assert not (tmp_path / "nowhere").exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted({*before, "data.csv"})


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--plot", "curve.txt"], "a PNG"),
        (["--plot", "nowhere/curve.png"], "there is no folder"),
        (["--plot", "folder.png"], "is a directory"),
        (["--plot", "/dev/full"], "a PNG"),
        (["--report", "out"], "--report goes without --online"),
    ],
)
def test_eval_online_checks_its_plot_before_the_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.png").mkdir()
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: hi\n\nhello\n")
    argv = ["eval", "--online", "--spam", str(message), "--ham", str(message), *args]
    line = _usage_error(CliRunner().invoke(cli, argv))
    assert says in line, line


@pytest.mark.parametrize(
    "option", [["--plot", "c.png"], ["--interval", "5"], ["--block", "5"], ["--feedback", "errors"]]
)
def test_eval_options_of_the_replay_need_online(tmp_path: Path, option: list[str]) -> None:
    line = _usage_error(CliRunner().invoke(cli, ["eval", str(_labelled(tmp_path)), *option]))
    assert "goes with --online" in line


def test_the_learning_curve_is_written_whole_and_a_failed_write_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """savefig to a path let a full disk pass ('wrote /dev/full', exit 0): the plot is drawn in
    memory and written with replace_file, whose failure is an OSError the command says."""
    pytest.importorskip("matplotlib")
    import errno

    import spamfilter.replacefile
    from spamfilter.replay import Block, plot_learning_curve

    blocks = [Block(0, 10, 5, 5, 1, 0, 0.5, 0.5), Block(10, 10, 5, 5, 0, 0, 0.1, 0.3)]
    target = tmp_path / "c.png"
    plot_learning_curve({"spamfilter": blocks}, target)
    assert target.read_bytes().startswith(b"\x89PNG")

    def full(path: Path, data: bytes, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spamfilter.replacefile, "replace_file", full)
    with pytest.raises(OSError, match="No space left"):
        plot_learning_curve({"spamfilter": blocks}, tmp_path / "d.png")


# --- 6. pipeline mode's options go with one message on stdin ----------------------------------------


@pytest.mark.parametrize("option", ["--strict", "--exit-code"])
@pytest.mark.parametrize(
    "where", [["inbox.mbox"], ["table.csv"], ["Maildir"], ["-", "--format", "csv"], ["--format", "mbox"]]
)
def test_pipeline_options_with_a_named_input_or_another_format_are_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str, where: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("inbox.mbox").write_bytes(b"From a@b Thu Jan  1 00:00:00 2024\nSubject: one\n\nhi\n" * 3)
    Path("table.csv").write_text("Text\nhello\n")
    for sub in ("cur", "new", "tmp"):
        Path("Maildir", sub).mkdir(parents=True)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = CliRunner().invoke(cli, ["filter", option, "--model", "none", *where], input="Text\nhello\n")
    line = _usage_error(result)
    assert option in line and "one message on stdin" in line, line
    assert result.stdout == ""
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


# --- 8. a Maildir folder that cannot be read ---------------------------------------------------------


def _maildir_with_unreadable_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Maildir whose new/ cannot be listed (chmod 000 does not stop root, so listing it fails
    here as it fails for a user)."""
    import errno

    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "cur" / "1.M1P1.host:2,S").write_bytes(b"Subject: one\n\nhello there\n")
    (maildir / "new" / "2.M2P2.host").write_bytes(b"Subject: two\n\nWIN a prize\n")
    listing = Path.iterdir

    def iterdir(self: Path) -> Any:
        if self == maildir / "new":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    return maildir


def test_a_maildir_folder_that_cannot_be_read_is_skipped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collections import Counter

    from spamfilter.mail import describe_skipped, iter_mail_source

    maildir = _maildir_with_unreadable_new(tmp_path, monkeypatch)
    skipped: Counter[str] = Counter()
    assert list(iter_mail_source(maildir, skipped)) == [b"Subject: one\n\nhello there\n"]
    assert "cannot be read" in describe_skipped(skipped)


def test_filter_of_a_maildir_folder_that_cannot_be_read_says_so_as_a_read_error(
    trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said 'cannot write the output: Permission denied' (exit 1): a read error reported as the
    output's."""
    maildir = _maildir_with_unreadable_new(tmp_path, monkeypatch)
    out = tmp_path / "out"
    argv = ["filter", str(maildir), "-o", str(out), "--model", str(trained_model)]
    line = _usage_error(CliRunner().invoke(cli, argv))
    assert f"cannot read {maildir / 'new'}: Permission denied" in line and "write" not in line, line
    assert not out.exists()


# --- 9. train without --out does not replace a trained model -------------------------------------------


@pytest.mark.parametrize("where", ["SPAMFILTER_MODEL", "XDG_DATA_HOME"])
def test_train_without_out_refuses_to_replace_a_trained_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "SPAMFILTER_MODEL":
        model = tmp_path / "pinned"
        monkeypatch.setenv("SPAMFILTER_MODEL", str(model))
    else:
        monkeypatch.delenv("SPAMFILTER_MODEL", raising=False)
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
        model = tmp_path / "data" / "spamfilter" / "model"
    model.mkdir(parents=True)
    (model / "spamfilter.json").write_text('{"threshold": 0.5}')
    data = tmp_path / "few.tsv"
    data.write_text("spam\tWIN a prize\nham\tlunch?\n")
    shape = tmp_path / "tiny.json"
    shape.write_text('{"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 128, "vocab_size": 50257}')
    argv = ["train", "--data", str(data), "--weights", "random", "--model", str(shape), "--device", "cpu"]
    line = _usage_error(CliRunner().invoke(cli, argv))
    assert f"a trained model is already at {model}" in line and "--force" in line, line
    assert sorted(p.name for p in model.iterdir()) == ["spamfilter.json"]
    # --force asks for it: the run goes on (here to the next check, too few messages)
    line = _usage_error(CliRunner().invoke(cli, [*argv, "--force"]))
    assert "already" not in line, line
    # and --out elsewhere is not refused either
    line = _usage_error(CliRunner().invoke(cli, [*argv, "--out", str(tmp_path / "other")]))
    assert "already" not in line, line
    assert (model / "spamfilter.json").read_text() == '{"threshold": 0.5}'
