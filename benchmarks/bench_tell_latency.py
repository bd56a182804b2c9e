"""How long from a TELL through the service until the corrected message (an exact duplicate of it)
is scored as corrected: the shared model (TELL without --per-user, --learn-after 1: a retrain in a
separate process, then a reload) and one user's head (--per-user, --learn-after 1: retrained in
the service's process).

    python -m benchmarks.bench_tell_latency --model MODEL_DIR [--messages 3]   (from the project root)

MODEL_DIR is copied; the messages are ham of the SpamAssassin corpus that the model marks as spam,
told as ham one at a time. Prints one row per correction: seconds from the TELL's reply to the
first reply that scores its duplicate below the threshold (polled with spamc -c every 0.2 s).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from spamfilter.learn import current_head, window_features
from spamfilter.mail import iter_mail_source
from spamfilter.modeldir import open_model_directory
from spamfilter.pipeline import message_text
from spamfilter.user_heads import score_with_head
from tests.support import SHARED_DATA
from tests.support.spamd_server import Server

POLL_SECONDS = 0.2
GIVE_UP_SECONDS = 600.0


def flagged_ham(model: Path, count: int) -> list[bytes]:
    directory = open_model_directory(model)
    raws = list(iter_mail_source(SHARED_DATA / "spamassassin" / "easy_ham.mbox"))[:200]
    features, owners, discounts = window_features(directory, [message_text(raw) for raw in raws])
    scores = score_with_head(current_head(directory), features, owners, len(raws), discounts)
    return [raw for raw, score in zip(raws, scores, strict=True) if score >= directory.threshold][:count]


def spamc(server: Server, message: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    host, port = server.address
    command = ["spamc", "-d", host, "-p", str(port), *args]
    return subprocess.run(command, input=message, capture_output=True, timeout=120)


def seconds_to_corrected(server: Server, raw: bytes, user: str) -> float:
    told = spamc(server, raw, "-u", user, "-L", "ham")
    assert told.returncode == 0, told.stderr
    started = time.monotonic()
    while time.monotonic() - started < GIVE_UP_SECONDS:
        if spamc(server, raw, "-u", user, "-c").returncode == 0:  # -c: exit 0 is not spam
            return time.monotonic() - started
        time.sleep(POLL_SECONDS)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--messages", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        print("| what is taught | correction | seconds from TELL to its duplicate scored as ham |")
        print("|---|---|---|")
        for name, options in (("shared model", ()), ("one user's head", ("--per-user",))):
            model = Path(shutil.copytree(args.model, Path(scratch) / name.replace(" ", "-")))
            messages = flagged_ham(model, args.messages)
            with Server(model, "--allow-tell", "--learn-after", "1", *options) as server:
                for number, raw in enumerate(messages, 1):
                    seconds = seconds_to_corrected(server, raw, "alice")
                    print(f"| {name} | {number} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
