"""The systemd drop-in examples/systemd/spamfilter.service.d/learn.conf: the service with TELL
allowed and the model directory writable, which the unit alone (ProtectSystem=strict) keeps
read-only. The files are read as systemd reads them (continuation lines, an empty ExecStart=
resetting the unit's), and systemd-analyze verifies the unit with its drop-in where it is
installed."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from click.testing import CliRunner

from spamfilter.cli import cli

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "examples" / "systemd" / "spamfilter.service"
DROP_IN = ROOT / "examples" / "systemd" / "spamfilter.service.d" / "learn.conf"


def service_settings(path: Path) -> list[tuple[str, str]]:
    """The [Service] section's assignments in order, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", path.read_text())
    settings, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, equals, value = line.partition("=")
        assert equals, f"{path.name}: not an assignment: {line!r}"
        if section == "[Service]":
            settings.append((key.strip(), value.strip()))
    return settings


def effective(key: str) -> list[str]:
    """The values of a list setting for the unit with the drop-in: an empty assignment resets it."""
    values: list[str] = []
    for path in (UNIT, DROP_IN):
        for name, value in service_settings(path):
            if name == key:
                values = [] if value == "" else [*values, value]
    return values


def model_directory() -> PurePosixPath:
    (model,) = [v.split("=", 1)[1] for v in effective("Environment") if v.startswith("SPAMFILTER_MODEL=")]
    return PurePosixPath(model)


def test_the_drop_in_makes_the_model_directory_writable() -> None:
    model = model_directory()
    writable = [PurePosixPath(p.lstrip("-+")) for v in effective("ReadWritePaths") for p in v.split()]
    assert model in writable
    # and the directory is the service's (StateDirectory= implies ReadWritePaths= for it and gives
    # it to the dynamic user, which otherwise owns nothing and could not write there)
    states = [PurePosixPath("/var/lib", name) for v in effective("StateDirectory") for name in v.split()]
    assert any(model.is_relative_to(state) for state in states)
    assert ("DynamicUser", "yes") in service_settings(UNIT)
    assert ("ProtectSystem", "strict") in service_settings(UNIT)  # why the drop-in is needed


def test_the_drop_in_runs_the_units_command_with_tell_allowed() -> None:
    """One ExecStart after the drop-in's reset: the unit's command, options and all, plus TELL."""
    assert [v for k, v in service_settings(DROP_IN) if k == "ExecStart"][0] == ""  # the reset
    (command,) = effective("ExecStart")  # else systemd refuses a second one (Type=exec)
    (unit_command,) = [v for k, v in service_settings(UNIT) if k == "ExecStart"]
    words, unit_words = shlex.split(command), shlex.split(unit_command)
    assert words[: len(unit_words)] == unit_words
    assert words[len(unit_words) :] == ["--allow-tell", "--learn-after", "50"]
    usage = CliRunner().invoke(cli, ["serve", "--help"]).output
    for option in (w for w in words[2:] if w.startswith("-")):
        assert re.search(rf"(^|[\s,]){re.escape(option)}[\s,=]", usage, re.MULTILINE), option


def test_systemd_analyze_verify_accepts_the_unit_with_its_drop_in(tmp_path: Path) -> None:
    """Where systemd-analyze is installed (Debian: the systemd package; CI does not install it; the
    two tests above check the files without it). It reads the drop-in folder beside the unit and
    checks that ExecStart's program exists, so the copies run this installation's spamfilter."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    installed = f"ExecStart={Path(sys.executable).parent / 'spamfilter'} "
    (tmp_path / "spamfilter.service.d").mkdir()
    unit = tmp_path / "spamfilter.service"
    unit.write_text(UNIT.read_text().replace("ExecStart=/usr/local/bin/spamfilter ", installed, 1))
    drop_in = tmp_path / "spamfilter.service.d" / "learn.conf"
    drop_in.write_text(DROP_IN.read_text().replace("ExecStart=/usr/local/bin/spamfilter ", installed, 1))
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "spamfilter.service:" not in output and "learn.conf:" not in output, output  # no bad keys
    # The drop-in was read: a program that does not exist in its ExecStart fails the check.
    drop_in.write_text(drop_in.read_text().replace(installed, "ExecStart=/nonexistent/spamfilter ", 1))
    broken = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert broken.returncode != 0 and "/nonexistent/spamfilter" in broken.stdout + broken.stderr
