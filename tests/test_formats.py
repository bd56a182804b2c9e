"""Input formats: every input gets a format or a one-line usage error, never a traceback; a CSV is
recognised by its shape, and a missing text column is a usage error whatever --format says; the
local filter and the Ray engine's chunks read the same items and write the same bytes."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA, StandIn

from spamfilter import formats, pipeline
from spamfilter.cli import cli
from spamfilter.engines import chunks
from spamfilter.mail import detect_format, split_mbox
from spamfilter.pipeline import CHUNK
from spamfilter.runtime import Classifier
from spamfilter.verdict import Decision


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
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")


def test_bad_input_is_one_line_with_its_bytes_escaped(trained_model: Path) -> None:
    """A CSV without its text column was answered with click's usage lines, a blank line and the
    error, four lines; a NUL of the header went to the terminal as it was."""
    data = "id,bo\0dy\n1,hello\n"
    result = CliRunner().invoke(cli, ["filter", "--model", str(trained_model), "--format", "csv"], input=data)
    assert result.exit_code == 2, result.output
    assert result.stderr == "Error: no column 'Text' in the CSV header (id, bo\\x00dy); use --text-column\n"


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
    assert [r["label"] for r in rows] == ["spam", "ham"]  # the input's own labels, kept
    assert all(r["spamfilter_spam_probability"] for r in rows)


# --------------------------------------------------------------------------- both engines read alike


class Recording(StandIn):
    """The real classifier, with each call's texts and answers kept: the chunks the local engine
    read, as the model saw them."""

    def __init__(self, real: Classifier) -> None:
        super().__init__(real)
        self.calls: list[tuple[list[str], list[float]]] = []

    def spam_probability(self, texts: Sequence[str]) -> np.ndarray:
        probabilities = self.real.spam_probability(texts)
        self.calls.append((list(texts), [float(p) for p in probabilities]))
        return probabilities


def _corpus_messages(count: int) -> list[bytes]:
    with (SHARED_DATA / "spamassassin" / "spam.mbox").open("rb") as stream:
        spam = [raw for raw in split_mbox(stream) if raw.startswith(b"From ")][: count // 2]
    with (SHARED_DATA / "spamassassin" / "easy_ham.mbox").open("rb") as stream:
        ham = [raw for raw in split_mbox(stream) if raw.startswith(b"From ")][: count - len(spam)]
    odd = [
        b"From a@b Thu Jan  1 00:00:00 2024\r\nSubject: crlf\r\n\r\nWIN MONEY NOW\r\n",
        b"From a@b Thu Jan  1 00:00:00 2024\n\n",  # no header, no body
        b"From a@b Thu Jan  1 00:00:00 2024\nSubject: =?utf-8?B?SGk=?=\n\nnot utf-8 \xff\xfe\n",
    ]
    return [message for pair in zip(spam, ham, strict=False) for message in pair] + odd


def _inputs(root: Path) -> dict[str, Path]:
    """One input of each kind the Ray engine reads, the mbox and the CSV over one chunk."""
    messages = _corpus_messages(CHUNK + 40)
    mbox = root / "in.mbox"
    mbox.write_bytes(b"not a message\n\n" + b"".join(messages))
    folder = root / "Maildir"
    for name in ("cur", "new", "tmp"):
        (folder / name).mkdir(parents=True)
    for i, raw in enumerate(messages[:30]):
        (folder / ("cur" if i % 3 else "new") / f"{i}.M{i}P1.host:2,S").write_bytes(raw.split(b"\n", 1)[1])
    table = root / "in.csv"
    with table.open("w", encoding="utf-8", errors="surrogateescape", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "Text", "label"])
        for i, raw in enumerate(messages):
            writer.writerow([i, raw.split(b"\n\n", 1)[-1][:2000].decode("utf-8", "surrogateescape"), "x"])
        # a short row that holds its text (a cell over lines), an empty line
        stream.write('998,"a quoted, multi\nline\rcell"\n\n')
    email = root / "one.eml"
    email.write_bytes(messages[1].split(b"\n", 1)[1])
    return {"mbox": mbox, "csv": table, "folder": folder, "email": email}


def _local(kind: str, source: Path, target: Path, scorer: Recording, decision: Decision) -> None:
    if kind == "folder":
        pipeline.filter_folder(source, target, scorer, decision)
    elif kind == "email":
        target.write_bytes(pipeline.tag_message(source.read_bytes(), lambda: scorer, decision).message)
    else:
        with source.open("rb") as stream, target.open("wb") as sink:
            pipeline.filter_stream(kind, stream, sink, scorer, decision)


def _ray_chunks(
    kind: str, source: Path, target: Path, answers: list[list[float]], decision: Decision
) -> list[list[str]]:
    """The Ray engine's stages without Ray: plan, read, then write each chunk with the local
    engine's answers; the texts each chunk gave the model."""
    item = chunks.Input(str(source), source.name, kind)
    planned = [chunks.read(chunk, item, chars_kept=1 << 40) for chunk in chunks.plan(0, item, "Text")]
    assert [chunk.error for chunk in planned] == [None] * len(planned)
    for chunk, probabilities in zip(planned, answers, strict=True):
        chunk.probabilities = probabilities
        written = target if kind == "folder" else target.with_name(f"{target.name}.{chunk.number}")
        chunks.write(chunk, item, decision, written)
    if kind != "folder":
        target.write_bytes(
            b"".join(target.with_name(f"{target.name}.{c.number}").read_bytes() for c in planned)
        )
    return [chunk.texts for chunk in planned]


def _files(root: Path) -> list[Path]:
    return sorted(path.relative_to(root) for path in root.rglob("*") if path.is_file())


@pytest.mark.parametrize("kind", ["mbox", "csv", "folder", "email"])
def test_both_engines_read_the_same_items_and_write_the_same_bytes(
    trained_model: Path, tmp_path: Path, kind: str
) -> None:
    """Each format is read and written once (``formats``): the Ray engine's chunks give the model
    the local filter's texts, chunk by chunk, and write its bytes. A reader or writer that drifts
    in one engine fails here."""
    source = _inputs(tmp_path)[kind]
    scorer = Recording(Classifier.load(trained_model))
    decision = Decision(0.5).for_model(scorer.threshold)
    _local(kind, source, tmp_path / "local", scorer, decision)
    answers = [probabilities for _, probabilities in scorer.calls]
    ray_texts = _ray_chunks(kind, source, tmp_path / "ray", answers, decision)

    assert ray_texts == [texts for texts, _ in scorer.calls]
    assert len(scorer.calls) == (2 if kind in ("mbox", "csv") else 1), "the inputs span the chunks meant"
    if kind == "folder":
        files = sorted(
            p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*") if p.is_file()
        )
        assert len(files) == 30
        assert files == sorted(
            p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*") if p.is_file()
        )
        for relative in files:
            assert (tmp_path / "ray" / relative).read_bytes() == (tmp_path / "local" / relative).read_bytes()
    else:
        assert (tmp_path / "ray").read_bytes() == (tmp_path / "local").read_bytes()


def test_the_ray_engine_chooses_formats_as_the_local_filter(tmp_path: Path) -> None:
    """``describe_input`` goes through ``formats.choose_format``: the same kinds for the same first
    bytes, an empty file an empty mbox unless a format is named, and one line for what it cannot
    read."""
    cases = {
        "mail.mbox": (b"From a@b Mon Jan  1 00:00:00 2024\nSubject: x\n\nhi\n", "auto", "mbox"),
        "one.eml": (b"Subject: hi\nFrom: a@b\n\nbody\n", "auto", "email"),
        "table.csv": (b"label,body\nspam,win now\nham,see you\n", "auto", "csv"),
        "empty.mbox": (b"", "auto", "mbox"),
        "empty.csv": (b"", "csv", "csv"),
        "named.csv": (b"just one message per line\n", "csv", "csv"),
    }
    for name, (data, requested, kind) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert chunks.describe_input(str(tmp_path / name), requested, "Text", False).kind == kind, name
        if data:
            assert _local_format(data, requested) == kind, name
    (tmp_path / "lines.txt").write_bytes(b"just one message per line\nanother one\n")
    (tmp_path / "x.bin").write_bytes(b"\x7fELF\x00\x00")
    assert chunks.describe_input(str(tmp_path / "lines.txt"), "auto", "body", True).kind == "csv"
    for name, found in (("lines.txt", "plain text"), ("x.bin", "binary")):
        with pytest.raises(chunks.InputError, match=f"{name}: {found}.*, not an mbox"):
            chunks.describe_input(str(tmp_path / name), "auto", "Text", False)
    with pytest.raises(formats.BinaryInput, match="the input is binary"):
        _local_format(b"\x7fELF\x00\x00", "auto")


def _local_format(head: bytes, requested: str) -> str:
    return formats.choose_format(requested, lambda: head)


def test_a_folder_file_changed_between_scoring_and_writing_is_not_copied(tmp_path: Path) -> None:
    """The Ray engine scores a folder's files in one stage and reads them again to write them: a
    file renamed over by another version in between (a spam for the ham that was scored) came out
    with the other version's verdict. A file whose bytes changed since they were scored is now not
    copied (as one that vanished)."""
    folder = tmp_path / "mail"
    (folder / "cur").mkdir(parents=True)
    for name in ("a", "b"):
        (folder / "cur" / name).write_bytes(b"Subject: lunch\n\nSee you at noon.\n")
    item = chunks.describe_input(str(folder), "auto", "Text", False)
    chunk = next(chunks.plan(0, item, "Text"))
    chunk = chunks.read(chunk, item, 20_000)
    chunk.probabilities = [0.01] * len(chunk.texts)  # the verdicts the scoring stage gave
    (folder / "cur" / "b").write_bytes(b"Subject: WIN\n\nWIN A PRIZE NOW\n")  # swapped after scoring
    out = tmp_path / "out"
    verdicts = chunks.write(chunk, item, Decision(), out)
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["a"]
    assert verdicts["path"] == ["cur/a", "cur/b"]  # both were scored; only the unchanged one copied
