"""The README's command lines cannot rot: every `spamfilter` command in its shell blocks exists and
every option it uses is one that command accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from spamfilter.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            for part in re.split(r"\|", line):
                words = shlex.split(part.replace("<", " ").replace(">", " "))
                if words[:1] == ["spamfilter"]:
                    commands.append(words[1:])
    return commands


def test_the_readme_shows_every_command() -> None:
    used = {words[0] for words in readme_commands() if words}
    assert {"train", "filter", "classify", "eval"} <= used


@pytest.mark.parametrize("words", readme_commands(), ids=lambda w: " ".join(w)[:60])
def test_readme_command_uses_real_options(words: list[str]) -> None:
    result = CliRunner().invoke(cli, [words[0], "--help"])
    assert result.exit_code == 0, f"no command {words[0]!r}"
    for option in (w.split("=", 1)[0] for w in words[1:] if w.startswith("-") and w != "-"):
        assert re.search(rf"(^|[\s,/]){re.escape(option)}([\s,=/]|$)", result.output, re.M), option


def runnable_examples() -> list[tuple[list[str], str | None]]:
    """README lines of filter / classify / eval as (arguments, file fed to stdin)."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        lines += [line.split("#", 1)[0].strip() for line in block.splitlines()]
    runnable = []
    for line in lines:
        feed = None
        if "|" in line:
            producer, line = (part.strip() for part in line.split("|", 1))
            feed = shlex.split(producer)[1] if producer.startswith("cat ") else None
        words = shlex.split(line)
        if words[:1] != ["spamfilter"] or words[1] not in ("filter", "classify", "eval"):
            continue
        args: list[str] = []
        tokens = iter(words[1:])
        for word in tokens:
            if word == "<":
                feed = next(tokens)
            elif word == ">":
                next(tokens)  # the README sends results to a file; the test reads them from stdout
            else:
                args.append(word)
        runnable.append((args, feed))
    return runnable


def _write_fixtures(folder: Path, sms_file: Path) -> None:
    from spamfilter.data import balance, random_split, read_labelled, write_split_csv

    examples = Path(__file__).resolve().parents[1] / "examples"
    (folder / "inbox.mbox").write_bytes((examples / "sample.mbox").read_bytes())
    (folder / "message.eml").write_bytes(b"From: a@example.org\nSubject: lunch\n\nLunch tomorrow?\n")
    test = random_split(balance(read_labelled(sms_file))).test.head(40)
    write_split_csv(test, folder / "test.csv")
    write_split_csv(test, folder / "inbox.csv")
    (folder / "export.csv").write_text("id,body\n1,WINNER! Claim your prize\n2,see you at noon\n")
    (folder / "messages.txt").write_text("WINNER! Claim your prize\nsee you at noon\n")
    (folder / "Maildir" / "new").mkdir(parents=True)
    (folder / "Maildir" / "new" / "1700000000.1.host").write_bytes(b"Subject: hi\n\nsee you at noon\n")


@pytest.mark.parametrize("example", runnable_examples(), ids=lambda e: " ".join(e[0])[:60])
def test_readme_example_runs(
    example: tuple[list[str], str | None],
    trained_model: Path,
    sms_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args, feed = example
    _write_fixtures(tmp_path, sms_file)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPAMFILTER_MODEL", str(trained_model))
    args = [str(trained_model) if word == "DIR" else word for word in args]
    data = (tmp_path / feed).read_bytes() if feed else None
    before = _files(tmp_path)
    result = CliRunner().invoke(cli, args, input=data)
    assert result.exit_code == 0, result.output
    written = {path for path, size in _files(tmp_path).items() if size and before.get(path) != size}
    assert result.stdout_bytes or written, "the example printed nothing and wrote no file"


def _files(folder: Path) -> dict[Path, int]:
    """Every file under ``folder`` with its size (report files of eval included)."""
    return {path: path.stat().st_size for path in folder.rglob("*") if path.is_file()}
