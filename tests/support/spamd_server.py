"""A real ``spamfilter serve`` process for the service's tests: started on a free port, its log
collected, stopped with a signal."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LISTENING = re.compile(r"listening on (\S+)")
MILTER_LISTENING = re.compile(r"listening on (.+?) \(milter protocol\)")
METRICS = re.compile(r"metrics on http://(\S+)/metrics")
START_TIMEOUT = 60.0


class Server:
    """``spamfilter serve ARGS`` in a child process. ``address``: ``(host, port)`` of its first TCP
    listener; ``log()``: everything it wrote to stderr so far. ``milter``: addresses passed as
    ``--milter`` (waited for too; ``milter_address`` is the first TCP one)."""

    def __init__(
        self,
        model: Path,
        *args: str,
        listen: tuple[str, ...] = ("127.0.0.1:0",),
        milter: tuple[str, ...] = (),
        start_timeout: float = START_TIMEOUT,
        prefix: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        """``prefix``: a command the server runs under (e.g. support.as_unprivileged_user());
        ``env``: its environment (this process's by default)."""
        self.start_timeout = start_timeout  # a benchmark's large model may take longer to load
        command = [*prefix, sys.executable, "-m", "spamfilter", "serve", "--model", str(model)]
        for address in listen:
            command += ["--listen", address]
        for address in milter:
            command += ["--milter", address]
        self.process = subprocess.Popen(
            [*command, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        self.listening = self._wait_for(LISTENING, len(listen) + len(milter))
        milters = self._wait_for(MILTER_LISTENING, len(milter)) if milter else []
        first_milters = {where.split(",")[0] for where in milters}
        tcp = [
            where
            for where in self.listening
            if not where.startswith("unix:") and where.rstrip(",") not in first_milters
        ]
        self.address = _split(tcp[0]) if tcp else ("", 0)
        milter_tcp = [where for where in milters if not where.startswith("unix:")]
        self.milter_address = _split(milter_tcp[0]) if milter_tcp else ("", 0)
        self.metrics = self._wait_for(METRICS, 1)[0] if "--metrics" in args else ""

    @property
    def port(self) -> int:
        return self.address[1]

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self._lines.append(raw.decode("utf-8", "replace"))

    def log(self) -> str:
        return "".join(self._lines)

    def _wait_for(self, pattern: re.Pattern[str], count: int) -> list[str]:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            found = [m.group(1) for m in pattern.finditer(self.log())]
            if len(found) >= count:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the server did not start (exit {self.process.returncode}):\n{self.log()}")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged:\n{self.log()}")
            time.sleep(0.05)

    def send_signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return self.process.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@functools.cache
def _filter_email(model: str, message: bytes, *options: str) -> bytes:
    done = subprocess.run(
        [sys.executable, "-m", "spamfilter", "filter", "--format", "email", "-q", "-m", model, *options],
        input=message,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def filter_email(model: Path, message: bytes, *options: str) -> bytes:
    """What ``spamfilter filter --format email [OPTIONS]`` writes for the message (a real run,
    cached: the same message, model and options give the same bytes)."""
    return _filter_email(str(model), message, *options)


def _split(where: str) -> tuple[str, int]:
    host, _, port = where.split(",")[0].strip().rpartition(":")
    return host.strip("[]"), int(port)


def request(address: tuple[str, int], data: bytes, timeout: float = 30.0, shut: bool = True) -> bytes:
    """Send raw bytes, half-close, and read the whole reply (a hand-written client)."""
    with socket.create_connection(address, timeout=timeout) as conn:
        conn.sendall(data)
        if shut:
            conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def spamd_request(command: str, message: bytes = b"", version: str = "1.5", **headers: str) -> bytes:
    lines = [f"{command} SPAMC/{version}"]
    if command not in ("PING", "SKIP"):
        lines.append(f"Content-length: {len(message)}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + message


@contextlib.contextmanager
def service_in_thread(settings: Any, scorer: Any) -> Iterator[list[str]]:
    """A ``SpamdService`` run in this process on a thread of its own (signals stay with the main
    thread), for a model that is a test's stand-in; yields what its listeners bound."""
    import asyncio
    import logging

    from spamfilter.service.server import SpamdService

    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            service = SpamdService(settings, scorer, lambda: scorer, logging.getLogger("test-serve"))
            holder["service"], holder["loop"] = service, asyncio.get_running_loop()
            task = asyncio.create_task(service.run(handle_signals=False))
            while len(service.bound) < len(settings.listen) + len(settings.milter) and not task.done():
                await asyncio.sleep(0.01)
            ready.set()
            await task

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30), "the in-process service did not start"
    try:
        yield list(holder["service"].bound)
    finally:
        holder["loop"].call_soon_threadsafe(holder["service"].stop)
        thread.join(30)
        assert not thread.is_alive()
