"""Shared helpers for the benchmarks: the random GPT-2-small model directories, the data, child processes.

Nothing runs on import. Heavy imports (torch, pandas, spamfilter.export) happen inside the functions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = ROOT / "benchmarks" / ".work"
SMS_FILE = Path(
    os.environ.get(
        "SPAMFILTER_BENCH_SMS", ROOT.parent / "shared" / "data" / "sms_spam_collection" / "SMSSpamCollection"
    )
)
VENV_BIN = Path(sys.executable).parent
SPAMFILTER = VENV_BIN / "spamfilter"
MAX_LENGTH = 120
POOLINGS = ("last", "last-token")
SEED = 123


def spamfilter_argv() -> list[str]:
    """The installed console script, or the package run as a module where it is not installed."""
    return [str(SPAMFILTER)] if SPAMFILTER.is_file() else [sys.executable, "-m", "spamfilter"]


def cores() -> int:
    return len(os.sched_getaffinity(0))


def script_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's option parser: its module docstring, line breaks kept, is the help's text."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="cache for model directories and inputs (default: benchmarks/.work)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (best is reported)")


def machine_line() -> str:
    import platform

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    torch_version: str  # torch.__version__ is a TorchVersion (a str subclass); "-" without torch
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "-"
    import onnxruntime

    gpu = ""
    if "torch" in sys.modules and torch.cuda.is_available():
        gpu = f", GPU {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return (
        f"{model}, {cores()} cores in affinity (nproc {os.cpu_count()}), Python {platform.python_version()}, "
        f"torch {torch_version}, onnxruntime {onnxruntime.__version__}{gpu}"
    )


# --------------------------------------------------------------------------- data


def sms_splits() -> Any:
    from spamfilter.data import balance, random_split, read_labelled

    return random_split(balance(read_labelled(SMS_FILE)))


def sms_test_texts() -> tuple[list[str], list[int]]:
    test = sms_splits().test
    return test["Text"].tolist(), test["Label"].astype(int).tolist()


_WORDS = " ".join(
    (
        "account invoice meeting project quarterly report schedule update review budget team offer free",
        "prize winner click link verify password urgent delivery package shipment customer service support",
        "discount limited time exclusive deal subscription renewal payment overdue transfer bank security",
        "notice regards thanks please attached document draft proposal agenda minutes deadline tomorrow",
        "friday office travel hotel flight booking confirmation reference number order status refund claim",
        "newsletter unsubscribe weekly digest article community event webinar register seats available",
    )
).split(" ")


def make_emails(n: int = 200, seed: int = SEED) -> list[str]:
    """Deterministic multi-paragraph email bodies of several hundred words (far over 120 tokens)."""
    rng = random.Random(seed)
    emails = []
    for i in range(n):
        paragraphs = []
        for _ in range(rng.randint(3, 6)):
            sentences = []
            for _ in range(rng.randint(4, 8)):
                words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 18))]
                sentences.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?"]))
            paragraphs.append(" ".join(sentences))
        subject = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 7))).capitalize()
        emails.append(f"Subject: {subject} #{i}\n\nDear customer,\n\n" + "\n\n".join(paragraphs))
    return emails


def write_csv(path: Path, texts: list[str]) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Text"])
        writer.writerows([t] for t in texts)
    return path


def write_texts_json(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(texts), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- model directories


def model_dir(workdir: Path, pooling: str) -> Path:
    return workdir / f"model-{pooling}"


def build_model_dir(workdir: Path, pooling: str, log: Any = print, quantize: str | None = "int8") -> Path:
    """GPT-2-small-shaped, random weights (seed 123), classification head, exported (with int8 unless
    ``quantize`` is None); cached."""
    out = model_dir(workdir, pooling)
    if (out / "spamfilter.json").is_file():
        return out
    import numpy as np
    import torch

    from spamfilter.export import write_model_directory
    from spamfilter.model import GPT, GPTConfig, SpamClassifier, add_classification_head
    from spamfilter.tokenizer import Tokenizer

    started = time.perf_counter()
    log(f"building {out} (random gpt2-small, pooling {pooling}) ...")
    torch.manual_seed(SEED)
    classifier = SpamClassifier(add_classification_head(GPT(GPTConfig())), pooling).eval()
    texts, labels = sms_test_texts()
    tokenizer = Tokenizer()
    test_ids = tokenizer.pad(tokenizer.encode_batch(texts), MAX_LENGTH)
    config = classifier.gpt.config.to_dict()
    write_model_directory(
        out,
        classifier,
        max_length=MAX_LENGTH,
        test_ids=test_ids,
        test_labels=np.asarray(labels, dtype=np.int64),
        manifest={
            "base_model": {"architecture": "gpt2-small", "weights": "random (benchmark)", "config": config},
            "recipe": {"pooling": pooling, "max_length": MAX_LENGTH, "note": "benchmark model, untrained"},
        },
        quantize=quantize,
    )
    log(f"built {out} in {time.perf_counter() - started:.0f} s")
    return out


def build_all(
    workdir: Path, log: Any = print, poolings: Any = POOLINGS, quantize: str | None = "int8"
) -> dict[str, Path]:
    return {pooling: build_model_dir(workdir, pooling, log, quantize) for pooling in poolings}


def hf_model_dir(workdir: Path, log: Any = print) -> Path:
    """A GPT2ForSequenceClassification of the same shape, random weights, saved once (safetensors)."""
    out = workdir / "hf-gpt2-cls"
    if (out / "config.json").is_file():
        return _with_hf_tokenizer(out)
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    log(f"building {out} (transformers GPT2ForSequenceClassification, random weights) ...")
    torch.manual_seed(SEED)
    config = GPT2Config(n_embd=768, n_layer=12, n_head=12, pad_token_id=50256)
    # set after construction: transformers 5 types GPT2Config's keywords as its own fields only
    config.num_labels = 2
    GPT2ForSequenceClassification(config).eval().save_pretrained(out)
    return _with_hf_tokenizer(out)


def _with_hf_tokenizer(out: Path) -> Path:
    """GPT-2's tokenizer files under the names ``GPT2TokenizerFast.from_pretrained`` looks for."""
    import shutil

    from spamfilter.tokenizer import packaged_tokenizer_dir

    for source, target in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
        if not (out / target).is_file():
            shutil.copyfile(packaged_tokenizer_dir() / source, out / target)
    return out


# --------------------------------------------------------------------------- child processes


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, for a local server the benchmark starts."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class ChildRun:
    seconds: float  # wall clock, spawn to exit
    max_rss_mib: float  # peak resident set of that child (and its waited-for descendants)
    returncode: int
    stdout: bytes
    stderr: bytes


def run_child(
    argv: list[str], stdin_path: Path | None = None, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> ChildRun:
    """Run one fresh child; wall time and its own peak RSS from ``wait4`` (not the cumulative max)."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with open(stdin_path or os.devnull, "rb") as stdin:
            started = time.perf_counter()
            process = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err, env=env, cwd=cwd)
            _, status, usage = os.wait4(process.pid, 0)
            seconds = time.perf_counter() - started
            process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildRun(seconds, usage.ru_maxrss / 1024, process.returncode, out.read(), err.read())


def checked(run: ChildRun, what: str, ok: tuple[int, ...] = (0,)) -> ChildRun:
    if run.returncode not in ok:
        raise SystemExit(
            f"{what} failed with {run.returncode}:\n{run.stderr.decode(errors='replace')[-2000:]}"
        )
    return run


def best_of(runs: list[ChildRun]) -> ChildRun:
    return min(runs, key=lambda r: r.seconds)


def median(values: list[float]) -> float:
    return statistics.median(values)


def table_head(*columns: str) -> str:
    """The header and separator lines of a markdown table whose rows a benchmark writes itself."""
    return "| " + " | ".join(columns) + " |\n" + "| --- " * len(columns) + "|"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "| " + " | ".join("-" * w for w in widths) + " |",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    return "\n".join(lines)
