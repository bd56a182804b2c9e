"""filter --engine ray with the Ray it starts itself, run as a user runs it (a process of its own):
every socket of that Ray listens on loopback only, and a run that goes well says only what
spamfilter says (no Ray warnings, no C++ log lines, no deprecation warning from our own calls)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from support.processes import is_loopback, listening_sockets

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE = PROJECT / "examples" / "sample.mbox"
CPP_LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ [IWEF] \d+ \d+\]", re.M)


def test_an_embedded_run_listens_on_loopback_only_and_is_quiet(trained_model: Path, tmp_path: Path) -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    command = [sys.executable, "-m", "spamfilter", "filter", "--engine", "ray", "-m", str(trained_model)]
    run = subprocess.Popen(
        [*command, str(SAMPLE), "-o", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        cwd=tmp_path,
    )
    listeners: set[tuple[str, int, int]] = set()
    while run.poll() is None:  # ends with the run (the CLI's own bounds)
        listeners |= listening_sockets(run.pid)
        time.sleep(0.2)  # (a look five times a second: Ray's sockets stay open for the whole run)
    stdout, stderr = run.communicate()
    text = stderr.decode("utf-8", "replace")
    assert run.returncode == 0, text
    assert listeners, "no listening socket of Ray's was seen while it ran"
    everywhere = sorted(entry for entry in listeners if not is_loopback(entry[0]))
    assert not everywhere, f"listening beyond loopback: {everywhere}"

    assert "Warning" not in text and "WARNING" not in text, text
    assert not CPP_LOG_LINE.search(text), text
    assert "ray: 1 inputs: 1 filtered" in text
    ours = [line for line in text.splitlines() if not line.startswith("spamfilter: ")]
    assert ours == [], text
