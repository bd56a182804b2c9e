"""Input format detection: every input gets a format or a one-line usage error, never a traceback;
a CSV is recognised by its shape, and a missing text column is a usage error whatever --format says."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from spamfilter.cli import cli
from spamfilter.mail import detect_format


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"From a@b Mon Jan  1 00:00:00 2024\nSubject: x\n\nhi\n", "mbox"),
        (b"Subject: hi\nFrom: a@b\n\nbody\n", "email"),
        (b"Text,other\nhello,1\n", "csv"),
        (b"Text\rhello\rworld\r", "csv"),  # CR-only line ends
        (b"label,body\rspam,win now\rham,see you\r", "csv"),
        (b"id;text\n", "text"),  # not comma-separated: read line by line
        (b"label,body\nspam,win now\nham,see you\n", "csv"),
        (b'label,body\nspam,"a quoted\nmultiline, body"\n', "csv"),
        (b"Hello, how are you\nI'm fine, thanks\n", "text"),  # prose with commas is not a CSV
        (b"just one message per line\nanother one\n", "text"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\r\x00\x00", "binary"),
        (b"\r\r\r", "text"),
        (b"", "text"),
        (b'"unterminated, quote\r', "text"),
        (b"\xff\xfe\x00\x00garbage", "binary"),
    ],
)
def test_detect_format_never_raises(head: bytes, expected: str) -> None:
    assert detect_format(head) == expected


def test_binary_input_is_a_one_line_usage_error(trained_model: Path) -> None:
    result = CliRunner().invoke(cli, ["filter", "--model", str(trained_model), "/bin/ls"])
    assert result.exit_code == 2, result.output
    assert "binary" in result.output and "--format text" in result.output
    assert "Traceback" not in result.output and result.stdout == ""


def test_cr_only_csv_is_read(trained_model: Path) -> None:
    data = "Text,id\rWIN a prize now,1\rlunch tomorrow?,2\r"
    result = CliRunner().invoke(cli, ["filter", "--model", str(trained_model), "-"], input=data)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["id"] for r in rows] == ["1", "2"]
    assert all(r["label"] in ("spam", "not spam") for r in rows)


@pytest.mark.parametrize("fmt", ["auto", "csv"])
def test_csv_without_its_text_column_is_a_usage_error(trained_model: Path, fmt: str) -> None:
    data = "label,body\nspam,WIN a prize now\nham,lunch tomorrow?\n"
    result = CliRunner().invoke(cli, ["filter", "--model", str(trained_model), "--format", fmt], input=data)
    assert result.exit_code == 2, result.output
    assert "no column 'Text'" in result.output and "label, body" in result.output
    assert "--text-column" in result.output and result.stdout == ""


def test_named_text_column_missing_from_a_one_column_csv(trained_model: Path) -> None:
    # One column has no shape to recognise, but --text-column says the input is a CSV.
    result = CliRunner().invoke(
        cli, ["filter", "--model", str(trained_model), "--text-column", "foo"], input="body\nhello\n"
    )
    assert result.exit_code == 2, result.output
    assert "no column 'foo'" in result.output and "body" in result.output


def test_text_column_option_finds_the_column(trained_model: Path) -> None:
    data = "label,body\nspam,WIN a prize now\nham,lunch tomorrow?\n"
    result = CliRunner().invoke(
        cli, ["filter", "--model", str(trained_model), "--text-column", "body"], input=data
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["body"] for r in rows] == ["WIN a prize now", "lunch tomorrow?"]
    assert all(r["spam_probability"] for r in rows)
