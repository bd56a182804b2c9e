"""Memory of ``spamfilter serve`` (and SpamAssassin's spamd) over a long run: N SMS-length messages
through a few spamd-protocol connections of a Python client (no spamc), the daemon's RSS printed
every 10 %; the RSS columns show whether memory grows with the message count.

    .venv/bin/python -m benchmarks.bench_serve_soak --model DIR --soak 100000
    .venv/bin/python -m benchmarks.bench_serve_soak --model DIR --soak 20000 --peer both

The servers and messages are ``bench_serve``'s (``serve_load``).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import script_parser, table
from benchmarks.serve_load import (
    HOST,
    PEERS,
    SPAMD,
    Server,
    SpamfilterServer,
    add_load_args,
    prepare,
    print_setup,
    sms_messages,
    spamd_server,
    stop_server,
    tagging_problem,
)

# --------------------------------------------------------------------------- the protocol


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


def main() -> None:
    parser = script_parser(__doc__)
    add_load_args(parser)
    parser.add_argument("--peer", choices=list(PEERS), default="spamfilter", help="the server(s) to soak")
    parser.add_argument("--spamd-children", type=int, default=5, help="spamd --max-children (its default 5)")
    parser.add_argument("--soak", type=int, default=100_000, help="messages per server (default 100,000)")
    parser.add_argument("--soak-connections", type=int, default=4, help="concurrent soak connections")
    args = parser.parse_args()
    peers = PEERS[args.peer]
    if "spamd" in peers and not Path(SPAMD).is_file():
        raise SystemExit(f"needs {SPAMD}")
    _, model = prepare(args, need_model="spamfilter" in peers)
    print_setup(model, args)
    messages = sms_messages()
    results: dict[str, Any] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench_serve_soak.") as scratch_name:
        scratch = Path(scratch_name)
        scratch.chmod(0o755)
        for name in peers:
            server: Server
            if name == "spamd":
                server = spamd_server(args, scratch)
            else:
                assert model is not None
                server = SpamfilterServer(args, model, scratch)
            server.start(args.start_timeout)
            how = f"{args.soak_connections} connections of a Python client (no spamc)"
            print(f"\n### {name}: soak, {args.soak} SMS-length messages, {how}\n", flush=True)
            try:
                soaked = soak(server, messages, args.soak, args.soak_connections, name != "spamd")
                results[name] = asyncio.run(soaked)
            finally:
                failed = not stop_server(server) and name != "spamd" or failed
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
