"""The milter front end of ``spamfilter serve`` against its spamd front end, on one server: the
same messages at the same levels through real ``spamc`` processes, then through milter connections
as an MTA holds them.

    .venv/bin/python -m benchmarks.bench_serve_milter --model DIR
    .venv/bin/python -m benchmarks.bench_serve_milter --model DIR --concurrency 1,4,16 --messages 96

``spamfilter serve`` gets ``--milter 127.0.0.1:0`` (one server, both fronts; the milter port is
read from its log), and after the spamc levels (as in ``bench_serve``) each level runs again over the
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

The messages are ``bench_serve``'s (``serve_load``).
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import script_parser
from benchmarks.serve_load import (
    HOST,
    Level,
    Server,
    SpamfilterServer,
    add_load_args,
    level_table,
    load_levels,
    memory_table,
    message_pools,
    pair_table,
    prepare,
    print_first_errors,
    print_server,
    print_setup,
    process_levels,
    run_clients,
    stop_server,
)

# --------------------------------------------------------------------------- milter load


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
    messages = {kind: [milter_message(raw) for raw in pools[kind][: args.messages]] for kind in args.kind}

    def load(pool: list[MilterMessage], n: int, clients: int) -> Level:
        return milter_load(server.milter_port, pool, n, clients)

    return load_levels(server, messages, args, load, front="milter ")


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = script_parser(__doc__)
    add_load_args(parser)
    args = parser.parse_args()
    args.milter = True  # SpamfilterServer: serve both fronts
    workdir, model = prepare(args, need_model=True)
    assert model is not None
    print_setup(model, args)
    from importlib.metadata import version

    print(f"milter client: miltertest {version('miltertest')}, one held connection per client thread\n")
    pools, files = message_pools(args, workdir)
    with tempfile.TemporaryDirectory(prefix="bench_serve_milter.") as scratch_name:
        server = SpamfilterServer(args, model, Path(scratch_name))
        server.start(args.start_timeout)
        try:
            spamc = process_levels(server, files, args, need_flag=True)
            print_server(server, spamc, None)
            milter = milter_levels(server, pools, args)
        finally:
            stopped = stop_server(server)
    how = "a held milter connection per client (miltertest), first header to final reply"
    print(f"\n## {server.name} via milter: {how}\n")
    print(level_table(milter))
    print_first_errors(milter)
    print(f"\n## {server.name}: spamc against milter\n")
    print(pair_table(spamc, milter, ("spamc", "milter"), False))
    print("\n## server memory after each level\n")
    print(memory_table({server.name: spamc}, {server.name: server}, {server.name: milter}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        results = {
            "argv": server.argv,
            "levels": [level.summary() for level in spamc],
            "milter_levels": [level.summary() for level in milter],
        }
        args.json.write_text(json.dumps(results, indent=2))
    if not stopped:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
