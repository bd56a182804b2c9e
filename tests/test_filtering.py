"""``filtering.run_filter`` as a library call: the job alone decides the run, the terminal only hears
about it, and the bytes are those of ``spamfilter filter``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_email

from spamfilter.cli import cli
from spamfilter.errors import UsageError
from spamfilter.filtering import BadOption, FilterJob, Terminal, run_filter

SAMPLE_MBOX = Path(__file__).resolve().parents[1] / "examples" / "sample.mbox"


def test_run_filter_writes_what_the_command_writes(trained_model: Path, tmp_path: Path) -> None:
    said: list[str] = []
    out = tmp_path / "out.mbox"
    job = FilterJob(inputs=(str(SAMPLE_MBOX),), output=str(out), model=trained_model)
    assert run_filter(job, Terminal(say=said.append)) == 0
    command = CliRunner().invoke(cli, ["filter", "-m", str(trained_model), "-q", str(SAMPLE_MBOX)])
    assert command.exit_code == 0
    assert out.read_bytes() == command.stdout_bytes
    assert said[-1].startswith("10 messages") and said[-1].endswith(f"model: {trained_model}")


def test_a_quiet_job_says_nothing_and_a_folder_needs_an_output(trained_model: Path, tmp_path: Path) -> None:
    said: list[str] = []
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.eml").write_bytes(make_email("lunch", "see you at noon"))
    job = FilterJob(inputs=(str(folder),), output=str(tmp_path / "out"), model=trained_model, quiet=True)
    assert run_filter(job, Terminal(say=said.append)) == 0
    assert said == [] and (tmp_path / "out" / "a.eml").exists()
    with pytest.raises(UsageError, match="a folder as INPUT needs -o DIR"):
        run_filter(FilterJob(inputs=(str(folder),), model=trained_model))


def test_a_bad_value_names_its_option(tmp_path: Path) -> None:
    with pytest.raises(BadOption, match="^Invalid value for INPUT: cannot read"):
        run_filter(FilterJob(inputs=(str(tmp_path / "missing.mbox"),)))
