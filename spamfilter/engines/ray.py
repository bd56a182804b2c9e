"""``spamfilter filter --engine ray``: the same filter on Ray Data, for archives beyond one machine.

    inputs -> plan (a CPU task per input: its chunks) -> read (CPU tasks: bytes to text)
           -> score (an actor pool: one onnxruntime session per worker, CPU or GPU)
           -> write (CPU tasks: each chunk's tagged bytes and verdicts, under DIR/.spamfilter-ray)
    driver: an input whose chunks are all written is joined into DIR/<name> and recorded as complete

Ray Data streams: the chunks in flight are bounded by its backpressure, not by the inputs' size.
Every node reads the inputs and writes under DIR, so on a cluster both are on a file system all
nodes share (or the inputs are fsspec URLs), and spamfilter is installed on every node. Only this
module imports ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray

from .. import interrupts
from ..errors import EX_DATAERR, ClassificationError, SpamfilterError, UsageError, first_line
from ..modeldir import ModelDirectory, open_model_directory
from ..pipeline import DEFAULT_TEXT_COLUMN, explanation_for
from ..runtime import CPU_BATCH, GPU_BATCH, Classifier, available_cores
from ..verdict import Decision
from . import session
from .chunks import Chunk, Input, InputError, describe_input, is_url, plan, read, write
from .outputs import RESERVED_NAMES, LinkFound, OutputFolder, create_file, write_verdicts

WORKER_MEMORY = 512 << 20  # a scoring worker's memory besides its model: tokenizer, arena, a chunk
_PLAN_GROUP = 16  # chunks per batch out of a plan task: the read tasks start before the plan ends
# A scoring worker that dies is restarted and its chunk retried, this many times (Ray Data's default
# is without limit: a chunk that kills every worker it meets would stop the run for ever).
MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3
KILLER_DEATHS = 2  # a chunk that was running when its worker died this often is what kills them
MAIL_KINDS = ("mbox", "email", "folder")  # for the domain guard: a CSV's texts may be anything


@dataclass(frozen=True)
class Cluster:
    """Where and how wide to run."""

    address: str | None = None  # None: $RAY_ADDRESS if set, else Ray embedded on this machine
    workers: int = 1  # scoring actors
    gpus_per_worker: float = 0.0
    cpus_per_worker: int = 1  # CPUs a worker reserves, and its onnxruntime threads


@dataclass(frozen=True)
class Job:
    """What every stage needs, shipped to the workers with the stage functions."""

    inputs: tuple[Input, ...]
    out: str
    decision: Decision  # bound to the model's threshold
    text_column: str
    chars_kept: int


@dataclass
class Run:
    """What a run did, for the summary line and the exit code."""

    inputs: int = 0
    complete: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # complete from an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # source -> why
    messages: int = 0
    spam: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0  # of Ray itself (0 when it was running already)
    workers: int = 0
    verdicts: Path | None = None
    interrupted: int | None = None  # the stop signal's number

    def line(self) -> str:
        rate = self.messages / self.seconds if self.seconds > 0 else 0.0
        parts = [f"{len(self.complete)} filtered"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} already complete (skipped)")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        return (
            f"ray: {self.inputs} inputs: {', '.join(parts)}; {self.messages} messages: {self.spam} spam, "
            f"{self.messages - self.spam} not spam in {self.seconds:.2f} s ({rate:.1f}/s) on "
            f"{self.workers} scoring workers (Ray start-up {self.startup_seconds:.1f} s)"
        )


class InputsFailed(SpamfilterError):
    """Some inputs could not be filtered; every other one is complete."""

    exit_code = EX_DATAERR  # some inputs could not be filtered; the others are complete


def _stderr(message: str) -> None:
    print(f"spamfilter: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- the stages


def _plan_stage(batch: Any, job: Job) -> Iterator[dict[str, list[bytes]]]:
    for index in batch["input"]:
        group: list[bytes] = []
        for chunk in plan(int(index), job.inputs[int(index)], job.text_column):
            group.append(pickle.dumps(chunk))
            if len(group) == _PLAN_GROUP:
                yield {"chunk": group}
                group = []
        if group:
            yield {"chunk": group}


def _read_stage(row: dict[str, Any], job: Job) -> dict[str, bytes]:
    chunk: Chunk = pickle.loads(row["chunk"])
    return {"chunk": pickle.dumps(read(chunk, job.inputs[chunk.input], job.chars_kept))}


class ChunkScorer:
    """A scoring worker: one onnxruntime session kept for the whole run, one chunk per call (the
    local engine's model call for that chunk). While it scores a chunk, a marker file under
    ``markers`` names the chunk: one left behind is a chunk that was running when its worker died."""

    def __init__(
        self,
        model: str,
        gpu: bool,
        batch_size: int,
        variant: str,
        threads: int,
        markers: str | None = None,
        decision: Decision | None = None,
    ) -> None:
        self.classifier = Classifier.load(
            model, gpu=gpu, batch_size=batch_size, variant=variant, threads=threads
        )
        self.markers = Path(markers) if markers else None
        # Given where the run explains verdicts (--explain): each one explained here, beside its
        # score, one message at a time as filter explains it, so the bytes are filter's.
        self.decision = decision

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
        return {"chunk": [self.score(blob) for blob in batch["chunk"]]}

    def score(self, blob: bytes) -> bytes:
        chunk: Chunk = pickle.loads(blob)
        marker = None
        if self.markers is not None:
            marker = self.markers / f"{chunk.input}.{chunk.number}.{uuid.uuid4().hex}"
            create_file(marker, b"")
        self.score_chunk(chunk)
        if marker is not None:
            marker.unlink(missing_ok=True)
        chunk.texts = []  # the writer re-reads the bytes; the texts would only travel
        return pickle.dumps(chunk)

    def score_chunk(self, chunk: Chunk) -> None:
        if chunk.error is None:
            try:
                chunk.probabilities = [float(p) for p in self.classifier.spam_probability(chunk.texts)]
            except Exception as error:  # the input fails, not the run
                chunk.error = f"classification failed: {first_line(error)}"
                return
            if self.decision is not None and self.decision.explain != "off":
                chunk.explanations = [
                    explanation_for(self.classifier, self.decision, self.decision.verdict(p), text)
                    for p, text in zip(chunk.probabilities, chunk.texts, strict=True)
                ]


def _write_stage(row: dict[str, Any], job: Job) -> dict[str, Any]:
    chunk: Chunk = pickle.loads(row["chunk"])
    item, out = job.inputs[chunk.input], OutputFolder(Path(job.out))
    error = chunk.error
    if error is None:
        target = out.tree(item.name) if item.kind == "folder" else out.chunk_file(item.name, chunk.number)
        try:
            verdicts = write(chunk, item, job.decision, target)
            write_verdicts(out.verdicts_file(item.name, chunk.number), verdicts)
        except (OSError, ValueError) as failure:
            error = f"{item.source}: {getattr(failure, 'strerror', None) or first_line(failure)}"
    return {
        "input": chunk.input,
        "number": chunk.number,
        "last": chunk.last,
        "messages": len(chunk.probabilities),
        "spam": sum(job.decision.verdict(p).spam for p in chunk.probabilities),
        "error": error or "",
    }


# --------------------------------------------------------------------------- the run


@dataclass
class _Progress:
    """One pending input at the driver."""

    written: set[int] = field(default_factory=set)
    chunks: int | None = None  # known when its last chunk is written
    messages: int = 0
    spam: int = 0
    error: str | None = None


def filter_with_ray(
    sources: Sequence[str],
    out_dir: Path,
    model: Path,
    cluster: Cluster = Cluster(),
    *,
    decision: Decision | None = None,
    variant: str | None = None,
    batch_size: int | None = None,
    text_column: str = DEFAULT_TEXT_COLUMN,
    text_column_given: bool = False,
    input_format: str = "auto",
    progress: bool = False,
    report: Callable[[str], None] = _stderr,
    on_complete: Callable[[str], None] | None = None,
    scorer: type = ChunkScorer,
) -> Run:
    """Filter every input into ``out_dir`` and write ``out_dir/verdicts.parquet``. Inputs that
    cannot be read are reported by name and counted in ``Run.failed`` while the others finish;
    inputs complete from an earlier run with the same model and options are skipped. ``scorer``:
    the scoring workers' class (tests give one that fails on purpose)."""
    started = time.perf_counter()
    scoring = _Scoring.of(model, variant, batch_size, cluster)
    bound = (decision or Decision()).for_model(scoring.directory.threshold)
    run = Run(inputs=len(sources), workers=cluster.workers)
    inputs = _describe(sources, input_format, text_column, text_column_given, run, report)
    _check_outputs(inputs, out_dir)
    out = OutputFolder(out_dir.resolve())
    try:
        out.check_links()
    except LinkFound as link:
        raise UsageError(
            f"{link} is a symbolic link: --engine ray follows no links inside -o DIR; remove it"
        ) from None
    _check_ownership(inputs, out)
    if any(item.kind in MAIL_KINDS for item in inputs):  # the domain guard, once per run
        warning = scoring.directory.manifest.mail_warning()
        if warning is not None:
            report(warning)
    try:
        out.prepare()
    except OSError as error:
        raise UsageError(f"cannot create {out_dir}: {error.strerror or error}") from None
    options = {**scoring.identity(), "threshold": bound.cut, "header_prefix": bound.header_prefix}
    if bound.explain != "off":  # outputs written without explanations are not complete for this run
        options["explain"] = bound.explain
    fingerprints = [_fingerprint(item, options, text_column) for item in inputs]
    pending = []
    for index, item in enumerate(inputs):
        if out.is_complete(item.name, fingerprints[index]):
            run.skipped.append(item.name)
            report(f"{item.source}: already complete in {out.output(item.name)}, skipped")
        else:
            pending.append(index)
    job = Job(tuple(inputs), str(out.root), bound, text_column, scoring.directory.recipe.chars_kept)
    started_ray, quiet = False, contextlib.ExitStack()
    try:
        if pending:
            started_ray, run.startup_seconds = _connect(cluster, report)
            if not progress:  # (a progress display needs stderr to stay the terminal)
                quiet.enter_context(session.cpp_log_kept_off_stderr())
        remaining = pending
        while remaining:
            dataset = _dataset(job, remaining, scorer, scoring, cluster, out, progress)
            killers = _drive(dataset, job, remaining, fingerprints, out, run, report, on_complete)
            if run.interrupted is not None or not killers:
                break
            # The run stopped on a chunk that killed its scoring workers: its input fails, and the
            # others are run again (those complete already are not).
            for index in killers:
                item = inputs[index]
                run.failed[item.source] = (
                    f"{item.source}: its scoring workers died on it, {MAX_TASK_RETRIES + 1} tries "
                    "(out of memory, or a crash in the model runtime); not filtered"
                )
                report(run.failed[item.source])
                out.abandon(item.name)
            remaining = [
                index
                for index in remaining
                if inputs[index].name not in run.complete and inputs[index].source not in run.failed
            ]
    finally:
        done = set(run.complete) | set(run.skipped)
        run.verdicts = out.write_verdict_table([item.name for item in inputs if item.name in done])
        for index in pending:
            if inputs[index].name not in done and run.interrupted is None:
                out.abandon(inputs[index].name)
        if started_ray:
            ray.shutdown()
        quiet.close()
        run.seconds = time.perf_counter() - started
    return run


@dataclass(frozen=True)
class _Scoring:
    """The model the workers load, checked once here rather than failing in every worker."""

    directory: ModelDirectory
    variant: str
    batch_size: int
    gpu: bool
    threads: int
    model_file: Path

    @classmethod
    def of(cls, model: Path, variant: str | None, batch_size: int | None, cluster: Cluster) -> _Scoring:
        directory = open_model_directory(model)
        variant = variant or directory.default_variant
        gpu = cluster.gpus_per_worker > 0
        batch = batch_size or (GPU_BATCH if gpu else CPU_BATCH)  # as the local engine's Classifier
        model_file = directory.checked_variant_file(variant)
        return cls(directory, variant, batch, gpu, cluster.cpus_per_worker, model_file)

    def identity(self) -> dict[str, Any]:
        """What the verdicts depend on, for the completion records."""
        model = self.directory.variant_file(self.variant)[1] or str(self.model_file.stat().st_mtime_ns)
        return {"model": model, "variant": self.variant, "batch_size": self.batch_size}

    def worker_arguments(self) -> dict[str, Any]:
        return {
            "model": str(self.directory.path.resolve()),
            "gpu": self.gpu,
            "batch_size": self.batch_size,
            "variant": self.variant,
            "threads": self.threads,
        }


def _describe(
    sources: Sequence[str],
    input_format: str,
    text_column: str,
    text_column_given: bool,
    run: Run,
    report: Callable[[str], None],
) -> list[Input]:
    """The inputs this engine can filter; the others reported and counted as failed."""
    inputs = []
    for source in sources:
        try:
            inputs.append(describe_input(source, input_format, text_column, text_column_given))
        except InputError as error:
            run.failed[source] = str(error)
            report(str(error))
    return inputs


def _check_outputs(inputs: Sequence[Input], out_dir: Path) -> None:
    """Usage errors before anything runs: two outputs of one name, or an output over an input."""
    names = [item.name for item in inputs]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise UsageError(
            f"several inputs would write {', '.join(clashes)} in {out_dir}: rename or filter them apart"
        )
    reserved = sorted(set(names) & set(RESERVED_NAMES))
    if reserved:
        raise UsageError(f"an input named {reserved[0]} would clash with the engine's own file in {out_dir}")
    root = out_dir.resolve()
    for item in inputs:
        if is_url(item.source):
            continue
        # As given and as resolved: an input reached through a link is where its target is.
        for source in (Path(item.source), Path(item.source).resolve()):
            if root == source or root.is_relative_to(source) or (root / item.name) == source:
                raise UsageError(
                    f"the output folder {out_dir} would overwrite or sit inside the input {item.source}"
                )


def _check_ownership(inputs: Sequence[Input], out: OutputFolder) -> None:
    """A usage error before anything is written: an output would replace something that this
    engine's records do not say it wrote (the user's own Maildir, a file of the same name)."""
    theirs = [str(out.output(item.name)) for item in inputs if not out.owns(item.name)]
    if theirs:
        more = f" (and {len(theirs) - 1} more)" if len(theirs) > 1 else ""
        raise UsageError(
            f"{theirs[0]}{more} exists and is no output of --engine ray: move it, or write to another -o DIR"
        )


def _fingerprint(item: Input, options: dict[str, Any], text_column: str) -> dict[str, Any]:
    """What an input's output depends on: a rerun redoes it when any of this changed."""
    if is_url(item.source):
        import fsspec

        filesystem, path = fsspec.core.url_to_fs(item.source)
        info = filesystem.info(path)
        stamp = [info.get("size"), str(info.get("mtime") or info.get("LastModified") or info.get("ETag"))]
    elif item.kind == "folder":
        # A folder's (and a Maildir's cur/ and new/) modification time changes when a file is added
        # or removed.
        root = Path(item.source)
        stamp = [(root / sub).stat().st_mtime_ns for sub in ("", "cur", "new") if (root / sub).is_dir()]
    else:
        status = Path(item.source).stat()
        stamp = [status.st_size, status.st_mtime_ns]
    column = text_column if item.kind == "csv" else None
    return {"source": item.source, "kind": item.kind, "stamp": stamp, "text_column": column, **options}


def _connect(cluster: Cluster, report: Callable[[str], None]) -> tuple[bool, float]:
    """Join the cluster at the address (or ``$RAY_ADDRESS``), or start Ray here (``session``)."""
    address = cluster.address or os.environ.get("RAY_ADDRESS") or None
    # Ray's CPUs are scheduling slots: the workers' slots plus one, so that reading and writing
    # always have one even where the workers take every core.
    cpus = max(available_cores(), cluster.workers * cluster.cpus_per_worker + 1)
    return session.connect(session.Where(address, cpus, cluster.gpus_per_worker), report)


def scoring_options(cluster: Cluster, model_bytes: int) -> dict[str, Any]:
    """The actor pool's options: its size and each worker's resources. A worker that dies is
    restarted and its chunk runs again, a few times (Ray Data's actor pools would restart and retry
    without limit: ``max_restarts=-1``, ``max_task_retries=-1``)."""
    return {
        "compute": ray.data.ActorPoolStrategy(size=cluster.workers),
        "num_cpus": cluster.cpus_per_worker,
        "num_gpus": cluster.gpus_per_worker or None,
        # The model's weights twice (the file read, the session's copy) and room for a chunk's
        # tensors. Reserving it keeps Ray from packing more workers on a node than fit, and (as the
        # reading tasks reserve none) keeps Ray Data from fusing reading into the scoring workers.
        "memory": 2 * model_bytes + WORKER_MEMORY,
        "batch_size": 1,  # one chunk per call: the local engine's model call
        "max_restarts": MAX_RESTARTS,
        "max_task_retries": MAX_TASK_RETRIES,
    }


def _dataset(
    job: Job,
    pending: list[int],
    scorer: type,
    scoring: _Scoring,
    cluster: Cluster,
    out: OutputFolder,
    progress: bool,
) -> Any:
    for index in pending:
        out.start(job.inputs[index].name)
    out.clear_markers()
    ray.data.DataContext.get_current().enable_progress_bars = progress
    if not progress:  # Ray Data's own lines (execution plan, timings) are progress reports too
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    dataset: ray.data.Dataset = ray.data.from_items(
        [{"input": index} for index in pending], override_num_blocks=len(pending)
    )
    # Planning reserves half a CPU (it waits on reads), reading a whole one (extraction is CPU
    # work): with different reservations Ray Data keeps them apart, so a big mbox's chunks are read
    # in parallel rather than one after another in its planning task.
    dataset = dataset.map_batches(partial(_plan_stage, job=job), batch_size=1, num_cpus=0.5)
    dataset = dataset.map(partial(_read_stage, job=job), num_cpus=1)
    options = scoring_options(cluster, scoring.model_file.stat().st_size)
    arguments: dict[str, Any] = {**scoring.worker_arguments(), "markers": str(out.markers)}
    if job.decision.explain != "off":
        arguments["decision"] = job.decision
    with warnings.catch_warnings():
        # Ray Data deprecates its remote arguments for named parameters, but max_restarts and
        # max_task_retries have none yet: without them a chunk that kills its workers is retried
        # for ever (scoring_options).
        warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated")
        dataset = dataset.map_batches(scorer, fn_constructor_kwargs=arguments, **options)
    return dataset.map(partial(_write_stage, job=job), num_cpus=0.5)


def _drive(
    dataset: Any,
    job: Job,
    pending: list[int],
    fingerprints: list[dict[str, Any]],
    out: OutputFolder,
    run: Run,
    report: Callable[[str], None],
    on_complete: Callable[[str], None] | None,
) -> set[int]:
    """Follow the written chunks; join each input as soon as all of its chunks are written. Returns
    the inputs whose chunks killed their scoring workers, when that stopped the run (Ray gave up on
    the chunk); raises for any other failure of Ray's. A stop signal ends the wait for the next
    chunk at once (the CLI's, under ``interrupts.stop_on_signals``)."""
    states = {index: _Progress() for index in pending}
    rows = iter(dataset.iter_rows())
    try:
        while True:
            with interrupts.interruptible():
                row = next(rows, None)
            if row is None:
                return set()
            index = int(row["input"])
            item, state = job.inputs[index], states[index]
            if row["error"] and state.error is None:
                state.error = str(row["error"])
                run.failed[item.source] = state.error
                report(state.error)
            if state.error is None:
                state.written.add(int(row["number"]))
                state.messages += int(row["messages"])
                state.spam += int(row["spam"])
                if row["last"]:
                    state.chunks = int(row["number"]) + 1
                if len(state.written) == state.chunks:
                    totals = {"messages": state.messages, "spam": state.spam}
                    out.finish(item.name, item.kind, state.chunks, fingerprints[index], totals)
                    run.complete.append(item.name)
                    run.messages += state.messages
                    run.spam += state.spam
                    where = out.output(item.name)
                    report(f"{item.source}: {state.messages} messages, {state.spam} spam -> {where}")
                    if on_complete is not None:
                        on_complete(item.name)
    except interrupts.Interrupted as stop:
        run.interrupted = stop.signum
        return set()
    except (SpamfilterError, KeyboardInterrupt):
        raise
    except Exception as error:  # Ray's own failures (a worker that cannot start, ...): one line
        killers = {index for index in out.killers(KILLER_DEATHS) if index in states}
        if killers:
            return killers
        raise ClassificationError(f"the Ray run stopped: {first_line(error)}") from None
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
