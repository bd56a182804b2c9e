"""Starting or joining Ray for the engine: on loopback only when it starts Ray itself, with token
authentication, and quiet unless something goes wrong.

Ray started here (no ``--ray-address``, no ``$RAY_ADDRESS``) serves this one run: every process of
it binds to 127.0.0.1 (Ray would otherwise listen on all interfaces, metrics included), without a
dashboard, and asks a token of every client (a token made for this process, kept in its
environment: nothing is written to the user's home). Joining a cluster, the token is Ray's own
(``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, with ``RAY_AUTH_MODE=token``).

Quiet: the workers' output is not forwarded to the driver (a worker's failure reaches the driver as
an exception, reported in one line; the workers' logs stay in Ray's session folder), Ray's own
Python loggers report errors only, and the driver's C++ log lines (info, warning and error: its
routine notes on actor restarts are error lines) are kept out of stderr while Ray runs: they are in
the session folder's ``python-core-driver-*.log`` too. A fatal line, and anything else, passes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpamfilterError, first_line

AUTH_MODE, AUTH_TOKEN, AUTH_TOKEN_PATH = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
# A line of Ray's C++ log (info, warning, error): "[2026-12-02 12:33:42,961 E 16165 16165] core_worker.cc:…"
CPP_LOG_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [IWE] \d+ \d+\] ")
LOOPBACK = "127.0.0.1"
# Ray's Python loggers whose warnings are routine on every run (token authentication on, progress
# bars off, the execution plan): errors still show.
QUIET_LOGGERS = ("ray", "ray.data", "ray._private", "ray.util")


@dataclass(frozen=True)
class Where:
    """Where to run: the cluster's address (None: Ray started on this machine) and its width."""

    address: str | None
    cpus: int
    gpus_per_worker: float


def connect(where: Where, report: Callable[[str], None]) -> tuple[bool, float]:
    """Join the cluster at ``where.address``, or start Ray here; whether we started it, and how
    long that took. A Ray already running in this process (a notebook, a test) is used as it is."""
    import ray

    started, ours = time.perf_counter(), not ray.is_initialized()
    try:
        if ours:
            _quiet()
            if where.address:
                _join_authentication()
                on_loopback = _loopback_only() if _is_loopback(where.address) else contextlib.nullcontext()
                with on_loopback:
                    ray.init(address=where.address, logging_level=logging.ERROR, log_to_driver=False)
            else:
                _embedded_authentication()
                with _loopback_only():
                    ray.init(
                        num_cpus=where.cpus,
                        include_dashboard=False,
                        logging_level=logging.ERROR,
                        log_to_driver=False,
                    )
    except Exception as error:  # ConnectionError, RuntimeError, ...: one line, no traceback
        doing = f"join the Ray cluster at {where.address}" if where.address else "start Ray on this machine"
        raise SpamfilterError(f"cannot {doing}: {first_line(error)}") from None
    seconds = time.perf_counter() - started if ours else 0.0
    try:
        _check_gpus(where, report)
    except SpamfilterError:
        if ours:
            ray.shutdown()
        raise
    return ours, seconds


def _quiet() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _embedded_authentication() -> None:
    """Token authentication for a Ray of this process's own: loopback is shared by every local
    user, so their processes must not be able to submit work to it. The token is made once per
    process (Ray's token loader keeps the first one it reads)."""
    if AUTH_MODE in os.environ:
        return  # the user's choice, token or disabled
    os.environ[AUTH_MODE] = "token"
    if AUTH_TOKEN not in os.environ and AUTH_TOKEN_PATH not in os.environ:
        os.environ[AUTH_TOKEN] = secrets.token_hex(32)
    _reload_authentication()


def _join_authentication() -> None:
    """A cluster's token where the user has one: with ``RAY_AUTH_MODE`` unset Ray finds it too, but
    warns on every run that it did."""
    if AUTH_MODE in os.environ:
        return
    default = Path.home() / ".ray" / "auth_token"
    if os.environ.get(AUTH_TOKEN) or os.environ.get(AUTH_TOKEN_PATH) or default.is_file():
        os.environ[AUTH_MODE] = "token"
        _reload_authentication()


def _reload_authentication() -> None:
    """Ray reads the mode into its configuration when it is imported, and caches the token: both
    read again, as Ray does where it turns token authentication on itself."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined] # (a compiled module)

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Ray takes a node address of 127.0.0.1 for "this machine, reachable from others" and replaces
    it with the primary interface's (``_node_ip_address`` and cluster addresses included), and then
    listens on every interface. Its one switch for a node on loopback is the constant that its
    single-machine platforms set (read when an address is resolved): set while Ray starts or joins."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _is_loopback(address: str) -> bool:
    """Whether a cluster address (``host:port``, ``ray://host:port``) names this machine's loopback:
    a cluster kept on it, which Ray would look for on the primary interface's address instead."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_gpus(where: Where, report: Callable[[str], None]) -> None:
    """Workers that ask for GPUs Ray does not have would wait for ever: refused here, unless the
    cluster may still get them (an autoscaler adds GPU nodes when the workers ask)."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if where.gpus_per_worker <= gpus:
        return
    if not where.address:
        raise SpamfilterError(f"--gpus-per-worker {where.gpus_per_worker:g}: Ray finds {gpus:g} GPUs here")
    report(
        f"--gpus-per-worker {where.gpus_per_worker:g}: the cluster has {gpus:g} GPUs now; "
        "the workers wait for GPU nodes to join"
    )


@contextlib.contextmanager
def cpp_log_kept_off_stderr() -> Iterator[None]:
    """While Ray runs in this process, its C++ log lines (which it writes to file descriptor 2 as
    well as to its log file) do not reach stderr; every other line does, in order. Without a file
    descriptor (stderr captured in a test) there is nothing to keep off."""
    try:
        descriptor = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    sys.stderr.flush()
    original = os.dup(descriptor)
    reading, writing = os.pipe()
    os.dup2(writing, descriptor)
    os.close(writing)
    forwarder = threading.Thread(target=_forward, args=(reading, original), daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, descriptor)  # the pipe's last writer here: the forwarder reads to its end
        # Bounded: a process that inherited the pipe would hold it open; the rest then goes unread.
        forwarder.join(timeout=5)
        if not forwarder.is_alive():
            os.close(original)


def _forward(reading: int, target: int) -> None:
    with os.fdopen(reading, "rb") as lines, open(target, "wb", closefd=False) as out:
        for line in lines:
            if not CPP_LOG_LINE.match(line):
                out.write(line)
                out.flush()
