"""The smaller hardening items: the metrics listener follows --allow and keeps few idle
connections, a Content-length with too many digits is a protocol error (76), and SIGTERM with idle
connections open exits at once."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from support.spamd_server import Server, request

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
