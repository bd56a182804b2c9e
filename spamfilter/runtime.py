"""onnxruntime inference over a model directory (no torch import: this is the filter's hot path)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .modeldir import ModelDirectory, ModelDirectoryError, open_model_directory
from .tokenizer import Tokenizer

MIN_CHARS_KEPT = 20_000
CHARS_PER_TOKEN_KEPT = 64  # far above GPT-2's longest tokens: the first max_length tokens are intact
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
Warn = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"spamfilter: {message}", file=sys.stderr)


def available_cores() -> int:
    """Cores this process may actually run on (cgroup/affinity aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_instruction_set() -> str:
    """The machine and its widest integer-matmul instruction set, e.g. ``x86_64 avx512_vnni`` or
    ``x86_64 avx2``: int8 kernels differ between them, so int8 figures say where they were measured."""
    import platform

    machine = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:  # not Linux
        flags = []
    for name in ("avx512_vnni", "avx_vnni", "avx512bw", "avx2"):
        if name in flags:
            return f"{machine} {name}"
    return machine


def create_session(
    model_path: Path, gpu: bool = False, threads: int | None = None, warn: Warn = _stderr
) -> Any:
    """An ``InferenceSession`` on CUDA when asked and really usable, else on the CPU.

    ``get_available_providers()`` lists CUDA wherever the GPU build is installed, even without a
    GPU or CUDA libraries, so the providers the session actually got are checked afterwards.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cores()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: a CUDA fallback is reported by us, once
    providers = [CPU]
    if gpu:
        if CUDA in ort.get_available_providers():
            _preload_cuda_libraries(ort)
            # a CUDA provider that cannot start logs a multi-line error of its own; ours is one line
            ort.set_default_logger_severity(4)
            providers = [CUDA, CPU]
        else:
            warn("--gpu: this onnxruntime has no CUDA support; running on the CPU")
    try:
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for bad files
        if gpu and providers[0] == CUDA:
            warn(f"--gpu: CUDA could not start ({str(error).splitlines()[0]}); running on the CPU")
            return create_session(model_path, gpu=False, threads=threads, warn=warn)
        raise ModelDirectoryError(
            f"onnxruntime cannot load {model_path}: {str(error).splitlines()[0]}"
        ) from None
    if gpu and providers[0] == CUDA and CUDA not in session.get_providers():
        warn("--gpu: CUDA is not usable here (no GPU or CUDA libraries); running on the CPU")
    return session


def _preload_cuda_libraries(ort: Any) -> None:
    """Load CUDA and cuDNN from the nvidia-* pip packages (as torch installs them) when they are there.

    The filter never imports torch, which is what usually loads these libraries; without them the
    CUDA provider would not start unless they are on the system library path. onnxruntime's helper
    prints its findings on stdout, which in pipeline mode is the mail itself, so that is swallowed:
    whether CUDA really started is checked on the session afterwards.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:  # onnxruntime before 1.21
        return
    # best effort: the check of the session's providers reports the outcome
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
        preload()


def softmax_spam(logits: np.ndarray) -> np.ndarray:
    """P(spam) from ``[batch, 2]`` logits, numerically stable."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp[:, 1] / exp.sum(axis=1)


def has_dynamic_length(session: Any) -> bool:
    return not isinstance(session.get_inputs()[0].shape[1], int)


def run_batches(session: Any, input_ids: np.ndarray, batch_size: int, pad_token_id: int) -> np.ndarray:
    """P(spam) for rows of fixed-length ids; a dynamic-length model gets each batch cut after its
    longest real row (padding after the last real token cannot change its answer)."""
    dynamic = has_dynamic_length(session)
    out = np.empty(len(input_ids), dtype=np.float64)
    for begin in range(0, len(input_ids), batch_size):
        batch = input_ids[begin : begin + batch_size]
        if dynamic:
            real = (batch != pad_token_id).any(axis=0).nonzero()[0]
            batch = batch[:, : int(real.max()) + 1 if len(real) else 1]
        logits = session.run(["logits"], {"input_ids": np.ascontiguousarray(batch)})[0]
        out[begin : begin + len(batch)] = softmax_spam(logits.astype(np.float64))
    return out


class Classifier:
    """A loaded model directory: texts in, spam probabilities out.

    >>> clf = Classifier.load("model-dir")          # doctest: +SKIP
    >>> clf.classify(["WIN a prize now!"])          # doctest: +SKIP
    [('spam', 0.97)]
    """

    def __init__(
        self,
        directory: ModelDirectory,
        gpu: bool = False,
        threads: int | None = None,
        batch_size: int = 8,
        variant: str | None = None,
        warn: Warn = _stderr,
    ) -> None:
        self.directory = directory
        self.variant = variant or directory.default_variant
        try:
            path, self.dynamic_length = directory.checked_variant_file(self.variant)
            self.tokenizer = Tokenizer(directory.path)
        except (OSError, ValueError) as error:  # unreadable files, damaged tokenizer files
            raise ModelDirectoryError(f"cannot use the model in {directory.path}: {error}") from None
        self.session = create_session(path, gpu=gpu, threads=threads, warn=warn)
        self.batch_size = batch_size

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> Classifier:
        return cls(open_model_directory(Path(path)), **options)

    @property
    def provider(self) -> str:
        return str(self.session.get_providers()[0])

    @property
    def threshold(self) -> float:
        return self.directory.threshold

    def spam_probability(self, texts: Sequence[str]) -> np.ndarray:
        """P(spam) per text, in input order."""
        if not texts:
            return np.zeros(0, dtype=np.float64)
        max_length = self.directory.max_length
        # Only the first max_length tokens count: a bounded prefix keeps a huge text from stalling BPE.
        cap = max(MIN_CHARS_KEPT, CHARS_PER_TOKEN_KEPT * max_length)
        rows = self.tokenizer.encode_batch([text[:cap] for text in texts])
        # Batches group texts of similar token length: with a dynamic-length model each batch is
        # only as long as its longest text; the answers go back to input order.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out = np.empty(len(rows), dtype=np.float64)
        for begin in range(0, len(order), self.batch_size):
            chosen = order[begin : begin + self.batch_size]
            length = max_length
            if self.dynamic_length:
                length = max(1, min(max_length, max(len(rows[i]) for i in chosen)))
            ids = self.tokenizer.pad((rows[i] for i in chosen), length)
            logits = self.session.run(["logits"], {"input_ids": ids})[0]
            out[chosen] = softmax_spam(logits.astype(np.float64))
        return out

    def classify(self, texts: Sequence[str], threshold: float | None = None) -> list[tuple[str, float]]:
        """``(label, spam probability)`` per text."""
        cut = self.threshold if threshold is None else threshold
        return [("spam" if p >= cut else "not spam", float(p)) for p in self.spam_probability(texts)]
