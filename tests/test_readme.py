"""The README's command lines cannot rot: every `spamfilter` command in its shell blocks exists and
every option it uses is one that command accepts, its Python API snippet runs as written, and its
install lines (and the examples') install this project, not the unrelated `spamfilter` on PyPI, and
its links to the benchmark results name sections that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from spamfilter.cli import cli

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"
EXAMPLES = PROJECT / "examples"


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
        if "--engine" in words:  # Ray examples name a cluster or an archive; test_engine_ray runs Ray
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
    from conftest import write_split_csv

    from spamfilter.data import balance, random_split, read_labelled

    examples = Path(__file__).resolve().parents[1] / "examples"
    (folder / "inbox.mbox").write_bytes((examples / "sample.mbox").read_bytes())
    (folder / "message.eml").write_bytes(b"From: a@example.org\nSubject: lunch\n\nLunch tomorrow?\n")
    test = random_split(balance(read_labelled(sms_file))).test.head(40)
    write_split_csv(test, folder / "test.csv")
    write_split_csv(test, folder / "inbox.csv")
    (folder / "export.csv").write_text("id,body\n1,WINNER! Claim your prize\n2,see you at noon\n")
    (folder / "messages.txt").write_text("WINNER! Claim your prize\nsee you at noon\n")
    (folder / "INBOX.mbox").write_bytes((examples / "sample.mbox").read_bytes())
    (folder / "Junk" / "new").mkdir(parents=True)
    for n, text in enumerate(
        ["WINNER! Claim your prize now", "URGENT: your account wins cash", "Free entry, text WIN"]
    ):
        (folder / "Junk" / "new" / f"17000000{n}.1.host").write_text(f"Subject: {text}\n\n{text}, call now\n")
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


# --- install lines ------------------------------------------------------------------------------

TAKEN_ON_PYPI = "spamfilter"  # an unrelated project (3.0.0) owns this distribution name on PyPI
_PACKAGE_COMMAND = re.compile(
    r"\b(?:pip3?|pipx|uv\s+pip|uv\s+tool)\s+(?:install|uninstall|reinstall|upgrade|show)\b([^`\n#;&|)]*)"
)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_field(field: str) -> str:
    text = (PROJECT / "pyproject.toml").read_text(encoding="utf-8")
    table = re.search(r"^\[project\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    assert table, "pyproject.toml has no [project] table"
    value = re.search(rf'^{field}\s*=\s*"([^"]+)"', table.group(1), re.M)
    assert value, f"pyproject.toml [project] has no {field}"
    return value.group(1)


def package_arguments(text: str) -> list[str]:
    """Every argument (options left out) of a pip / pipx / uv install, uninstall or show."""
    found = []
    for match in _PACKAGE_COMMAND.finditer(text):
        try:
            words = shlex.split(match.group(1))
        except ValueError:
            words = match.group(1).split()
        found += [word for word in words if not word.startswith("-")]
    return found


def _is_path(argument: str) -> bool:
    return argument.startswith((".", "/", "~")) or "/" in argument


def documents() -> dict[str, str]:
    files = {"README.md": README.read_text(encoding="utf-8")}
    for path in sorted(EXAMPLES.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(PROJECT))] = path.read_text(encoding="utf-8", errors="replace")
    return files


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading: lower case, punctuation but hyphens and
    underscores dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_into_the_benchmark_results_names_one_of_its_sections() -> None:
    results = PROJECT / "benchmarks" / "RESULTS.md"
    anchors = {
        _github_anchor(line.lstrip("#"))
        for line in results.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    assert (
        _github_anchor("## 33. The replay (`bench_replay --row x`)".lstrip("#"))
        == "33-the-replay-bench_replay---row-x"
    )
    linked = re.findall(r"RESULTS\.md#([\w\-]+)", README.read_text(encoding="utf-8"))
    assert len(linked) > 10  # the pattern finds the README's links at all
    assert [anchor for anchor in linked if anchor not in anchors] == []


def test_the_distribution_name_is_not_the_one_taken_on_pypi() -> None:
    assert _normalise(pyproject_field("name")) != TAKEN_ON_PYPI


def test_install_lines_name_this_distribution_and_never_the_unrelated_one() -> None:
    ours = _normalise(pyproject_field("name"))
    wrong = []
    for document, text in documents().items():
        for argument in package_arguments(text):
            name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", argument)
            if _is_path(argument) or not name or "spamfilter" not in name.group(0).lower():
                continue  # a checkout, or another package (torch)
            named = _normalise(name.group(0))
            if named == TAKEN_ON_PYPI or named != ours:
                wrong.append(f"{document}: {argument}")
    assert not wrong, f"install lines that name the unrelated {TAKEN_ON_PYPI} or not {ours}: {wrong}"


def test_the_readme_installs_from_a_checkout_and_names_the_distribution() -> None:
    text = README.read_text(encoding="utf-8")
    assert re.search(r"^pip install \.\s", text, re.M), "no `pip install .` in the README"
    assert re.search(r"^pipx install \.\s", text, re.M), "no `pipx install .` in the README"
    names = {_normalise(a) for a in package_arguments(text) if not _is_path(a) and "spamfilter" in a}
    assert names == {_normalise(pyproject_field("name"))}
    assert f"`{pyproject_field('name')}`" in text, "the README does not say what the distribution is called"


def test_the_package_version_is_the_distribution_version() -> None:
    from spamfilter import __version__

    assert __version__ == pyproject_field("version")
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"spamfilter, version {__version__}"


# --- the Python API snippet ---------------------------------------------------------------------

README_MODEL_DIR = "~/.local/share/spamfilter/model"  # the snippet's model directory, as written


def python_api_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API\n") :]
    section = section[: section.find("\n## ", 1) if "\n## " in section[1:] else len(section)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section should have one python block"
    return blocks[0]


def test_the_snippets_model_directory_is_where_train_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    from spamfilter.modeldir import train_output_dir

    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("SPAMFILTER_MODEL", raising=False)
    assert f'Path("{README_MODEL_DIR}").expanduser()' in python_api_snippet()
    assert train_output_dir() == Path(README_MODEL_DIR).expanduser()


def test_the_python_api_snippet_runs(
    trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's snippet, run as written with only its model directory replaced."""
    import torch

    code = python_api_snippet()
    assert code.count(f'"{README_MODEL_DIR}"') == 1, "the snippet no longer uses the default model directory"
    code = code.replace(f'"{README_MODEL_DIR}"', repr(str(trained_model)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict[str, Any] = {"__name__": "readme_python_api"}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)

    clf, texts = namespace["clf"], namespace["texts"]
    max_length = clf.directory.max_length
    verdicts = namespace["verdicts"]
    assert [label for label, _ in verdicts] == ["spam", "not spam"]  # as the snippet's comment says
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for _, p in verdicts)

    p_spam = namespace["p_spam"]
    assert isinstance(p_spam, np.ndarray) and p_spam.shape == (1,) and 0.0 <= p_spam[0] <= 1.0

    rows, input_ids = namespace["rows"], namespace["input_ids"]
    assert len(rows) == len(texts) and all(rows) and all(isinstance(i, int) for i in rows[0])
    assert input_ids.dtype == np.int64 and input_ids.shape == (len(texts), max_length)
    for row, padded in zip(rows, input_ids, strict=True):
        assert list(padded[: len(row)]) == row and set(padded[len(row) :].tolist()) <= {50256}

    logits = namespace["logits"]
    assert isinstance(logits, torch.Tensor) and tuple(logits.shape) == (len(texts), 2)
    torch_p_spam = torch.softmax(logits.double(), dim=1)[:, 1].numpy()
    np.testing.assert_allclose(torch_p_spam, [p for _, p in verdicts], atol=1e-3)
    assert namespace["checkpoint"]["max_length"] == max_length
