"""train -> ONNX model directory -> filter, offline, on the full SMS data, through the real CLI."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from spamfilter.cli import cli


def test_training_reaches_the_reference_random_weights_accuracy(trained_model: Path) -> None:
    manifest = json.loads((trained_model / "spamfilter.json").read_text())
    assert manifest["recipe"]["split_sizes"] == [1045, 149, 300]
    assert manifest["max_length"] == 120  # the longest training message
    assert manifest["metrics"]["test"]["accuracy"] >= 0.93
    record = json.loads((trained_model / "training.json").read_text())
    assert len(record["epochs"]) == 5 and record["eval_points"]
    assert (trained_model / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _accuracy(output_csv: str) -> tuple[int, float]:
    rows = list(csv.DictReader(io.StringIO(output_csv)))
    correct = sum(r["spamfilter_label"] == r["Label"] for r in rows)  # Label: the truth
    return len(rows), correct / len(rows)


def test_filter_reproduces_the_test_accuracy_from_onnx_alone(trained_model: Path, test_csv: Path) -> None:
    result = CliRunner().invoke(cli, ["filter", str(test_csv), "--model", str(trained_model)])
    assert result.exit_code == 0, result.output
    n, accuracy = _accuracy(result.stdout)
    expected = json.loads((trained_model / "spamfilter.json").read_text())["metrics"]["test"]["accuracy"]
    assert n == 300
    assert abs(accuracy - expected) <= 1 / 300  # ONNX and torch logits differ by < 1e-4
    assert "300 messages" in result.stderr and "CPUExecutionProvider" in result.stderr


def test_filter_reads_csv_from_stdin_and_keeps_every_column(trained_model: Path, test_csv: Path) -> None:
    data = test_csv.read_text()
    result = CliRunner().invoke(cli, ["filter", "-", "--model", str(trained_model), "--quiet"], input=data)
    assert result.exit_code == 0, result.output
    out = list(csv.reader(io.StringIO(result.stdout)))
    original = list(csv.reader(io.StringIO(data)))
    assert out[0] == ["Label", "Text", "spamfilter_label", "spamfilter_spam_probability"]
    assert [row[:2] for row in out] == original
    assert all(0.0 <= float(row[3]) <= 1.0 for row in out[1:])
    assert result.stderr == ""


def test_gpu_request_without_cuda_says_so_and_runs_on_cpu(
    trained_model: Path, test_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where onnxruntime's CUDA provider is listed it really tries CUDA (and on a machine without a
    # GPU fails and falls back); where CUDA works, the fallback is forced by hiding the provider.
    import onnxruntime

    if _cuda_works():
        monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    result = CliRunner().invoke(cli, ["filter", str(test_csv), "--model", str(trained_model), "--gpu"])
    assert result.exit_code == 0, result.output
    assert "--gpu" in result.stderr and "running on the CPU" in result.stderr
    assert "on CPUExecutionProvider" in result.stderr


def _cuda_works() -> bool:
    import onnxruntime
    import torch

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers() and torch.cuda.is_available()


def test_classify_prints_label_and_probability(trained_model: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "classify",
            "--model",
            str(trained_model),
            "WINNER! Claim your free prize now, call 09061701461",
            "see you at lunch?",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [line[0] for line in lines] == ["spam", "not spam"]
    assert float(lines[0][1]) > 0.5 > float(lines[1][1])


def test_threshold_option_overrides_the_model(trained_model: Path, test_csv: Path) -> None:
    result = CliRunner().invoke(
        cli, ["filter", str(test_csv), "--model", str(trained_model), "--threshold", "0"]
    )
    assert result.exit_code == 0
    assert {r["spamfilter_label"] for r in csv.DictReader(io.StringIO(result.stdout))} == {"spam"}


def test_missing_text_column_is_a_usage_error(trained_model: Path) -> None:
    result = CliRunner().invoke(
        cli, ["filter", "--model", str(trained_model), "--format", "csv"], input="subject,body\nhello,world\n"
    )
    assert result.exit_code == 2
    assert "no column 'Text'" in result.output and "Traceback" not in result.output


def test_missing_model_directory_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["classify", "--model", str(tmp_path / "none"), "hi"])
    assert result.exit_code == 1
    assert "no model directory" in result.output and len(result.output.strip().splitlines()) == 1
