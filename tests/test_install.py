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
    assert re.search(
        rb"^X-Spam-Status: (Yes|No), score=-?\d+\.\d required=5\.0 .*spam_probability=[01]\.\d{3}",
        header,
        re.M,
    )
    assert body == _header_and_body(message)[1]
    # nothing else changed: without the two added lines the header is the original one
    kept = b"\n".join(
        line
        for line in header.split(b"\n")
        if not line.startswith((b"X-Spam-Flag:", b"X-Spam-Status:", b"X-Spam-Level:"))
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


# --- make train: what it installs, and its inputs checked first ----------------------------------


def _make_dry_run(tmp_path: Path, target: str) -> list[str]:
    """The commands ``make TARGET`` would run for a venv that does not exist yet."""
    done = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _extras(commands: list[str]) -> list[set[str]]:
    installs = [re.search(r"pip install .*-e '\.\[([^\]]*)\]'", line) for line in commands]
    return [set(found.group(1).split(",")) for found in installs if found]


def test_make_train_installs_what_training_needs_after_checking_its_inputs(tmp_path: Path) -> None:
    commands = _make_dry_run(tmp_path, "train")
    check = next(i for i, line in enumerate(commands) if "spamfilter.train_inputs" in line)
    first_install = next(i for i, line in enumerate(commands) if " -m venv " in line or "pip install" in line)
    assert check < first_install, commands
    (extras,) = _extras(commands)
    assert "train" in extras and len(extras & {"cpu", "gpu"}) == 1, extras
    assert not extras & {"test", "ray"}, extras
    # make test keeps installing everything, and CI keeps calling it.
    (extras,) = _extras(_make_dry_run(tmp_path, "test"))
    assert {"train", "test"} <= extras
    assert (PROJECT / ".ci" / "run").read_text(encoding="utf-8").rstrip().endswith("make test")


def test_the_test_extra_brings_what_the_train_install_leaves_out() -> None:
    extras = _project_table()["optional-dependencies"]
    left_out = _normalised(("pytest", "mypy", "ray", "transformers"))
    assert left_out.isdisjoint(_names(extras["train"]))
    assert _normalised(("pytest", "mypy", "transformers")) <= _names(extras["test"])


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends: connections are refused


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """Empty caches and a hub that refuses connections, as on a machine without network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MAKE", "MFLAGS"))}
    env.update(
        SPAMFILTER_CACHE=str(tmp_path / "cache"),
        HF_HUB_CACHE=str(tmp_path / "hub"),
        HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
        PIP_NO_INDEX="1",  # had the check not stopped make, pip would fail at once rather than download
    )
    return env


def test_make_train_names_every_missing_input_before_installing_anything(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    missing_data = tmp_path / "no-such-sms-file"
    # The check runs with the interpreter make is given; -S keeps site-packages out: stdlib only.
    done = subprocess.run(
        ["make", "train", f"VENV={venv}", f"PYTHON={sys.executable} -S", f"TRAIN_ARGS=--data {missing_data}"],
        cwd=PROJECT,
        env=_offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "spamfilter train cannot start: 2 inputs are missing" in done.stderr, done.stderr
    assert f"--data {missing_data}: not found" in done.stderr
    assert (
        "the GPT-2 weights gpt2-small (openai-community/gpt2): not in the Hugging Face cache" in done.stderr
    )
    assert "--weights FOLDER" in done.stderr and "TRAIN_ARGS=" in done.stderr
    assert not venv.exists()  # nothing was installed


def test_the_input_check_names_the_sms_data_and_the_weights_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spamfilter import train_inputs

    for name, value in _offline_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    asked: list[str] = []

    def refused(url: str) -> str:
        asked.append(url)
        return "Connection refused"

    missing = train_inputs.missing_inputs(probe=refused)
    assert [m.what for m in missing] == [
        "the SMS Spam Collection",
        "the GPT-2 weights gpt2-small (openai-community/gpt2)",
    ]
    message = train_inputs.describe(missing)
    assert train_inputs.SMS_URL in message and str(tmp_path / "cache") in message and "--data FILE" in message
    assert "--weights random" in message and "Connection refused" in message
    assert [urllib_host(url) for url in asked] == ["archive.ics.uci.edu", "127.0.0.1"]
    # With both in their caches nothing is missing, and no host is asked.
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "SMSSpamCollection").write_bytes(SMS_FILE.read_bytes())
    snapshot = tmp_path / "hub" / "models--openai-community--gpt2" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_text("{}")
    asked.clear()
    assert train_inputs.missing_inputs(probe=refused) == [] and asked == []
    # A host that answers is enough: train downloads.
    assert train_inputs.missing_inputs(weights="gpt2-medium", probe=lambda url: None) == []


def urllib_host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or ""


def test_spamfilter_train_names_every_missing_input_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from spamfilter import train_inputs
    from spamfilter.cli import cli

    for name, value in _offline_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(train_inputs, "unreachable", lambda url: "no network")
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "model")])
    assert result.exit_code == 1
    assert "2 inputs are missing" in result.output and "the SMS Spam Collection" in result.output
    assert "the GPT-2 weights gpt2-small" in result.output
    assert not (tmp_path / "model").exists()


def test_the_input_check_agrees_with_what_train_downloads() -> None:
    from spamfilter import data, finetune, train_inputs, train_options, weights

    assert data.SMS_URLS[0] == train_inputs.SMS_URL and train_inputs.SMS_MEMBER == data.SMS_MEMBER
    assert train_inputs.SMS_SHA256 == data.SMS_SHA256
    assert train_inputs.HUB_REPOS == weights.HUB_REPOS
    assert train_inputs.HUB_FILES == (weights.CONFIG_FILE, weights.WEIGHTS_FILE)
    assert train_inputs.DEFAULT_MODEL == finetune.DEFAULT_MODEL
    assert train_inputs.RANDOM_WEIGHTS == train_options.RANDOM_WEIGHTS
    assert train_inputs.sms_cache_file() == data.cache_dir() / data.SMS_MEMBER
