"""What the memory of corrected mail (``spamfilter.memory``) costs per message scored, by how many
corrections it holds: the message's shingles, the comparison with every sketch, the file's size
and the time to read it (once per change: the filter ``stat``s it per batch).

Then what keeping a correction costs (``Corrections.add``, as ``learn`` and a TELL keep one: the
message's file and the memory rewritten, both durably) with few and with ``--kept`` kept, and
``learn``'s rebuild of the memory from that many.

The corrections are messages of the shared SpamAssassin corpus (repeated, with a number added,
beyond its 3,250); the messages scored are 300 others of it.

    python -m benchmarks.bench_memory
    python -m benchmarks.bench_memory --sizes 0,100,1000,10000
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from spamfilter.corrections import Corrections
from spamfilter.formats import message_text
from spamfilter.memory import MEMORY_FILE, Memory, read_memory, shingles, write_memory
from spamfilter.runtime import cpu_instruction_set

from .common import script_parser, table
from .mail_corpus import load_corpus

SCORED = 300


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--sizes", default="0,100,1000,10000", help="corrections held, comma-separated")
    parser.add_argument("--kept", type=int, default=1000, help="corrections kept one by one")
    args = parser.parse_args()
    raws, labels = load_corpus()
    texts = [message_text(raw) for raw in raws]
    scored, pool = texts[-SCORED:], texts[:-SCORED]
    started = time.perf_counter()
    found = [shingles(text) for text in scored]
    shingling = (time.perf_counter() - started) / SCORED
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        memory = Memory.of(
            (f"{n}", int(labels[n % len(pool)]), f"{pool[n % len(pool)]} {n}", 0.0) for n in range(size)
        )
        memory.evidence(found[0])  # its index, made once per memory
        started = time.perf_counter()
        for hashes in found:
            memory.evidence(hashes)
        comparing = (time.perf_counter() - started) / SCORED
        with tempfile.TemporaryDirectory() as folder:
            write_memory(Path(folder), memory)
            size_bytes = (Path(folder) / MEMORY_FILE).stat().st_size
            started = time.perf_counter()
            read_memory(Path(folder)).evidence(found[0])
            reading = time.perf_counter() - started
        rows.append(
            [
                f"{size:,}",
                f"{1000 * shingling:.2f}",
                f"{1000 * comparing:.2f}",
                f"{size_bytes / 1e6:.2f}",
                f"{1000 * reading:.1f}",
            ]
        )
    print(f"CPU: {cpu_instruction_set()}; {SCORED} messages scored")
    heads = ["corrections", "shingles ms/msg", "comparison ms/msg", "file MB", "read + index ms"]
    print(table(heads, rows))
    print(keeping(raws, labels, args.kept))


def keeping(raws: list[bytes], labels: np.ndarray, count: int) -> str:
    """Median ms to keep a correction among the first and the last 100 of ``count``, and the rebuild."""
    with tempfile.TemporaryDirectory() as folder:
        corrections = Corrections(Path(folder))
        took = []
        for n in range(count):
            started = time.perf_counter()
            corrections.add(raws[n % len(raws)] + f"\n{n}".encode(), int(labels[n % len(raws)]))
            took.append(time.perf_counter() - started)
        started = time.perf_counter()
        kept = corrections.remember_all()
        rebuild = time.perf_counter() - started
    first, last = (1000 * float(np.median(part)) for part in (took[:100], took[-100:]))
    return (
        f"keeping a correction: median {first:.1f} ms among the first 100, {last:.1f} ms among the "
        f"last 100 of {count}; learn's rebuild of the memory of {kept}: {rebuild:.1f} s"
    )


if __name__ == "__main__":
    main()
