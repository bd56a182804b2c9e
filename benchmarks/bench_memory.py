"""What the memory of corrected mail (``spamfilter.memory``) costs per message scored, by how many
corrections it holds: the message's shingles, the comparison with every sketch, the file's size
and the time to read it (once per change: the filter ``stat``s it per batch).

The corrections are messages of the shared SpamAssassin corpus (repeated, with a number added,
beyond its 3,250); the messages scored are 300 others of it.

    python -m benchmarks.bench_memory
    python -m benchmarks.bench_memory --sizes 0,100,1000,10000
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from spamfilter.formats import message_text
from spamfilter.memory import MEMORY_FILE, Memory, read_memory, shingles, write_memory
from spamfilter.runtime import cpu_instruction_set

from .common import script_parser, table
from .mail_corpus import load_corpus

SCORED = 300


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--sizes", default="0,100,1000,10000", help="corrections held, comma-separated")
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


if __name__ == "__main__":
    main()
