"""onnxruntime inference over a model directory (no torch import: this is the filter's hot path)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InstallError, first_line
from .head import Head, apply_head
from .memory import Evidence, Memory, MemoryFile, MemoryFiles, shifted, shingles
from .modeldir import ModelDirectory, ModelDirectoryError, open_model_directory
from .tokenizer import Tokenizer, pad_rows
from .user_heads import UserHead
from .verdict import Decision
from .windows import combine, windows_of

CPU_BATCH = 8  # messages per model call by default
GPU_BATCH = 64
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
    # onnxruntime 1.2x on Linux writes a device id and a telemetry database under ~/.cache/Microsoft
    # and can send usage events: a mail filter sends nothing anywhere. The variable only counts
    # before the first import, hence here (a user who wants telemetry sets it to 0).
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        import onnxruntime as ort
    except ImportError:
        raise InstallError(
            "no onnxruntime installed: pip install 'spamfilter-gpt2[cpu]' (or [gpu] for CUDA)"
        ) from None

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
            warn(f"--gpu: CUDA could not start ({first_line(error)}); running on the CPU")
            return create_session(model_path, gpu=False, threads=threads, warn=warn)
        raise ModelDirectoryError(f"onnxruntime cannot load {model_path}: {first_line(error)}") from None
    if gpu and providers[0] == CUDA and CUDA not in session.get_providers():
        warn("--gpu: CUDA is not usable here (no GPU or CUDA libraries); running on the CPU")
    return session


def create_session_from_bytes(model: bytes, threads: int | None = None) -> Any:
    """A CPU session of a graph held in memory (a copy with an added output)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=options, providers=[CPU])


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


def accepts_shorter_inputs(session: Any) -> bool:
    """Whether the model takes ids shorter than its ``max_length`` (a dynamic sequence axis, as the
    last-token export has). The one place this is decided: the session's own input shape."""
    return not isinstance(session.get_inputs()[0].shape[1], int)


def session_logits(session: Any) -> LogitsFunction:
    """``ids -> logits`` through an onnxruntime session."""
    return lambda ids: session.run(["logits"], {"input_ids": ids})[0]


LogitsFunction = Callable[[np.ndarray], np.ndarray]  # int64 (batch, length) -> float (batch, 2)


def batched_logits(
    rows: Sequence[Sequence[int]] | Sequence[np.ndarray],
    logits: LogitsFunction,
    *,
    batch_size: int,
    max_length: int,
    pad_token_id: int,
    trim: bool,
    columns: int = 2,
) -> np.ndarray:
    """Logits ``(n, 2)`` for rows of token ids, in input order: the one batching path of the
    package (the classifier, the export's checks, the service's micro-batches). Rows are cut to
    ``max_length``, sorted by length and run at most ``batch_size`` at a time, each batch
    right-padded to ``max_length`` or, with ``trim`` (a model that accepts shorter inputs), only
    to its longest row: padding after a message's last real token cannot change its answer under
    the causal mask. With ``trim`` a batch also ends where the next row is much longer than its
    first (``_fits``): padding is computed like real tokens, and a few rows of mixed lengths (a
    micro-batch) would otherwise spend a third of the time on it. ``columns``: the width of what
    ``logits`` answers per row (more than 2 where it also answers the pooled features)."""
    out = np.empty((len(rows), columns), dtype=np.float64)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    lengths = [max(1, min(max_length, len(rows[i]))) for i in order]
    begin = 0
    while begin < len(order):
        end = begin + 1
        while end < len(order) and end - begin < batch_size:
            if trim and not _fits(lengths[begin], lengths[end]):
                break
            end += 1
        chosen = order[begin:end]
        length = lengths[end - 1] if trim else max_length
        out[chosen] = logits(pad_rows((rows[i] for i in chosen), length, pad_token_id))
        begin = end
    return out


def _fits(shortest: int, length: int) -> bool:
    """Whether a row of ``length`` tokens may share a batch whose shortest row has ``shortest``:
    at most a quarter (or 8 tokens) longer. `benchmarks/bench_batching.py`: calls of 16 SMS run
    1.3x faster than when each batch is padded to its longest, and large sorted batches lose nothing."""
    return length <= max(1.25 * shortest, shortest + 8)


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
        batch_size: int | None = None,
        variant: str | None = None,
        warn: Warn = _stderr,
    ) -> None:
        self.directory = directory
        self.variant = variant or directory.default_variant
        try:
            path = directory.checked_variant_file(self.variant)
            self.tokenizer = Tokenizer(directory.path)
        except (OSError, ValueError) as error:  # unreadable files, damaged tokenizer files
            raise ModelDirectoryError(f"cannot use the model in {directory.path}: {error}") from None
        self.session = create_session(path, gpu=gpu, threads=threads, warn=warn)
        self._threads = threads
        self._features_session: Any = None  # the session answering pooled features (user heads)
        self._features_width = 0
        self._features_output = "features"  # or "read_features": every position read (line-ends)
        self._reads = 1  # positions read per window
        self.user_head: UserHead | None = None  # for_user: every text scored by this user's head
        self.user: str | None = None  # for_user: every text compared with this user's memory too
        # The memory of corrected mail (memory.py): the model directory's, and each user's.
        self.use_memory = True
        self._memory = MemoryFile(directory.path / "corrections")
        self._training_memory = MemoryFile(directory.path)  # train --remember-training's, if any
        self._user_memories = MemoryFiles()
        self.dynamic_length = accepts_shorter_inputs(self.session)
        # A GPU is only busy with many messages per call; on the CPU small batches lose nothing.
        self.batch_size = batch_size or (GPU_BATCH if gpu else CPU_BATCH)
        # How this model reads a text (max_length, pad token, windows, the text cap), read once.
        self.recipe = directory.recipe
        self.windows_scored = 0  # model rows run, for the summary: more than texts for long mail

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> Classifier:
        return cls(open_model_directory(Path(path)), **options)

    @property
    def provider(self) -> str:
        return str(self.session.get_providers()[0])

    @property
    def max_windows(self) -> int:
        return self.recipe.max_windows

    @max_windows.setter
    def max_windows(self, windows: int) -> None:
        """Read texts in at most ``windows`` windows from now on (a comparison in a test or benchmark)."""
        self.recipe = dataclasses.replace(self.recipe, max_windows=windows)

    @property
    def threshold(self) -> float:
        return self.directory.threshold if self.user_head is None else self.user_head.threshold

    def for_user(self, user: str | None) -> Classifier:
        """This classifier scoring with ``user``'s head where that user has one (``filter --user``);
        the shared model's verdicts otherwise. ``UsageError`` for a name that cannot be a user's."""
        if user is None:
            return self
        from .learn import read_features
        from .user_heads import UserHeads, trunk_fingerprint, valid_user

        self.user = valid_user(user)
        try:
            trunk = trunk_fingerprint(read_features(self.directory.path)["train_features"])
        except (OSError, ValueError, KeyError):  # no training features: no head can be checked
            return self
        self.user_head = UserHeads(self.directory.path, trunk=trunk).head(user)
        return self

    def memory_evidence(
        self, texts: Sequence[str], users: Sequence[str | None] | None = None
    ) -> list[Evidence] | None:
        """What the memory of corrected mail says of each text (:mod:`.memory`): the model
        directory's memory (its corrections', and its training mail's where ``train
        --remember-training`` kept one) and, for a text with a user, that user's. None where no
        memory holds anything (the common case costs two ``stat`` calls per batch)."""
        if not self.use_memory:
            return None
        if users is None and self.user is not None:
            users = [self.user] * len(texts)
        shared = self._memory.current()
        trained = self._training_memory.current()
        mine = {user: self._user_memory(user) for user in set(users or ()) if user is not None}
        if not len(shared) and not len(trained) and not any(len(memory) for memory in mine.values()):
            return None
        found = []
        for text, user in zip(texts, users or [None] * len(texts), strict=True):
            hashes = shingles(text)
            evidence = shared.evidence(hashes).strongest(trained.evidence(hashes))
            if user is not None and len(mine[user]):
                evidence = evidence.strongest(mine[user].evidence(hashes))
            found.append(evidence)
        return found

    def _user_memory(self, user: str) -> Memory:
        from .errors import UsageError
        from .user_heads import USERS_DIR, user_key

        try:
            key = user_key(user)
        except UsageError:  # not a user's name: no memory of theirs (the batcher says why)
            return Memory()
        return self._user_memories.current(self.directory.path / USERS_DIR / key / "corrections")

    def spam_probability(
        self,
        texts: Sequence[str],
        heads: Sequence[Head | None] | None = None,
        users: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        """P(spam) per text, in input order: the highest of its windows' (:mod:`.windows`), its
        log-odds then moved by the memory of corrected mail (:meth:`memory_evidence`).

        ``heads``: per text, a user's head to score it with instead of the model's own (None: the
        model's). Those texts' windows are scored by that head from the pooled features the same
        graph run answers; the others' from its logits, exactly as without ``heads``. ``users``:
        per text, the user whose memory it is compared with (None: the shared memory alone)."""
        probabilities = self._model_probability(texts, heads)
        evidence = self.memory_evidence(texts, users)
        if evidence is None:
            return probabilities
        return shifted(probabilities, np.asarray([found.shift for found in evidence]))

    def _model_probability(self, texts: Sequence[str], heads: Sequence[Head | None] | None) -> np.ndarray:
        recipe = self.recipe
        rows = self.tokenizer.encode_batch([text[: recipe.chars_kept] for text in texts])
        windows, owners = windows_of(rows, recipe.max_length, recipe.max_windows, recipe.end_at_paragraph)
        if heads is None and self.user_head is not None:
            heads = [self.user_head.head] * len(texts)
        if heads is not None and any(head is not None for head in heads):
            width = self._features_size() // self._reads
            # A head of another width (a damaged or foreign file) is no head: the shared verdict
            # (the shared model's own path), where it failed the whole batch.
            heads = [head if head is not None and head.size == width else None for head in heads]
        personal = heads is not None and any(head is not None for head in heads)
        size = self._features_size() if personal else 0
        outputs = batched_logits(
            windows,
            self._logits_and_features(size) if personal else session_logits(self.session),
            batch_size=self.batch_size,
            max_length=recipe.max_length,
            pad_token_id=recipe.pad_token_id,
            trim=self.dynamic_length,
            columns=2 + size,
        )
        self.windows_scored += len(windows)
        probabilities = softmax_spam(outputs[:, :2])
        if personal:
            assert heads is not None
            owner_of = np.asarray(owners, dtype=np.int64)
            for text, head in enumerate(heads):
                if head is not None:
                    mine = owner_of == text
                    # a window's score under this head: its highest over the positions read
                    read = outputs[mine, 2:].reshape(-1, self._features_width)
                    probabilities[mine] = apply_head(head, read).reshape(int(mine.sum()), -1).max(axis=1)
        return combine(probabilities, owners, len(texts), recipe.window_discount)

    def _features_size(self) -> int:
        """The columns of features per window: the pooled features' width, times the positions
        read for line-ends pooling (its ``read_features`` output). The session answering them is
        the model's own, or, for an export without a ``features`` output, a copy of the graph with
        one (made once)."""
        if self._features_session is None:
            from .onnx_head import FEATURES_OUTPUT, READ_FEATURES_OUTPUT, read_head, with_features_output

            model = self.directory.checked_variant_file(self.variant).read_bytes()
            self._features_width = read_head(model).size
            outputs = {output.name: output for output in self.session.get_outputs()}
            if READ_FEATURES_OUTPUT in outputs:
                self._features_output = READ_FEATURES_OUTPUT
                self._reads = self._positions_read(outputs[READ_FEATURES_OUTPUT].shape[1])
            if FEATURES_OUTPUT in outputs:
                self._features_session = self.session
            else:
                graph = with_features_output(model, self._features_width)
                self._features_session = create_session_from_bytes(graph, self._threads)
        return self._features_width * self._reads

    def _positions_read(self, declared: Any) -> int:
        """How many positions the graph reads per window: its declared shape, or, where the exporter
        left that axis symbolic, the answer to one padded row."""
        if isinstance(declared, int):
            return declared
        ids = np.full((1, self.recipe.max_length), self.recipe.pad_token_id, dtype=np.int64)
        ids[0, 0] = 0
        return int(self.session.run(["read_features"], {"input_ids": ids})[0].shape[1])

    def _logits_and_features(self, size: int) -> LogitsFunction:
        session, name = self._features_session, self._features_output

        def run(ids: np.ndarray) -> np.ndarray:
            logits, features = session.run(["logits", name], {"input_ids": ids})
            return np.concatenate([logits, np.asarray(features).reshape(len(ids), size)], axis=1)

        return run

    def classify(self, texts: Sequence[str], decision: Decision | None = None) -> list[tuple[str, float]]:
        """``(label, spam probability)`` per text, by ``decision`` (default: the model's threshold)."""
        decide = decision or Decision(self.threshold)
        return [(decide.verdict(float(p)).label, float(p)) for p in self.spam_probability(texts)]
