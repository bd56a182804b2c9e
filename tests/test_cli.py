"""Every command's help, the eval command, default model location, the Python API, cold start."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from spamfilter import __version__
from spamfilter.cli import cli
from spamfilter.metrics import compute_metrics, roc_auc, threshold_sweep

COMMANDS = ["train", "export", "filter", "classify", "eval"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    for flag in ("--help", "-h"):
        result = CliRunner().invoke(cli, [command, flag])
        assert result.exit_code == 0
        assert result.output.startswith(f"Usage: cli {command} [OPTIONS]")


def test_group_help_and_version() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and all(c in result.output for c in COMMANDS)
    assert CliRunner().invoke(cli, ["--version"]).output.strip() == f"spamfilter, version {__version__}"


def test_each_commands_module_is_the_one_named_and_every_command_is_named() -> None:
    """Commands are imported when they run: the table that says where each one lives must hold
    every command the modules define, each with the module that defines it."""
    import importlib

    from spamfilter.cli.common import COMMAND_MODULES

    for module in set(COMMAND_MODULES.values()):
        importlib.import_module(f"spamfilter.cli.{module}")
    defined = {name: command.callback.__module__ for name, command in cli.commands.items()}
    assert defined == {name: f"spamfilter.cli.{module}" for name, module in COMMAND_MODULES.items()}
    listed = CliRunner().invoke(cli, ["--help"]).output
    assert all(f"\n  {name} " in listed for name in COMMAND_MODULES)


def test_filter_starts_without_the_services_or_trainings_modules() -> None:
    """``filter`` runs once per message in a mail pipeline: it imports its own command's module."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['spamfilter', 'filter', '--help']\n"
        "try:\n    runpy.run_module('spamfilter', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('spamfilter.cli.')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.strip().splitlines()[-1]
    assert "'spamfilter.cli.filter'" in loaded
    for unused in ("serve", "train", "learn", "evaluate"):
        assert f"'spamfilter.cli.{unused}'" not in loaded, loaded


def test_unknown_option_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["filter", "--no-such-option"])
    assert result.exit_code == 2 and "No such option" in result.output


def test_python_dash_m_runs_the_command_line_without_torch_or_pandas() -> None:
    # `filter --help` only; tests/test_install.py runs the real filter path with torch unimportable.
    code = (
        "import sys, runpy; sys.argv = ['spamfilter', 'filter', '--help'];\n"
        "try:\n    runpy.run_module('spamfilter', run_name='__main__')\nexcept SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in ('torch', 'pandas', 'transformers') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Usage: spamfilter filter" in result.stdout
    assert "HEAVY []" in result.stdout


def test_eval_reports_metrics_sweep_and_plots(trained_model: Path, test_csv: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            str(test_csv),
            "--model",
            str(trained_model),
            "--report",
            str(tmp_path),
            "--target-fpr",
            "0.01",
        ],
    )
    assert result.exit_code == 0, result.output
    for word in (
        "accuracy",
        "precision",
        "recall",
        "F1",
        "false-positive rate",
        "ROC AUC",
        "confusion matrix",
    ):
        assert word in result.stdout
    report = json.loads((tmp_path / "eval.json").read_text())
    manifest = json.loads((trained_model / "spamfilter.json").read_text())
    assert abs(report["metrics"]["accuracy"] - manifest["metrics"]["test"]["accuracy"]) <= 1 / 300
    (point,) = report["threshold_sweep"]
    assert point["target"] == 0.01 and point["false_positive_rate"] <= 0.01
    assert f"{point['threshold']:.4f}" in result.stdout
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_names_a_too_strict_threshold_of_a_model_that_ranks_well(
    trained_model: Path, test_csv: Path
) -> None:
    """A threshold above nearly every spam: eval says the threshold is the cause, not the model."""
    result = CliRunner().invoke(
        cli, ["eval", str(test_csv), "--model", str(trained_model), "--threshold", "1"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((trained_model / "spamfilter.json").read_text())
    assert manifest["metrics"]["test"]["roc_auc"] >= 0.8  # the fixture model ranks well
    lines = [line for line in result.stderr.splitlines() if "marks only" in line]
    assert len(lines) == 1 and "near chance" not in lines[0], result.stderr
    assert "of these spam as spam though the model ranks spam above ham" in lines[0]
    assert "where 0.5% of these ham are marked spam it catches" in lines[0]


def test_train_stores_roc_and_sweep_in_the_model_directory(trained_model: Path) -> None:
    assert (trained_model / "roc.png").is_file()
    manifest = json.loads((trained_model / "spamfilter.json").read_text())
    assert [p["target"] for p in manifest["metrics"]["test_threshold_sweep"]] == [
        0.001,
        0.005,
        0.01,
        0.02,
        0.05,
    ]
    assert 0.5 < manifest["metrics"]["test"]["roc_auc"] <= 1.0


def test_eval_needs_data(trained_model: Path) -> None:
    result = CliRunner().invoke(cli, ["eval", "--model", str(trained_model)])
    assert result.exit_code == 2 and "give DATA" in result.output


def test_default_model_location(trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPAMFILTER_MODEL", str(trained_model))
    result = CliRunner().invoke(cli, ["classify", "see you at lunch"])
    assert result.exit_code == 0 and result.stdout.startswith("not spam\t")
    monkeypatch.delenv("SPAMFILTER_MODEL")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    result = CliRunner().invoke(cli, ["classify", "hello"])
    assert result.exit_code == 1
    assert f"no model directory at {tmp_path / 'spamfilter' / 'model'}" in result.output
    assert "spamfilter train" in result.output


def test_python_api(trained_model: Path) -> None:
    from spamfilter import Classifier, extract_text

    classifier = Classifier.load(trained_model)
    message = (
        b"Subject: Claim your prize\n\nWINNER!! You have won a 1000 pound prize. Call 09061701461 now!\n"
    )
    verdicts = classifier.classify([extract_text(message), "are we still on for lunch tomorrow?"])
    assert [label for label, _ in verdicts] == ["spam", "not spam"]


def test_metrics_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) * 0.6 + labels * 0.3, 2)  # ties included
    pairs = [(p, n) for p in scores[labels == 1] for n in scores[labels == 0]]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert roc_auc(labels, scores) == pytest.approx(expected)
    metrics = compute_metrics(labels, scores, 0.5)
    predicted = scores >= 0.5
    assert metrics.confusion == [
        [int((~predicted & (labels == 0)).sum()), int((predicted & (labels == 0)).sum())],
        [int((~predicted & (labels == 1)).sum()), int((predicted & (labels == 1)).sum())],
    ]
    for point in threshold_sweep(labels, scores, (0.0, 0.05, 0.2)):
        assert point.threshold is not None and point.false_positive_rate <= point.target
        assert point.false_positive_rate == np.mean(scores[labels == 0] >= point.threshold)
        assert point.recall == np.mean(scores[labels == 1] >= point.threshold)
        lower = scores[scores < point.threshold]
        if len(lower):  # the next lower threshold would break the target: it is the lowest
            assert np.mean(scores[labels == 0] >= lower.max()) > point.target


def test_threshold_sweep_says_when_no_threshold_keeps_to_the_target() -> None:
    # A ham message at P(spam) = 1.0 is flagged by every threshold up to 1.0.
    (zero, half) = threshold_sweep([0, 0, 1, 1], [1.0, 0.2, 1.0, 0.9], (0.0, 0.5))
    assert zero.threshold is None and zero.false_positive_rate == 0.5
    assert half.threshold == pytest.approx(0.9) and half.recall == 1.0
    (point,) = threshold_sweep([0, 1], [0.3, 0.7], (0.0,))
    assert 0.3 < point.threshold <= 0.7 and point.recall == 1.0


def test_completed_training_leaves_no_resume_state(trained_model: Path) -> None:
    assert not (trained_model / "training-state.pt").exists()


def test_resume_without_a_saved_state_says_so(tmp_path: Path, sms_file: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"n_embd": 32, "n_layer": 1, "n_head": 2}))
    result = CliRunner().invoke(cli, [
        "train", "--model", str(tmp_path / "config.json"), "--weights", "random", "--data", str(sms_file),
        "--out", str(tmp_path / "model"), "--resume",
    ])  # fmt: skip
    assert result.exit_code == 1 and "nothing to resume" in result.output


def test_filter_finds_the_model_train_wrote_last(
    tmp_path: Path, sms_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPAMFILTER_MODEL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "config.json").write_text(json.dumps({"n_embd": 32, "n_layer": 1, "n_head": 2}))
    out = tmp_path / "somewhere" / "model"
    result = CliRunner().invoke(cli, [
        "train", "--model", str(tmp_path / "config.json"), "--weights", "random", "--data", str(sms_file),
        "--epochs", "1", "--out", str(out), "--device", "cpu",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    from spamfilter.modeldir import default_model_dir

    assert default_model_dir() == out.resolve()
    result = CliRunner().invoke(cli, ["classify", "see you at lunch"])
    assert result.exit_code == 0 and result.stdout.split("\t")[0] in ("spam", "not spam")


def test_eval_without_report_leaves_the_model_directory_alone(
    trained_model: Path, test_csv: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    result = CliRunner().invoke(cli, ["eval", str(test_csv), "--model", str(model)])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before  # train's eval.json and roc.png kept
    assert "--report" in result.stderr


def test_log_records_stay_on_one_line_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from spamfilter.cli import _console

    record = "epoch 1: train loss 0.123 acc 97.21% | validation loss 0.456 acc 96.64% " * 3 + "(69.5 s)"
    _console().print(record)
    assert capsys.readouterr().err == record + "\n"


def test_classify_stdin_prints_one_line_per_text(trained_model: Path) -> None:
    result = CliRunner().invoke(
        cli, ["classify", "--model", str(trained_model), "-"], input="WIN a prize\nnow, call us\n"
    )
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    label, probability, shown = line.split("\t")
    assert label in ("spam", "not spam") and 0 <= float(probability) <= 1
    assert shown == "WIN a prize now, call us"


def test_filter_summary_names_the_variant_that_ran(trained_model: Path) -> None:
    result = CliRunner().invoke(
        cli, ["filter", "--model", str(trained_model), "--format", "text"], input="hi\n"
    )
    assert result.exit_code == 0, result.output
    default = json.loads((trained_model / "spamfilter.json").read_text())["default_variant"]
    assert "1 messages: " in result.stderr and f", {default} on CPUExecutionProvider" in result.stderr


def test_filter_progress_on_a_file_shows_rate_share_and_time_left(
    trained_model: Path, tmp_path: Path
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("hello there\n" * 20)
    result = CliRunner().invoke(
        cli, ["filter", "--model", str(trained_model), "--format", "text", "--progress", str(source)]
    )
    assert result.exit_code == 0, result.output
    assert "20 messages (" in result.stderr and "/s)" in result.stderr
    assert "100%" in result.stderr and "0:00:00" in result.stderr


# --- errors that name the fix ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (2, "written by a newer spamfilter (format_version 2; this one reads 1): upgrade spamfilter"),
        (0, "written by an older spamfilter (format_version 0; this one reads 1): retrain with"),
    ],
)
def test_a_manifest_of_another_format_says_what_to_do(
    trained_model: Path, tmp_path: Path, version: int, expected: str
) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    manifest = json.loads((model / "spamfilter.json").read_text())
    (model / "spamfilter.json").write_text(json.dumps({**manifest, "format_version": version}))
    result = CliRunner().invoke(cli, ["classify", "--model", str(model), "hello"])
    assert result.exit_code == 1
    assert expected in result.output and "spamfilter train" in result.output, result.output


def test_an_unreadable_manifest_says_permission_denied_without_an_errno(
    trained_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tests run as root here, where chmod 000 still reads: the refusal is made to happen.
    manifest = trained_model / "spamfilter.json"
    read_text = Path.read_text

    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        if self == manifest:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", refuse)
    result = CliRunner().invoke(cli, ["classify", "--model", str(trained_model), "hello"])
    assert result.exit_code == 1
    assert f"permission denied reading {manifest}; check the file's owner/mode" in result.output
    assert "Errno" not in result.output, result.output


# --- the model that ran ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["filter", "classify", "eval", "learn", "serve"])
def test_help_explains_the_implicit_model_and_how_to_pin_one(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "the model this user trained last" in text and "~/.local/share/spamfilter/last-model" in text
    assert "pin one with -m DIR or SPAMFILTER_MODEL=DIR" in text


def _default_variant(model: Path) -> str:
    return json.loads((model / "spamfilter.json").read_text())["default_variant"]


def test_every_summary_names_the_model_and_variant_that_ran(
    trained_model: Path, test_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = f"spamfilter: model: {trained_model.resolve()} ({_default_variant(trained_model)})"
    runs = {
        "classify": ["classify", "--model", str(trained_model), "hello"],
        "filter": ["filter", "--model", str(trained_model), "--format", "text"],
        "eval": ["eval", str(test_csv), "--model", str(trained_model)],
    }
    for name, args in runs.items():
        result = CliRunner().invoke(cli, args, input="hello\n")
        assert result.exit_code == 0, result.output
        assert named in result.stderr or f"; {named[12:]}" in result.stderr, (name, result.stderr)
        assert named[12:] not in result.stdout, name  # results stay clean
    # Without -m the summary also says how the model was chosen.
    monkeypatch.setenv("SPAMFILTER_MODEL", str(trained_model))
    result = CliRunner().invoke(cli, ["classify", "fp32 please", "--variant", "fp32"])
    assert result.exit_code == 0, result.output
    assert f"model: {trained_model.resolve()} (fp32; $SPAMFILTER_MODEL)" in result.stderr
