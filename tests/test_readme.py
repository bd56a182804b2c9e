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
