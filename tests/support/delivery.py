"""Delivering mail through the mail-system recipes' tools and reading what they delivered: the
messages a test sends, a tool run with a bound, the tags a delivered message carries, mbox and
Maildir folders read back."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from spamfilter.mail import split_mbox

TIMEOUT = 180  # seconds for any one tool run: generous, a hung lock must not hang the suite

SPAM_TEXT = "WINNER!! You have won a £1000 prize. Call 09061701461 to claim now"
HAM_TEXT = "Are we still meeting for lunch tomorrow at noon?"
FLAG = re.compile(rb"^X-Spam-Flag: (YES|NO)\r?$", re.MULTILINE)
STATUS = re.compile(rb"^X-Spam-Status: (Yes|No), score=([0-9.]+) required=([0-9.]+) ", re.MULTILINE)

# The sendmail that a Postfix pipe(8) wrapper re-injects with, replaced by one that records what it
# was handed: the arguments and the message, and exits with $FAKE_SENDMAIL_EXIT.
FAKE_SENDMAIL = """#!/bin/sh
printf '%s\\n' "$@" >"$FAKE_SENDMAIL_OUT.args"
cat >"$FAKE_SENDMAIL_OUT.msg"
exit "${FAKE_SENDMAIL_EXIT:-0}"
"""


def with_envelope(raw: bytes, sender: str) -> bytes:
    """The message with the mbox 'From ' envelope line that a delivery agent is handed."""
    return f"From {sender}  Mon Mar  4 09:12:45 2024\n".encode("ascii") + raw


def flags(raw: bytes) -> list[bytes]:
    return FLAG.findall(raw)


def tagged_as(raw: bytes) -> bytes:
    """YES or NO from a message tagged exactly once, its X-Spam-Status consistent with the flag."""
    (flag,) = flags(raw)
    ((verdict, score, required),) = STATUS.findall(raw)
    assert verdict.upper() == flag
    assert (float(score) >= float(required)) == (flag == b"YES")
    return flag


def mbox_messages(path: Path) -> list[bytes]:
    with path.open("rb") as stream:
        return list(split_mbox(stream))


def run(args: list[str], env: dict[str, str], data: bytes = b"", **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, input=data, env=env, capture_output=True, timeout=TIMEOUT, **kwargs)


def maildir_messages(maildir: Path) -> list[bytes]:
    """The messages in a Maildir folder, new and cur, sorted by content (the order does not matter)."""
    return sorted(p.read_bytes() for sub in ("new", "cur") for p in (maildir / sub).iterdir())
