"""Property-based tests of the filter paths on arbitrary input, with the real (small) model:
every message read comes out, and in mail formats the output is the input plus the two headers."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import split_messages
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spamfilter import pipeline
from spamfilter.cli import cli
from spamfilter.mail import remove_spam_headers
from spamfilter.runtime import Classifier
from spamfilter.verdict import Decision

# After the From_ line, and after any further "From " lines that are not a From: field (a message
# saved with its own envelope line into another mbox: headers.header_start).
INSERTED = re.compile(
    rb"^((?:From (?![ \t]*:)[^\n]*\n)+)X-Spam-Flag: [^\r\n]*\r?\nX-Spam-Status: [^\r\n]*\r?\n"
    rb"X-Spam-Level: [^\r\n]*\r?\n"
)


def without_inserted_headers(message: bytes) -> bytes:
    """The message minus the three header lines the filter puts right after the From_ lines."""
    return INSERTED.sub(rb"\1", message, count=1)


# SPAMFILTER_FUZZ_EXAMPLES raises the count for a long run (benchmarks/fuzz_long.sh); CI uses the default.
EXAMPLES_PER_TEST = int(os.environ.get("SPAMFILTER_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES_PER_TEST, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
message_bytes = st.binary(max_size=2000) | st.text(max_size=1000).map(lambda t: t.encode("utf-8", "replace"))


@pytest.fixture(scope="module")
def classifier(trained_model: Path) -> Classifier:
    return Classifier.load(trained_model)


@FUZZ
@given(st.lists(message_bytes, max_size=8), st.sampled_from([b"\n", b"\r\n"]))
def test_any_mbox_comes_out_whole(classifier: Classifier, bodies: list[bytes], newline: bytes) -> None:
    data = b"".join(
        b"From x@example.org Mon Mar  4 09:12:45 2024" + newline + body + newline for body in bodies
    )
    out = io.BytesIO()
    summary = pipeline.filter_mbox(io.BytesIO(data), out, classifier, Decision(0.5))
    written = split_messages(out.getvalue())
    original = split_messages(data)
    assert len(written) == len(original) == summary.messages
    for before, after in zip(original, written, strict=True):
        if b"X-SPAM-" in before.upper():  # the sender's own spam headers are replaced, as SpamAssassin does
            assert remove_spam_headers(after) == remove_spam_headers(before)
        else:
            assert without_inserted_headers(after) == before


@FUZZ
@given(st.lists(st.lists(st.text(max_size=200), min_size=2, max_size=2), max_size=12))
def test_any_csv_keeps_every_row_and_cell(classifier: Classifier, rows: list[list[str]]) -> None:
    # newline="": the CLI reads and writes CSV through such streams, so quoted \r and \n survive.
    source = io.StringIO(newline="")
    writer = csv.writer(source)
    writer.writerow(["id", "Text"])
    writer.writerows(rows)
    out = io.StringIO(newline="")
    summary = pipeline.filter_csv(io.StringIO(source.getvalue(), newline=""), out, classifier, Decision(0.5))
    written = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    expected = list(csv.reader(io.StringIO(source.getvalue(), newline="")))
    assert summary.messages == len(expected) - 1
    assert [row[:2] for row in written] == expected
    assert all(row[2] in ("spam", "not spam") and 0 <= float(row[3]) <= 1 for row in written[1:])


@settings(
    max_examples=max(25, EXAMPLES_PER_TEST // 10),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(message_bytes.filter(lambda b: b.strip()))
def test_pipeline_mode_on_any_bytes(trained_model: Path, raw: bytes) -> None:
    result = CliRunner().invoke(
        cli, ["filter", "--model", str(trained_model), "--format", "email"], input=raw
    )
    assert result.exit_code == 0
    assert remove_spam_headers(result.stdout_bytes) == remove_spam_headers(raw)
    assert b"X-Spam-Flag: " in result.stdout_bytes
