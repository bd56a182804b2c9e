"""Pipeline mode: one message on stdin to its verdict, the whole process included.

    .venv/bin/python -m benchmarks.bench_pipeline          # 10 runs per model directory and variant

Also runs ``python -X importtime -m spamfilter filter ...`` to check that torch and pandas are not
imported on the filter path and to show the slowest top-level imports, and a breakdown of one fresh
process's time (imports, manifest, sha256 check, tokenizer, onnxruntime session, inference).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    POOLINGS,
    ROOT,
    SPAMFILTER,
    add_common_args,
    build_all,
    checked,
    machine_line,
    make_emails,
    run_child,
    script_parser,
    table,
)

IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def write_eml(path: Path) -> Path:
    body = make_emails(1, seed=7)[0].split("\n\n", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        (
            "From: Alice Example <alice@example.org>\r\nTo: bob@example.com\r\n"
            "Subject: Quarterly account review and your renewal\r\nDate: Tue, 25 Nov 2025 10:00:00 +0000\r\n"
            "Message-ID: <bench-1@example.org>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: text/plain; charset="utf-8"\r\n\r\n' + body.replace("\n", "\r\n") + "\r\n"
        ).encode()
    )
    return path


def pipeline_argv(model: Path, variant: str) -> list[str]:
    return [str(SPAMFILTER), "filter", "--model", str(model), "--format", "email", "--variant", variant]


def import_report(model: Path, eml: Path, variant: str) -> tuple[list[list[Any]], dict[str, bool], float]:
    argv = [sys.executable, "-X", "importtime", "-m", "spamfilter", "filter", "--model", str(model)]
    argv += ["--format", "email", "--variant", variant]
    run = checked(run_child(argv, stdin_path=eml), "importtime run")
    top, names = [], set()
    total = 0
    for line in run.stderr.decode(errors="replace").splitlines():
        found = IMPORT_LINE.match(line)
        if not found:
            continue
        names.add(found[4])
        if len(found[3]) == 1:  # top level: imported by the program itself
            top.append((int(found[2]), found[4]))
            total += int(found[2])
    heavy = {name: any(n == name or n.startswith(name + ".") for n in names) for name in ("torch", "pandas")}
    rows = [[name, f"{us / 1000:.0f}"] for us, name in sorted(top, reverse=True)[:12]]
    return rows, heavy, total / 1e6


def breakdown_worker(model: Path, eml: Path, variant: str) -> dict[str, float]:
    """Stage times of pipeline mode in this (fresh) process, mirroring filtering._pipeline_mode."""
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    import onnxruntime  # noqa: F401

    marks["import onnxruntime"] = time.perf_counter() - t0
    t = time.perf_counter()
    from spamfilter import cli  # noqa: F401
    from spamfilter.modeldir import open_model_directory, sha256_file
    from spamfilter.runtime import create_session
    from spamfilter.tokenizer import Tokenizer

    marks["import spamfilter cli+filter"] = time.perf_counter() - t
    t = time.perf_counter()
    directory = open_model_directory(model)
    path, _ = directory.variant_file(variant)  # (file, expected sha256)
    marks["read manifest"] = time.perf_counter() - t
    t = time.perf_counter()
    sha256_file(path)
    marks[f"sha256 of {path.name} ({path.stat().st_size / 2**20:.0f} MiB)"] = time.perf_counter() - t
    t = time.perf_counter()
    tokenizer = Tokenizer(directory.path)
    marks["tokenizer (BPE ranks)"] = time.perf_counter() - t
    t = time.perf_counter()
    session = create_session(path)
    marks["onnxruntime session"] = time.perf_counter() - t
    t = time.perf_counter()
    from spamfilter.mail import extract_text

    text = extract_text(eml.read_bytes())
    ids = tokenizer.pad([tokenizer.encode(text)], directory.max_length)
    session.run(["logits"], {"input_ids": ids})
    marks["extract + encode + first run"] = time.perf_counter() - t
    marks["total in process"] = time.perf_counter() - t0
    return marks


def main() -> None:
    parser = script_parser(__doc__)
    add_common_args(parser)
    parser.add_argument("--runs", type=int, default=10, help="runs per model directory and variant")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--eml", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(breakdown_worker(Path(args.model), Path(args.eml), args.variant)))
        return
    os.chdir(ROOT)
    workdir: Path = args.workdir.resolve()
    dirs = build_all(workdir, lambda m: print(m, file=sys.stderr))
    eml = write_eml(workdir / "inputs" / "one.eml")
    print(f"machine: {machine_line()}\n")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    rows: list[list[str]] = []
    results: dict[str, dict[str, Any]] = {}  # per-run figures, then the import and stage reports
    for pooling in POOLINGS:
        for variant in ("fp32", "int8"):
            times, rss = [], 0.0
            for _ in range(args.runs):
                run = checked(
                    run_child(pipeline_argv(dirs[pooling], variant), stdin_path=eml, env=env), "pipeline"
                )
                if b"X-Spam-" not in run.stdout:
                    raise SystemExit(f"no spam headers in the output: {run.stderr.decode(errors='replace')}")
                times.append(run.seconds)
                rss = max(rss, run.max_rss_mib)
            times.sort()
            median = times[len(times) // 2] if len(times) % 2 else sum(times[len(times) // 2 - 1 :][:2]) / 2
            results[f"{pooling} {variant}"] = {
                "median": median,
                "min": times[0],
                "max": times[-1],
                "rss": rss,
            }
            rows.append(
                [pooling, variant, f"{median:.2f}", f"{times[0]:.2f}", f"{times[-1]:.2f}", f"{rss:.0f}"]
            )
    print(
        "Pipeline mode, `spamfilter filter --model DIR --format email --variant V < one.eml`, "
        f"{args.runs} runs:\n"
    )
    print(table(["pooling", "variant", "median s", "min s", "max s", "peak RSS MiB"], rows))

    print("\nWhere the time goes (one fresh process each, best of --repeats per stage):\n")
    stage_rows: dict[str, dict[str, float]] = {}
    columns = []
    for pooling in POOLINGS:
        for variant in ("fp32", "int8"):
            column = f"{pooling} {variant}"
            columns.append(column)
            argv = [
                sys.executable,
                "-m",
                "benchmarks.bench_pipeline",
                "--worker",
                "--model",
                str(dirs[pooling]),
            ]
            argv += ["--variant", variant, "--eml", str(eml)]
            for _ in range(args.repeats):
                marks = json.loads(checked(run_child(argv), "breakdown").stdout)
                for stage, seconds in marks.items():
                    key = re.sub(r"model\.\w+\.onnx|model\.onnx", "model file", stage)
                    key = re.sub(r"\(\d+ MiB\)", "", key).strip()
                    cell = stage_rows.setdefault(key, {})
                    cell[column] = min(cell.get(column, float("inf")), seconds)
                    if key.startswith("sha256"):
                        cell[column + " size"] = float(re.findall(r"\((\d+) MiB\)", stage)[0])
    body = []
    for stage, cells in stage_rows.items():
        body.append([stage] + [f"{cells[c]:.3f}" for c in columns])
    print(table(["stage (s)"] + columns, body))
    sizes = stage_rows.get("sha256 of model file", {})
    print("\nmodel file sizes MiB: " + ", ".join(f"{c}: {sizes.get(c + ' size', 0):.0f}" for c in columns))

    print("\n`python -X importtime -m spamfilter filter --model DIR(last) --format email --variant int8`:\n")
    import_rows, heavy, total = import_report(dirs["last"], eml, "int8")
    print(
        f"torch imported: {heavy['torch']}; pandas imported: {heavy['pandas']}; "
        f"top-level imports {total:.2f} s\n"
    )
    print(table(["top-level module", "cumulative ms"], import_rows))
    results["imports"] = {"heavy": heavy, "top": import_rows, "total_s": total}
    results["stages"] = stage_rows
    (workdir / "bench_pipeline.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
