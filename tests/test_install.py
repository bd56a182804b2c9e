"""The base install (onnxruntime, tiktoken, numpy, click, rich) is all that filter, classify and eval
need: they run here as real processes in which importing torch, pandas or any other training
package fails and is recorded; and pyproject.toml keeps the training packages in the `train` extra.
A real fresh base virtualenv is built by ``benchmarks/install_sizes.sh``."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import SHARED_DATA, SMS_FILE
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from spamfilter.mail import split_mbox

PROJECT = Path(__file__).resolve().parents[1]
TRAINING_PACKAGES = ("torch", "pandas", "onnx", "onnxscript", "safetensors", "huggingface_hub", "matplotlib")
BLOCKED = (*TRAINING_PACKAGES, "transformers")

# Installed as sitecustomize, so it is in place before `python -m spamfilter` imports anything: an
# import of a blocked package (or of any of its submodules) raises ImportError and is written to the
# log, so that code which catches the ImportError still fails the test; at exit, any blocked package
# that got into sys.modules some other way is logged too.
_BLOCKER = textwrap.dedent(
    """
    import atexit, os, sys

    BLOCKED = set(os.environ["SPAMFILTER_TEST_BLOCKED"].split(","))
    LOG = os.environ["SPAMFILTER_TEST_BLOCKED_LOG"]

    def _log(line):
        with open(LOG, "a", encoding="utf-8") as handle:
            handle.write(line + "\\n")

    class BlockTrainingPackages:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                _log("import " + name)
                raise ImportError(f"{name} is blocked: not part of the base install", name=name)
            return None

    sys.meta_path.insert(0, BlockTrainingPackages())

    @atexit.register
    def _check_modules():
        for name in sorted(set(sys.modules) & BLOCKED):
            _log("loaded " + name)
    """
)


def _blocking_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose Python cannot import the blocked packages, and the log of its attempts."""
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(_BLOCKER, encoding="utf-8")
    log = tmp_path / "blocked.log"
    log.write_text("", encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(blocker), env.get("PYTHONPATH")]))
    env["SPAMFILTER_TEST_BLOCKED"] = ",".join(BLOCKED)
    env["SPAMFILTER_TEST_BLOCKED_LOG"] = str(log)
    env.pop("SPAMFILTER_MODEL", None)
    return env, log


def run_without_training_packages(
    tmp_path: Path, args: list[str], stdin: bytes = b""
) -> tuple[subprocess.CompletedProcess[bytes], list[str]]:
    """``python -m spamfilter ARGS`` in a process that cannot import the training packages; the
    result and the blocked imports it attempted."""
    env, log = _blocking_env(tmp_path)
    command = [sys.executable, "-m", "spamfilter", *args]
    result = subprocess.run(command, input=stdin, capture_output=True, cwd=PROJECT, env=env, timeout=300)
    return result, log.read_text(encoding="utf-8").splitlines()


def _report(result: subprocess.CompletedProcess[bytes], blocked: list[str]) -> str:
    stderr = result.stderr.decode(errors="replace")
    return f"exit {result.returncode}; blocked imports {blocked}; stderr:\n{stderr}"


def test_the_blocker_blocks_and_records_even_a_caught_import(tmp_path: Path) -> None:
    env, log = _blocking_env(tmp_path)
    code = "try:\n    import torch\nexcept ImportError:\n    print('caught')\nimport pandas.io"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=60)
    assert probe.returncode == 1 and probe.stdout == b"caught\n"
    assert b"ImportError: pandas is blocked" in probe.stderr  # the parent package is imported first
    assert log.read_text(encoding="utf-8").splitlines() == ["import torch", "import pandas"]


def _first_spam_message() -> bytes:
    """The first message of the SpamAssassin spam mbox, without its 'From ' line, as an MTA hands
    it to a pipeline filter."""
    mbox = SHARED_DATA / "spamassassin" / "spam.mbox"
    if not mbox.is_file():
        pytest.fail(f"reference data missing: {mbox}")
    with mbox.open("rb") as stream:
        first = next(split_mbox(stream))
    return first.split(b"\n", 1)[1]


def _header_and_body(message: bytes) -> tuple[bytes, bytes]:
    header, separator, body = message.partition(b"\n\n")
    assert separator, "no empty line between header and body"
    return header, body


def test_filter_tags_a_real_message_without_training_packages(trained_model: Path, tmp_path: Path) -> None:
    message = _first_spam_message()
    assert b"X-Spam-Flag" not in message
    result, blocked = run_without_training_packages(
        tmp_path, ["filter", "--format", "email", "--model", str(trained_model)], stdin=message
    )
    assert result.returncode == 0 and not blocked, _report(result, blocked)
    header, body = _header_and_body(result.stdout)
    flags = re.findall(rb"^X-Spam-Flag: (YES|NO)$", header, re.M)
    assert len(flags) == 1, result.stdout[:400]
    assert re.search(rb"^X-Spam-Status: (Yes|No), score=[01]\.\d{3} required=", header, re.M)
    assert body == _header_and_body(message)[1]
    # nothing else changed: without the two added lines the header is the original one
    kept = b"\n".join(
        line for line in header.split(b"\n") if not line.startswith((b"X-Spam-Flag:", b"X-Spam-Status:"))
    )
    assert kept == _header_and_body(message)[0]


def test_classify_runs_without_training_packages(trained_model: Path, tmp_path: Path) -> None:
    texts = ["WINNER! Claim your free prize now, call 09061701461", "see you at lunch?"]
    result, blocked = run_without_training_packages(
        tmp_path, ["classify", "--model", str(trained_model), *texts]
    )
    assert result.returncode == 0 and not blocked, _report(result, blocked)
    lines = [line.split("\t") for line in result.stdout.decode().splitlines()]
    assert [line[0] for line in lines] == ["spam", "not spam"]
    assert float(lines[0][1]) > 0.5 > float(lines[1][1])


def test_eval_runs_without_training_packages(trained_model: Path, tmp_path: Path) -> None:
    rows = []
    for line in SMS_FILE.read_text(encoding="utf-8").splitlines():
        label, text = line.split("\t", 1)
        if sum(r[0] == label for r in rows) < 5:
            rows.append((label, text))
        if len(rows) == 10:
            break
    data = tmp_path / "labelled.csv"
    with data.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("label", "text"), *rows])
    result, blocked = run_without_training_packages(
        tmp_path, ["eval", str(data), "--model", str(trained_model)]
    )
    assert result.returncode == 0 and not blocked, _report(result, blocked)
    report = result.stdout.decode()
    assert "10 messages" in report and "accuracy" in report


# --- the package metadata -----------------------------------------------------------------------


def _project_table() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with (PROJECT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["project"]


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _normalised(names: tuple[str, ...]) -> set[str]:
    return {canonicalize_name(n) for n in names}


def test_the_base_install_has_no_training_packages() -> None:
    project = _project_table()
    base = _names(project["dependencies"])
    assert base.isdisjoint(_normalised(BLOCKED)), base
    assert {"tiktoken", "numpy", "click", "rich"} <= base


def test_the_train_extra_has_every_training_package() -> None:
    extras = _project_table()["optional-dependencies"]
    assert _normalised(TRAINING_PACKAGES) <= _names(extras["train"])
    torch = next(Requirement(r) for r in extras["train"] if _names([r]) == {"torch"})
    assert torch.specifier.contains("2.13.0")  # what make installs first


def test_one_onnxruntime_build_per_extra() -> None:
    # Both builds provide the `onnxruntime` module; pip installs both side by side when asked for
    # both, and the last one wins. So the base names neither, and each extra names one.
    project = _project_table()
    builds = {"onnxruntime", "onnxruntime-gpu"}
    assert _names(project["dependencies"]).isdisjoint(builds)
    extras = project["optional-dependencies"]
    assert _names(extras["cpu"]) == {"onnxruntime"}
    assert _names(extras["gpu"]) == {"onnxruntime-gpu"}
    for name, requirements in extras.items():
        assert len(_names(requirements) & builds) <= 1, name


def test_classifying_writes_nothing_to_home_and_sends_no_telemetry(
    trained_model: Path, tmp_path: Path
) -> None:
    # onnxruntime on Linux otherwise writes ~/.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,
    # onnxruntime.db} (its telemetry) on the first session; spamfilter turns that off.
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "ORT_DISABLE_TELEMETRY"}
    done = subprocess.run(
        [sys.executable, "-m", "spamfilter", "classify", "--model", str(trained_model), "lunch at noon?"],
        env={**env, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert [str(path.relative_to(home)) for path in home.rglob("*")] == []
