"""Bad options and inputs found by review: each one line and its exit code (README's table) before
anything is read or written, never a traceback, and never a message that was read lost."""

from __future__ import annotations

from pathlib import Path

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
