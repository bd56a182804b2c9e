"""Messages/s and peak RSS: the reference recipe's torch loop, the Hugging Face way, and `spamfilter filter`.

Every measurement is a fresh child process (wall time from spawn to exit, peak RSS from ``wait4``), so
whole-process numbers are comparable. The torch ways also report their in-process compute rate, and
are limited to ``--torch-limit`` messages per data set (their whole-process time for the full set is
extrapolated and labelled so).

    .venv/bin/python -m benchmarks.bench_filter            # defaults: 3 repeats, torch on 80 messages
    python -m benchmarks.bench_filter --gpu                # torch and HF on CUDA, spamfilter --gpu (fp32)
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
    MAX_LENGTH,
    POOLINGS,
    ROOT,
    add_common_args,
    build_all,
    checked,
    cores,
    hf_model_dir,
    machine_line,
    make_emails,
    model_dir,
    run_child,
    script_parser,
    sms_test_texts,
    spamfilter_argv,
    table,
    write_csv,
    write_texts_json,
)

BATCH = 8  # the reference recipe's and this benchmark's default; --batch-size changes it for every way
SUMMARY = re.compile(r"(\d+) messages: .* in ([0-9.]+) s")
CUDA = "CUDAExecutionProvider"


# --------------------------------------------------------------------------- workers (child processes)


def worker_torch_eager(texts: list[str], model: Path, device: str, batch: int) -> dict[str, Any]:
    """The reference recipe: its model structure in torch eager (``reference_model``, the weights of
    ``model.pt``), every message padded to 120, batch 8."""
    import torch

    torch.set_num_threads(cores())
    from benchmarks.reference_model import ReferenceClassifier
    from spamfilter.export import load_single_checkpoint
    from spamfilter.tokenizer import Tokenizer

    loaded = time.perf_counter()
    ours, _ = load_single_checkpoint(model / "model.pt")
    classifier = ReferenceClassifier.from_classifier(ours)
    probe = torch.randint(0, 50_000, (2, MAX_LENGTH))
    with torch.no_grad():  # the same logits as spamfilter's model, or the comparison means nothing
        difference = float((classifier(probe) - ours(probe)).abs().max())
    if difference > 1e-4:
        raise SystemExit(f"reference model differs from model.pt by {difference}")
    del ours
    classifier.to(device)
    tokenizer = Tokenizer()
    started = time.perf_counter()
    probabilities = []
    with torch.no_grad():
        for begin in range(0, len(texts), batch):
            rows = tokenizer.encode_batch(texts[begin : begin + batch])
            ids = torch.as_tensor(tokenizer.pad(rows, MAX_LENGTH), device=device)
            probabilities += torch.softmax(classifier(ids), dim=-1)[:, 1].tolist()
    done = time.perf_counter()
    return {"n": len(probabilities), "load_s": started - loaded, "compute_s": done - started, "tokens": None}


def worker_hf(texts: list[str], model: Path, device: str, batch: int) -> dict[str, Any]:
    """transformers' GPT2ForSequenceClassification: pad to each batch's longest, attention mask, batch 8."""
    import torch

    torch.set_num_threads(cores())
    # transformers 5 resolves GPT2TokenizerFast to GPT2Tokenizer at runtime only; 4.x exports it
    from transformers import GPT2ForSequenceClassification, GPT2TokenizerFast  # type: ignore[attr-defined, unused-ignore]

    loaded = time.perf_counter()
    net = GPT2ForSequenceClassification.from_pretrained(model).eval().to(device)
    tokenizer = GPT2TokenizerFast.from_pretrained(model)
    tokenizer.pad_token = tokenizer.eos_token
    started = time.perf_counter()
    probabilities, tokens = [], 0
    with torch.no_grad():
        for begin in range(0, len(texts), batch):
            inputs = tokenizer(
                texts[begin : begin + batch],
                padding=True,
                truncation=True,
                max_length=MAX_LENGTH,
                return_tensors="pt",
            ).to(device)
            tokens += int(inputs["input_ids"].numel())
            logits = net(**inputs).logits
            probabilities += torch.softmax(logits, dim=-1)[:, 1].tolist()
    done = time.perf_counter()
    return {
        "n": len(probabilities),
        "load_s": started - loaded,
        "compute_s": done - started,
        "tokens": tokens,
    }


def run_worker(args: argparse.Namespace) -> None:
    texts = json.loads(Path(args.texts).read_text(encoding="utf-8"))
    work = {"torch-eager": worker_torch_eager, "hf": worker_hf}[args.worker]
    print(json.dumps(work(texts, Path(args.model), "cuda" if args.gpu else "cpu", args.batch_size)))


# --------------------------------------------------------------------------- measurements


def measure_torch(
    way: str, texts_file: Path, model: Path, repeats: int, gpu: bool, batch: int
) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.bench_filter", "--worker", way, "--batch-size", str(batch)]
    argv += ["--texts", str(texts_file), "--model", str(model)] + (["--gpu"] if gpu else [])
    runs = []
    for _ in range(repeats):
        run = checked(run_child(argv), way)
        runs.append({**json.loads(run.stdout), "wall_s": run.seconds, "rss_mib": run.max_rss_mib})
    best = min(runs, key=lambda r: r["wall_s"])
    return {
        "way": way,
        "n": best["n"],
        "wall_s": best["wall_s"],
        "compute_s": min(r["compute_s"] for r in runs),
        "startup_s": best["wall_s"] - best["compute_s"],
        "rss_mib": max(r["rss_mib"] for r in runs),
        "tokens": best["tokens"],
        "all_wall_s": [round(r["wall_s"], 2) for r in runs],
    }


def measure_cli(
    csv_file: Path, model: Path, variant: str, repeats: int, gpu: bool, batch: int
) -> dict[str, Any]:
    argv = [*spamfilter_argv(), "filter", "--model", str(model), "--variant", variant, "--format", "csv"]
    argv += ["--batch-size", str(batch), str(csv_file)] + (["--gpu"] if gpu else [])
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    runs = []
    for _ in range(repeats):
        run = checked(run_child(argv, env=env), f"spamfilter filter {variant}")
        stderr = run.stderr.decode(errors="replace")
        found = SUMMARY.search(stderr)
        if not found:
            raise SystemExit(f"no summary line in: {stderr}")
        if gpu and CUDA not in stderr:  # the summary names the provider the session really got
            raise SystemExit(f"--gpu did not run on CUDA: {stderr}")
        runs.append(
            {"n": int(found[1]), "compute_s": float(found[2]), "wall_s": run.seconds, "rss": run.max_rss_mib}
        )
    best = min(runs, key=lambda r: r["wall_s"])
    return {
        "way": f"spamfilter {model.name.removeprefix('model-')} {variant}" + (" --gpu" if gpu else ""),
        "n": best["n"],
        "wall_s": best["wall_s"],
        "compute_s": min(r["compute_s"] for r in runs),
        "startup_s": best["wall_s"] - best["compute_s"],
        "rss_mib": max(r["rss"] for r in runs),
        "tokens": None,
        "all_wall_s": [round(r["wall_s"], 2) for r in runs],
    }


def rates(row: dict[str, Any], n_full: int) -> dict[str, Any]:
    row["whole_rate"] = row["n"] / row["wall_s"]
    row["compute_rate"] = row["n"] / row["compute_s"]
    # whole-process time for the full data set: measured when n == n_full, else start-up + n_full / rate
    row["full_wall_s"] = (
        row["wall_s"] if row["n"] == n_full else row["startup_s"] + n_full / row["compute_rate"]
    )
    row["full_rate"] = n_full / row["full_wall_s"]
    row["full_measured"] = row["n"] == n_full
    return row


def report(name: str, rows: list[dict[str, Any]], n_full: int, n_limit: int) -> str:
    ref = next((r for r in rows if r["way"] == "torch-eager" and r["n"] == n_limit), None)
    hf = next((r for r in rows if r["way"] == "hf" and r["n"] == n_limit), None)
    out = [f"### {name}: {n_limit} messages, every way measured (whole process, best of runs)\n"]
    body = []
    for r in rows:
        if r["n"] != n_limit:
            continue
        body.append(
            [
                r["way"],
                r["n"],
                f"{r['wall_s']:.2f}",
                f"{r['startup_s']:.2f}",
                f"{r['whole_rate']:.2f}",
                f"{r['compute_rate']:.2f}",
                f"{r['rss_mib']:.0f}",
                f"{r['whole_rate'] / ref['whole_rate']:.2f}x" if ref else "-",
                f"{r['whole_rate'] / hf['whole_rate']:.2f}x" if hf else "-",
                f"{r['compute_rate'] / ref['compute_rate']:.2f}x" if ref else "-",
            ]
        )
    headers = ["way", "n", "wall s", "start+load s", "msgs/s whole", "msgs/s compute", "peak RSS MiB"]
    headers += ["whole vs ref", "whole vs HF", "compute vs ref"]
    out.append(table(headers, body))
    out.append(
        f"\n### {name}: all {n_full} messages, whole process "
        "(not run on all: start-up measured + compute extrapolated from the run above, marked *)\n"
    )
    body = []
    measured_full = {r["way"] for r in rows if r["n"] == n_full}
    for r in rows:
        if r["n"] != n_full and r["way"] in measured_full or r["n"] not in (n_full, n_limit):
            continue
        mark = "" if r["full_measured"] else "*"
        body.append(
            [
                r["way"],
                f"{r['full_wall_s']:.2f}{mark}",
                f"{r['full_rate']:.2f}{mark}",
                f"{r['full_rate'] / ref['full_rate']:.2f}x" if ref else "-",
                f"{r['full_rate'] / hf['full_rate']:.2f}x" if hf else "-",
                f"{r['rss_mib']:.0f}",
            ]
        )
    out.append(table(["way", "wall s", "msgs/s whole", "vs ref", "vs HF", "peak RSS MiB"], body))
    return "\n".join(out)


def main() -> None:
    parser = script_parser(__doc__)
    add_common_args(parser)
    parser.add_argument("--torch-limit", type=int, default=80, help="messages per data set for torch ways")
    parser.add_argument("--emails", type=int, default=200, help="number of generated long emails")
    parser.add_argument("--data", choices=["sms", "emails", "both"], default="both")
    parser.add_argument("--skip-torch", action="store_true", help="only the spamfilter CLI")
    parser.add_argument("--full-repeats", type=int, default=None, help="repeats for full-set CLI runs")
    parser.add_argument("--skip-full", action="store_true", help="no CLI runs on the full set (extrapolate)")
    parser.add_argument("--poolings", nargs="+", choices=POOLINGS, default=list(POOLINGS))
    parser.add_argument("--gpu", action="store_true", help="every way on CUDA (spamfilter: fp32 only)")
    parser.add_argument("--batch-size", type=int, default=BATCH, help="messages per call, every way")
    parser.add_argument("--out", default="bench_filter.json", help="results file in the workdir")
    parser.add_argument("--worker", choices=["torch-eager", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    os.chdir(ROOT)
    workdir: Path = args.workdir.resolve()
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    # int8 (dynamic quantization) is a CPU format: the GPU run builds and measures fp32 only
    variants = ("fp32",) if args.gpu else ("fp32", "int8")
    dirs = build_all(workdir, log, args.poolings, quantize=None if args.gpu else "int8")
    hf_dir = hf_model_dir(workdir, log)
    sms, _ = sms_test_texts()
    data = {"sms": sms, "emails": make_emails(args.emails)}
    chosen = ["sms", "emails"] if args.data == "both" else [args.data]
    if args.gpu:
        import torch  # machine_line names the GPU when torch is loaded

        if not torch.cuda.is_available():
            raise SystemExit("--gpu: torch sees no CUDA device")
    print(f"machine: {machine_line()}; batch size {args.batch_size}\n")
    out = workdir / args.out
    results: dict[str, Any] = {"machine": machine_line(), "data": {}}
    if out.is_file():  # results of other data sets from earlier runs are kept
        results["data"] = json.loads(out.read_text()).get("data", {})
    for name in chosen:
        texts = data[name]
        limit = min(args.torch_limit, len(texts))
        rows = []
        subset_json = write_texts_json(workdir / "inputs" / f"{name}-{limit}.json", texts[:limit])
        subset_csv = write_csv(workdir / "inputs" / f"{name}-{limit}.csv", texts[:limit])
        full_csv = write_csv(workdir / "inputs" / f"{name}-{len(texts)}.csv", texts)
        if not args.skip_torch:
            for way, model in (("torch-eager", model_dir(workdir, "last")), ("hf", hf_dir)):
                log(f"{name}: {way} on {limit} messages x{args.repeats}")
                rows.append(measure_torch(way, subset_json, model, args.repeats, args.gpu, args.batch_size))
        for pooling in args.poolings:
            for variant in variants:
                log(f"{name}: spamfilter {pooling} {variant} on {limit} and {len(texts)} messages")
                cli = (dirs[pooling], variant)
                rows.append(measure_cli(subset_csv, *cli, args.repeats, args.gpu, args.batch_size))
                if len(texts) != limit and not args.skip_full:
                    repeats = args.full_repeats or args.repeats
                    rows.append(measure_cli(full_csv, *cli, repeats, args.gpu, args.batch_size))
        rows = [rates(r, len(texts)) for r in rows]
        results["data"][name] = {"n_full": len(texts), "n_limit": limit, "rows": rows}
        print(report(name, rows, len(texts), limit) + "\n", flush=True)
        out.write_text(json.dumps(results, indent=2))
    if "int8" not in variants:
        print(f"\nresults: {out}")
        return
    agreement = {}
    for pooling, path in dirs.items():
        manifest = json.loads((path / "spamfilter.json").read_text())
        agreement[pooling] = {
            "int8_agreement_with_fp32": manifest["variants"]["int8"]["agreement_with_fp32"],
            "default_variant": manifest["default_variant"],
            "sizes_mib": {p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(path.glob("*.onnx"))},
        }
    results["manifests"] = agreement
    print("int8 agreement with fp32 (spamfilter.json; random weights, so not meaningful):")
    print(json.dumps(agreement, indent=2))
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
