"""examples/milter/try.sh, the README's way to try the milter on one machine: it starts the milter
and a private Postfix, sends one message through them, prints it as delivered, and stops both."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import unavailable
from support.postfix_harness import group_alive, postfix_unavailable

PROJECT = Path(__file__).resolve().parents[1]
TRY = PROJECT / "examples" / "milter" / "try.sh"


def _require_postfix() -> None:
    """As the other Postfix tests: missing, a failure in CI (it installs one), a skip elsewhere."""
    reason = postfix_unavailable()
    if reason is not None:
        unavailable(reason)


def test_try_sh_sends_a_message_through_postfix_and_the_milter_and_stops_both(
    trained_model: Path, tmp_path: Path
) -> None:
    _require_postfix()
    message = tmp_path / "prize.eml"
    message.write_bytes(
        b"From: <promotions@example.org>\nTo: <alice@test.example>\nSubject: You have WON\n\n"
        b"WINNER!! You have won a 1000 pound prize. Call 09061701461 to claim now\n"
    )
    done = subprocess.run(
        ["bash", str(TRY), "-m", str(trained_model), str(message)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        timeout=300,
    )
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, out + done.stderr.decode(errors="replace")
    delivered = out.split("== delivered to ", 1)[1].split("\n", 1)[1].rsplit("\n== stopped Postfix", 1)[0]
    assert re.search(r"^X-Spam-Flag: (YES|NO)$", delivered, re.M), delivered
    assert re.search(r"^X-Spam-Status: (Yes|No), score=[\d.]+ required=", delivered, re.M)
    assert re.search(r"^Received: .*\n\tby mx\.test\.example \(Postfix\)", delivered, re.M)
    assert delivered.rstrip().endswith("Call 09061701461 to claim now")
    # Everything it started is gone: the Postfix master's process group, its folder, the milter.
    master = int(re.search(r"\(master pid (\d+)\)", out).group(1))  # type: ignore[union-attr]
    folder = Path(re.search(r"folder (\S+)", out).group(1))  # type: ignore[union-attr]
    milter_port = int(re.search(r"serve --milter 127\.0\.0\.1:(\d+)", out).group(1))  # type: ignore[union-attr]
    assert not group_alive(master) and not folder.exists()
    assert out.rstrip().endswith("== stopped spamfilter serve")
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", milter_port))


def test_try_sh_says_how_it_is_used(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(TRY), "-x"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "try.sh [-m MODEL_DIR] [MESSAGE_FILE]" in done.stderr
    done = subprocess.run(
        ["bash", str(TRY), str(tmp_path / "none.eml")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and f"cannot read {tmp_path / 'none.eml'}" in done.stderr
