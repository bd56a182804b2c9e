"""The spamd-protocol daemon: latency, throughput and memory through real ``spamc`` processes
(and with ``--milter``, through milter connections as an MTA holds them).

    .venv/bin/python -m benchmarks.bench_serve --model DIR                   # spamfilter serve, sms + email
    .venv/bin/python -m benchmarks.bench_serve --model DIR --peer both       # and SpamAssassin's spamd
    .venv/bin/python -m benchmarks.bench_serve --model DIR --milter          # and serve's milter front
    .venv/bin/python -m benchmarks.bench_serve --peer spamd --concurrency 1,4 --messages 8   # a quick look
    .venv/bin/python -m benchmarks.bench_serve --model DIR --soak 100000 --concurrency 1 --messages 32

Each peer (``spamfilter serve``, or ``/usr/sbin/spamd`` with local tests only) is started on a free
loopback port, is ready when ``spamc -K`` answers, and is stopped with SIGTERM (it must exit 0).
At each concurrency, that many client threads each run ``spamc -d 127.0.0.1 -p PORT < msg`` in a loop
until ``--messages`` messages have been sent; every spamc run is timed (spawn to exit). A spamc failure,
or output without a fresh ``X-Spam-Status:`` (and for spamfilter ``X-Spam-Flag:``) header, counts as an
error: spamc passes a message through unchanged when it cannot get a verdict, so the old X-Spam-* headers
of the SpamAssassin corpus are removed from the messages first.

With ``--milter``, ``spamfilter serve`` also gets ``--milter 127.0.0.1:0`` (one server, both fronts;
the milter port is read from its log), and after the spamc levels each level runs again over the
milter protocol, with the same messages: that many client threads, each holding ONE milter connection
(as each of an MTA's smtpd processes does), opened and option-negotiated (``miltertest``, the MTA
side, version 6) before the clock starts, each sending its share of the messages over it and QUIT at
the end. A message is timed from its first header to the final end-of-message reply: the header
fields, end of headers, the body in chunks of at most 64 KB (CRLF line ends, as an MTA sends it), end
of message, then the verdict's actions and ACCEPT; the steps whose "no reply" bits are negotiated go
out without a wait, buffered into few writes, as Postfix sends them. So unlike the spamc figures it
includes no process spawn and no connection set-up per message: it is the daemon's own time per
message plus one loopback exchange. Replies without an X-Spam-Flag insert action, or that end in
anything but ACCEPT, count as an error. miltertest sends text as UTF-8: the few corpus messages that
are not UTF-8 are read as Latin-1, so their 8-bit bytes travel as two bytes each.

Messages: ``sms`` are the SMS Spam Collection's texts, each wrapped as a small RFC 822 message; ``email``
are the SpamAssassin corpus (ham, hard ham and spam, shuffled), without their mbox ``From `` lines and
without messages over spamc's 500 KB default size limit (spamc would pass those through unchecked).

Also measured, for comparison: the same spamc load against a trivial target that answers at once (what
the client costs, and the most this load generator can drive here), ``spamfilter filter`` in batch mode
over an mbox of the same messages (one process, best of ``--repeats``), and one ``spamfilter filter
--format email`` process per message (``--per-process`` messages, sequential). ``--soak N`` sends N
SMS-length messages through a few protocol connections of a Python client and prints the daemon's RSS
every 10 %; the RSS columns show that memory does not grow with the message count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
    SEED,
    SMS_FILE,
    add_common_args,
    build_model_dir,
    machine_line,
    run_child,
    table,
)

SPAMFILTER = [sys.executable, "-m", "spamfilter"]
SPAMC = shutil.which("spamc") or "/usr/bin/spamc"
SPAMD = "/usr/sbin/spamd"
SPAMASSASSIN_DATA = ROOT.parent / "shared" / "data" / "spamassassin"
MAILBOXES = ("easy_ham.mbox", "hard_ham.mbox", "spam.mbox")
SPAMC_MAX_BYTES = 500 * 1024  # spamc -s default: larger messages go through unchecked
HOST = "127.0.0.1"
SUMMARY = re.compile(r"(\d+) messages: .* in ([0-9.]+) s")
MILTER_LISTENING = re.compile(rf"listening on {re.escape(HOST)}:(\d+) \(milter protocol\)")
KINDS = ("sms", "email")
PEERS = {"spamfilter": ["spamfilter"], "spamd": ["spamd"], "both": ["spamfilter", "spamd"]}
TRIVIAL = "trivial"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- messages


def wrap_sms(number: int, text: str) -> bytes:
    """An SMS text as a small RFC 822 message."""
    return (
        f"From: sms-{number}@example.org\nTo: user@example.com\nSubject: SMS {number}\n"
        f"Date: Thu, 01 Jan 2004 00:00:00 +0000\nMessage-ID: <sms-{number}@bench.example.org>\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        f"{text}\n"
    ).encode()


def sms_messages() -> list[bytes]:
    """Every line of the SMS Spam Collection (tab-separated, no quoting), shuffled, wrapped."""
    texts = [
        line.split("\t", 1)[1] for line in SMS_FILE.read_text(encoding="utf-8").splitlines() if "\t" in line
    ]
    random.Random(SEED).shuffle(texts)
    return [wrap_sms(number, text) for number, text in enumerate(texts, 1)]


def email_messages() -> tuple[list[bytes], int]:
    """The SpamAssassin corpus shuffled, as single messages with their old X-Spam headers removed;
    and how many were left out for being over spamc's size limit."""
    from spamfilter.mail import remove_spam_headers, split_mbox

    messages, too_big = [], 0
    for name in MAILBOXES:
        with (SPAMASSASSIN_DATA / name).open("rb") as stream:
            for raw in split_mbox(stream):
                if raw.startswith(b"From "):
                    raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
                raw = remove_spam_headers(raw)
                if len(raw) > SPAMC_MAX_BYTES:
                    too_big += 1
                elif raw.strip():
                    messages.append(raw)
    random.Random(SEED).shuffle(messages)
    return messages, too_big


def write_messages(folder: Path, messages: Sequence[bytes]) -> list[Path]:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    paths = []
    for number, raw in enumerate(messages, 1):
        path = folder / f"{number:06d}.eml"
        path.write_bytes(raw)
        paths.append(path)
    return paths


def write_mbox(path: Path, messages: Sequence[bytes]) -> Path:
    """The messages as an mbox: a ``From `` line each, body ``From `` lines escaped, a blank line after."""
    with path.open("wb") as out:
        for raw in messages:
            body = re.sub(rb"(?m)^From ", b">From ", raw)
            out.write(b"From bench@example.org Thu Jan  1 00:00:00 2004\n" + body)
            out.write(b"\n" if body.endswith(b"\n") else b"\n\n")
    return path


def cycled(items: Sequence[Any], n: int) -> list[Any]:
    return [items[i % len(items)] for i in range(n)]


def tagging_problem(output: bytes, need_flag: bool) -> str | None:
    """None when the message's header block carries X-Spam-Status (and X-Spam-Flag where needed)."""
    ends = [i for i in (output.find(b"\n\n"), output.find(b"\r\n\r\n")) if i >= 0]
    header = b"\n" + output[: min(ends) if ends else len(output)].lower()
    if b"\nx-spam-status:" not in header:
        return "untagged (no X-Spam-Status)"
    if need_flag and b"\nx-spam-flag:" not in header:
        return "no X-Spam-Flag"
    return None


# --------------------------------------------------------------------------- process memory


def _status_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            values[name] = int(rest.split()[0])
    return values


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def memory(pid: int) -> dict[str, float]:
    """The server's own VmRSS and VmHWM, and over it and its children (spamd forks workers) the sum of
    VmRSS and of PSS (shared pages counted once), all MiB."""
    main = _status_kib(pid)
    tree_rss = tree_pss = processes = 0
    for each in [pid, *_descendants(pid)]:
        try:
            tree_rss += _status_kib(each).get("VmRSS", 0)
            tree_pss += _pss_kib(each)
            processes += 1
        except OSError:  # it exited meanwhile
            continue
    return {
        "rss_mib": main.get("VmRSS", 0) / 1024,
        "hwm_mib": main.get("VmHWM", 0) / 1024,
        "tree_rss_mib": tree_rss / 1024,
        "tree_pss_mib": tree_pss / 1024,
        "processes": processes,
    }


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def ping(port: int) -> bool:
    """Whether ``spamc -K`` gets an answer (it prints the status line, e.g. ``SPAMD/1.5 0``, and exits 0)."""
    argv = [SPAMC, "-K", "-d", HOST, "-p", str(port)]
    try:
        result = subprocess.run(argv, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and _pong(result.stdout) is None


@dataclass
class Server:
    """A spamd-protocol server in a child process, on its own loopback port."""

    name: str
    argv: list[str]
    port: int
    scratch: Path
    process: subprocess.Popen[bytes] | None = None
    ready_s: float = 0.0
    exit_code: int | None = None
    log_file: Any = None
    milter: bool = False  # also a milter listener, on the port its log names (milter_port)
    milter_port: int = 0

    def start(self, timeout: float) -> None:
        log(f"{self.name}: starting {shlex.join(self.argv)}")
        self.log_file = (self.scratch / f"{self.name}.log").open("wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT, cwd=ROOT
        )
        try:
            while not ping(self.port):
                if self.process.poll() is not None:
                    raise SystemExit(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
                if time.perf_counter() - started > timeout:
                    raise SystemExit(
                        f"{self.name} did not answer PING in {timeout:.0f} s:\n{self.log_tail()}"
                    )
                time.sleep(0.2)
            while self.milter and not self.milter_port:
                found = MILTER_LISTENING.search(self.log_tail(200_000))
                if found:
                    self.milter_port = int(found[1])
                elif self.process.poll() is not None or time.perf_counter() - started > timeout:
                    raise SystemExit(f"{self.name} has no milter listener:\n{self.log_tail()}")
                else:
                    time.sleep(0.05)
        except BaseException:  # not ready, or interrupted: leave nothing running
            if self.process.poll() is None:
                self.stop()
            raise
        self.ready_s = time.perf_counter() - started
        milter = f", milter on port {self.milter_port}" if self.milter else ""
        log(f"{self.name}: ready after {self.ready_s:.1f} s on port {self.port}{milter}")

    def memory(self) -> dict[str, float]:
        assert self.process is not None
        return memory(self.process.pid)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM; the exit code (after SIGKILL, when it did not exit in time: -9)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.exit_code = -signal.SIGKILL
        self.log_file.close()
        return self.exit_code

    def log_tail(self, chars: int = 3000) -> str:
        if not self.log_file.closed:
            self.log_file.flush()
        return (self.scratch / f"{self.name}.log").read_text(errors="replace")[-chars:]


def become_subreaper() -> None:
    """Orphans of the servers (spamd's children outlive their parent by a moment) become children of
    this process, to be reaped here (``reap_orphans``) rather than left as zombies."""
    import contextlib
    import ctypes

    pr_set_child_subreaper = 36
    with contextlib.suppress(OSError, AttributeError):  # not Linux
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def reap_orphans(timeout: float = 10) -> int:
    """Wait for the orphaned processes of a stopped server, SIGKILL what is left after ``timeout``;
    how many there were. Only called while no other child of this process runs."""
    deadline, reaped = time.monotonic() + timeout, 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # none left
            return reaped
        if pid:
            reaped += 1
        elif time.monotonic() < deadline:
            time.sleep(0.05)
        else:
            for child in _descendants(os.getpid()):
                log(f"killing {child}, left running by a stopped server")
                os.kill(child, signal.SIGKILL)
            deadline = time.monotonic() + timeout


def spamfilter_server(args: argparse.Namespace, model: Path, scratch: Path) -> Server:
    port = free_port()
    argv = [*SPAMFILTER, "serve", "--model", str(model), "--listen", f"{HOST}:{port}"]
    if args.milter:
        argv += ["--milter", f"{HOST}:0"]
    if args.batch_max is not None:
        argv += ["--batch-max", str(args.batch_max)]
    if args.batch_wait_ms is not None:
        argv += ["--batch-wait-ms", str(args.batch_wait_ms)]
    return Server("spamfilter", argv + (["--gpu"] if args.gpu else []), port, scratch, milter=args.milter)


def spamd_server(args: argparse.Namespace, scratch: Path) -> Server:
    """SpamAssassin's spamd: local tests only (-L, no DNS), no user configuration (-x), its helper home
    in the scratch folder (-H), logging to stderr; as root it must be told a user to run as (-u)."""
    port = free_port()
    home = scratch / "spamd-home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)  # readable by the user the children run as
    argv = [SPAMD, "-x", "-L", "-H", str(home), "--listen", f"{HOST}:{port}", "-s", "stderr"]
    argv += ["--max-children", str(args.spamd_children)]
    if os.geteuid() == 0:
        argv += ["-u", "nobody"]
    return Server("spamd", argv, port, scratch)


def trivial_server(scratch: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.bench_serve", "--trivial-target", str(port)]
    return Server(TRIVIAL, argv, port, scratch)


TRIVIAL_HEADERS = b"X-Spam-Flag: NO\nX-Spam-Status: No, score=0.0 required=5.0 tests=NONE\n"


def serve_trivial(port: int) -> None:
    """A spamd-protocol target that answers PING and PROCESS at once (no classification)."""
    import socketserver

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            verb = self.rfile.readline().split(b" ", 1)[0]
            if verb == b"PING":
                self.wfile.write(b"SPAMD/1.5 0 PONG\r\n")
                return
            length = 0
            while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if verb != b"PROCESS":
                self.wfile.write(b"SPAMD/1.5 76 Bad header line: only PING and PROCESS here\r\n")
                return
            out = TRIVIAL_HEADERS + self.rfile.read(length)
            self.wfile.write(b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\n\r\n" % len(out) + out)

    class Target(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 512

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Target((HOST, port), Handler) as target:
        target.serve_forever()


# --------------------------------------------------------------------------- spamc load


@dataclass
class Level:
    """One load level: ``clients`` threads running spamc until ``n`` messages were sent."""

    kind: str
    clients: int
    n: int
    errors: int
    wall_s: float
    latencies_s: list[float] = field(repr=False)
    first_error: str | None = None
    memory: dict[str, float] | None = None

    @property
    def rate(self) -> float:
        return self.n / self.wall_s

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of the per-message latencies."""
        ordered = sorted(self.latencies_s)
        return 1000 * ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]

    def summary(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "latencies_s"}
        data |= {"msgs_per_s": self.rate, "mean_ms": 1000 * sum(self.latencies_s) / len(self.latencies_s)}
        return data | {f"p{q}_ms": self.percentile_ms(q / 100) for q in (50, 90, 99, 100)}


def spamc_load(
    argv: list[str], inputs: Sequence[Path | None], n: int, clients: int, check: Callable[[bytes], str | None]
) -> Level:
    """Run ``argv`` (spamc) n times over ``inputs`` (stdin files, cycled) from ``clients`` threads."""
    lock = threading.Lock()
    indices = iter(range(n))
    results: list[tuple[float, str | None]] = []
    start = threading.Barrier(clients + 1)
    stopping = threading.Event()

    def client() -> None:
        start.wait()
        while not stopping.is_set():
            with lock:
                index = next(indices, None)
            if index is None:
                return
            path = inputs[index % len(inputs)]
            began = time.perf_counter()
            with open(path or os.devnull, "rb") as stdin:
                run = subprocess.run(argv, stdin=stdin, capture_output=True)
            seconds = time.perf_counter() - began
            problem = f"spamc exit {run.returncode}" if run.returncode else check(run.stdout)
            with lock:
                results.append((seconds, problem))

    return run_clients(client, clients, n, start, stopping, results)


def run_clients(
    client: Callable[[], None],
    clients: int,
    n: int,
    start: threading.Barrier,
    stopping: threading.Event,
    results: list[tuple[float, str | None]],
) -> Level:
    """Start ``clients`` threads running ``client``, time from the common start (``start``, a
    barrier they wait on too) to the last one's end; a stop signal sets ``stopping`` and lets each
    finish the message it has. ``start.wait()`` raises BrokenBarrierError if a client aborted it."""
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        _join(threads)
        raise
    began = time.perf_counter()
    try:
        _join(threads)
    except BaseException:  # Ctrl-C, SIGTERM: let each client finish its message, send no more
        stopping.set()
        _join(threads)
        raise
    wall = time.perf_counter() - began
    problems = [p for _, p in results if p]
    return Level("", clients, n, len(problems), wall, [s for s, _ in results], next(iter(problems), None))


def _join(threads: list[threading.Thread]) -> None:
    """Join with a timeout: a signal that lands on another thread is then still handled here soon."""
    for thread in threads:
        while thread.is_alive():
            thread.join(0.1)


def process_levels(
    server: Server, files: dict[str, list[Path]], args: argparse.Namespace, need_flag: bool
) -> list[Level]:
    argv = [SPAMC, "-d", HOST, "-p", str(server.port)]
    levels = []
    for kind, inputs in files.items():
        if args.warmup:
            spamc_load(argv, inputs, args.warmup, 1, lambda out: None)  # not counted
        for clients in args.concurrency:
            level = spamc_load(
                argv, inputs, args.messages, clients, lambda out: tagging_problem(out, need_flag)
            )
            level.kind = kind
            level.memory = server.memory()
            levels.append(level)
            p50, p99 = level.percentile_ms(0.5), level.percentile_ms(0.99)
            log(
                f"{server.name} {kind} x{clients}: {level.rate:.1f} msgs/s, p50 {p50:.0f} ms, "
                f"p99 {p99:.0f} ms, {level.errors} errors"
                + (f" (first: {level.first_error})" if level.first_error else "")
                + f", RSS {level.memory['rss_mib']:.0f} MiB"
            )
    ping = spamc_load([SPAMC, "-K", "-d", HOST, "-p", str(server.port)], [None], args.pings, 1, _pong)
    ping.kind = "PING"
    ping.memory = server.memory()
    return [*levels, ping]


def _pong(output: bytes) -> str | None:
    """spamc -K prints the answer's status line without its PONG: ``SPAMD/1.5 0``."""
    return None if re.match(rb"SPAMD/\d+\.\d+ 0\b", output) else f"bad PING answer {output[:40]!r}"


# --------------------------------------------------------------------------- milter load (--milter)


@dataclass
class MilterMessage:
    """A message as an MTA hands it to a milter: header fields (values with their leading space,
    folded lines joined with LF) and body chunks of at most 64 KB, CRLF line ends."""

    fields: list[tuple[str, str]]
    chunks: list[str]


def milter_message(raw: bytes) -> MilterMessage:
    from miltertest import constants as smfi

    try:
        text = raw.decode()
    except UnicodeDecodeError:  # miltertest sends str as UTF-8; see the module docstring
        text = raw.decode("latin-1")
    head, _, body = text.partition("\n\n")
    fields: list[tuple[str, str]] = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + "\n" + line)
        else:
            name, _, value = line.partition(":")
            fields.append((name, value))
    data = body.replace("\n", "\r\n").encode()
    chunks, begin = [], 0
    while begin < len(data):
        end = min(len(data), begin + smfi.MILTER_CHUNK_SIZE)
        while end < len(data) and data[end] & 0xC0 == 0x80:  # not inside a UTF-8 character
            end -= 1
        chunks.append(data[begin:end].decode())
        begin = end
    return MilterMessage(fields, chunks)


class Coalescing:
    """A socket written as Postfix writes its milter stream (a VSTREAM): the packets that get no
    reply are buffered and go out together, at 64 KB or before the next read. Without it each
    header would be a small segment of its own, held back by Nagle's algorithm (an artefact of
    this client, some 40 ms a message on loopback)."""

    def __init__(self, sock: socket.socket, limit: int = 1 << 16) -> None:
        self.sock, self.limit, self.pending = sock, limit, bytearray()

    def sendall(self, data: bytes) -> None:
        self.pending += data
        if len(self.pending) >= self.limit:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.sock.sendall(self.pending)
            self.pending.clear()

    def recv(self, size: int) -> bytes:
        self.flush()
        return self.sock.recv(size)

    def close(self) -> None:
        self.sock.close()


def milter_connect(port: int) -> Any:
    """A milter connection, option-negotiated as an MTA (every v6 action and step offered)."""
    import miltertest

    conn = miltertest.MilterConnection(Coalescing(socket.create_connection((HOST, port), timeout=300)))
    conn.optneg_mta()
    return conn


def milter_send(conn: Any, message: MilterMessage) -> str | None:
    """One message over ``conn``, as an MTA sends it; None when the replies insert X-Spam-Flag and
    end in ACCEPT."""
    from miltertest import constants as smfi

    flags = conn.protocol_flags
    header = conn._send if flags & smfi.SMFIP_NR_HDR else conn.send  # send waits for CONTINUE
    leading = bool(flags & smfi.SMFIP_HDR_LEADSPC)
    for name, value in message.fields:
        header(smfi.SMFIC_HEADER, name=name, value=value if leading else value.lstrip(" "))
    if not flags & smfi.SMFIP_NOEOH:
        (conn._send if flags & smfi.SMFIP_NR_EOH else conn.send)(smfi.SMFIC_EOH)
    body = conn._send if flags & smfi.SMFIP_NR_BODY else conn.send
    for chunk in message.chunks:
        body(smfi.SMFIC_BODY, buf=chunk)
    replies = conn.send_eom()
    if replies[-1][0] == smfi.SMFIR_QUARANTINE:  # miltertest stops there; the final reply follows
        replies.append(conn.recv())
    if not any(c == smfi.SMFIR_INSHEADER and a["name"].lower() == "x-spam-flag" for c, a in replies):
        return f"no X-Spam-Flag insert in {[c for c, _ in replies]}"
    if replies[-1][0] != smfi.SMFIR_ACCEPT:
        return f"ended with {replies[-1][0]!r}, not ACCEPT"
    return None


def milter_quit(conn: Any) -> None:
    """QUIT has no reply: the milter closes the connection."""
    import miltertest
    from miltertest import constants as smfi

    try:
        conn._send(smfi.SMFIC_QUIT)
        conn.recv(eof_ok=True)
    except (OSError, miltertest.MilterError, miltertest.codec.MilterProtoError):
        pass  # it was closed, or not at a message boundary: closed here either way
    finally:
        conn.sock.close()


def milter_load(port: int, messages: Sequence[MilterMessage], n: int, clients: int) -> Level:
    """n messages over ``clients`` milter connections, one per thread, opened before the clock starts."""
    import miltertest

    failures = (OSError, miltertest.MilterError, miltertest.codec.MilterProtoError)
    lock = threading.Lock()
    indices = iter(range(n))
    results: list[tuple[float, str | None]] = []
    start = threading.Barrier(clients + 1)
    stopping = threading.Event()
    refused: list[str] = []

    def client() -> None:
        try:
            conn = milter_connect(port)
        except failures as error:
            refused.append(f"{type(error).__name__}: {error}")
            start.abort()
            return
        try:
            try:
                start.wait()
            except threading.BrokenBarrierError:  # another client could not connect
                return
            while not stopping.is_set():
                with lock:
                    index = next(indices, None)
                if index is None:
                    return
                began = time.perf_counter()
                try:
                    if conn is None:  # the last one failed: as an MTA does, a new connection
                        conn = milter_connect(port)
                    problem = milter_send(conn, messages[index % len(messages)])
                except failures as error:
                    problem = f"{type(error).__name__}: {error}"
                    if conn is not None:
                        conn.sock.close()
                    conn = None
                seconds = time.perf_counter() - began
                with lock:
                    results.append((seconds, problem))
        finally:
            if conn is not None:
                milter_quit(conn)

    try:
        return run_clients(client, clients, n, start, stopping, results)
    except threading.BrokenBarrierError:
        raise SystemExit(f"no milter connection to {HOST}:{port}: {refused[0]}") from None


def milter_levels(server: Server, pools: dict[str, list[bytes]], args: argparse.Namespace) -> list[Level]:
    levels = []
    for kind in args.kind:
        messages = [milter_message(raw) for raw in pools[kind][: args.messages]]
        if args.warmup:
            milter_load(server.milter_port, messages, args.warmup, 1)  # not counted
        for clients in args.concurrency:
            level = milter_load(server.milter_port, messages, args.messages, clients)
            level.kind = kind
            level.memory = server.memory()
            levels.append(level)
            p50, p99 = level.percentile_ms(0.5), level.percentile_ms(0.99)
            log(
                f"{server.name} milter {kind} x{clients}: {level.rate:.1f} msgs/s, p50 {p50:.0f} ms, "
                f"p99 {p99:.0f} ms, {level.errors} errors"
                + (f" (first: {level.first_error})" if level.first_error else "")
                + f", RSS {level.memory['rss_mib']:.0f} MiB"
            )
    return levels


# --------------------------------------------------------------------------- the protocol, for --soak


def process_request(raw: bytes) -> bytes:
    return b"PROCESS SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(raw) + raw


def response_problem(data: bytes, need_flag: bool) -> str | None:
    head, separator, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if not separator or len(status) < 2 or not status[0].startswith(b"SPAMD/") or status[1] != b"0":
        return f"bad response {lines[0][:60]!r}"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and int(value) != len(body):
            return f"Content-length {int(value)} but {len(body)} bytes"
    return tagging_problem(body, need_flag)


async def soak(
    server: Server, messages: Sequence[bytes], total: int, connections: int, need_flag: bool
) -> list[dict[str, Any]]:
    """``total`` PROCESS requests, ``connections`` at a time (spamd answers one request per connection,
    so each request is a connection); a row with the server's memory at every 10 %."""
    requests = [process_request(raw) for raw in messages]
    marks = sorted({max(1, total * tenth // 10) for tenth in range(1, 11)})
    rows = [{"done": 0, "seconds": 0.0, "msgs_per_s": 0.0, "errors": 0, **server.memory()}]
    counter = iter(range(total))
    done = errors = 0
    first_error: str | None = None
    began = last_time = time.perf_counter()
    headers = ["messages", "%", "seconds", "msgs/s (interval)", "errors", "VmRSS MiB", "VmHWM MiB"]
    print(table(headers + ["tree PSS MiB"], []), flush=True)

    def print_row(row: dict[str, Any]) -> None:
        cells = [row["done"], f"{100 * row['done'] / total:.0f}", f"{row['seconds']:.1f}"]
        cells += [f"{row['msgs_per_s']:.0f}", row["errors"], f"{row['rss_mib']:.0f}", f"{row['hwm_mib']:.0f}"]
        print("| " + " | ".join(str(c) for c in [*cells, f"{row['tree_pss_mib']:.0f}"]) + " |", flush=True)

    print_row(rows[0])

    async def one(request: bytes) -> str | None:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            writer.write(request)
            await writer.drain()
            writer.write_eof()  # as spamc does: the server reads to the end of the message
            return response_problem(await reader.read(), need_flag)
        finally:
            writer.close()

    async def worker() -> None:
        nonlocal done, errors, first_error, last_time
        for index in counter:
            try:
                problem = await asyncio.wait_for(one(requests[index % len(requests)]), 300)
            except (OSError, asyncio.TimeoutError, ValueError) as error:
                problem = f"{type(error).__name__}: {error}"
            done += 1
            if problem:
                errors += 1
                first_error = first_error or problem
            if done in marks:
                now = time.perf_counter()
                rate = (done - rows[-1]["done"]) / (now - last_time)
                row = {"done": done, "seconds": now - began, "msgs_per_s": rate, "errors": errors}
                rows.append({**row, **server.memory()})
                last_time = now
                print_row(rows[-1])

    await asyncio.gather(*(worker() for _ in range(connections)))
    if first_error:
        print(f"\nfirst soak error: {first_error}")
    return rows


# --------------------------------------------------------------------------- spamfilter filter (comparison)


def filter_argv(model: Path, gpu: bool) -> list[str]:
    return [*SPAMFILTER, "filter", "--model", str(model)] + (["--gpu"] if gpu else [])


def batch_filter(model: Path, mbox: Path, n: int, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """One ``spamfilter filter`` process over an mbox of the messages; best of ``--repeats``."""
    argv = [*filter_argv(model, args.gpu), "--format", "mbox", str(mbox), "-o", str(scratch / "out.mbox")]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    runs = []
    for _ in range(args.repeats):
        run = run_child(argv, env=env)
        stderr = run.stderr.decode(errors="replace")
        found = SUMMARY.search(stderr)
        if run.returncode or not found or int(found[1]) != n:
            raise SystemExit(f"{shlex.join(argv)} failed ({run.returncode}):\n{stderr[-2000:]}")
        runs.append({"wall_s": run.seconds, "compute_s": float(found[2]), "rss_mib": run.max_rss_mib})
    best = min(runs, key=lambda r: r["wall_s"])
    return {"n": n, **best, "all_wall_s": [round(r["wall_s"], 2) for r in runs], "argv": shlex.join(argv)}


def process_per_message(model: Path, inputs: Sequence[Path], gpu: bool) -> dict[str, Any]:
    """``spamfilter filter --format email < msg``, one process per message, one after the other."""
    argv = [*filter_argv(model, gpu), "--format", "email"]
    seconds, errors, rss = [], 0, 0.0
    for path in inputs:
        run = run_child(argv, stdin_path=path)
        seconds.append(run.seconds)
        rss = max(rss, run.max_rss_mib)
        errors += bool(run.returncode or tagging_problem(run.stdout, need_flag=True))
    return {
        "n": len(inputs),
        "errors": errors,
        "wall_s": sum(seconds),
        "mean_s": sum(seconds) / len(seconds),
        "median_s": sorted(seconds)[len(seconds) // 2],
        "rss_mib": rss,
        "argv": shlex.join(argv) + " < MESSAGE",
    }


# --------------------------------------------------------------------------- reports


def model_line(model: Path) -> str:
    manifest = json.loads((model / "spamfilter.json").read_text())
    base = manifest.get("base_model", {})
    config = base.get("config", {})
    shape = "x".join(str(config.get(k, "?")) for k in ("n_layer", "n_embd", "n_head"))
    variants = ["fp32", *[v for v in manifest.get("variants", {}) if v != "fp32"]]
    return (
        f"model {model}: {base.get('architecture', '?')} (layers x width x heads {shape}, "
        f"weights: {base.get('weights', '?')}), pooling {manifest.get('pooling')}, "
        f"max_length {manifest.get('max_length')}, default variant {manifest.get('default_variant')} "
        f"(has {', '.join(variants)}), threshold {manifest.get('threshold')}"
    )


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def level_table(
    levels: list[Level], per_process: dict[str, dict[str, Any]] | None = None, with_memory: bool = True
) -> str:
    """Latency and throughput per level; with ``per_process``, the ratio of a process per message's
    time to the served time per message; with ``with_memory``, the server's memory after the level."""
    headers = ["messages", "clients", "n", "errors", "p50 ms", "p99 ms", "max ms", "msgs/s", "s/msg served"]
    if per_process is not None:
        headers.append("process-per-msg / served")
    if with_memory:
        headers += ["VmRSS MiB after", "tree PSS MiB"]
    rows = []
    for level in levels:
        served = level.wall_s / level.n
        row = [level.kind, level.clients, level.n, level.errors]
        row += [ms(level.percentile_ms(q)) for q in (0.5, 0.99, 1.0)]
        row += [f"{level.rate:.1f}", f"{served:.4f}"]
        if per_process is not None:
            pp = per_process.get(level.kind)
            row.append(f"{pp['mean_s'] / served:.1f}x" if pp else "-")
        if with_memory:
            memory = level.memory or {}
            row += [f"{memory.get('rss_mib', 0):.0f}", f"{memory.get('tree_pss_mib', 0):.0f}"]
        rows.append(row)
    return table(headers, rows)


def print_server(server: Server, levels: list[Level], per_process: dict[str, dict[str, Any]] | None) -> None:
    print(f"\n## {server.name}: `{shlex.join(server.argv)}`\n")
    print(f"ready (PING answered) {server.ready_s:.1f} s after start.\n")
    print(level_table(levels, per_process))
    print_first_errors(levels)
    print(flush=True)


def print_first_errors(levels: list[Level]) -> None:
    errors = [f"{lv.kind} x{lv.clients}: {lv.first_error}" for lv in levels if lv.first_error]
    if errors:
        print("\nfirst error per level: " + "; ".join(errors))


def comparison_table(
    kind: str,
    levels: dict[str, list[Level]],
    batch: dict[str, Any] | None,
    per_process: dict[str, Any] | None,
    milter: dict[str, list[Level]] | None = None,
) -> str:
    """msgs/s of every way for one kind of message."""
    headers = ["way", "clients", "n", "errors", "wall s", "msgs/s", "s/msg", "peak RSS MiB"]
    rows = []
    ways = [(f"{name} via spamc", name, measured) for name, measured in levels.items()]
    ways += [(f"{name} via milter", name, measured) for name, measured in (milter or {}).items()]
    for way, name, measured in ways:
        for level in measured:
            if level.kind == kind:
                peak = (level.memory or {}).get("hwm_mib")
                rows.append(
                    [
                        way,
                        level.clients,
                        level.n,
                        level.errors,
                        f"{level.wall_s:.2f}",
                        f"{level.rate:.1f}",
                        f"{level.wall_s / level.n:.4f}",
                        f"{peak:.0f}" if peak is not None and name != TRIVIAL else "-",
                    ]
                )
    if batch:
        rows.append(
            [
                "spamfilter filter, one process over an mbox",
                "-",
                batch["n"],
                0,
                f"{batch['wall_s']:.2f}",
                f"{batch['n'] / batch['wall_s']:.1f} ({batch['n'] / batch['compute_s']:.1f} own summary)",
                f"{batch['wall_s'] / batch['n']:.4f}",
                f"{batch['rss_mib']:.0f}",
            ]
        )
    if per_process:
        rows.append(
            [
                "spamfilter filter --format email, a process per message",
                1,
                per_process["n"],
                per_process["errors"],
                f"{per_process['wall_s']:.2f}",
                f"{1 / per_process['mean_s']:.2f}",
                f"{per_process['mean_s']:.4f} (median {per_process['median_s']:.4f})",
                f"{per_process['rss_mib']:.0f}",
            ]
        )
    return table(headers, rows)


def memory_table(
    levels: dict[str, list[Level]], servers: dict[str, Server], milter: dict[str, list[Level]] | None = None
) -> str:
    headers = ["server", "after", "VmRSS MiB", "VmHWM MiB", "tree RSS MiB", "tree PSS MiB", "processes"]
    rows = []
    for name, measured in levels.items():
        if name == TRIVIAL:
            continue
        fronts = [("", measured), (" via milter", (milter or {}).get(name, []))]
        for front, level in [(front, level) for front, each in fronts for level in each]:
            memory = level.memory or {}
            rows.append(
                [
                    name,
                    f"{level.kind} x{level.clients}{front} ({level.n} requests)",
                    *(
                        f"{memory.get(k, 0):.0f}"
                        for k in ("rss_mib", "hwm_mib", "tree_rss_mib", "tree_pss_mib")
                    ),
                    memory.get("processes", "-"),
                ]
            )
        rows.append([name, "SIGTERM", "-", "-", "-", "-", f"exit {servers[name].exit_code}"])
    return table(headers, rows)


def peer_table(levels: dict[str, list[Level]]) -> str:
    """spamfilter against spamd, level by level."""
    ours = {(lv.kind, lv.clients): lv for lv in levels["spamfilter"]}
    headers = ["messages", "clients", "spamfilter msgs/s", "spamd msgs/s", "ratio"]
    headers += ["spamfilter p50 / p99 ms", "spamd p50 / p99 ms"]
    rows = []
    for theirs in levels["spamd"]:
        mine = ours.get((theirs.kind, theirs.clients))
        if mine is None:
            continue
        rows.append(
            [
                theirs.kind,
                theirs.clients,
                f"{mine.rate:.1f}",
                f"{theirs.rate:.1f}",
                f"{mine.rate / theirs.rate:.1f}x",
                f"{ms(mine.percentile_ms(0.5))} / {ms(mine.percentile_ms(0.99))}",
                f"{ms(theirs.percentile_ms(0.5))} / {ms(theirs.percentile_ms(0.99))}",
            ]
        )
    return table(headers, rows)


def front_table(spamc: list[Level], milter: list[Level]) -> str:
    """One server through spamc (a process and a connection per message) and through milter
    (a held connection per client), level by level."""
    by_level = {(lv.kind, lv.clients): lv for lv in spamc}
    headers = ["messages", "clients", "spamc msgs/s", "milter msgs/s", "milter / spamc"]
    headers += ["spamc p50 / p99 ms", "milter p50 / p99 ms"]
    rows = []
    for theirs in milter:
        mine = by_level.get((theirs.kind, theirs.clients))
        if mine is None:
            continue
        rows.append(
            [
                theirs.kind,
                theirs.clients,
                f"{mine.rate:.1f}",
                f"{theirs.rate:.1f}",
                f"{theirs.rate / mine.rate:.1f}x",
                f"{ms(mine.percentile_ms(0.5))} / {ms(mine.percentile_ms(0.99))}",
                f"{ms(theirs.percentile_ms(0.5))} / {ms(theirs.percentile_ms(0.99))}",
            ]
        )
    return table(headers, rows)


# --------------------------------------------------------------------------- main


def int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def kind_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or set(values) - set(KINDS):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(KINDS)}")
    return values


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)  # --workdir holds the message files; --repeats applies to the batch filter runs
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model directory for spamfilter serve and filter (default with the spamfilter peer: the random "
        "GPT-2-small benchmark model, built once into --workdir; with --peer spamd: no filter comparisons)",
    )
    parser.add_argument("--peer", choices=list(PEERS), default="spamfilter", help="the server(s) to load")
    parser.add_argument(
        "--concurrency", type=int_list, default=[1, 4, 16, 64], help="clients, e.g. 1,4,16,64"
    )
    parser.add_argument("--messages", type=int, default=256, help="messages per level (default 256)")
    parser.add_argument("--kind", type=kind_list, default=list(KINDS), help="sms,email (default both)")
    parser.add_argument(
        "--milter",
        action="store_true",
        help="also serve milter (spamfilter serve --milter) and run every level over it, a held "
        "connection per client (needs the spamfilter peer)",
    )
    parser.add_argument("--gpu", action="store_true", help="spamfilter serve --gpu (and the filter runs)")
    parser.add_argument("--batch-max", type=int, default=None, help="passed to spamfilter serve")
    parser.add_argument("--batch-wait-ms", type=float, default=None, help="passed to spamfilter serve")
    parser.add_argument("--spamd-children", type=int, default=5, help="spamd --max-children (its default 5)")
    parser.add_argument("--soak", type=int, default=0, help="also send N SMS-length messages per server")
    parser.add_argument("--soak-connections", type=int, default=4, help="concurrent soak connections")
    parser.add_argument(
        "--per-process", type=int, default=20, help="messages for the process-per-message way"
    )
    parser.add_argument("--warmup", type=int, default=4, help="uncounted messages per kind before the levels")
    parser.add_argument("--pings", type=int, default=20, help="spamc -K runs per server (the PING row)")
    parser.add_argument("--no-client-cost", action="store_true", help="skip spamc against the trivial target")
    parser.add_argument("--no-filter", action="store_true", help="skip the spamfilter filter comparisons")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for PING")
    parser.add_argument("--json", type=Path, default=None, help="save the results here")
    parser.add_argument("--trivial-target", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.milter and "spamfilter" not in PEERS[args.peer]:
        parser.error("--milter needs the spamfilter peer (--peer spamfilter or both)")
    return args


def main() -> None:
    args = parse_args()
    if args.trivial_target:
        serve_trivial(args.trivial_target)
        return
    workdir: Path = args.workdir.resolve()
    model: Path | None = args.model.resolve() if args.model else None
    json_path: Path | None = args.json.resolve() if args.json else None
    os.chdir(ROOT)
    become_subreaper()
    # SIGTERM ends the run as Ctrl-C does: the servers are stopped and the scratch folder removed
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    peers = PEERS[args.peer]
    if not Path(SPAMC).is_file() or ("spamd" in peers and not Path(SPAMD).is_file()):
        raise SystemExit(f"needs {SPAMC}" + (f" and {SPAMD}" if "spamd" in peers else ""))
    if model is None and "spamfilter" in peers:
        model = build_model_dir(workdir, "last-token", log, quantize=None if args.gpu else "int8")
    elif model is None and not args.no_filter:
        log("no --model: the spamfilter filter comparisons are left out")
    if args.gpu:
        import torch  # machine_line names the GPU when torch is loaded

        if not torch.cuda.is_available():
            raise SystemExit("--gpu: torch sees no CUDA device")

    from spamfilter.runtime import cpu_instruction_set

    command = shlex.join(sys.orig_argv)
    spamc_version = subprocess.run([SPAMC, "-V"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"machine: {machine_line()}; int8 kernels: {cpu_instruction_set()}")
    if model:
        print(model_line(model))
    print(f"command: {command}")
    print(f"client: {spamc_version} ({SPAMC}), one process per message; {args.messages} messages per level")
    if args.milter:
        from importlib.metadata import version

        print(f"milter client: miltertest {version('miltertest')}, one held connection per client thread")
    print()

    pools: dict[str, list[bytes]] = {}
    if "sms" in args.kind or args.soak:
        pools["sms"] = sms_messages()
    if "email" in args.kind:
        pools["email"], too_big = email_messages()
        print(f"email: {len(pools['email'])} SpamAssassin corpus messages, {too_big} over 500 KB left out")
    files = {
        kind: write_messages(workdir / "serve" / kind, pools[kind][: args.messages]) for kind in args.kind
    }
    for kind in args.kind:
        sizes = sorted(len(raw) for raw in cycled(pools[kind], args.messages))
        print(f"{kind}: {args.messages} messages per level, median {sizes[len(sizes) // 2]} bytes")

    results: dict[str, Any] = {
        "machine": machine_line(),
        "int8_kernels": cpu_instruction_set(),
        "model": model_line(model) if model else None,
        "command": command,
        "spamc": spamc_version,
        "servers": {},
        "filter": {},
        "soak": {},
    }
    levels: dict[str, list[Level]] = {}
    milter: dict[str, list[Level]] = {}
    servers: dict[str, Server] = {}
    batch: dict[str, dict[str, Any]] = {}
    per_process: dict[str, dict[str, Any]] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench_serve.") as scratch_name:
        scratch = Path(scratch_name)
        scratch.chmod(0o755)
        if not args.no_filter and model is not None:
            for kind in args.kind:
                log(f"{kind}: spamfilter filter over an mbox of {args.messages}, and per process")
                mbox = write_mbox(scratch / f"{kind}.mbox", cycled(pools[kind], args.messages))
                batch[kind] = batch_filter(model, mbox, args.messages, args, scratch)
                per_process[kind] = process_per_message(model, files[kind][: args.per_process], args.gpu)
            results["filter"] = {"batch": batch, "per_process": per_process}
        order = ([] if args.no_client_cost else [TRIVIAL]) + peers
        for name in order:
            if name == TRIVIAL:
                server = trivial_server(scratch)
            elif name == "spamd":
                server = spamd_server(args, scratch)
            else:
                assert model is not None
                server = spamfilter_server(args, model, scratch)
            servers[name] = server
            server.start(args.start_timeout)
            try:
                levels[name] = process_levels(server, files, args, need_flag=name != "spamd")
                if name == TRIVIAL:
                    print("\n## spamc's own cost: the same load against a target that answers at once\n")
                    print(level_table(levels[name], with_memory=False), flush=True)
                else:  # the process-per-message ratio is spamfilter's own
                    print_server(server, levels[name], per_process if name == "spamfilter" else None)
                if server.milter:
                    milter[name] = milter_levels(server, pools, args)
                    how = "a held milter connection per client (miltertest), first header to final reply"
                    print(f"\n## {name} via milter on port {server.milter_port}: {how}\n")
                    print(level_table(milter[name], per_process if name == "spamfilter" else None))
                    print_first_errors(milter[name])
                    print(f"\n### {name}: spamc against milter\n")
                    print(front_table(levels[name], milter[name]), flush=True)
                if args.soak and name != TRIVIAL:
                    how = f"{args.soak_connections} connections of a Python client (no spamc)"
                    print(f"\n### {name}: soak, {args.soak} SMS-length messages, {how}\n", flush=True)
                    need_flag = name != "spamd"
                    soaked = soak(server, pools["sms"], args.soak, args.soak_connections, need_flag)
                    results["soak"][name] = asyncio.run(soaked)
            finally:
                code = server.stop()
                orphans = reap_orphans()
            log(
                f"{name}: exit {code} after SIGTERM"
                + (f"; {orphans} orphaned children reaped" if orphans else "")
            )
            if code != 0:
                print(f"\n**{name} exited {code} after SIGTERM (expected 0)**\n{server.log_tail(1500)}")
                failed = failed or name != "spamd"
            results["servers"][name] = {
                "argv": shlex.join(server.argv),
                "ready_s": server.ready_s,
                "exit_code": code,
                "levels": [level.summary() for level in levels[name]],
            }
            if name in milter:
                results["servers"][name]["milter_port"] = server.milter_port
                results["servers"][name]["milter_levels"] = [level.summary() for level in milter[name]]

    for kind in args.kind:
        print(f"\n## {kind}: throughput, every way\n")
        print(comparison_table(kind, levels, batch.get(kind), per_process.get(kind), milter))
        print(
            "\npeak RSS: a server's VmHWM (spamd: its parent; its children are in the memory table); "
            "a filter process's own peak (wait4)"
        )
        if kind in batch:
            print(f"\nbatch: `{batch[kind]['argv']}`; per process: `{per_process[kind]['argv']}`")
    if set(peers) <= set(levels) and len(peers) == 2:
        print("\n## spamfilter against spamd\n")
        print(peer_table(levels))
    print("\n## server memory after each level (the tree: the server and its child processes)\n")
    print(memory_table(levels, servers, milter))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2))
        print(f"\nresults: {json_path}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
