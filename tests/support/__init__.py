"""What the tests and the benchmarks share: real servers to talk to (``spamd_server``: a
``spamfilter serve`` process; ``exim_harness`` and ``postfix_harness``: the MTAs that call it;
``milter_client``: the MTA side of the milter protocol), and the helpers below (a peer tool that
must be there, a model directory a test may change, the processes and sockets of a run).

Imported as ``support`` by the tests (pytest puts ``tests/`` on the path, as for ``conftest``) and
as ``tests.support`` by the benchmarks (run from the project root)."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

# The reference data beside the project (README "Data"): the SMS collection, the SpamAssassin
# corpus, GPT-2's tokenizer files.
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def unavailable(reason: str) -> NoReturn:
    """A peer the test needs is missing: a failure in CI (it must provide it, .ci/run), a skip with
    the reason elsewhere, so that a missing tool never passes silently where it matters."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it")
    pytest.skip(reason)


def require_tool(name: str, package: str = "procmail") -> str:
    """The path of a command-line tool; missing: :func:`unavailable`, naming the Debian package."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (Debian/Ubuntu: apt-get install {package})")
    return path


def as_unprivileged_user() -> tuple[str, ...]:
    """A command prefix that runs a command as a user to whom modes apply: root writes whatever
    the modes say, so as root, ``setpriv`` (util-linux) to user nobody, without root's groups;
    as anyone else, nothing (they are such a user already). Missing: :func:`unavailable`."""
    if os.geteuid() != 0:
        return ()
    setpriv = require_tool("setpriv", "util-linux")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        unavailable("there is no user nobody to run a command as")
    return (setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups")


def copy_model(model: Path, destination: Path) -> Path:
    """A copy of a model directory that a test may rewrite (learn, retrain, damage) without
    touching the session's model."""
    return Path(shutil.copytree(model, destination))


def require_sock_diag() -> None:
    """The kernel names the owner of a local TCP connection (``sock_diag``): a property of the
    kernel and its sandbox, which no package provides, so a skip with the reason where it lacks it
    (the service then counts every loopback client as one peer, and says so at start)."""
    from spamfilter.service.peers import kernel_names_owners

    why = kernel_names_owners()
    if why is not None:
        pytest.skip(f"the kernel does not answer sock_diag here: {why}")


def finishes_in_a_child(code: str, timeout: float) -> None:
    """Run ``code`` in a fresh Python and fail if it raises or is still running after ``timeout``
    seconds: a pattern that backtracks without end fails its test instead of hanging the suite."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", code], check=True, timeout=timeout)
