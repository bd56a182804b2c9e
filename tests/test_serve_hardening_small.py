"""The smaller hardening items: the metrics listener follows --allow and keeps few idle
connections, a Content-length with too many digits is a protocol error (76), and SIGTERM with idle
connections open exits at once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

from support.spamd_server import Server, request

from spamfilter.service import protocol
from spamfilter.service.observe import HTTP_WAITING


def http_get(host_port: str, path: str, source: str) -> bytes:
    host, _, port = host_port.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=30, source_address=(source, 0)) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        chunks = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def test_the_metrics_listener_follows_allow(trained_model: Path) -> None:
    with Server(trained_model, "--metrics", "127.0.0.1:0", "--allow", "127.0.0.1") as server:
        assert http_get(server.metrics, "/health", "127.0.0.1").startswith(b"HTTP/1.0 200 OK")
        assert http_get(server.metrics, "/health", "127.0.0.2") == b""  # closed before a byte is read
        server.wait_for_log("refused metrics connection from 127.0.0.2")


def open_sockets(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if os.readlink(fd).startswith("socket:"))


def test_idle_metrics_connections_are_bounded(trained_model: Path) -> None:
    """Connections that never send their request were each kept 30 s (--timeout): a few thousand
    used up the service's file descriptors, and spamc's connections with them. At most
    HTTP_WAITING are kept, the oldest closed first; a scrape still gets its answer."""
    with Server(trained_model, "--metrics", "127.0.0.1:0") as server:
        host, _, port = server.metrics.rpartition(":")
        before = open_sockets(server.process.pid)
        idle = [socket.create_connection((host, int(port)), timeout=30) for _ in range(200)]
        try:
            time.sleep(1)
            held = open_sockets(server.process.pid) - before
            assert held <= HTTP_WAITING, held
            assert idle[0].recv(10) == b""  # the oldest was closed
            assert http_get(server.metrics, "/health", "127.0.0.1").startswith(b"HTTP/1.0 200 OK")
        finally:
            for conn in idle:
                conn.close()


def test_a_content_length_with_thousands_of_digits_is_76(trained_model: Path) -> None:
    with Server(trained_model) as server:
        raw = b"CHECK SPAMC/1.5\r\nContent-length: " + b"9" * 5000 + b"\r\n\r\n"
        reply = request(server.address, raw)
    assert reply.startswith(b"SPAMD/1.0 76 Bad header line: (Content-Length too large)"), reply
    assert "Traceback" not in server.log()


def test_a_content_length_with_thousands_of_leading_zeros_is_its_number() -> None:
    """Leading zeros are no size: 5,000 of them before 4878 passed the digit check, then int()
    refused more than 4,300 digits and the request got ``70 Internal error``."""
    message = b"Subject: zeros\r\n\r\n" + b"z" * 4860
    raw = b"CHECK SPAMC/1.5\r\nContent-length: " + b"0" * 5000 + b"%d\r\n\r\n" % len(message) + message

    async def read() -> protocol.Request | None:
        reader = asyncio.StreamReader(limit=64 * 1024)
        reader.feed_data(raw)
        reader.feed_eof()
        return await protocol.read_request(reader, 512_000)

    got = asyncio.run(read())
    assert got is not None and got.message == message


def test_the_first_line_timeout_says_its_own_seconds(trained_model: Path) -> None:
    """The first line must come within 5 s (--timeout 30 is for the rest): the reply said 30."""
    with Server(trained_model) as server:
        reply = request(server.address, b"", shut=False)
    assert reply == b"SPAMD/1.0 79 Timeout: (5 second socket timeout reading input from client)\r\n", reply


def test_too_many_connections_is_not_a_log_line_each(trained_model: Path) -> None:
    """Each 75 (no slot, no waiting place) wrote a warning: 57,022 lines in one flood. Now one now
    and then, with how many were left out."""
    with Server(trained_model, "--max-connections", "1") as server:
        held = socket.create_connection(server.address, timeout=30)  # takes the one slot...
        held.sendall(b"CHECK SPAMC/1.5\r\n")  # ...and waits (--timeout 30) for its headers
        waiting = socket.create_connection(server.address, timeout=30)
        try:
            waiting.sendall(b"CHECK SPAMC/1.5\r\n")  # the one waiting place
            replies = [request(server.address, b"PING SPAMC/1.5\r\n\r\n") for _ in range(40)]
            server.wait_for_log("too many connections: answered")
            log = server.log()
        finally:
            held.close()
            waiting.close()
    busy = b"SPAMD/1.0 75 Too many connections\r\n"
    assert sum(reply == busy for reply in replies) >= 38, replies
    assert 1 <= log.count("too many connections") <= 4, log[-3000:]


def test_sigterm_with_idle_connections_exits_at_once(trained_model: Path) -> None:
    with Server(trained_model) as server:  # --timeout 30: an idle connection could wait that long
        idle = [socket.create_connection(server.address, timeout=30) for _ in range(3)]
        server.send_signal(signal.SIGTERM)
        code = server.process.wait(20)  # far below the 30 s an idle connection had before
        for conn in idle:
            conn.close()
    assert code == 0, server.log()


def test_a_user_header_with_terminal_escapes_is_logged_escaped(trained_model: Path) -> None:
    """spamd's User: is the client's to choose: C1 codes in it (``\\x9b``, a terminal's CSI) were
    written into the request's log line as they came, for whoever reads the log on a terminal."""
    user = "bob\u009b2J\u009b31mx"
    message = b"Subject: hi\r\n\r\nhello\r\n"
    raw = (
        f"CHECK SPAMC/1.5\r\nUser: {user}\r\nContent-length: {len(message)}\r\n\r\n".encode("latin-1")
        + message
    )
    with Server(trained_model) as server:
        reply = request(server.address, raw)
        assert reply.startswith(b"SPAMD/1.1 0 EX_OK"), reply
        server.wait_for_log("user=bob")
        log = server.log()
    assert "user=bob\\x9b2J\\x9b31mx" in log, log[-500:]
    assert "\u009b" not in log
