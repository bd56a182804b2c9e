"""Where one onnxruntime call of a model directory's graph spends its time, by operator.

One batch of 8 windows of 256 tokens (random ids, a line break every 20 tokens, so that a
``line-ends`` model reads its 32 positions), the directory's default variant, run ``--runs``
times after a warm-up with onnxruntime's profiler on: each operator type's share of the kernel
time, the slowest nodes with their output shapes, and the milliseconds per call (median and best,
timed without the profiler, in a process of its own per model so that one session's spinning
threads do not slow the other's). ``--vs DIR`` does the same for a second directory and prints
the two side by side, e.g. the same checkpoint exported by two versions of the exporter; the two
take turns over ``--rounds`` processes each (which goes first alternates), and the ratio of their
medians is taken round by round, so that a machine whose speed drifts does not favour one:

    python -m benchmarks.bench_graph --model DIR
    python -m benchmarks.bench_graph --model NEW --vs OLD --threads 1
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from .common import table

BATCH, LENGTH = 8, 256


class Measured(TypedDict):
    variant: str
    ms: list[float]  # per call
    ops: dict[str, float]  # operator type: its share of the kernel time, in %
    nodes: list[tuple[str, float, str]]  # the slowest nodes: name, share in %, operator and output


def _ids() -> np.ndarray:
    ids = np.random.default_rng(0).integers(0, 50000, (BATCH, LENGTH)).astype(np.int64)
    ids[:, ::20] = 198  # "\n": line ends for a line-ends model to read
    return ids


def _session(path: Path, threads: int, profile: Path | None = None) -> Any:
    """A CPU session; with ``profile``, onnxruntime's profiler writes there (not in the cwd)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if profile is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile)
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(model: Path, threads: int, runs: int, profile: bool) -> Measured:
    """In this process: the time per call (not profiled) and, with ``profile``, the operator shares."""
    from spamfilter.modeldir import open_model_directory

    directory = open_model_directory(model)
    path = directory.checked_variant_file(directory.default_variant)
    ids = _ids()
    events = []
    if profile:
        with tempfile.TemporaryDirectory() as folder:
            session = _session(path, threads, Path(folder) / "profile")
            for _ in range(runs + 3):
                session.run(None, {"input_ids": ids})
            events = json.loads(Path(session.end_profiling()).read_text())
    by_op: collections.Counter[str] = collections.Counter()
    by_node: collections.Counter[str] = collections.Counter()
    shapes: dict[str, str] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node, op = event["name"][: -len("_kernel_time")], event["args"].get("op_name", "?")
            by_op[op] += event["dur"]
            by_node[node] += event["dur"]
            shapes[node] = f"{op} {event['args'].get('output_type_shape', '')}"
    total = sum(by_op.values()) or 1
    timed = _session(path, threads)
    for _ in range(3):
        timed.run(None, {"input_ids": ids})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        timed.run(None, {"input_ids": ids})
        times.append((time.perf_counter() - started) * 1000)
    return {
        "variant": str(directory.default_variant),
        "ms": times,
        "ops": {op: 100 * t / total for op, t in by_op.most_common()},
        "nodes": [(node, 100 * t / total, shapes[node]) for node, t in by_node.most_common(12)],
    }


def _in_child(model: Path, threads: int, runs: int, profile: bool) -> Measured:
    command = [sys.executable, "-m", "benchmarks.bench_graph", "--worker", "--model", str(model)]
    command += ["--threads", str(threads), "--runs", str(runs), *(["--profile"] if profile else [])]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    measured: Measured = json.loads(result.stdout)
    return measured


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--vs", type=Path, help="a second model directory, shown beside the first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50, help="timed calls per process")
    parser.add_argument("--rounds", type=int, default=5, help="processes per model, in turn")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.model, args.threads, args.runs, args.profile)))
        return
    models = [args.model, *([args.vs] if args.vs else [])]
    rounds = []
    for r in range(args.rounds):  # each round in turn, the order swapped every other round
        order = list(range(len(models)))[:: -1 if r % 2 else 1]
        ran = {m: _in_child(models[m], args.threads, args.runs, r == 0) for m in order}
        rounds.append([ran[m] for m in range(len(models))])
    results = rounds[0]
    times = [[t for one in rounds for t in one[m]["ms"]] for m in range(len(models))]
    print(
        f"one call of {BATCH} x {LENGTH} tokens, {args.threads} thread(s), {args.rounds} x {args.runs} calls"
    )
    names = [model.name for model in models]
    ratios = [float(np.median(one[0]["ms"]) / np.median(one[1]["ms"])) for one in rounds] if args.vs else []
    print(
        table(
            ["", *names],
            [
                ["variant", *(r["variant"] for r in results)],
                ["ms per call, median", *(f"{np.median(t):.2f}" for t in times)],
                ["ms per call, best", *(f"{min(t):.2f}" for t in times)],
            ],
        )
    )
    if ratios:
        low, mid, high = min(ratios), float(np.median(ratios)), max(ratios)
        print(f"\n{names[0]} / {names[1]}, ratio of medians round by round: {mid:.3f} ({low:.3f}-{high:.3f})")
    ops = sorted({op for r in results for op in r["ops"]}, key=lambda op: -results[0]["ops"].get(op, 0.0))
    rows = [[op, *(f"{r['ops'].get(op, 0.0):.1f} %" for r in results)] for op in ops[:16]]
    print("\nkernel time by operator type")
    print(table(["operator", *names], rows))
    for name, result in zip(names, results, strict=True):
        print(f"\nslowest nodes of {name}")
        nodes = [[node, f"{share:.1f} %", shape] for node, share, shape in result["nodes"]]
        print(table(["node", "share", "operator and output"], nodes))


if __name__ == "__main__":
    main()
