"""The service under faults: stalled, slow, oversized, garbage and vanishing clients, a damaged
model on SIGHUP, SIGTERM under load, peers outside the allow-list, and the access options (unix
socket mode, TLS). Real server processes and Debian's spamc, as in test_serve.py."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiospamc
import pytest
from conftest import StandIn, default_model_file, make_email
from support import require_tool
from support.spamd_server import Server, request, service_in_thread, spamd_request

from spamfilter.runtime import Classifier
from spamfilter.service.access import parse_address, parse_networks
from spamfilter.service.server import ServiceSettings

SPAM = make_email("You have WON", "WINNER!! You have won a £1000 prize. Call 09061701461 to claim now")
HAM = make_email("lunch", "Are we still meeting for lunch tomorrow at noon? I'll bring the notes.")


@pytest.fixture(scope="module")
def spamc() -> str:
    return require_tool("spamc", "spamc")


def spamc_run(
    spamc: str, address: tuple[str, int], message: bytes, *options: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [spamc, "-d", address[0], "-p", str(address[1]), *options],
        input=message,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def strict_server(trained_model: Path):
    """Short timeout, small size cap, few connections: the limits are reached quickly."""
    args = ("--timeout", "1", "--max-size", "4000", "--max-connections", "2")
    with Server(trained_model, *args) as running:
        yield running


def test_stalled_client_times_out_while_others_are_served(strict_server: Server) -> None:
    stalled = socket.create_connection(strict_server.address, timeout=10)
    stalled.sendall(b"PROCESS SPAMC/1.5\r\nContent-length: 500\r\n\r\nonly part of it")
    started = time.monotonic()
    # Served meanwhile, though one of the two connection slots is taken.
    assert request(strict_server.address, spamd_request("CHECK", HAM)).startswith(b"SPAMD/1.1 0 EX_OK")
    reply = stalled.recv(4096)
    waited = time.monotonic() - started
    stalled.close()
    assert reply.startswith(b"SPAMD/1.0 79 Timeout: (1 second socket timeout"), reply
    assert waited < 10


def test_a_trickling_client_is_cut_off_by_the_whole_request_deadline(strict_server: Server) -> None:
    # One byte every 0.3 s never idles a read for long: the deadline is for the whole request.
    with socket.create_connection(strict_server.address, timeout=10) as slow:
        started = time.monotonic()
        for byte in b"PROCESS SPAMC/1.5\r\nContent-length: 10\r\n":
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.3)
            if time.monotonic() - started > 3:
                break
        reply = slow.recv(4096)
    assert reply.startswith(b"SPAMD/1.0 79 Timeout"), reply


def test_oversized_message(strict_server: Server, spamc: str) -> None:
    big = make_email("big", "word " * 2000)  # over the server's 4000 bytes
    reply = request(strict_server.address, spamd_request("PROCESS", big))
    assert reply.startswith(b"SPAMD/1.0 69 Service Unavailable: message of %d bytes is over" % len(big))
    # spamc (allowed to send it with -s) falls back: the message is delivered untagged.
    done = spamc_run(spamc, strict_server.address, big, "-s", "100000")
    assert (done.returncode, done.stdout) == (0, big)
    # Without Content-length (protocol 1.0) the cap holds too.
    unsized = request(strict_server.address, b"PROCESS SPAMC/1.0\r\n" + big)
    assert unsized.startswith(b"SPAMD/1.0 69 Service Unavailable: message of")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GET / HTTP/1.0\r\n\r\n", b"SPAMD/1.0 76 Bad header line: GET / HTTP/1.0"),
        (b"\x00\xff\xfe garbage\n", b"SPAMD/1.0 76 Bad header line: ?"),
        (b"FROBNICATE SPAMC/1.5\r\n\r\n", b"SPAMD/1.0 76 Bad header line: FROBNICATE"),
        (b"CHECK SPAMC/1.5\r\nContent-length: ten\r\n\r\n", b"SPAMD/1.0 76 Bad header line: (Content-Length"),
        (b"CHECK SPAMC/1.5\r\nno colon here\r\n\r\n", b"SPAMD/1.0 76 Bad header line: (header not in"),
        (b"CHECK SPAMC/1.5\r\n" + b"X-A: b\r\n" * 300 + b"\r\n", b"SPAMD/1.0 76 Bad header line: (too many"),
        (
            b"CHECK SPAMC/1.5\r\nContent-length: 900\r\n\r\nshort",
            b"SPAMD/1.0 76 Bad header line: (Content-Length",
        ),
        (b"CHECK SPAMC/1.5\r\nContent-length: 9", b"SPAMD/1.0 76 Bad header line: (closed in the middle"),
        (b"CHECK SPAMC/1.5\r\n", b"SPAMD/1.0 76 Bad header line: (EOF during headers)"),
        (b"CHECK SPAMC/1.5\r\nUser: a\x01b\r\n\r\n", b"SPAMD/1.0 76 Bad header line: (User header"),
        (b"CHECK SPAMC/1.5\r\nContent-length: \xb2\r\n\r\n", b"SPAMD/1.0 76 Bad header line: (Content-"),
        (b"X" * 70000 + b"\r\n", b"SPAMD/1.0 76 Bad header line: (line too long)"),
    ],
)
def test_garbage_and_truncated_requests_get_protocol_errors(
    strict_server: Server, data: bytes, expected: bytes
) -> None:
    reply = request(strict_server.address, data)
    assert reply.startswith(expected), reply
    assert reply.count(b"\n") == 1  # one line, then the connection closes


def test_a_client_that_hangs_up_mid_request_affects_nothing_else(strict_server: Server) -> None:
    for cut in (5, 30, 60):
        with socket.create_connection(strict_server.address, timeout=10) as gone:
            gone.sendall(spamd_request("PROCESS", HAM)[:cut])
            gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        # abortive close (RST) right after sending part of a request
    assert request(strict_server.address, spamd_request("CHECK", SPAM)).startswith(b"SPAMD/1.1 0 EX_OK")
    assert strict_server.process.poll() is None


def test_connections_over_the_cap_wait_for_a_slot(strict_server: Server) -> None:
    holders = [socket.create_connection(strict_server.address, timeout=10) for _ in range(2)]
    for holder in holders:
        holder.sendall(b"CHECK SPAMC/1.5\r\n")  # both slots busy until they time out (1 s)
    reply = request(strict_server.address, spamd_request("CHECK", HAM))
    assert reply.startswith(b"SPAMD/1.1 0 EX_OK")  # waited for a slot, then served
    for holder in holders:
        assert holder.recv(4096).startswith(b"SPAMD/1.0 79 Timeout")
        holder.close()


def test_sighup_refuses_a_damaged_model_and_takes_a_good_one(
    trained_model: Path, tmp_path: Path, spamc: str
) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    with Server(model) as running:
        before = spamc_run(spamc, running.address, SPAM, "-c").stdout
        onnx = default_model_file(model)
        good = onnx.read_bytes()
        onnx.write_bytes(good[: len(good) // 2])  # a truncated copy, as a half-finished deploy leaves it
        running.send_signal(signal.SIGHUP)
        running.wait_for_log("reload refused")
        assert spamc_run(spamc, running.address, SPAM, "-c").stdout == before  # the old model serves
        onnx.write_bytes(good)
        running.send_signal(signal.SIGHUP)
        running.wait_for_log(f"reloaded {model}")
        assert spamc_run(spamc, running.address, SPAM, "-c").stdout == before
        assert running.stop() == 0
    lines = running.log().splitlines()
    refused = [line for line in lines if "reload refused" in line]
    assert len(refused) == 1 and onnx.name in refused[0], refused


def test_sigterm_under_load_answers_every_request_taken(trained_model: Path, spamc: str) -> None:
    messages = [make_email(f"note {i}", f"message {i}: WINNER call 0906170 or lunch") for i in range(1000)]
    with Server(trained_model) as running:
        address = running.address

        def stop_midway() -> None:
            while running.log().count("PROCESS from") < 200 and running.process.poll() is None:
                time.sleep(0.01)
            running.send_signal(signal.SIGTERM)

        stopper = threading.Thread(target=stop_midway)
        stopper.start()
        with ThreadPoolExecutor(16) as pool:
            # Once the server is gone, one connection attempt each (spamc's default is 3, 1 s apart).
            retry = ("--connect-retries", "1", "--retry-sleep", "0")
            outputs = list(pool.map(lambda m: spamc_run(spamc, address, m, *retry), messages))
        stopper.join()
        assert running.process.wait(60) == 0
    log = running.log()
    tagged = [out for out in outputs if b"X-Spam-Flag:" in out.stdout]
    untouched = [out for out, message in zip(outputs, messages, strict=True) if out.stdout == message]
    assert len(tagged) + len(untouched) == len(messages)  # no message lost or damaged
    assert all(out.returncode == 0 for out in outputs)
    assert 200 <= len(tagged) < len(messages), "the stop came after the whole load"
    # Every request the server took was answered: each "ok" is a reply that spamc used. A request
    # whose connection shutdown closed as it arrived is logged "closed" and spamc delivers the
    # message untouched.
    answered = re.findall(r"PROCESS from 127\.0\.0\.1:\d+: ok", log)
    assert len(answered) == len(tagged), log[-2000:]
    assert "SIGTERM: no new connections" in log and log.rstrip().endswith("stopped")


def test_peer_outside_the_allow_list_is_refused_before_a_byte_is_read(
    trained_model: Path, spamc: str
) -> None:
    with Server(trained_model, "--allow", "192.0.2.0/24,2001:db8::/32") as running:
        with socket.create_connection(running.address, timeout=10) as conn:
            conn.sendall(b"PING SPAMC/1.5\r\n\r\n")
            try:
                answer = conn.recv(4096)
            except ConnectionResetError:
                answer = b""
        assert answer == b""
        done = spamc_run(spamc, running.address, SPAM)
        assert (done.returncode, done.stdout) == (0, SPAM)  # spamc's fallback: delivered untagged
        running.wait_for_log("refused connection from 127.0.0.1")
        assert "PING from" not in running.log()


def test_unix_socket_with_mode(trained_model: Path, tmp_path: Path, spamc: str) -> None:
    path = tmp_path / "spamd.sock"
    # Giving a socket away needs root (CI's case); another user can only name himself.
    owner = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    args = ("--socket-mode", "0600", "--socket-owner", owner)
    with Server(trained_model, *args, listen=(f"unix:{path}",)) as running:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.stat().st_uid == pwd.getpwnam(owner).pw_uid
        done = subprocess.run([spamc, "-U", str(path), "-c"], input=SPAM, capture_output=True, timeout=60)
        assert done.returncode == 1 and done.stdout.endswith(b"/5.0\n")
        assert running.stop() == 0
    assert not path.exists()  # removed on exit


def test_tls_with_spamc(trained_model: Path, tmp_path: Path, spamc: str) -> None:
    openssl = require_tool("openssl", "openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    with Server(trained_model, "--tls-cert", str(cert), "--tls-key", str(key)) as running:
        done = spamc_run(spamc, running.address, SPAM, "-S", "-c")
        assert done.returncode == 1 and done.stdout.endswith(b"/5.0\n"), done.stderr
        plain = spamc_run(spamc, running.address, SPAM)  # no TLS: no answer, fallback
        assert plain.stdout == SPAM
        # A client that cannot half-close TLS and reads to the end (aiospamc) gets close_notify
        # right after the reply, not after the server's linger.
        started = time.monotonic()
        pong = asyncio.run(aiospamc.ping(host=running.address[0], port=running.port, verify=False))
        assert pong.message == "PONG" and time.monotonic() - started < 1.5
        context = ssl.create_default_context(cafile=str(cert))
        raw = socket.create_connection(running.address, timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as conn:
            conn.sendall(b"PING SPAMC/1.5\r\n\r\n")
            assert conn.recv(100) == b"SPAMD/1.5 0 PONG\r\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "nonsense"], "--listen nonsense: expected HOST:PORT"),
        (["--allow", "not-a-net"], "--allow not-a-net: not an address or network"),
        (["--socket-mode", "999"], "not an octal mode"),
        (["--metrics", "x"], "--metrics x: expected HOST:PORT"),
        (["--metrics", "unix:/tmp/m.sock"], "--metrics unix:/tmp/m.sock: expected HOST:PORT"),
    ],
)
def test_bad_options_are_one_line_usage_errors(trained_model: Path, args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "spamfilter", "serve", "--model", str(trained_model), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_port_in_use_is_one_line(trained_model: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        command = ["serve", "--model", str(trained_model), "--listen", f"127.0.0.1:{port}"]
        done = subprocess.run(
            [sys.executable, "-m", "spamfilter", *command], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr


class FailingModel(StandIn):
    """The model failing at run time: a real onnxruntime failure cannot be caused on purpose."""

    def spam_probability(self, texts: Any) -> Any:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : simulated failure")


def test_a_model_error_is_an_error_reply_and_spamc_delivers_untagged(trained_model: Path, spamc: str) -> None:
    settings = ServiceSettings(listen=[parse_address("127.0.0.1:0")], allow=parse_networks(()), timeout=5)
    with service_in_thread(settings, FailingModel(Classifier.load(trained_model))) as bound:
        host, port = bound[0].rsplit(":", 1)
        done = spamc_run(spamc, (host, int(port)), SPAM)
        assert (done.returncode, done.stdout) == (0, SPAM)
        reply = request((host, int(port)), spamd_request("CHECK", SPAM))
        assert reply.startswith(b"SPAMD/1.0 69 Service Unavailable: model error: [ONNXRuntimeError]")
