"""Peak memory of pipeline mode (``filter --format email``, one message on stdin) by message size.

    .venv/bin/python -m benchmarks.bench_pipeline_memory --model DIR
    .venv/bin/python -m benchmarks.bench_pipeline_memory --model DIR --sizes 1,100,300

Each size is one process fed a message of that many MiB through a pipe (a short header block, then
lines of 1 KiB) while its output is read; the peak is the kernel's high-water mark of the process
(``VmHWM``), read while the output streams (its rusage would count the memory of this process,
which it was forked from).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from subprocess import PIPE, Popen

HEAD = b"From: someone@example.org\nSubject: lunch\n\nAre we still meeting for lunch tomorrow?\n"
LINE = b"x" * 1023 + b"\n"


def peak_mib(model: Path, mib: int) -> tuple[float, float, int]:
    """(peak MiB, seconds, bytes written) for one message of ``mib`` MiB."""
    command = [sys.executable, "-m", "spamfilter", "filter", "-q", "-m", str(model), "--format", "email"]
    started = time.perf_counter()
    process = Popen(command, stdin=PIPE, stdout=PIPE)
    assert process.stdin is not None and process.stdout is not None

    def feed() -> None:
        assert process.stdin is not None
        process.stdin.write(HEAD)
        for _ in range(mib * 1024):
            process.stdin.write(LINE)
        process.stdin.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    peak_kib = written = 0
    while block := process.stdout.read(1 << 20):
        written += len(block)
        status = Path(f"/proc/{process.pid}/status").read_text()
        if "VmHWM:" in status:
            peak_kib = int(status.split("VmHWM:")[1].split()[0])
    feeder.join()
    process.stdout.close()
    if process.wait() != 0:
        raise SystemExit(f"filter exited {process.returncode} for {mib} MiB")
    return peak_kib / 1024, time.perf_counter() - started, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--sizes", default="1,100,300", help="message sizes in MiB, comma-separated")
    args = parser.parse_args()
    print("| message MiB | peak MiB (VmHWM) | seconds | bytes out |")
    print("| --- | --- | --- | --- |")
    for mib in (int(size) for size in args.sizes.split(",")):
        peak, seconds, written = peak_mib(args.model, mib)
        print(f"| {mib} | {peak:.0f} | {seconds:.1f} | {written:,} |")


if __name__ == "__main__":
    main()
