"""``spamfilter adapt`` stopped by a signal: a real child process gets SIGTERM (or Ctrl-C's SIGINT)
between steps; it saves the step it reached, says how to go on, and exits 128 + the signal."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_email, write_hf_checkpoint

from spamfilter.adapt import STATE_FILE

BODY = "Hello team, the meeting about the report is on monday at ten in the small room. Thanks, Alice\n"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_step_reached_and_says_how_to_resume(tmp_path: Path, signum: int) -> None:
    weights = tmp_path / "start"
    write_hf_checkpoint(weights, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    mail = tmp_path / "mail"
    mail.mkdir()
    for i in range(40):
        (mail / f"{i:03d}.eml").write_bytes(make_email(f"report {i}", BODY * (1 + i % 3)))
    out = tmp_path / "adapted"
    command = [sys.executable, "-m", "spamfilter", "adapt", "--mail", str(mail), "--out", str(out)]
    command += ["--weights", str(weights), "--steps", "100000", "--context", "32", "--batch-size", "2"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines = []
    for line in process.stderr:  # the tenth step is done: from here a signal stops between steps
        lines.append(line)
        if line.startswith("spamfilter: step 10/"):
            process.send_signal(signum)
            break
    rest = process.communicate(timeout=300)[1]
    assert process.returncode == 128 + signum, "".join(lines) + rest
    assert f"interrupted: continue with the same command and --resume (state in {out})" in rest
    # Saved where it stopped (the state is otherwise saved every 100 steps only).
    step = torch.load(out / STATE_FILE, weights_only=True)["step"]
    assert 10 <= step < 100
