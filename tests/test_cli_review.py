"""Bad options and inputs found by review: each one line and its exit code (README's table) before
anything is read or written, never a traceback, and never a message that was read lost."""

from __future__ import annotations

import csv
import io
from pathlib import Path

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


@pytest.mark.parametrize("bad", ["spam,x,extra", "spam"])
def test_eval_refuses_a_row_of_another_width_as_filter_does(tmp_path: Path, bad: str) -> None:
    data = tmp_path / "data.csv"
    data.write_text(f"label,text\nham,hello\n{bad}\n")
    result = CliRunner().invoke(cli, ["eval", str(data), "--model", str(tmp_path / "no-model")])
    assert result.exit_code == 1, result.output
    assert f"line 3 has {bad.count(',') + 1} fields, the header 2" in result.output
    assert "Traceback" not in result.output
