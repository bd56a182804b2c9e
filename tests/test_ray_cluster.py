"""filter --engine ray --ray-address against a real two-node Ray cluster on this machine: a head and
a second node, each its own `ray start` process, with token authentication and every socket on
loopback. The outputs are the local engine's, byte for byte.

Ray takes 127.0.0.1 for "this machine as others reach it" and replaces it with the primary
interface's address, then listens on every interface: a node kept on loopback needs the address as
given, so `ray start` runs here with that one rewrite turned off. A real cluster's nodes use
addresses that the other machines reach; nothing else differs."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA
from support.processes import is_loopback, listening_sockets

from spamfilter.cli import cli

PROJECT = Path(__file__).resolve().parents[1]
INPUTS = [PROJECT / "examples" / "sample.mbox", SHARED_DATA / "spamassassin" / "hard_ham.mbox"]
RAY_START = (
    "import sys, ray._private.services as services; "
    "services.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"
)
NODES_UP = """
import sys, time, ray
from ray._private import ray_constants
ray_constants.ENABLE_RAY_CLUSTER = False  # the address as given (spamfilter does so for loopback)
ray.init(address=sys.argv[1], log_to_driver=False)
for _ in range(120):  # the second node registers within seconds; bounded
    alive = [node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]]
    if len(alive) == 2:
        break
    time.sleep(1)
print(" ".join(alive))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(port: int, head: subprocess.Popen[bytes]) -> None:
    """Until the head's GCS accepts connections (bounded; the head ending is a failure)."""
    for _ in range(300):
        assert head.poll() is None, "the head node stopped while starting"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(1)
    pytest.fail("the head node did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End a node: its `ray start --block` stops what it started on SIGTERM; its process group
    (started for it) is killed after a bounded wait."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _ours(marker: str) -> list[int]:
    """Processes still running whose command line names ``marker`` (this cluster's temp folder)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(address, environment for the driver): a head and a second node, token authentication."""
    token = tmp_path / "ray-token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    environment.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)})
    # Ray's socket paths must stay short: its own folder under the system's temporary folder.
    temporary = tempfile.mkdtemp(prefix="ray-cluster-")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--block"]
    roles = {
        "head": ["--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false"]
        + ["--temp-dir", temporary],
        "node": ["--address", address, "--num-cpus", "1"],
    }
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        for role, args in roles.items():
            with open(tmp_path / f"{role}.log", "wb") as log:
                nodes.append(
                    subprocess.Popen(
                        [sys.executable, "-c", RAY_START, "start", *args, *common],
                        env=environment,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            if role == "head":
                _wait_for(port, nodes[0])
        check = subprocess.run(
            [sys.executable, "-c", NODES_UP, address],
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        logs = "".join((tmp_path / f"{role}.log").read_text(errors="replace") for role in ("head", "node"))
        assert check.stdout.split() == ["127.0.0.1", "127.0.0.1"], check.stderr + logs
        listeners = set().union(*(listening_sockets(node.pid) for node in nodes))
        assert listeners and all(is_loopback(address) for address, _, _ in listeners), sorted(listeners)
        yield address, environment
    finally:
        for node in reversed(nodes):
            _stop(node)
        for pid in _ours(temporary):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temporary, ignore_errors=True)


def test_a_two_node_cluster_on_loopback_filters_as_the_local_engine(
    cluster: tuple[str, dict[str, str]], trained_model: Path, tmp_path: Path
) -> None:
    address, environment = cluster
    spamfilter = Path(sys.executable).parent / "spamfilter"
    out = tmp_path / "out"
    run = subprocess.run(
        [spamfilter, "filter", "--engine", "ray", "--ray-address", address, "--workers", "2"]
        + ["-m", str(trained_model), *map(str, INPUTS), "-o", str(out)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert f"ray: {len(INPUTS)} inputs: {len(INPUTS)} filtered" in run.stderr
    assert "Warning" not in run.stderr and "WARNING" not in run.stderr, run.stderr
    for source in INPUTS:
        expected = tmp_path / "local" / source.name
        expected.parent.mkdir(exist_ok=True)
        local = CliRunner().invoke(
            cli, ["filter", "-q", "-m", str(trained_model), str(source), "-o", str(expected)]
        )
        assert local.exit_code == 0, local.output
        assert (out / source.name).read_bytes() == expected.read_bytes(), source.name
