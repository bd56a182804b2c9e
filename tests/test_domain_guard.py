"""The domain guard: a model directory records what it was trained on, and `filter` over mail with
a model trained on SMS says once on stderr that its accuracy on mail is unknown."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_email

from spamfilter.cli import cli
from spamfilter.modeldir import open_model_directory

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MBOX = ROOT / "examples" / "sample.mbox"
WARNING = "trained on SMS messages: its accuracy on email is unknown"


def filter_run(args: list[str], stdin: bytes | None = None):
    return CliRunner().invoke(cli, ["filter", *args], input=stdin)


def test_the_session_model_is_known_to_be_an_sms_model(trained_model: Path) -> None:
    assert open_model_directory(trained_model).manifest.trained_on == "sms"


def test_filter_over_mail_with_an_sms_model_warns_once(trained_model: Path, tmp_path: Path) -> None:
    result = filter_run(["--model", str(trained_model), str(SAMPLE_MBOX)])
    assert result.exit_code == 0
    assert result.stderr.count(WARNING) == 1  # once for ten messages
    assert "spamfilter train --spam" in result.stderr
    quiet = filter_run(["--model", str(trained_model), "-q", str(SAMPLE_MBOX)])
    assert quiet.exit_code == 0 and WARNING not in quiet.stderr
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.eml").write_bytes(make_email("lunch", "see you at noon"))
    copies = filter_run(["--model", str(trained_model), str(folder), "-o", str(tmp_path / "out")])
    assert copies.exit_code == 0 and copies.stderr.count(WARNING) == 1


def test_no_warning_for_texts_or_pipeline_mode(trained_model: Path) -> None:
    texts = filter_run(["--model", str(trained_model), "--format", "text"], b"WIN a prize now\nlunch?\n")
    assert texts.exit_code == 0 and WARNING not in texts.stderr
    # One message per run (procmail, Postfix): a line per message would fill the mail log.
    single = filter_run(["--model", str(trained_model), "--format", "email"], make_email("hi", "lunch?"))
    assert single.exit_code == 0 and WARNING not in single.stderr


@pytest.mark.parametrize(("kind", "warns"), [("mail", False), ("labelled", False), ("sms", True)])
def test_the_recorded_kind_decides(trained_model: Path, tmp_path: Path, kind: str, warns: bool) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    manifest_path = model / "spamfilter.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["training_data"] = {"kind": kind, "messages": 1494, "spam": 747}
    manifest_path.write_text(json.dumps(manifest))
    result = filter_run(["--model", str(model), str(SAMPLE_MBOX)])
    assert result.exit_code == 0
    assert (WARNING in result.stderr) is warns
