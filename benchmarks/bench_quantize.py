"""int8 quantization options on a trained model directory: how far each moves P(spam) from fp32, how
often the verdict changes, whether onnxruntime's int8 kernels on this CPU compute exactly what the
quantized graph means (ONNX's reference evaluator, plain numpy integer arithmetic), size and speed.

    python -m benchmarks.bench_quantize --model DIR [--exact-messages 16] [--limit N]

DIR is a model directory written by ``spamfilter train`` (its ``model.pt`` carries the test split).
The figures depend on the CPU's integer kernels (AVX2, AVX-512, VNNI): the table names the one used.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import cast

import numpy as np

from .common import script_parser

OPTIONS = {
    "int8 full range (before)": {"weights": "int8", "per_channel": False, "reduce_range": False},
    "int8 per-channel": {"weights": "int8", "per_channel": True, "reduce_range": False},
    "int8 7-bit (default)": {"weights": "int8", "per_channel": False, "reduce_range": True},
    "int8 7-bit per-channel": {"weights": "int8", "per_channel": True, "reduce_range": True},
    "uint8 weights (u8u8)": {"weights": "uint8", "per_channel": False, "reduce_range": False},
}
BATCH = 8


def _probabilities(path: Path, ids: np.ndarray) -> tuple[np.ndarray, float]:
    """P(spam) in batches of 8 as the filter runs them, and the messages per second of the model calls."""
    from spamfilter.export import onnx_probabilities
    from spamfilter.runtime import create_session

    session = create_session(path)
    onnx_probabilities(session, ids[:BATCH], BATCH)  # warm-up
    started = time.perf_counter()
    probabilities = onnx_probabilities(session, ids, BATCH)
    return probabilities, len(ids) / (time.perf_counter() - started)


def _exactness(path: Path, ids: np.ndarray) -> float:
    """Largest |P(spam) difference| between onnxruntime and the ONNX reference evaluator on one batch."""
    import onnx
    from onnx import version_converter
    from onnx.reference import ReferenceEvaluator

    from spamfilter.runtime import create_session, softmax_spam

    fast = create_session(path).run(["logits"], {"input_ids": ids})[0]
    graph = version_converter.convert_version(onnx.load(str(path)), 21)
    # run() returns a list of the requested outputs (a dict only with intermediate=True)
    exact = cast("list[np.ndarray]", ReferenceEvaluator(graph).run(["logits"], {"input_ids": ids}))[0]
    return float(np.abs(softmax_spam(fast.astype(np.float64)) - softmax_spam(exact.astype(np.float64))).max())


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a model directory with model.pt")
    parser.add_argument(
        "--exact-messages", type=int, default=16, help="test messages checked against the reference evaluator"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N test messages")
    args = parser.parse_args()

    import torch

    from spamfilter.export import quantize_int8
    from spamfilter.modeldir import CHECKPOINT_FILE, open_model_directory
    from spamfilter.runtime import cpu_instruction_set

    from .common import machine_line

    directory = open_model_directory(args.model)
    data = torch.load(args.model / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    ids = data["test_input_ids"].numpy()[: args.limit]
    labels = data["test_labels"].numpy()[: args.limit]
    fp32_file, _ = directory.variant_file("fp32")
    fp32, fp32_rate = _probabilities(fp32_file, ids)
    print(f"# {machine_line()}; int8 kernels: {cpu_instruction_set()}")
    print(
        f"# model {args.model}: pooling {directory.manifest.pooling}, max_length {directory.max_length}, "
        f"{len(ids)} test messages; batches of {BATCH}"
    )
    print(
        "| quantization | agreement with fp32 | max abs dP | mean abs dP | accuracy | "
        f"ORT vs exact int8 ({args.exact_messages} msgs) | MiB | msgs/s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    accuracy = float(np.mean((fp32 >= 0.5) == (labels == 1)))
    size = fp32_file.stat().st_size / 2**20
    print(f"| fp32 | 100.00 % | 0 | 0 | {accuracy:.2%} | - | {size:.0f} | {fp32_rate:.1f} |")
    with tempfile.TemporaryDirectory() as scratch:
        for name, settings in OPTIONS.items():
            target = Path(scratch) / "int8.onnx"
            quantize_int8(fp32_file, target, **settings)  # type: ignore[arg-type]
            int8, rate = _probabilities(target, ids)
            diff = np.abs(int8 - fp32)
            agreement = float(np.mean((int8 >= 0.5) == (fp32 >= 0.5)))
            accuracy = float(np.mean((int8 >= 0.5) == (labels == 1)))
            exact = _exactness(target, ids[: args.exact_messages])
            print(
                f"| {name} | {agreement:.2%} | {diff.max():.4f} | {diff.mean():.4f} | {accuracy:.2%} | "
                f"{exact:.1e} | {target.stat().st_size / 2**20:.0f} | {rate:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
