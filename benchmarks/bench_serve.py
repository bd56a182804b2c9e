"""The spamd-protocol daemon: latency, throughput and memory through real ``spamc`` processes,
against SpamAssassin's spamd, a trivial target and ``spamfilter filter`` run per batch or per message.

    .venv/bin/python -m benchmarks.bench_serve --model DIR                   # spamfilter serve, sms + email
    .venv/bin/python -m benchmarks.bench_serve --model DIR --peer both       # and SpamAssassin's spamd
    .venv/bin/python -m benchmarks.bench_serve --peer spamd --concurrency 1,4 --messages 8   # a quick look

Each peer (``spamfilter serve``, or ``/usr/sbin/spamd`` with local tests only) is started on a free
loopback port, is ready when ``spamc -K`` answers, and is stopped with SIGTERM (it must exit 0).
At each concurrency, that many client threads each run ``spamc -d 127.0.0.1 -p PORT < msg`` in a loop
until ``--messages`` messages have been sent; every spamc run is timed (spawn to exit). A spamc failure,
or output without a fresh ``X-Spam-Status:`` (and for spamfilter ``X-Spam-Flag:``) header, counts as an
error: spamc passes a message through unchanged when it cannot get a verdict, so the old X-Spam-* headers
of the SpamAssassin corpus are removed from the messages first.

The milter front end against spamc on one server is ``bench_serve_milter``; memory over a long run
is ``bench_serve_soak``; what they share is ``serve_load``.

Messages: ``sms`` are the SMS Spam Collection's texts, each wrapped as a small RFC 822 message; ``email``
are the SpamAssassin corpus (ham, hard ham and spam, shuffled), without their mbox ``From `` lines and
without messages over spamc's 500 KB default size limit (spamc would pass those through unchecked).

Also measured, for comparison: the same spamc load against a trivial target that answers at once (what
the client costs, and the most this load generator can drive here), ``spamfilter filter`` in batch mode
over an mbox of the same messages (one process, best of ``--repeats``), and one ``spamfilter filter
--format email`` process per message (``--per-process`` messages, sequential). The RSS columns
show the servers' memory after each level.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import run_child, script_parser, table
from benchmarks.serve_load import (
    PEERS,
    SPAMD,
    SPAMFILTER,
    SUMMARY,
    TRIVIAL,
    Level,
    Server,
    SpamfilterServer,
    add_load_args,
    cycled,
    level_table,
    log,
    machine_line,
    memory_table,
    message_pools,
    model_line,
    pair_table,
    prepare,
    print_server,
    print_setup,
    process_levels,
    spamd_server,
    stop_server,
    tagging_problem,
    trivial_server,
    write_mbox,
)

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


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    add_load_args(parser)
    parser.add_argument("--peer", choices=list(PEERS), default="spamfilter", help="the server(s) to load")
    parser.add_argument("--spamd-children", type=int, default=5, help="spamd --max-children (its default 5)")
    parser.add_argument(
        "--per-process", type=int, default=20, help="messages for the process-per-message way"
    )
    parser.add_argument("--no-client-cost", action="store_true", help="skip spamc against the trivial target")
    parser.add_argument("--no-filter", action="store_true", help="skip the spamfilter filter comparisons")
    parser.add_argument("--milter", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--soak", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.milter or args.soak:
        parser.error("--milter is benchmarks.bench_serve_milter now, --soak benchmarks.bench_serve_soak")
    return args


def main() -> None:
    args = parse_args()
    peers = PEERS[args.peer]
    if "spamd" in peers and not Path(SPAMD).is_file():
        raise SystemExit(f"needs {SPAMD}")
    workdir, model = prepare(args, need_model="spamfilter" in peers)
    if model is None and not args.no_filter:
        log("no --model: the spamfilter filter comparisons are left out")
    spamc_version = print_setup(model, args)
    print()
    pools, files = message_pools(args, workdir)

    from spamfilter.runtime import cpu_instruction_set

    results: dict[str, Any] = {
        "machine": machine_line(),
        "int8_kernels": cpu_instruction_set(),
        "model": model_line(model) if model else None,
        "command": shlex.join(sys.orig_argv),
        "spamc": spamc_version,
        "servers": {},
        "filter": {},
    }
    levels: dict[str, list[Level]] = {}
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
                server = SpamfilterServer(args, model, scratch)
            servers[name] = server
            server.start(args.start_timeout)
            try:
                levels[name] = process_levels(server, files, args, need_flag=name != "spamd")
                if name == TRIVIAL:
                    print("\n## spamc's own cost: the same load against a target that answers at once\n")
                    print(level_table(levels[name], with_memory=False), flush=True)
                else:  # the process-per-message ratio is spamfilter's own
                    print_server(server, levels[name], per_process if name == "spamfilter" else None)
            finally:
                stopped = stop_server(server)
            failed = failed or (not stopped and name != "spamd")
            results["servers"][name] = {
                "argv": shlex.join(server.argv),
                "ready_s": server.ready_s,
                "exit_code": server.exit_code,
                "levels": [level.summary() for level in levels[name]],
            }

    for kind in args.kind:
        print(f"\n## {kind}: throughput, every way\n")
        print(comparison_table(kind, levels, batch.get(kind), per_process.get(kind)))
        print(
            "\npeak RSS: a server's VmHWM (spamd: its parent; its children are in the memory table); "
            "a filter process's own peak (wait4)"
        )
        if kind in batch:
            print(f"\nbatch: `{batch[kind]['argv']}`; per process: `{per_process[kind]['argv']}`")
    if set(peers) <= set(levels) and len(peers) == 2:
        print("\n## spamfilter against spamd\n")
        print(pair_table(levels["spamfilter"], levels["spamd"], ("spamfilter", "spamd"), True))
    print("\n## server memory after each level (the tree: the server and its child processes)\n")
    print(memory_table(levels, servers))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nresults: {args.json}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
