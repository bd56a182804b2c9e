"""filter --engine ray against the local engine, and what bounds it on more machines.

    .venv/bin/python -m benchmarks.bench_engine                 # spam.mbox + hard_ham.mbox, 750 messages
    .venv/bin/python -m benchmarks.bench_engine --inputs A.mbox B.csv ...

Prints three tables: whole runs (the local engine one process per input, Ray with 1 and 2 scoring
workers, Ray's start-up apart); the stages on one core, in this process, without Ray (read and
extract, tokenise, ONNX compute, tag and write); and a paper estimate for 10 and 100 nodes built
from those per-core figures. The model is the benchmarks' random GPT-2-small (int8, as the filter's
default variant), built once into --workdir.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
    add_common_args,
    build_model_dir,
    cores,
    machine_line,
    script_parser,
    spamfilter_argv,
    table,
)

CORPUS = ROOT.parent / "shared" / "data" / "spamassassin"
DEFAULT_INPUTS = (CORPUS / "spam.mbox", CORPUS / "hard_ham.mbox")
GPU_MSGS_PER_S = 1_500  # one GPU's ONNX compute, gpt2-small, measured in RESULTS.md section 6
NODE_CORES = 16  # an assumed CPU node for the estimate
GPU_NODE_CORES = 8  # the CPU cores beside each GPU, for reading and writing
DISK_MB_PER_S = 500  # one driver writing the joined outputs (a local SSD or a fast NFS client)

_RAY_CHILD = """
import json, sys
from pathlib import Path
from spamfilter.engines.ray import Cluster, filter_with_ray
args = json.loads(sys.argv[1])
cluster = Cluster(workers=args["workers"])
run = filter_with_ray(args["inputs"], Path(args["out"]), Path(args["model"]), cluster, report=print)
print(json.dumps({"messages": run.messages, "seconds": run.seconds, "startup": run.startup_seconds}))
"""


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def local_engine(model: Path, inputs: list[Path], out: Path) -> float:
    """Seconds for the local engine over every input, one process each (as a shell loop would)."""
    out.mkdir(parents=True, exist_ok=True)
    return sum(
        _timed(
            [*spamfilter_argv(), "filter", "-q", "-m", str(model), str(source), "-o", str(out / source.name)]
        )
        for source in inputs
    )


def ray_engine(model: Path, inputs: list[Path], out: Path, workers: int) -> dict[str, Any]:
    arguments = {"inputs": [str(p) for p in inputs], "out": str(out), "model": str(model), "workers": workers}
    done = subprocess.run(
        [sys.executable, "-c", _RAY_CHILD, json.dumps(arguments)], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_rates(model: Path, inputs: list[Path]) -> dict[str, float]:
    """msgs/s of each stage on one core, each over every message of the inputs."""
    import numpy as np

    from spamfilter.mail import split_mbox
    from spamfilter.pipeline import mbox_items, tagged_message
    from spamfilter.runtime import Classifier, batched_logits, session_logits
    from spamfilter.verdict import Decision

    classifier = Classifier.load(model, threads=1)
    started = time.perf_counter()
    texts = []
    for source in inputs:
        with source.open("rb") as stream:
            texts += [text for _, text in mbox_items(stream) if text is not None]
    read = time.perf_counter() - started
    cap = classifier.recipe.chars_kept
    started = time.perf_counter()
    rows = classifier.tokenizer.encode_batch([text[:cap] for text in texts])
    tokenise = time.perf_counter() - started
    started = time.perf_counter()
    for first in range(0, len(rows), 256):  # the engine's chunks
        batched_logits(
            rows[first : first + 256],
            session_logits(classifier.session),
            batch_size=classifier.batch_size,
            max_length=classifier.directory.max_length,
            pad_token_id=classifier.directory.pad_token_id,
            trim=classifier.dynamic_length,
        )
    compute = time.perf_counter() - started
    started = time.perf_counter()
    sink = io.BytesIO()
    for source in inputs:
        with source.open("rb") as stream:
            for raw in split_mbox(stream):
                sink.write(tagged_message(raw, float(np.float64(0.25)), Decision(0.5)).message)
    write = time.perf_counter() - started
    n = len(texts)
    return {
        "read + extract": n / read,
        "tokenise": n / tokenise,
        "ONNX compute": n / compute,
        "tag + write": n / write,
    }


def estimate(rates: dict[str, float], bytes_per_message: float) -> list[list[Any]]:
    """Messages/s for N nodes: the scoring is bound by ONNX compute (CPU) or the GPU; reading,
    extracting, tokenising and writing run on the other cores; the driver joins every output alone."""
    cpu_per_message = 1 / rates["read + extract"] + 1 / rates["tokenise"] + 1 / rates["tag + write"]
    driver = DISK_MB_PER_S * 1e6 / bytes_per_message
    rows = []
    for nodes in (1, 10, 100):
        cpu_nodes = nodes * NODE_CORES / (cpu_per_message + 1 / rates["ONNX compute"])
        gpu_feed = nodes * GPU_NODE_CORES / cpu_per_message  # what the CPU cores can prepare and write
        gpu_nodes = min(nodes * GPU_MSGS_PER_S, gpu_feed)
        rows.append(
            [
                nodes,
                f"{cpu_nodes:,.0f}",
                f"{gpu_nodes:,.0f} ({'GPUs' if gpu_nodes < gpu_feed else 'CPU cores beside them'})",
                f"{driver:,.0f}",
                f"{_hours(min(cpu_nodes, driver))} / {_hours(min(gpu_nodes, driver))}",
            ]
        )
    return rows


def _hours(rate: float) -> str:
    return f"{1e8 / rate / 3600:,.1f} h"


def main() -> None:
    parser = script_parser(__doc__)
    add_common_args(parser)
    parser.add_argument("--inputs", nargs="+", type=Path, default=list(DEFAULT_INPUTS))
    args = parser.parse_args()
    model = build_model_dir(args.workdir, "last-token")
    inputs = [p.resolve() for p in args.inputs]
    print(machine_line(), file=sys.stderr)
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        local = min(local_engine(model, inputs, base / f"local{i}") for i in range(args.repeats))
        rays = {
            workers: [
                ray_engine(model, inputs, base / f"ray{workers}-{i}", workers) for i in range(args.repeats)
            ]
            for workers in (1, 2)
        }
    messages = rays[1][0]["messages"]
    rows = [["local engine (a process per input)", messages, f"{local:.1f}", "-", f"{messages / local:.1f}"]]
    for workers, runs in rays.items():
        best = min(runs, key=lambda run: run["seconds"] - run["startup"])
        working = best["seconds"] - best["startup"]
        rows.append(
            [
                f"ray, {workers} scoring worker{'s' if workers > 1 else ''}",
                best["messages"],
                f"{best['seconds']:.1f}",
                f"{best['startup']:.1f}",
                f"{best['messages'] / working:.1f}",
            ]
        )
    names = ", ".join(p.name for p in inputs)
    print(f"{messages} messages from {names}; {cores()} cores; best of {args.repeats}")
    print(table(["engine", "messages", "whole s", "Ray start-up s", "msgs/s without start-up"], rows))
    rates = stage_rates(model, inputs)
    print()
    print(
        table(
            ["stage (one core, no Ray)", "msgs/s"], [[name, f"{rate:,.0f}"] for name, rate in rates.items()]
        )
    )
    size = sum(p.stat().st_size for p in inputs) / messages
    print()
    print(
        f"estimate: CPU nodes of {NODE_CORES} cores; GPU nodes of 1 GPU ({GPU_MSGS_PER_S:,} msgs/s) and "
        f"{GPU_NODE_CORES} cores; {size / 1e3:.1f} kB per message; the driver joins outputs at "
        f"{DISK_MB_PER_S} MB/s"
    )
    headers = [
        "nodes",
        "CPU nodes msgs/s",
        "GPU nodes msgs/s (bound)",
        "driver join msgs/s",
        "1e8 msgs CPU / GPU",
    ]
    print(table(headers, estimate(rates, size)))


if __name__ == "__main__":
    main()
