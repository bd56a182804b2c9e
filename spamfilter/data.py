"""Labelled messages: the UCI SMS Spam Collection (downloaded, checked, cached) or local files,
and the recipe's balancing and 70/10/20 split."""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import DataError, UsageError
from .labelled import LabelledTexts, read_labelled_texts, read_mail_texts
from .modeldir import sha256_file

SMS_URLS = (
    "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
    # Mirror: the same zip as the UCI machine-learning-databases tree published it.
    "https://archive.ics.uci.edu/ml/machine-learning-databases/00228/smsspamcollection.zip",
)
SMS_MEMBER = "SMSSpamCollection"
SMS_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
_MAX_ZIP_BYTES = 16 << 20  # the real zip is ~200 KB; anything huge is not it
_MAX_MEMBER_BYTES = 4 << 20  # the real file is 477,907 bytes; stops a decompression bomb

SEED = 123
NEEDS_BOTH = "the data needs both spam and not-spam messages"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("SPAMFILTER_CACHE", Path(base) / "spamfilter"))


DownloadProgress = Callable[[int, "int | None"], None]  # (bytes so far, total bytes if known)


def download_sms(
    cache: Path | None = None,
    urls: tuple[str, ...] = SMS_URLS,
    progress: DownloadProgress | None = None,
) -> Path:
    """The checked ``SMSSpamCollection`` file, downloaded into the cache on first use.

    Each URL is tried in turn; the member is extracted by name only (no path from the archive is
    ever used), size-capped, and must match the known sha256 before it replaces the cache entry
    atomically, so an interrupted download never leaves a corrupt cache. A host that cannot be
    reached (no network, DNS, refused, timeout) is not tried again for its other URLs.
    """
    cache = cache or cache_dir()
    target = cache / SMS_MEMBER
    if target.is_file() and sha256_file(target) == SMS_SHA256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    errors = []
    unreachable: set[str] = set()
    for url in urls:
        host = _network_host(url)
        if host in unreachable:
            continue
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            archive = Path(scratch) / "download.zip"
            try:
                _http_fetch(url, archive, progress)
                extracted = _extract_member(archive, Path(scratch) / SMS_MEMBER)
            except (OSError, DataError, zipfile.BadZipFile) as error:
                if host and _is_connection_error(error):
                    unreachable.add(host)
                    errors.append(f"cannot reach {host}: {_reason(error)}")
                else:
                    errors.append(f"{url}: {error}")
                continue
            if sha256_file(extracted) != SMS_SHA256:
                errors.append(f"{url}: {SMS_MEMBER} does not match its sha256")
                continue
            os.replace(extracted, target)
            return target
    raise DataError(
        "could not download the SMS Spam Collection ("
        + "; ".join(errors)
        + "); without network pass a local copy with --data PATH"
    )


def _network_host(url: str) -> str:
    """The host:port of an http(s) URL; empty for other schemes (file: URLs reach no host)."""
    parts = urllib.parse.urlsplit(url)
    return parts.netloc if parts.scheme in ("http", "https") else ""


def _is_connection_error(error: BaseException) -> bool:
    """An error before any HTTP answer: the host is unreachable, not one of its files missing."""
    if isinstance(error, urllib.error.HTTPError):
        return False
    if isinstance(error, urllib.error.URLError):
        return isinstance(error.reason, OSError)
    return isinstance(error, (ConnectionError, TimeoutError))


def _reason(error: BaseException) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    return str(reason) or type(reason).__name__


def _http_fetch(url: str, destination: Path, progress: DownloadProgress | None = None) -> None:
    with urllib.request.urlopen(url, timeout=30) as response, open(destination, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        copied = 0
        while chunk := response.read(1 << 16):
            copied += len(chunk)
            if copied > _MAX_ZIP_BYTES:
                raise DataError(f"download larger than {_MAX_ZIP_BYTES} bytes")
            out.write(chunk)
            if progress is not None:
                progress(copied, total)


def _extract_member(archive: Path, destination: Path) -> Path:
    with zipfile.ZipFile(archive) as bundle:
        try:
            info = bundle.getinfo(SMS_MEMBER)
        except KeyError:
            raise DataError(f"the archive has no {SMS_MEMBER}") from None
        if info.file_size > _MAX_MEMBER_BYTES:
            raise DataError(f"{SMS_MEMBER} claims {info.file_size} bytes, too large")
        with bundle.open(info) as source, open(destination, "wb") as out:
            # Read at most one byte past the cap: a lying size header cannot fill the disk.
            data = source.read(_MAX_MEMBER_BYTES + 1)
            if len(data) > _MAX_MEMBER_BYTES:
                raise DataError(f"{SMS_MEMBER} is larger than {_MAX_MEMBER_BYTES} bytes")
            out.write(data)
    return destination


def read_labelled(path: Path) -> pd.DataFrame:
    """Messages with columns ``Label`` (0 not spam / 1 spam) and ``Text``: the UCI file or a CSV/TSV
    file with a label and a text column, read by :func:`spamfilter.labelled.read_labelled_texts`
    (the same parser that ``eval`` uses without pandas)."""
    return _frame(read_labelled_texts(path))


def _frame(labelled: LabelledTexts) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Label": pd.Series(labelled.labels, dtype="int64"),
            "Text": pd.Series(labelled.texts, dtype=str),
        }
    )


def balance(frame: pd.DataFrame, seed: int = SEED) -> pd.DataFrame:
    """Undersample the larger class to the size of the smaller one (the recipe samples ham)."""
    counts = frame["Label"].value_counts()
    if len(counts) < 2:
        raise UsageError(NEEDS_BOTH)
    # On a tie idxmin and idxmax name the same class: then ham is "sampled" (all of it), as the recipe.
    majority = 1 if counts[1] > counts[0] else 0
    minority = 1 - majority
    sampled = frame[frame["Label"] == majority].sample(counts[minority], random_state=seed)
    return pd.concat([sampled, frame[frame["Label"] == minority]])


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def random_split(
    frame: pd.DataFrame, train_frac: float = 0.7, validation_frac: float = 0.1, seed: int = SEED
) -> Splits:
    """Shuffle with ``seed`` and cut into train / validation / test (the rest)."""
    shuffled = frame.sample(frac=1, random_state=seed).reset_index(drop=True)
    train_end = int(len(shuffled) * train_frac)
    validation_end = train_end + int(len(shuffled) * validation_frac)
    return Splits(
        shuffled[:train_end].reset_index(drop=True),
        shuffled[train_end:validation_end].reset_index(drop=True),
        shuffled[validation_end:].reset_index(drop=True),
    )


def check_split_sizes(splits: Splits, batch_size: int) -> None:
    """Raise ``UsageError`` (one line, before anything is written) when a split is too small for a
    training run to mean anything: the training split must fill one batch (else not one step is
    taken and the head stays random) and hold both classes, the validation split must hold a
    message (the per-epoch loss, the best epoch), and the test split a spam and a not-spam message
    (recall, false-positive rate and ROC AUC need both)."""
    train, validation, test = splits.train["Label"], splits.validation["Label"], splits.test["Label"]
    problems = []
    if len(train) < batch_size:
        problems.append(f"the training split has {len(train)}, fewer than one batch of {batch_size}")
    elif train.nunique() < 2:
        problems.append("the training split lacks spam or not-spam messages")
    if len(validation) == 0:
        problems.append("the validation split is empty")
    if test.nunique() < 2:
        problems.append(f"the test split ({len(test)}) lacks spam or not-spam messages")
    if not problems:
        return
    total = len(train) + len(validation) + len(test)
    minimum = next(n for n in range(1, 10 * batch_size + 100) if _split_sizes_fit(n, batch_size))
    raise UsageError(
        f"too few messages to train on: {total} split 70/10/20 into {len(train)} / {len(validation)} / "
        f"{len(test)}, and {'; '.join(problems)}: give at least {minimum} messages, spam and "
        "not-spam, and many more for a useful model"
    )


def _split_sizes_fit(n: int, batch_size: int) -> bool:
    train, validation = int(n * 0.7), int(n * 0.1)  # as random_split cuts
    return train >= batch_size and validation >= 1 and n - train - validation >= 2


def read_mail(spam: list[Path], ham: list[Path], warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Labelled messages from mail sources (mbox, Maildir, a folder of message files or a tar
    archive of them), each reduced to the text the filter sees, read by
    :func:`spamfilter.labelled.read_mail_texts` (which tells ``warn`` what it skipped or dropped)."""
    return _frame(read_mail_texts(spam, ham, warn))
