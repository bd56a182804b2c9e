"""serve --allow-tell on a model folder the service cannot write (a read-only unit, another owner):
one warning line at start, and a TELL refused with 73; on a folder it can write, no warning.

Modes do not stop root, so where the tests run as root the service runs as user nobody
(support.as_unprivileged_user: setpriv), on a model copy that nobody can read but not write."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_email
from support import as_unprivileged_user, copy_model, unavailable
from support.spamd_server import Server, request, spamd_request

WARNING = "learning is off: "
SPAM = make_email("You have WON", "WINNER!! You have won a 1000 pound prize. Call 09061701461 to claim now")


@pytest.fixture
def place() -> Iterator[Path]:
    """A folder the service's user can reach (pytest's own is root's alone, mode 0700)."""
    with tempfile.TemporaryDirectory(prefix="spamfilter-modes-") as folder:
        root = Path(folder)
        root.chmod(0o755)
        try:
            yield root
        finally:  # as a user other than root, a 0555 folder's files cannot be removed otherwise
            for path in [root, *root.rglob("*")]:
                if path.is_dir() and not path.is_symlink():
                    path.chmod(0o755)


def model_with_modes(trained_model: Path, where: Path, writable: bool) -> Path:
    model = copy_model(trained_model, where)
    for path in [model, *model.rglob("*")]:
        if path.is_dir():
            path.chmod(0o777 if writable else 0o555)
        else:
            path.chmod(0o666 if writable else 0o444)
    return model


def start(model: Path, prefix: tuple[str, ...], home: Path) -> Server:
    environment = {**os.environ, "HOME": str(home)}
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import spamfilter.cli"],
        capture_output=True,
        env=environment,
        timeout=120,
    )
    if probe.returncode != 0:  # e.g. a checkout or Python under a home only its owner may enter
        last = (probe.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        unavailable(f"{' '.join(prefix)} cannot run this Python and checkout: {last}")
    return Server(model, "--allow-tell", prefix=prefix, env=environment)


def test_a_model_folder_it_cannot_write_is_said_at_start_and_tell_is_refused(
    trained_model: Path, place: Path
) -> None:
    prefix = as_unprivileged_user()
    model = model_with_modes(trained_model, place / "model", writable=False)
    with start(model, prefix, place) as server:
        warnings = [line for line in server.log().splitlines() if WARNING in line]
        assert len(warnings) == 1, server.log()
        assert f"{model} is not writable by this service" in warnings[0]
        reply = request(server.address, spamd_request("TELL", SPAM, Message_class="spam", Set="local"))
        assert reply.split(b" ", 2)[1] == b"73", reply  # EX_CANTCREAT, what the warning says
    assert not (model / "corrections").exists()
    assert "Traceback" not in server.log()


def test_a_model_folder_it_can_write_gets_no_warning(trained_model: Path, place: Path) -> None:
    prefix = as_unprivileged_user()
    model = model_with_modes(trained_model, place / "model", writable=True)
    with start(model, prefix, place) as server:
        reply = request(server.address, spamd_request("TELL", SPAM, Message_class="spam", Set="local"))
        assert reply.split(b" ", 2)[1] == b"0", reply
        assert WARNING not in server.log()
    assert [path for path in (model / "corrections").rglob("*") if path.is_file()]
