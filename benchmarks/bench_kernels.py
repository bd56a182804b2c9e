"""Same process, same batch: torch eager (the reference recipe's model structure and spamfilter's own
model) vs onnxruntime (the package's own session settings) on one
batch of 8 x 120 tokens, fp32 and int8. Isolates the inference engines from start-up and I/O.

    .venv/bin/python -m benchmarks.bench_kernels --repeats 5
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import DEFAULT_WORKDIR, MAX_LENGTH, cores, model_dir, script_parser, table

GFLOP_PER_MESSAGE = 20.65  # GPT-2 small at 120 tokens, see bench_floor


def best_ms(run, repeats: int) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    import numpy as np
    import torch

    from benchmarks.reference_model import ReferenceClassifier
    from spamfilter.export import load_single_checkpoint
    from spamfilter.runtime import create_session

    torch.set_num_threads(cores())
    directory = model_dir(args.workdir, "last")
    ids = np.random.default_rng(0).integers(0, 50000, (args.batch, MAX_LENGTH), dtype=np.int64)
    classifier, _ = load_single_checkpoint(directory / "model.pt")
    tensor = torch.as_tensor(ids)

    def torch_run() -> None:
        with torch.no_grad():
            classifier(tensor)

    reference = ReferenceClassifier.from_classifier(classifier)

    def reference_run() -> None:
        with torch.no_grad():
            reference(tensor)

    rows = [
        ["torch eager fp32, the recipe's model structure (reference)", best_ms(reference_run, args.repeats)],
        ["torch eager fp32, spamfilter's model", best_ms(torch_run, args.repeats)],
    ]
    for name in ("model.onnx", "model.int8.onnx"):
        session = create_session(directory / name, threads=cores())
        rows.append(
            [
                f"onnxruntime {name}",
                best_ms(lambda s=session: s.run(["logits"], {"input_ids": ids}), args.repeats),
            ]
        )
    gflop = GFLOP_PER_MESSAGE * args.batch
    print(f"one batch of {args.batch} x {MAX_LENGTH} tokens, {cores()} threads, best of {args.repeats}:\n")
    print(
        table(
            ["engine", "ms/batch", "msgs/s", "GFLOP/s"],
            [[n, f"{ms:.0f}", f"{args.batch / ms * 1000:.2f}", f"{gflop / ms * 1000:.0f}"] for n, ms in rows],
        )
    )


if __name__ == "__main__":
    main()
