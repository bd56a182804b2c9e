"""What ``spamfilter train`` reads before it trains, checked up front: the labelled data and the
pretrained weights, each found locally or reachable to download. Every missing one is named at
once, with how to get it, instead of one failure per run.

Standard library only: ``make train`` runs this module with the system Python before it installs
anything (``python -m spamfilter.train_inputs TRAIN_ARGS``; ``import spamfilter`` imports nothing
heavy). The names it shares with ``data.py`` and ``weights.py`` (URLs, sha256, hub repositories) are
kept equal by tests/test_install.py.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

SMS_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_MEMBER = "SMSSpamCollection"
SMS_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
HUB_REPOS = {
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
DEFAULT_MODEL = "gpt2-small"
HUB_FILES = ("config.json", "model.safetensors")
RANDOM_WEIGHTS = "random"
PROBE_TIMEOUT = 5.0  # seconds for the one request that tells whether a download host answers

Probe = Callable[[str], "str | None"]  # URL -> why it cannot be reached, or None if it answers


@dataclass(frozen=True)
class Missing:
    what: str  # the input, as the user knows it
    why: str  # where it was looked for
    how: str  # how to get it

    def line(self) -> str:
        return f"{self.what}: {self.why}; {self.how}"


def sms_cache_file() -> Path:
    """Where ``download_sms`` keeps the SMS Spam Collection (``data.cache_dir()``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("SPAMFILTER_CACHE", Path(base) / "spamfilter")) / SMS_MEMBER


def hub_cache() -> Path:
    """The Hugging Face hub cache, as ``huggingface_hub`` finds it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "huggingface" / "hub"


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def cached_hub_snapshot(repo: str) -> Path | None:
    """A snapshot of ``repo`` in the hub cache that holds both files training reads, else None."""
    folder = hub_cache() / ("models--" + repo.replace("/", "--"))
    snapshots = folder / "snapshots"
    try:
        main = (folder / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        main = ""
    candidates = [snapshots / main] if main else []
    if snapshots.is_dir():
        candidates += sorted(p for p in snapshots.iterdir() if p.name != main)
    return next((c for c in candidates if all((c / name).is_file() for name in HUB_FILES)), None)


def sms_is_cached() -> bool:
    path = sms_cache_file()
    if not path.is_file():
        return False
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest() == SMS_SHA256


def unreachable(url: str) -> str | None:
    """Why ``url``'s host cannot be reached (one HEAD request, no retries), or None if it answers:
    any HTTP status, an error included, means the network is there."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT):
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as error:
        return str(error.reason)
    except (OSError, ValueError) as error:  # timeouts, resets; a malformed HF_ENDPOINT
        return str(error) or type(error).__name__


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def missing_data(
    data: Path | None, spam: Sequence[Path], ham: Sequence[Path], probe: Probe | None = None
) -> list[Missing]:
    """The labelled data as ``recipe.load_splits`` reads it: mail sources, a file, or the SMS
    Spam Collection (the download's cache, else its host must answer)."""
    if spam or ham:
        found = [
            Missing(f"--{kind} {path}", "not found", "give an mbox, a Maildir or a folder of messages")
            for kind, paths in (("spam", spam), ("ham", ham))
            for path in paths
            if not Path(path).exists()
        ]
        for kind, other, paths in (("spam", "ham", spam), ("ham", "spam", ham)):
            if not paths:
                found.append(Missing(f"--{kind}", f"not given (--{other} needs it)", f"add --{kind} MAILBOX"))
        return found
    if data is not None:
        if Path(data).is_file():
            return []
        return [Missing(f"--data {data}", "not found", "give the SMSSpamCollection file or a labelled CSV")]
    if sms_is_cached():
        return []
    why = (probe or unreachable)(SMS_URL)
    if why is None:
        return []
    return [
        Missing(
            "the SMS Spam Collection",
            f"not in {sms_cache_file()}, and {_host(SMS_URL)} cannot be reached ({why})",
            f"where there is network, download {SMS_URL} and unzip {SMS_MEMBER} into "
            f"{sms_cache_file().parent}/ (or pass --data FILE, or --spam/--ham your own mail)",
        )
    ]


def missing_weights(weights: str | None, model: str | None, probe: Probe | None = None) -> list[Missing]:
    """The pretrained weights as ``recipe.build_classifier`` loads them."""
    if model is not None and model not in HUB_REPOS and not Path(model).exists():
        return [
            Missing(f"--model {model}", "not found", f"give one of {', '.join(HUB_REPOS)} or a config.json")
        ]
    if weights == RANDOM_WEIGHTS:
        return []
    if weights is not None and weights not in HUB_REPOS:
        path = Path(weights)
        if path.is_file() or (path / HUB_FILES[1]).is_file():
            return []
        return [
            Missing(
                f"--weights {weights}",
                "not found" if not path.exists() else f"{path / HUB_FILES[1]} not found",
                f"give a folder with {' and '.join(HUB_FILES)}, a .safetensors file, or --weights random",
            )
        ]
    size = weights or model or DEFAULT_MODEL  # a size name given as --weights downloads it too
    if size not in HUB_REPOS:
        return [
            Missing(
                f"weights for --model {size}", "there are none on the hub", "pass --weights PATH or random"
            )
        ]
    repo = HUB_REPOS[size]
    if cached_hub_snapshot(repo) is not None:
        return []
    url = f"{hub_endpoint()}/{repo}/resolve/main/{HUB_FILES[0]}"
    why = "HF_HUB_OFFLINE is set" if hub_offline() else (probe or unreachable)(url)
    if why is None:
        return []
    return [
        Missing(
            f"the GPT-2 weights {size} ({repo})",
            f"not in the Hugging Face cache {hub_cache()}, and {_host(url)} cannot be reached ({why})",
            f"where there is network, download {' and '.join(HUB_FILES)} from {hub_endpoint()}/{repo} "
            "into a folder and pass --weights FOLDER (or copy that machine's Hugging Face cache here), "
            "or train from scratch with --weights random",
        )
    ]


def missing_inputs(
    data: Path | None = None,
    spam: Sequence[Path] = (),
    ham: Sequence[Path] = (),
    weights: str | None = None,
    model: str | None = None,
    probe: Probe | None = None,
) -> list[Missing]:
    """Every input that training would fail to find; ``probe`` (default :func:`unreachable`) asks
    whether a download host answers, only when the local copy is missing."""
    return missing_data(data, spam, ham, probe) + missing_weights(weights, model, probe)


def describe(missing: Sequence[Missing]) -> str:
    count = "1 input is" if len(missing) == 1 else f"{len(missing)} inputs are"
    return "\n".join(
        [f"spamfilter train cannot start: {count} missing", *(f"  - {m.line()}" for m in missing)]
    )


def parse_train_args(argv: Sequence[str]) -> argparse.Namespace:
    """The options of ``spamfilter train`` that name inputs; every other one is left alone."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--spam", type=Path, action="append", default=[])
    parser.add_argument("--ham", type=Path, action="append", default=[])
    parser.add_argument("--weights")
    parser.add_argument("--model")
    return parser.parse_known_args(list(argv))[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_train_args(sys.argv[1:] if argv is None else argv)
    missing = missing_inputs(args.data, args.spam, args.ham, args.weights, args.model)
    if not missing:
        return 0
    print(describe(missing), file=sys.stderr)
    if os.environ.get("MAKELEVEL"):  # run by make: options reach spamfilter train through TRAIN_ARGS
        print(
            "  (with make, pass options as: make train TRAIN_ARGS='--data FILE --weights FOLDER')",
            file=sys.stderr,
        )
    return 1


if __name__ == "__main__":
    sys.exit(main())
