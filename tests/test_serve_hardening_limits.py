"""Bounds for every peer: spamd request headers and milter message headers are bounded, idle
connections (no request line yet) cannot keep a real spamc from being served, the milter has a
connection cap and closes a silent connection, zlib inflation runs off the event loop, and running
out of file descriptors is one log line, not a traceback per attempt."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import miltertest
import pytest
from conftest import StandIn, make_email
from miltertest import constants as smfi
from support import as_unprivileged_user, require_sock_diag, require_tool, unavailable
from support.milter_client import connect, send_message
from support.spamd_server import Server, request, service_in_thread, spamd_request

from spamfilter.runtime import Classifier
from spamfilter.service import protocol
from spamfilter.service.access import parse_address, parse_networks
from spamfilter.service.server import ServiceSettings, SpamdService

SPAM = make_email("You have WON", "WINNER!! You have won a £1000 prize. Call 09061701461 to claim now")


def test_spamd_headers_are_bounded(trained_model: Path) -> None:
    many = "".join(f"X-Pad-{i}: {'p' * 1000}\r\n" for i in range(20))  # 20 KB of headers, no body
    raw = f"CHECK SPAMC/1.5\r\nContent-length: 0\r\n{many}\r\n".encode()
    with Server(trained_model) as server:
        reply = request(server.address, raw)
    assert reply.startswith(b"SPAMD/1.0 76 Bad header line: (headers over 16384 bytes)"), reply


def test_milter_headers_count_within_max_size(trained_model: Path) -> None:
    with Server(trained_model, "--max-size", "4000", listen=(), milter=("127.0.0.1:0",)) as server:
        conn = connect(server.milter_address)
        padded = make_email(
            "padded", "Lunch tomorrow?", extra="".join(f"X-Pad-{i}: {'p' * 900}\n" for i in range(8))
        )
        actions = send_message(conn, padded, replies=False)
        # Over --max-size in headers alone: let through untagged (no header changes).
        assert [command for command, _ in actions] == [smfi.SMFIR_ACCEPT]
        small = send_message(conn, make_email("short", "Lunch tomorrow?"), replies=False)
        assert small[-1][0] == smfi.SMFIR_ACCEPT and len(small) > 1  # tagged as before
        conn.sock.close()
        server.wait_for_log("headers of")
    assert "are over --max-size 4000" in server.log()


def test_spamc_is_served_while_200_idle_connections_are_open(trained_model: Path) -> None:
    spamc = require_tool("spamc", "spamc")
    with Server(trained_model) as server:
        idle = [socket.create_connection(server.address, timeout=30) for _ in range(200)]
        try:
            for _ in range(3):
                done = subprocess.run(
                    [spamc, "-d", server.address[0], "-p", str(server.port), "-t", "10"],
                    input=SPAM,
                    capture_output=True,
                    timeout=60,
                )
                assert done.returncode == 0 and b"X-Spam-Flag:" in done.stdout, (
                    done.stdout[:200],
                    server.log()[-2000:],
                )
        finally:
            for conn in idle:
                conn.close()


def test_the_milter_caps_connections_and_closes_silent_ones(trained_model: Path) -> None:
    args = ("--max-connections", "2", "--timeout", "1")
    with Server(trained_model, *args, listen=(), milter=("127.0.0.1:0",)) as server:
        silent = socket.create_connection(server.milter_address, timeout=20)
        assert silent.recv(100) == b""  # closed after the first-packet timeout (--timeout 1)
        silent.close()
        held = [connect(server.milter_address) for _ in range(2)]  # --max-connections 2 (1 per peer + 1)
        third = miltertest.MilterConnection(socket.create_connection(server.milter_address, timeout=20))
        with pytest.raises((miltertest.MilterError, ConnectionError, OSError)):
            third.optneg_mta(protocol=smfi.SMFI_V6_PROT)
        third.sock.close()
        for conn in held:
            conn.sock.close()
        server.wait_for_log("too many milter connections")


def test_zlib_is_inflated_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []
    real = protocol.inflate

    def inflate(data: bytes, max_size: int) -> bytes:
        threads.append(threading.current_thread())
        return real(data, max_size)

    monkeypatch.setattr(protocol, "inflate", inflate)
    body = zlib.compress(SPAM)
    raw = b"CHECK SPAMC/1.5\r\nContent-length: %d\r\nCompress: zlib\r\n\r\n" % len(body) + body

    async def read() -> protocol.Request | None:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await protocol.read_request(reader, 100_000)

    got = asyncio.run(read())
    assert got is not None and got.message == SPAM
    assert threads and threads[0] is not threading.main_thread()


def test_running_out_of_file_descriptors_is_one_line(
    trained_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ServiceSettings(listen=[parse_address("127.0.0.1:0")], allow=parse_networks(()))
    scorer = StandIn(Classifier.load(trained_model))
    service = SpamdService(settings, scorer, lambda: scorer, logging.getLogger("test-emfile"))
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="test-emfile"):
            for _ in range(50):
                error = OSError(errno.EMFILE, "Too many open files")
                service._loop_exception(
                    loop, {"message": "socket.accept() out of system resource", "exception": error}
                )
    finally:
        loop.close()
    lines = [record for record in caplog.records if record.name == "test-emfile"]
    assert len(lines) == 1 and "Too many open files" in lines[0].getMessage()
    assert all(record.exc_info is None for record in caplog.records)


# Run as another local user: connections from as many loopback addresses as it is told, each with
# the same first bytes, held open until stdin closes.
STALLER = """
import socket, sys
port, count, first = int(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3])
held = []
for i in range(count):
    conn = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(f"127.0.0.{2 + i}", 0))
    conn.sendall(first)
    held.append(conn)
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def stalled_by_another_user(port: int, count: int, first: bytes) -> Iterator[None]:
    """``count`` connections that another local user holds open from ``count`` loopback addresses."""
    if os.geteuid() != 0:
        unavailable("needs root to connect as another local user")
    require_sock_diag()
    python = shutil.which("python3", path="/usr/bin:/bin")  # root's own Python may be private
    assert python is not None
    staller = subprocess.Popen(
        [*as_unprivileged_user(), python, "-c", STALLER, str(port), str(count), first.hex()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert staller.stdin is not None and staller.stdout is not None
    try:
        assert staller.stdout.readline().strip() == "ready"
        time.sleep(1)  # let the server take them in
        yield
    finally:
        staller.stdin.close()
        staller.wait(timeout=30)
        staller.stdout.close()


def test_a_local_user_on_many_loopback_addresses_cannot_take_every_slot(trained_model: Path) -> None:
    """Any local user may bind any 127.x address: counted by address, 8 of them were 8 peers, and
    their unfinished requests held all 4 slots and all 4 waiting places (spamc got 75). Counted by
    the user that owns them, they hold --max-per-peer (3) slots, and another user is served."""
    args = ("--max-connections", "4", "--timeout", "10")  # --max-per-peer: 3 by default
    with Server(trained_model, *args) as server:
        part = b"CHECK SPAMC/1.5\r\nContent-length: 100\r\n\r\nonly part"
        with stalled_by_another_user(server.port, 8, part):
            reply = request(server.address, spamd_request("CHECK", SPAM))
    assert reply.startswith(b"SPAMD/1.1 0 EX_OK"), reply


def test_a_local_user_on_many_loopback_addresses_cannot_take_every_milter_slot(trained_model: Path) -> None:
    """The same for the milter: 8 sessions from 8 addresses of one user held all 4 connections and
    the MTA's was closed (its milter_default_action then decides the mail unfiltered)."""
    args = ("--max-connections", "4", "--timeout", "10")
    negotiate = (
        struct.pack("!I", 13) + smfi.SMFIC_OPTNEG.encode() + struct.pack("!III", 6, smfi.SMFI_V6_ACTS, 0)
    )
    with Server(trained_model, *args, listen=(), milter=("127.0.0.1:0",)) as server:
        port = server.milter_address[1]
        with stalled_by_another_user(port, 8, negotiate):
            conn = connect(server.milter_address)
            actions = send_message(conn, SPAM, replies=False)
            conn.sock.close()
    assert actions[-1][0] == smfi.SMFIR_ACCEPT and len(actions) > 1, actions  # tagged


def test_a_server_out_of_file_descriptors_logs_no_tracebacks(trained_model: Path) -> None:
    import resource
    import sys

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    command = [
        sys.executable,
        "-m",
        "spamfilter",
        "serve",
        "--model",
        str(trained_model),
        "--listen",
        "127.0.0.1:0",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=few_descriptors)
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "listening on" in line:
            break
    port = int(lines[-1].split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    held = []
    try:
        for _ in range(120):  # more than the 64 descriptors the server has
            with contextlib.suppress(OSError):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(2.5)  # asyncio retries accepting each second
    finally:
        for conn in held:
            conn.close()
        process.terminate()
        _, rest = process.communicate(timeout=60)
    log = "".join(lines) + rest
    assert "Traceback" not in log, log[-3000:]
    assert 1 <= log.count("cannot accept connections for now") <= 2, log[-3000:]


def test_the_service_says_when_the_kernel_cannot_name_local_peers(
    trained_model: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a sandbox without AF_NETLINK (a systemd unit's RestrictAddressFamilies, say) every
    loopback client is one peer and per-user TELL over loopback TCP is refused: said at start.
    Stand-in: sock_diag's failure, which a test cannot cause for the process alone."""
    from spamfilter.service import server as server_module

    monkeypatch.setattr(server_module, "kernel_names_owners", lambda: "Address family not supported")
    settings = ServiceSettings(listen=[parse_address("127.0.0.1:0")], allow=parse_networks(()))
    scorer = StandIn(Classifier.load(trained_model))
    with caplog.at_level(logging.WARNING, logger="test-serve"), service_in_thread(settings, scorer):
        deadline = time.monotonic() + 30
        while "sock_diag" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "cannot ask the kernel who owns a local TCP connection (sock_diag: Address family" in caplog.text
