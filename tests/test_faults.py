"""Faults in the filter's surroundings: full disk, closed stdout, a model that fails mid-run."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import StandIn, split_messages

from spamfilter import pipeline
from spamfilter.cli import cli
from spamfilter.mail import remove_spam_headers
from spamfilter.runtime import Classifier
from spamfilter.verdict import Decision

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SPAMFILTER = [sys.executable, "-m", "spamfilter"]


@pytest.fixture(scope="module")
def big_mbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "big.mbox"
    path.write_bytes((EXAMPLES / "sample.mbox").read_bytes() * 200)  # 2,000 messages, ~1.4 MB
    return path


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_full_disk_is_one_line_and_exit_1(trained_model: Path) -> None:
    result = subprocess.run(
        [*SPAMFILTER, "filter", str(EXAMPLES / "sample.mbox"), "--model", str(trained_model),
         "-o", "/dev/full"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "trained on SMS" not in line]  # domain guard
    assert lines == ["Error: cannot write the output: No space left on device"]


def test_closed_stdout_stops_quietly(trained_model: Path, big_mbox: Path) -> None:
    # `spamfilter filter big.mbox | head`: the reader goes away; no traceback, exit 141 as for SIGPIPE.
    process = subprocess.Popen(
        [*SPAMFILTER, "filter", str(big_mbox), "--model", str(trained_model)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    process.stdout.read(1000)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=300) == 141
    assert "Traceback" not in stderr


def test_unwritable_output_location_is_a_usage_error(trained_model: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [*SPAMFILTER, "filter", str(EXAMPLES / "sample.mbox"), "--model", str(trained_model),
         "-o", str(tmp_path / "no" / "such" / "dir" / "out.mbox")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and "cannot write" in result.stderr and "Traceback" not in result.stderr


class FailingOnSecondBatch(StandIn):
    """Stands in for an onnxruntime failure in the middle of a run (out of memory, a lost GPU),
    which cannot be caused on purpose here: the first call works, the second raises."""

    def __init__(self, real: Classifier) -> None:
        super().__init__(real)
        self.calls = 0

    def spam_probability(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("simulated onnxruntime failure")
        return self.real.spam_probability(texts)


def test_mid_run_failure_loses_no_message_that_was_read(trained_model: Path) -> None:
    chunk = pipeline.CHUNK
    data = (EXAMPLES / "sample.mbox").read_bytes() * (3 * chunk // 10 + 1)  # three chunks and more
    classifier = FailingOnSecondBatch(Classifier.load(trained_model))
    out = io.BytesIO()
    with pytest.raises(pipeline.ClassificationError, match=f"{chunk} messages passed untagged"):
        pipeline.filter_mbox(io.BytesIO(data), out, classifier, Decision(0.5))
    written = split_messages(out.getvalue())
    assert len(written) == 2 * chunk  # the first chunk tagged, the failed chunk passed through as it was
    assert all(b"X-Spam-Flag" in m for m in written[:chunk])
    assert all(b"X-Spam-Flag" not in m for m in written[chunk:])
    original = split_messages(data)[: 2 * chunk]
    assert [remove_spam_headers(m) for m in written] == original


def test_mid_run_failure_keeps_csv_rows(trained_model: Path) -> None:
    n = pipeline.CHUNK + 36
    rows = "Text\n" + "".join(f"message number {i}\n" for i in range(n))
    classifier = FailingOnSecondBatch(Classifier.load(trained_model))
    out = io.StringIO()
    with pytest.raises(pipeline.ClassificationError, match="36 rows written unlabelled"):
        pipeline.filter_csv(io.StringIO(rows), out, classifier, Decision(0.5))
    lines = out.getvalue().splitlines()
    assert len(lines) == n + 1 and lines[0] == "Text,label,spam_probability"
    assert lines[-1] == f"message number {n - 1},,"


def test_mid_run_failure_keeps_text_lines(trained_model: Path) -> None:
    n = pipeline.CHUNK + 6
    lines = "".join(f"line {i}\n" for i in range(n))
    classifier = FailingOnSecondBatch(Classifier.load(trained_model))
    out = io.StringIO()
    with pytest.raises(pipeline.ClassificationError, match="6 lines written unlabelled"):
        pipeline.filter_text(io.StringIO(lines), out, classifier, Decision(0.5))
    written = out.getvalue().splitlines()
    assert len(written) == n and written[-1] == f"\t\tline {n - 1}"


def test_mid_run_failure_in_folder_mode_keeps_the_chunks_done(trained_model: Path, tmp_path: Path) -> None:
    source, target = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    mails = [m.split(b"\n", 1)[1] for m in split_messages((EXAMPLES / "sample.mbox").read_bytes())]
    for i in range(pipeline.CHUNK + 4):
        (source / f"{i:04}.eml").write_bytes(mails[i % len(mails)])
    classifier = FailingOnSecondBatch(Classifier.load(trained_model))
    with pytest.raises(pipeline.ClassificationError, match="4 files not copied"):
        pipeline.filter_folder(source, target, classifier, Decision(0.5))
    copied = sorted(target.iterdir())
    assert len(copied) == pipeline.CHUNK and all(b"X-Spam-Flag" in f.read_bytes() for f in copied)
    assert len(list(source.iterdir())) == pipeline.CHUNK + 4  # the input folder is untouched


def test_output_over_the_input_is_refused(trained_model: Path, tmp_path: Path) -> None:
    box = tmp_path / "inbox.mbox"
    original = (EXAMPLES / "sample.mbox").read_bytes()
    box.write_bytes(original)
    for option in ("-o", "--spam-output"):
        result = subprocess.run(
            [*SPAMFILTER, "filter", str(box), "--model", str(trained_model), option, str(box)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 2 and "is the input file" in result.stderr
        assert box.read_bytes() == original


def test_damaged_tokenizer_in_the_model_directory_is_one_line(trained_model: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(trained_model, copy)
    (copy / "vocab.bpe").write_text("#version: 0.2\n")
    result = subprocess.run(
        [*SPAMFILTER, "classify", "--model", str(copy), "hello"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot use the model in") and "Traceback" not in result.stderr


def test_pipeline_output_that_cannot_be_written_asks_for_a_retry(trained_model: Path) -> None:
    # The message would be lost: exit 75 (EX_TEMPFAIL) makes the mail system keep it and retry.
    message = split_messages((EXAMPLES / "sample.mbox").read_bytes())[0].split(b"\n", 1)[1]
    result = CliRunner().invoke(
        cli, ["filter", "--model", str(trained_model), "--format", "email", "-o", "/dev/full"], input=message
    )
    assert result.exit_code == 75, result.output
    assert "cannot write the message" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("max_length", 0, "max_length 0 is not 1 to"),  # the windows' loop never ended: every run hung
        ("max_length", -5, "max_length -5 is not 1 to"),
        ("max_length", 4096, "is more than the model's context of"),  # onnxruntime's Gather error
        ("pad_token_id", 2**70, "pad_token_id"),  # an OverflowError traceback
        ("pad_token_id", 60000, "is not a token id"),
        ("threshold", float("nan"), "threshold nan is not a probability"),  # a traceback per verdict
        ("threshold", 1.5, "threshold 1.5 is not a probability"),
    ],
)
def test_a_manifest_out_of_range_is_one_line(
    trained_model: Path, tmp_path: Path, field: str, value: object, said: str
) -> None:
    """A model directory from elsewhere with a manifest no spamfilter writes: refused at load,
    one line and exit 1, where it hung every filter run or ended each verdict in a traceback."""
    import json
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(trained_model, copy)
    manifest = json.loads((copy / "spamfilter.json").read_text())
    manifest[field] = value
    (copy / "spamfilter.json").write_text(json.dumps(manifest))
    result = subprocess.run(
        [*SPAMFILTER, "classify", "--model", str(copy), "hello " * 500],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and said in result.stderr, result.stderr


def test_a_manifest_nested_thousands_deep_is_one_line(trained_model: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(trained_model, copy)
    (copy / "spamfilter.json").write_text("[" * 100_000 + "]" * 100_000)
    result = subprocess.run(
        [*SPAMFILTER, "classify", "--model", str(copy), "hello"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "nested too deep" in result.stderr


def test_a_manifest_whose_model_config_is_not_a_mapping_still_loads(
    trained_model: Path, tmp_path: Path
) -> None:
    """The context check read base_model.config as a mapping: ``null`` there was a traceback."""
    import json
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(trained_model, copy)
    manifest = json.loads((copy / "spamfilter.json").read_text())
    manifest["base_model"]["config"] = None
    (copy / "spamfilter.json").write_text(json.dumps(manifest))
    result = subprocess.run(
        [*SPAMFILTER, "classify", "--model", str(copy), "hello"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
