"""Load: a soak run of the filter over a large generated mbox, and many concurrent pipeline-mode
invocations.

    .venv/bin/python -m benchmarks.bench_load --model DIR --soak 100000 --concurrent 16 --rounds 3

Soak: an mbox of N messages (the examples' sample.mbox repeated) through ``spamfilter filter``;
reports messages in and out, whether every output message equals its input once the two headers
are removed, the time and the peak RSS (which must not grow with N: run it with two sizes).
Concurrent: ``--concurrent`` pipeline-mode processes started together, ``--rounds`` times; reports
how many exited 0 with a tagged message, the wall time per round and the slowest single process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import script_parser
from spamfilter.mail import remove_spam_headers, split_mbox

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample.mbox"
SPAMFILTER = [sys.executable, "-m", "spamfilter"]


def soak(model: Path, messages: int, workdir: Path) -> None:
    sample = SAMPLE.read_bytes()
    per_copy = sum(1 for _ in split_mbox(SAMPLE.open("rb")))
    source, output = workdir / "soak.mbox", workdir / "soak.out.mbox"
    with source.open("wb") as out:
        for _ in range(messages // per_copy):
            out.write(sample)
    started = time.perf_counter()
    with subprocess.Popen(
        [*SPAMFILTER, "filter", str(source), "--model", str(model), "-o", str(output), "--quiet"]
    ) as process:
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    count_in = count_out = 0
    identical = True
    with source.open("rb") as a, output.open("rb") as b:
        for before, after in zip(split_mbox(a), split_mbox(b), strict=False):
            count_in, count_out = count_in + 1, count_out + 1
            identical = identical and remove_spam_headers(after) == before
        count_in += sum(1 for _ in split_mbox(a))
        count_out += sum(1 for _ in split_mbox(b))
    print("| soak | messages in | messages out | identical | exit | seconds | msgs/s | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| mbox | {count_in} | {count_out} | {identical} | {process.returncode} | {seconds:.1f} | "
        f"{count_in / seconds:.0f} | {usage.ru_maxrss / 1024:.0f} |"
    )


def concurrent(model: Path, processes: int, rounds: int) -> None:
    message = b"From: a@example.org\nSubject: lunch\n\nAre we still meeting for lunch tomorrow at noon?\n"
    print("\n| round | processes | tagged, exit 0 | wall s | slowest process s |")
    print("| --- | --- | --- | --- | --- |")
    for round_number in range(1, rounds + 1):
        started = time.perf_counter()
        children = [
            (time.perf_counter(), subprocess.Popen(
                [*SPAMFILTER, "filter", "--model", str(model), "--format", "email"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            ))
            for _ in range(processes)
        ]  # fmt: skip
        ok, slowest = 0, 0.0
        for begun, child in children:
            out, _ = child.communicate(message)
            slowest = max(slowest, time.perf_counter() - begun)
            ok += child.returncode == 0 and out.startswith(b"X-Spam-Flag: ") and out.endswith(message)
        print(
            f"| {round_number} | {processes} | {ok} | {time.perf_counter() - started:.2f} | {slowest:.2f} |"
        )


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="model directory")
    parser.add_argument("--soak", type=int, default=100_000, help="messages in the soak mbox (0: skip)")
    parser.add_argument("--concurrent", type=int, default=16, help="pipeline processes at once (0: skip)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.soak:
            soak(args.model, args.soak, Path(scratch))
        if args.concurrent:
            concurrent(args.model, args.concurrent, args.rounds)


if __name__ == "__main__":
    main()
