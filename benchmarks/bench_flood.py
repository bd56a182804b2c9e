"""``spamfilter serve`` under floods from local peers: peak memory against the stated bound, and a
real spamc's answers while idle connections are held.

    .venv/bin/python -m benchmarks.bench_flood --model DIR
    .venv/bin/python -m benchmarks.bench_flood --model DIR --max-connections 16 --max-size 100000

One server (``--listen 127.0.0.1:0 --milter 127.0.0.1:0``) per scenario; its peak RSS is the
kernel's high-water mark (``VmHWM`` in ``/proc/PID/status``), read after the flood; "base" is the
mark after the model loaded and one message was classified. The floods come from one process on
many loopback addresses (127.0.0.2, 127.0.0.3, ...), which the service counts as one peer (its
uid); the server runs with ``--max-per-peer`` equal to ``--max-connections`` so that the flood can
fill every slot, as several local users together could: each scenario is the worst local users
can do to the memory.

- ``spamd headers``: 2 x --max-connections connections, each sending a request line and header
  lines until the server answers or 256 lines were sent, then a Content-length of --max-size and
  all but one byte of the body, and holding the connection.
- ``milter headers``: 2 x --max-connections milter connections, each negotiating and sending
  ``--packets`` HEADER packets of 256 KiB (the largest packet the milter reads), then holding.
- ``idle + spamc``: 200 connections that send nothing, then ``--spamc-runs`` real spamc runs with
  ``-t 2`` (spamc gives up after 2 s and passes the message on untagged): how many came back tagged,
  and the slowest.

The bound printed is ``max-connections x (max-size + 1 MiB) x 2 fronts`` above the base (1 MiB: a
milter packet of 256 KiB held up to three times while it is read and split, or 16 KiB of spamd
headers, plus the stream buffers); see the README's "Limits" under "Running as a service".
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.common import spamfilter_argv, table

MESSAGE = b"Subject: lunch\n\nAre we still meeting for lunch tomorrow at noon?\n"
LISTENING = re.compile(r"listening on (\S+):(\d+) \((spamd|milter) protocol\)")
MIB = 1 << 20
PACKET = 256 * 1024  # the largest milter packet the service reads
ALLOWANCE = 1 * MIB


class Served:
    def __init__(self, model: Path, max_connections: int, max_size: int) -> None:
        command = [
            *spamfilter_argv(), "serve", "--model", str(model), "--listen", "127.0.0.1:0",
            "--milter", "127.0.0.1:0", "--max-connections", str(max_connections),
            "--max-size", str(max_size), "--max-per-peer", str(max_connections), "--log-interval", "3600",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.ports: dict[str, int] = {}
        self.lines: list[str] = []
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            found = LISTENING.search(line)
            if found:
                self.ports[found.group(3)] = int(found.group(2))
            if len(self.ports) == 2:
                break
        if len(self.ports) != 2:
            raise SystemExit("the server did not start:\n" + "".join(self.lines))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def high_water(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(60)


def connect(port: int, index: int) -> socket.socket:
    source = f"127.0.{1 + index // 250}.{2 + index % 250}"
    conn = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    conn.settimeout(30)
    return conn


def check(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(b"CHECK SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(MESSAGE) + MESSAGE)
        conn.shutdown(socket.SHUT_WR)
        if not conn.recv(100).startswith(b"SPAMD/1.1 0"):
            raise SystemExit("the server did not classify a message")


def spamd_flood(port: int, count: int, max_size: int) -> Iterator[socket.socket]:
    for index in range(count):
        conn = connect(port, index)
        with contextlib.suppress(OSError):
            conn.sendall(b"PROCESS SPAMC/1.5\r\n")
            pad = b"X-Pad: " + b"p" * 1000 + b"\r\n"
            for _ in range(14):  # just under the 16 KiB of headers allowed
                conn.sendall(pad)
            conn.sendall(b"Content-length: %d\r\n\r\n" % max_size)
            conn.sendall(b"b" * (max_size - 1))
        yield conn


def milter_packet(command: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data) + 1) + command + data


def milter_flood(port: int, count: int, packets: int) -> Iterator[socket.socket]:
    optneg = milter_packet(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
    header = milter_packet(b"L", b"X-Pad\0" + b"h" * (PACKET - 16) + b"\0")
    for index in range(count):
        conn = connect(port, index)
        with contextlib.suppress(OSError):
            conn.sendall(optneg)
            conn.recv(100)
            for _ in range(packets):
                conn.sendall(header)
        yield conn


def spamc_runs(spamc: str, port: int, runs: int) -> tuple[int, float]:
    tagged, slowest = 0, 0.0
    for _ in range(runs):
        started = time.monotonic()
        done = subprocess.run(
            [spamc, "-d", "127.0.0.1", "-p", str(port), "-t", "2"],
            input=MESSAGE,
            capture_output=True,
            timeout=60,
        )
        slowest = max(slowest, time.monotonic() - started)
        tagged += b"X-Spam-Flag:" in done.stdout
    return tagged, slowest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--max-connections", type=int, default=64)
    parser.add_argument("--max-size", type=int, default=512_000)
    parser.add_argument(
        "--packets", type=int, default=32, help="256 KiB HEADER packets per milter connection"
    )
    parser.add_argument("--spamc-runs", type=int, default=20)
    args = parser.parse_args()
    connections, size = args.max_connections, args.max_size
    rows = []
    for scenario in ("spamd headers", "milter headers", "idle + spamc"):
        served = Served(args.model, connections, size)
        check(served.ports["spamd"])
        base = served.high_water()
        held: list[socket.socket] = []
        extra = "-"
        if scenario == "spamd headers":
            held = list(spamd_flood(served.ports["spamd"], 2 * connections, size))
        elif scenario == "milter headers":
            held = list(milter_flood(served.ports["milter"], 2 * connections, args.packets))
        else:
            held = [connect(served.ports["spamd"], i) for i in range(200)]
            spamc = shutil.which("spamc")
            if spamc is None:
                extra = "spamc not installed"
            else:
                tagged, slowest = spamc_runs(spamc, served.ports["spamd"], args.spamc_runs)
                extra = f"{tagged}/{args.spamc_runs} tagged, slowest {slowest:.2f} s"
        time.sleep(1.0)  # what was sent is read by now
        peak = served.high_water()
        for conn in held:
            conn.close()
        code = served.stop()
        bound = 2 * connections * (size + ALLOWANCE)
        rows.append([
            scenario, len(held), f"{base / MIB:.0f}", f"{peak / MIB:.0f}", f"{(peak - base) / MIB:.0f}",
            f"{bound / MIB:.0f}", extra, code,
        ])  # fmt: skip
    print(f"--max-connections {connections} --max-size {size}, model {args.model}", file=sys.stderr)
    headers = ["flood", "connections", "base MiB", "peak MiB", "growth MiB", "bound MiB", "spamc", "exit"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
