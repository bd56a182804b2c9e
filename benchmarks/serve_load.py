"""What the service benchmarks share (bench_serve: spamc load against spamfilter, spamd and a trivial
target; bench_serve_milter: spamc against milter on one server; bench_serve_soak: memory over a long
run): the messages, process memory from /proc, the servers, the spamc load generator and its tables.

``spamfilter serve`` is started by the tests' harness (tests/support/spamd_server.py); SpamAssassin's
spamd and the trivial target (``python -m benchmarks.serve_load --trivial-target PORT``) are peers
ready when ``spamc -K`` answers, stopped with SIGTERM (they must exit 0).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.common import (
    ROOT,
    SEED,
    SMS_FILE,
    add_common_args,
    build_model_dir,
    free_port,
    machine_line,
    table,
)
from tests.support.spamd_server import Server as SupportServer

SPAMFILTER = [sys.executable, "-m", "spamfilter"]
SPAMC = shutil.which("spamc") or "/usr/bin/spamc"
SPAMD = "/usr/sbin/spamd"
SPAMASSASSIN_DATA = ROOT.parent / "shared" / "data" / "spamassassin"
MAILBOXES = ("easy_ham.mbox", "hard_ham.mbox", "spam.mbox")
SPAMC_MAX_BYTES = 500 * 1024  # spamc -s default: larger messages go through unchecked
HOST = "127.0.0.1"
SUMMARY = re.compile(r"(\d+) messages: .* in ([0-9.]+) s")
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
    """A spamd-protocol peer in a child process (SpamAssassin's spamd, the trivial target), on its own
    loopback port, ready when ``spamc -K`` answers."""

    name: str
    argv: list[str]
    port: int
    scratch: Path
    process: subprocess.Popen[bytes] | None = None
    ready_s: float = 0.0
    exit_code: int | None = None
    log_file: Any = None
    milter: bool = False  # also a milter listener (spamfilter serve only), on milter_port
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
        except BaseException:  # not ready, or interrupted: leave nothing running
            if self.process.poll() is None:
                self.stop()
            raise
        self.ready_s = time.perf_counter() - started
        log(f"{self.name}: ready after {self.ready_s:.1f} s on port {self.port}")

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


class SpamfilterServer(Server):
    """``spamfilter serve`` started by the tests' harness (tests/support/spamd_server.py: free
    loopback ports, ready when its log says it listens, the milter port read from the log), seen
    through the interface of the peers above."""

    def __init__(self, args: argparse.Namespace, model: Path, scratch: Path) -> None:
        options = []
        if args.batch_max is not None:
            options += ["--batch-max", str(args.batch_max)]
        if args.batch_wait_ms is not None:
            options += ["--batch-wait-ms", str(args.batch_wait_ms)]
        options += ["--gpu"] if args.gpu else []
        milter = bool(getattr(args, "milter", False))
        argv = [*SPAMFILTER, "serve", "--model", str(model), "--listen", f"{HOST}:0"]
        argv += (["--milter", f"{HOST}:0"] if milter else []) + options
        super().__init__("spamfilter", argv, 0, scratch)
        self.model, self.options, self.milter = model, options, milter
        self.serve: SupportServer | None = None

    def start(self, timeout: float) -> None:
        log(f"{self.name}: starting {shlex.join(self.argv)}")
        started = time.perf_counter()
        try:
            self.serve = SupportServer(
                self.model,
                *self.options,
                listen=(f"{HOST}:0",),
                milter=(f"{HOST}:0",) if self.milter else (),
                start_timeout=timeout,
            )
        except AssertionError as error:  # the harness's way of saying it did not start
            raise SystemExit(f"{self.name}: {error}") from None
        self.process = self.serve.process
        self.port, self.milter_port = self.serve.port, self.serve.milter_address[1]
        self.ready_s = time.perf_counter() - started
        milter = f", milter on port {self.milter_port}" if self.milter else ""
        log(f"{self.name}: ready after {self.ready_s:.1f} s on port {self.port}{milter}")

    def stop(self, timeout: float = 60) -> int:
        assert self.serve is not None
        self.exit_code = self.serve.stop(timeout=timeout)
        return self.exit_code

    def log_tail(self, chars: int = 3000) -> str:
        return self.serve.log()[-chars:] if self.serve else ""


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
    argv = [sys.executable, "-m", "benchmarks.serve_load", "--trivial-target", str(port)]
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


Pool = TypeVar("Pool")


def load_levels(
    server: Server,
    pools: dict[str, Pool],
    args: argparse.Namespace,
    load: Callable[[Pool, int, int], Level],
    front: str = "",
) -> list[Level]:
    """``load(pool, n, clients)`` for each kind of message at each of ``--concurrency`` (after an
    uncounted warm-up of ``--warmup`` messages), each level logged as it ends with the server's
    memory after it; ``front`` names the way in, in the log (spamc's is unnamed)."""
    levels = []
    for kind, pool in pools.items():
        if args.warmup:
            load(pool, args.warmup, 1)  # not counted
        for clients in args.concurrency:
            level = load(pool, args.messages, clients)
            level.kind = kind
            level.memory = server.memory()
            levels.append(level)
            p50, p99 = level.percentile_ms(0.5), level.percentile_ms(0.99)
            log(
                f"{server.name} {front}{kind} x{clients}: {level.rate:.1f} msgs/s, p50 {p50:.0f} ms, "
                f"p99 {p99:.0f} ms, {level.errors} errors"
                + (f" (first: {level.first_error})" if level.first_error else "")
                + f", RSS {level.memory['rss_mib']:.0f} MiB"
            )
    return levels


def process_levels(
    server: Server, files: dict[str, list[Path]], args: argparse.Namespace, need_flag: bool
) -> list[Level]:
    argv = [SPAMC, "-d", HOST, "-p", str(server.port)]

    def load(inputs: list[Path], n: int, clients: int) -> Level:
        return spamc_load(argv, inputs, n, clients, lambda out: tagging_problem(out, need_flag))

    levels = load_levels(server, files, args, load)
    ping = spamc_load([SPAMC, "-K", "-d", HOST, "-p", str(server.port)], [None], args.pings, 1, _pong)
    ping.kind = "PING"
    ping.memory = server.memory()
    return [*levels, ping]


def _pong(output: bytes) -> str | None:
    """spamc -K prints the answer's status line without its PONG: ``SPAMD/1.5 0``."""
    return None if re.match(rb"SPAMD/\d+\.\d+ 0\b", output) else f"bad PING answer {output[:40]!r}"


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


def pair_table(
    first: list[Level], second: list[Level], names: tuple[str, str], first_over_second: bool
) -> str:
    """Two ways level by level (spamfilter against spamd, spamc against milter): their rates, the
    ratio of one to the other, and their latencies."""
    by_level = {(lv.kind, lv.clients): lv for lv in first}
    over = names if first_over_second else names[::-1]
    headers = ["messages", "clients", f"{names[0]} msgs/s", f"{names[1]} msgs/s", f"{over[0]} / {over[1]}"]
    headers += [f"{names[0]} p50 / p99 ms", f"{names[1]} p50 / p99 ms"]
    rows = []
    for theirs in second:
        mine = by_level.get((theirs.kind, theirs.clients))
        if mine is None:
            continue
        ratio = mine.rate / theirs.rate if first_over_second else theirs.rate / mine.rate
        rows.append(
            [
                theirs.kind,
                theirs.clients,
                f"{mine.rate:.1f}",
                f"{theirs.rate:.1f}",
                f"{ratio:.1f}x",
                f"{ms(mine.percentile_ms(0.5))} / {ms(mine.percentile_ms(0.99))}",
                f"{ms(theirs.percentile_ms(0.5))} / {ms(theirs.percentile_ms(0.99))}",
            ]
        )
    return table(headers, rows)


# --------------------------------------------------------------------------- options


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


def add_load_args(parser: argparse.ArgumentParser) -> None:
    """The options every service benchmark takes: the model, the load levels, the server's options."""
    add_common_args(parser)  # --workdir holds the message files; --repeats applies to the batch filter runs
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model directory for spamfilter serve (and filter) (default: the random GPT-2-small "
        "benchmark model, built once into --workdir)",
    )
    parser.add_argument(
        "--concurrency", type=int_list, default=[1, 4, 16, 64], help="clients, e.g. 1,4,16,64"
    )
    parser.add_argument("--messages", type=int, default=256, help="messages per level (default 256)")
    parser.add_argument("--kind", type=kind_list, default=list(KINDS), help="sms,email (default both)")
    parser.add_argument("--gpu", action="store_true", help="spamfilter serve --gpu (and the filter runs)")
    parser.add_argument("--batch-max", type=int, default=None, help="passed to spamfilter serve")
    parser.add_argument("--batch-wait-ms", type=float, default=None, help="passed to spamfilter serve")
    parser.add_argument("--warmup", type=int, default=4, help="uncounted messages per kind before the levels")
    parser.add_argument("--pings", type=int, default=20, help="spamc -K runs per server (the PING row)")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for PING")
    parser.add_argument("--json", type=Path, default=None, help="save the results here")


def prepare(args: argparse.Namespace, need_model: bool) -> tuple[Path, Path | None]:
    """The working folder and the model (built when none is given and one is needed); this process
    becomes the servers' subreaper and SIGTERM ends a run as Ctrl-C does (servers stopped)."""
    workdir: Path = args.workdir.resolve()
    model: Path | None = args.model.resolve() if args.model else None
    args.json = args.json.resolve() if args.json else None  # before the chdir below
    os.chdir(ROOT)
    become_subreaper()
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    if not Path(SPAMC).is_file():
        raise SystemExit(f"needs {SPAMC}")
    if model is None and need_model:
        model = build_model_dir(workdir, "last-token", log, quantize=None if args.gpu else "int8")
    if args.gpu:
        import torch  # machine_line names the GPU when torch is loaded

        if not torch.cuda.is_available():
            raise SystemExit("--gpu: torch sees no CUDA device")
    return workdir, model


def print_setup(model: Path | None, args: argparse.Namespace) -> str:
    """The machine, model, command and client lines every report starts with; the spamc version."""
    from spamfilter.runtime import cpu_instruction_set

    spamc_version = subprocess.run([SPAMC, "-V"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"machine: {machine_line()}; int8 kernels: {cpu_instruction_set()}")
    if model:
        print(model_line(model))
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"client: {spamc_version} ({SPAMC}), one process per message; {args.messages} messages per level")
    return spamc_version


def message_pools(args: argparse.Namespace, workdir: Path, sms: bool = False) -> tuple[dict, dict]:
    """The message pools of ``--kind`` (and the SMS pool when ``sms``), and each kind's first
    ``--messages`` written as files for spamc's stdin."""
    pools: dict[str, list[bytes]] = {}
    if "sms" in args.kind or sms:
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
    return pools, files


def stop_server(server: Server) -> bool:
    """Stop ``server`` and reap what it left; whether it exited 0 (said when not)."""
    code = server.stop()
    orphans = reap_orphans()
    reaped = f"; {orphans} orphaned children reaped" if orphans else ""
    log(f"{server.name}: exit {code} after SIGTERM{reaped}")
    if code != 0:
        print(f"\n**{server.name} exited {code} after SIGTERM (expected 0)**\n{server.log_tail(1500)}")
    return code == 0


if __name__ == "__main__":  # the trivial target, run by trivial_server()
    parser = argparse.ArgumentParser(description="a spamd-protocol target that answers at once")
    parser.add_argument("--trivial-target", type=int, required=True)
    serve_trivial(parser.parse_args().trivial_target)
