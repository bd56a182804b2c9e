"""Prove that ``--gpu`` really runs on CUDA, and time the whole recipe on the GPU.

1. ``spamfilter train --device cuda`` on the SMS data (GPT-2-small shape, random weights: no download
   here; the default recipe otherwise, with ``--quantize int8``), timed as a whole process.
2. ``spamfilter filter --gpu`` over the SMS test split and over ``examples/sample.mbox``: the summary
   must name ``CUDAExecutionProvider``; scores and verdicts are compared with the same run on the CPU.

Exits 1 when CUDA was not used. Prints a table and writes ``check_gpu.json`` in the workdir.

    python -m benchmarks.check_gpu --workdir /tmp/gpu-work
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
    SMS_FILE,
    checked,
    machine_line,
    run_child,
    script_parser,
    sms_splits,
    spamfilter_argv,
    table,
    write_csv,
)

CUDA = "CUDAExecutionProvider"


def scores(csv_text: str) -> list[tuple[str, float]]:
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    return [(row["label"], float(row["spam_probability"])) for row in rows]


def flags(mbox: bytes) -> list[str]:
    return [line.decode() for line in mbox.splitlines() if line.startswith(b"X-Spam-Flag:")]


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--model", default="gpt2-small", help="train --model (a config.json for a quick try)")
    parser.add_argument("--device", default="cuda", help="train --device (cpu: a dry run of this script)")
    args = parser.parse_args()
    import onnxruntime
    import torch

    work: Path = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": machine_line(),
        "torch_cuda": torch.cuda.is_available(),
        "onnxruntime_providers": onnxruntime.get_available_providers(),
    }
    print(f"machine: {report['machine']}")
    print(f"onnxruntime providers available: {report['onnxruntime_providers']}\n")
    spamfilter = spamfilter_argv()

    model = work / "trained"
    train = [*spamfilter, "train", "--model", args.model, "--weights", "random", "--data", str(SMS_FILE)]
    train += ["--device", args.device]
    train += ["--epochs", str(args.epochs), "--quantize", "int8", "--out", str(model), "--no-progress"]
    run = checked(run_child(train), f"spamfilter train --device {args.device}")
    manifest = json.loads((model / "spamfilter.json").read_text())
    report["train"] = {
        "wall_s": run.seconds,
        "peak_rss_mib": run.max_rss_mib,
        "provider": json.loads((model / "eval.json").read_text()).get("provider"),
        "onnx_test_accuracy": manifest["onnx_evaluation"],
        "int8": manifest["variants"].get("int8"),
        "stderr_tail": run.stderr.decode(errors="replace")[-600:],
    }

    test = sms_splits().test
    test_csv = write_csv(work / "sms-test.csv", test["Text"].tolist())
    runs = {}
    for name, extra in (("cpu", []), ("gpu", ["--gpu"])):
        argv = [*spamfilter, "filter", "--model", str(model), "--variant", "fp32", "--format", "csv"]
        child = checked(run_child([*argv, *extra, str(test_csv)]), f"filter {name}")
        runs[name] = (child, scores(child.stdout.decode()))
    gpu_stderr = runs["gpu"][0].stderr.decode(errors="replace")
    on_cuda = CUDA in gpu_stderr
    cpu_scores, gpu_scores = runs["cpu"][1], runs["gpu"][1]
    max_diff = max(abs(a[1] - b[1]) for a, b in zip(cpu_scores, gpu_scores, strict=True))
    same_labels = sum(a[0] == b[0] for a, b in zip(cpu_scores, gpu_scores, strict=True))
    report["filter_sms_test"] = {
        "messages": len(gpu_scores),
        "gpu_summary": gpu_stderr.strip().splitlines()[-1],
        "cpu_summary": runs["cpu"][0].stderr.decode(errors="replace").strip().splitlines()[-1],
        "gpu_wall_s": runs["gpu"][0].seconds,
        "cpu_wall_s": runs["cpu"][0].seconds,
        "max_abs_score_diff": max_diff,
        "same_verdicts": same_labels,
    }

    mbox = ROOT / "examples" / "sample.mbox"
    out = {}
    for name, extra in (("cpu", []), ("gpu", ["--gpu"])):
        argv = [*spamfilter, "filter", "--model", str(model), "--variant", "fp32", *extra, str(mbox)]
        out[name] = checked(run_child(argv), f"filter mbox {name}")
    report["filter_mbox"] = {
        "gpu_summary": out["gpu"].stderr.decode(errors="replace").strip().splitlines()[-1],
        "same_flags": flags(out["cpu"].stdout) == flags(out["gpu"].stdout),
        "flags": len(flags(out["gpu"].stdout)),
    }
    on_cuda = on_cuda and CUDA in report["filter_mbox"]["gpu_summary"]
    report["ran_on_cuda"] = on_cuda

    train_row = report["train"]
    print(
        table(
            ["check", "result"],
            [
                [
                    f"train --device {args.device} ({args.epochs} epochs, export, int8)",
                    f"{train_row['wall_s']:.1f} s whole process",
                ],
                ["train recorded provider", str(train_row["provider"])],
                [
                    "int8 agreement with fp32 (test split)",
                    str((train_row["int8"] or {}).get("agreement_with_fp32")),
                ],
                ["filter --gpu summary (SMS test)", report["filter_sms_test"]["gpu_summary"]],
                ["filter (CPU) summary (SMS test)", report["filter_sms_test"]["cpu_summary"]],
                ["max |score GPU - CPU|", f"{max_diff:.2e}"],
                ["same verdicts GPU vs CPU", f"{same_labels}/{len(gpu_scores)}"],
                ["filter --gpu sample.mbox", report["filter_mbox"]["gpu_summary"]],
                ["same X-Spam-Flag lines GPU vs CPU", str(report["filter_mbox"]["same_flags"])],
                ["ran on CUDA", str(on_cuda)],
            ],
        )
    )
    (work / "check_gpu.json").write_text(json.dumps(report, indent=2))
    if not on_cuda:
        print(f"--gpu did not run on CUDA:\n{gpu_stderr}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"\ncheck_gpu: {time.perf_counter() - started:.0f} s")
