"""The compute floor: this machine's fp32 matmul rate, GPT-2-small FLOPs per message, and each
throughput measured by bench_filter as a fraction of what the matmul rate allows.

    .venv/bin/python -m benchmarks.bench_floor            # reads benchmarks/.work/bench_filter.json
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    MAX_LENGTH,
    add_common_args,
    cores,
    make_emails,
    script_parser,
    sms_test_texts,
    table,
)

N_LAYER, N_EMBD = 12, 768
BATCH = 8
# weights multiplied per token per block: c_attn 768x2304, attn c_proj 768x768, c_fc 768x3072, c_proj 3072x768
BLOCK_MATMUL_PARAMS = N_EMBD * (3 * N_EMBD + N_EMBD + 4 * N_EMBD + 4 * N_EMBD)


def flops_per_sequence(tokens: int) -> float:
    """Forward FLOPs of GPT-2 small on one sequence: 2 x block weights x tokens + causal attention
    (QK^T and AV: 2 x 2 x d per (query, key) pair with key <= query) + the 2-class head."""
    dense = 2 * N_LAYER * BLOCK_MATMUL_PARAMS * tokens
    attention = N_LAYER * 4 * N_EMBD * tokens * (tokens + 1) / 2
    return dense + attention + 2 * N_EMBD * 2


def matmul_rate(repeats: int, seconds: float = 1.0) -> list[dict[str, Any]]:
    """GFLOP/s of fp32 matmuls shaped like one batch of 8 x 120 tokens through GPT-2's layers."""
    import numpy as np
    import torch

    torch.set_num_threads(cores())
    m = BATCH * MAX_LENGTH
    shapes = [(m, 768, 3072), (m, 3072, 768), (m, 768, 2304), (m, 768, 768)]
    rows = []
    for lib in ("torch", "numpy"):
        for m_, k, n in shapes:
            rng = np.random.default_rng(0)
            a = rng.standard_normal((m_, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            if lib == "torch":
                ta, tb = torch.from_numpy(a), torch.from_numpy(b)
                run = lambda ta=ta, tb=tb: torch.mm(ta, tb)  # noqa: E731
            else:
                run = lambda a=a, b=b: a @ b  # noqa: E731
            run()
            best = 0.0
            for _ in range(repeats):
                count, started = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - started) < seconds:
                    run()
                    count += 1
                best = max(best, 2 * m_ * k * n * count / elapsed / 1e9)
            rows.append({"lib": lib, "shape": f"{m_}x{k} @ {k}x{n}", "gflops": best, "weight": k * n})
    return rows


def batch_lengths(lengths: list[int], sort: bool) -> list[int]:
    """Tokens each message is computed at when batches of 8 are padded to their longest row."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i]) if sort else list(range(len(lengths)))
    out = [0] * len(lengths)
    for begin in range(0, len(order), BATCH):
        chosen = order[begin : begin + BATCH]
        longest = max(lengths[i] for i in chosen)
        for i in chosen:
            out[i] = longest
    return out


def main() -> None:
    parser = script_parser(__doc__)
    add_common_args(parser)
    parser.add_argument(
        "--results", type=Path, default=None, help="bench_filter.json (default: in --workdir)"
    )
    parser.add_argument("--emails", type=int, default=200)
    args = parser.parse_args()
    print(f"cores in affinity: {cores()} (os.cpu_count {os.cpu_count()})\n")

    rates = matmul_rate(args.repeats)
    print("fp32 matmul rate (best of repeats, 1 s each):\n")
    print(table(["lib", "shape", "GFLOP/s"], [[r["lib"], r["shape"], f"{r['gflops']:.1f}"] for r in rates]))
    # the floor: the better library's FLOP-weighted rate over GPT-2's four matmul shapes
    weighted = {}
    for lib in ("torch", "numpy"):
        lib_rows = [r for r in rates if r["lib"] == lib]
        weighted[lib] = sum(r["weight"] for r in lib_rows) / sum(r["weight"] / r["gflops"] for r in lib_rows)
    peak = max(weighted.values())
    print(
        "\nFLOP-weighted over the four shapes: "
        + ", ".join(f"{lib} {rate:.1f}" for lib, rate in weighted.items())
        + f" GFLOP/s; floor rate = the better: {peak:.1f} GFLOP/s\n"
    )

    from spamfilter.tokenizer import Tokenizer

    tokenizer = Tokenizer()
    sms, _ = sms_test_texts()
    texts = {"sms": sms, "emails": make_emails(args.emails)}
    lengths = {
        name: [min(len(r), MAX_LENGTH) or 1 for r in tokenizer.encode_batch(t)] for name, t in texts.items()
    }
    per_token = flops_per_sequence(MAX_LENGTH) / MAX_LENGTH
    print(
        f"FLOPs: {per_token / 1e6:.1f} MFLOP per token at 120 tokens; "
        f"{flops_per_sequence(MAX_LENGTH) / 1e9:.2f} GFLOP per 120-token message\n"
    )
    floor_rows, gflop = [], {}
    for name, ls in lengths.items():
        real = statistics.fmean(flops_per_sequence(n) for n in ls) / 1e9
        padded = flops_per_sequence(MAX_LENGTH) / 1e9
        sorted_batches = statistics.fmean(flops_per_sequence(n) for n in batch_lengths(ls, sort=True)) / 1e9
        in_order = statistics.fmean(flops_per_sequence(n) for n in batch_lengths(ls, sort=False)) / 1e9
        gflop[name] = {"padded": padded, "real": real, "sorted": sorted_batches, "in_order": in_order}
        for what, value in (
            ("padded to 120 (reference, `last`)", padded),
            ("batch-longest, input order (HF)", in_order),
            ("batch-longest, length-sorted (spamfilter dynamic)", sorted_batches),
            ("each message's real length", real),
        ):
            floor_rows.append(
                [name, what, f"{statistics.fmean(ls):.1f}", f"{value:.2f}", f"{peak / value:.1f}"]
            )
    print(table(["data", "computed at", "mean real tokens", "GFLOP/msg", "floor msgs/s"], floor_rows))

    results_path = args.results or args.workdir / "bench_filter.json"
    if not results_path.is_file():
        print(f"\n(no {results_path}: run benchmarks.bench_filter first for the fractions)")
        return
    results = json.loads(results_path.read_text())
    print(
        "\nThroughput from bench_filter as a fraction of the floor (compute = in-process rate after load; "
        "int8 runs integer kernels, so its fraction of the fp32 floor can exceed what fp32 can reach):\n"
    )
    rows = []
    for name, block in results["data"].items():
        full = {r["way"]: r for r in block["rows"] if r["n"] == block["n_full"]}
        for r in block["rows"]:
            if r["n"] != block["n_limit"]:
                continue  # in-process rates from the run every way made; whole-process on all below
            whole = full.get(r["way"], r)
            if r["way"] == "torch-eager" or r["way"].startswith("spamfilter last "):
                basis = "padded"
            elif r["way"] == "hf":
                basis = "in_order"
            else:
                basis = "sorted"
            done = gflop[name][basis]
            achieved = r["compute_rate"] * done
            useful = r["compute_rate"] * gflop[name]["real"]
            rows.append(
                [
                    name,
                    r["way"],
                    r["n"],
                    f"{r['compute_rate']:.2f}",
                    f"{whole['full_rate']:.2f}{'' if whole['full_measured'] else '*'}",
                    f"{achieved:.0f}",
                    f"{achieved / peak:.0%}",
                    f"{useful / peak:.0%}",
                ]
            )
    headers = ["data", "way", "n", "msgs/s compute", "msgs/s whole, all msgs", "GFLOP/s done", "of floor"]
    headers += ["useful (real-length) of floor"]
    print(table(headers, rows))
    print("\n* whole process on all messages extrapolated: measured start-up + n / compute rate")


if __name__ == "__main__":
    main()
