"""Drive Exim's ``spam =`` ACL condition against a spamd-protocol server, without a running MTA.

``exim_spam_check(message, spamd_address, tmp_path)`` writes a private Exim configuration under
``tmp_path`` (spool, logs, the scanned ``.eml``), runs ``exim -C CONF -bh 192.0.2.1`` with a whole
SMTP dialog (EHLO, MAIL, RCPT, DATA with the dot-stuffed message, QUIT) on stdin, and returns what
Exim saw: ``$spam_score``, ``$spam_score_int``, ``$spam_bar``, ``$spam_action``, ``$spam_report``,
whether ``spam = USER`` matched (score >= the server's threshold), and the SMTP replies.

The DATA ACL it writes::

    require spam = nobody:true        # `warn` with defer_ok=True, and `/defer_ok` appended
            set acl_m_harness_scanned = yes
            logwrite = EXIM-HARNESS scan score=${base64:$spam_score} ...
    deny    condition = ${if def:acl_m_harness_scanned}
            spam = nobody              # Exim's cached result: no second connection
            logwrite = EXIM-HARNESS matched
    accept

``:true`` makes the first condition true whatever the score, so the values are always recorded;
``-bh`` writes log lines to stderr (``LOG: ...``) and never to files, so the values come back as
base64 ``logwrite`` lines (the report is long and multi-line: it goes in chunks, since a log line
holds at most 8 KiB). A spamd that is down, times out or answers what Exim cannot parse makes the
condition DEFER: ``require`` then answers the DATA with 451; with ``defer_ok=True`` the condition
is false instead and the message is accepted unscanned (250).

Privileges: with ``-C`` Exim keeps root only when root calls it (or the Exim user, for a file
listed in /etc/exim4/trusted_configs); for -bh it then switches to ``exim_user`` (Debian-exim) and
needs the spool directory writable and every folder above it searchable by that user, which
pytest's 0700 ``/tmp/pytest-of-root`` is not.
So the configuration sets ``exim_user``/``exim_group`` to the caller's own uid/gid: as root Exim
stays root; as another user, -C drops Exim to that user and the -bh receive chowns its spool files
to ``exim_user``, which only works when that is the caller. Both run the check as the caller. As
root the configuration file must be owned by root and not group/world-writable (it is 0644 here).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

# The real GTUBE string (SpamAssassin's rule 20_body_tests.cf; score 1000).
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

MARKER = "EXIM-HARNESS"
_REPORT_CHUNK = 4000  # characters of $spam_report per log line: base64 of it stays under 8 KiB
_REPORT_CHUNKS = 9  # Exim's report buffer is 32,600 bytes
_B64 = r"[A-Za-z0-9+/=]*"
_LINE_RE = re.compile(rf"{MARKER} (scan|report\.\d+|matched)((?: \w+={_B64})*)\s*$")
_REPLY_RE = re.compile(r"^(\d{3})([ -])(.*)$")


def find_exim() -> str | None:
    """The exim binary (``exim`` or Debian's ``exim4``), or None."""
    for name in ("exim", "exim4"):
        found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin")
        if found:
            return found
    return None


@cache
def exim_supports_spam(exim: str | None = None) -> bool:
    """Whether an exim is installed with content scanning (Debian: exim4-daemon-heavy)."""
    exim = exim or find_exim()
    if exim is None:
        return False
    try:
        out = subprocess.run([exim, "-bV"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Content_Scanning" in out.stdout


def to_exim_spamd_address(address: str, *, tmo: str | None = "30s", retry: str | None = None) -> str:
    """An Exim ``spamd_address`` value for ``address``.

    ``HOST:PORT`` and ``[IPV6]:PORT`` become ``<; HOST PORT tmo=...``: Exim wants host and port
    separated by a space, the value is a colon-separated list (so ``127.0.0.1:783`` is two broken
    entries and the condition defers), and ``<;`` switches the list separator so that IPv6
    addresses work. ``tmo`` is the whole-conversation timeout (Exim's default is 2 minutes; the TCP
    connect alone is fixed at 5 s); ``retry`` makes Exim sleep that long and try to connect once
    more. Anything else (already Exim syntax, a unix socket path) is returned as it is.
    """
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([A-Za-z0-9.-]+):(\d+)", address.strip())
    if m is None:
        return address
    host, port = (m[1], m[2]) if m[1] else (m[3], m[4])
    options = "".join(f" {name}={value}" for name, value in (("tmo", tmo), ("retry", retry)) if value)
    return f"<; {host} {port}{options}"


def closed_port() -> int:
    """A loopback TCP port with nothing listening on it (for the server-down case)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class SmtpReply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass
class EximResult:
    argv: list[str]
    config: Path
    returncode: int  # -9: killed after `timeout` seconds
    stdout: str
    stderr: str
    replies: list[SmtpReply]
    data_reply: SmtpReply | None  # the answer to the end of the message (after the 354)
    scanned: bool  # the spam condition succeeded and the $spam_* values were recorded
    spam_score: str | None = None  # Exim's "%.1f" text, e.g. "1000.0"
    spam_score_int: int | None = None  # int((score + 0.001) * 10)
    spam_bar: str | None = None
    spam_action: str | None = None  # "reject" or "no action" for spamd (score >= threshold)
    spam_report: str | None = None  # CRs removed, continuation lines start with a space
    matched: bool = False  # `spam = USER` was true: score >= threshold
    mbox: bytes | None = None  # the .eml Exim sent to spamd
    log_lines: list[str] = field(default_factory=list)
    debug_output: str | None = None  # `exim -d` stderr of a rerun, when the first run failed

    @property
    def data_code(self) -> int | None:
        return None if self.data_reply is None else self.data_reply.code

    @property
    def deferred(self) -> bool:
        return self.data_reply is not None and 400 <= self.data_reply.code < 500

    @property
    def completed(self) -> bool:
        """Exim ran the whole dialog: a reply to the message and the 221 to QUIT."""
        return (
            self.returncode == 0
            and self.data_reply is not None
            and bool(self.replies)
            and self.replies[-1].code == 221
        )

    def describe(self) -> str:
        """Everything useful for an assertion message."""
        parts = [
            f"$ {' '.join(self.argv)}  (rc={self.returncode})",
            "replies: " + " | ".join(str(r).replace("\n", " / ") for r in self.replies),
            f"scanned={self.scanned} score={self.spam_score} score_int={self.spam_score_int} "
            f"action={self.spam_action!r} matched={self.matched}",
            "--- exim stderr ---",
            self.stderr,
        ]
        if self.debug_output:
            parts += ["--- exim -d stderr (rerun) ---", self.debug_output]
        return "\n".join(parts)


def smtp_dialog(message: bytes, *, sender: str, recipient: str, helo: str = "client.example") -> bytes:
    """The client's side of an SMTP session, pipelined; the message is dot-stuffed, in CRLF."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    body = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return (
        f"EHLO {helo}\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode()
        + body
        + b".\r\nQUIT\r\n"
    )


def parse_replies(stdout: str) -> list[SmtpReply]:
    replies: list[SmtpReply] = []
    pending: list[str] = []
    for line in stdout.splitlines():
        m = _REPLY_RE.match(line)
        if m is None:
            continue  # the "**** SMTP testing session" banner
        pending.append(m[3])
        if m[2] == " ":
            replies.append(SmtpReply(int(m[1]), tuple(pending)))
            pending = []
    return replies


def _exim_config(*, folder: Path, spamd_address: str, spam_user: str, defer_ok: bool, reject: bool) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.@+-]+", spam_user):
        raise ValueError(f"spam user {spam_user!r}: the spam condition splits on ':' and '/'")
    if "\n" in spamd_address:
        raise ValueError("spamd_address is one line")
    options = "/defer_ok" if defer_ok else ""
    fields = " ".join(
        f"{name}=${{base64:${name}}}" for name in ("spam_score", "spam_score_int", "spam_bar", "spam_action")
    )
    report_chunks = "".join(
        f"  warn    condition  = ${{if and{{{{def:acl_m_harness_scanned}}"
        f"{{>{{${{strlen:$spam_report}}}}{{{i * _REPORT_CHUNK}}}}}}}}}\n"
        f"          logwrite   = {MARKER} report.{i} "
        f"text=${{base64:${{substr{{{i * _REPORT_CHUNK}}}{{{_REPORT_CHUNK}}}{{$spam_report}}}}}}\n"
        for i in range(_REPORT_CHUNKS)
    )
    verdict_verb = "deny   " if reject else "warn   "
    verdict_message = "          message    = harness: spam score $spam_score\n" if reject else ""
    return (
        "# Written by tests/support/exim_harness.py for `exim -C THIS -bh IP`.\n"
        f"exim_user = {os.geteuid()}\n"
        f"exim_group = {os.getegid()}\n"
        "primary_hostname = exim-harness.invalid\n"
        f"spool_directory = {folder / 'spool'}\n"
        f"log_file_path = {folder / 'log'}/%slog\n"
        "keep_environment =\n"
        "tls_advertise_hosts =\n"
        "pipelining_connect_advertise_hosts =\n"
        "host_lookup =\n"
        "rfc1413_hosts =\n"
        f"spamd_address = {spamd_address}\n"
        "acl_smtp_rcpt = harness_rcpt\n"
        "acl_smtp_data = harness_data\n"
        "\n"
        "begin acl\n"
        "\n"
        "harness_rcpt:\n"
        "  accept\n"
        "\n"
        "harness_data:\n"
        "  warn    control    = no_mbox_unspool\n"
        f"  {'warn   ' if defer_ok else 'require'} spam       = {spam_user}:true{options}\n"
        "          set acl_m_harness_scanned = yes\n"
        f"          logwrite   = {MARKER} scan {fields}\n"
        f"{report_chunks}"
        f"  {verdict_verb} condition  = ${{if def:acl_m_harness_scanned}}\n"
        f"          spam       = {spam_user}{options}\n"
        f"          logwrite   = {MARKER} matched\n"
        f"{verdict_message}"
        "  accept\n"
    )


def _b64(value: str) -> str:
    return base64.b64decode(value, validate=True).decode("utf-8", "replace")


def exim_spam_check(
    message: bytes,
    spamd_address: str,
    tmp_path: Path,
    *,
    defer_ok: bool = False,
    reject: bool = True,
    spam_user: str = "nobody",
    sender: str = "sender@example.com",
    recipient: str = "rcpt@example.org",
    client_ip: str = "192.0.2.1",
    timeout: float = 120.0,
    debug_on_failure: bool = True,
    extra_args: Sequence[str] = (),
    exim: str | None = None,
) -> EximResult:
    """Run one SMTP session through ``exim -bh`` with a ``spam =`` DATA ACL; see the module doc.

    ``spamd_address``: ``127.0.0.1:PORT`` (see ``to_exim_spamd_address``) or Exim syntax such as
    ``"127.0.0.1 783 tmo=10s"``, ``"<; ::1 783"``, ``"/run/spamd.sock"``. ``defer_ok``: append
    ``/defer_ok`` (a failed check accepts the message unscanned instead of answering 451).
    ``reject``: reject (550) a message whose score reaches the threshold; False only records it.
    ``timeout``: seconds for the whole exim run; keep it above the ``tmo=`` in the address.
    When Exim does not finish the dialog, it is run once more with ``-d`` for ``debug_output``.
    """
    exim = exim or find_exim()
    if exim is None:
        raise FileNotFoundError("no exim binary (Debian: apt-get install exim4-daemon-heavy)")
    tmp_path.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="exim-", dir=tmp_path))
    config = folder / "exim.conf"
    config.write_text(
        _exim_config(
            folder=folder,
            spamd_address=to_exim_spamd_address(spamd_address),
            spam_user=spam_user,
            defer_ok=defer_ok,
            reject=reject,
        )
    )
    config.chmod(0o644)  # as root, Exim refuses a group- or world-writable -C file
    dialog = smtp_dialog(message, sender=sender, recipient=recipient)
    argv = [exim, "-C", str(config), *extra_args, "-bh", client_ip]

    def run(args: list[str]) -> tuple[int, str, str]:
        """Exim's exit status (-9 when it ran past ``timeout``), stdout and stderr."""
        try:
            proc = subprocess.run(args, input=dialog, capture_output=True, timeout=timeout, check=False)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, out, err = -9, e.stdout or b"", e.stderr or b""
        return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    returncode, stdout, stderr = run(argv)
    replies = parse_replies(stdout)
    codes = [r.code for r in replies]
    data_reply = replies[codes.index(354) + 1] if 354 in codes[:-1] else None

    values: dict[str, str] = {}
    report: dict[int, str] = {}
    matched = False
    bad_report = False
    for line in stderr.splitlines():
        m = _LINE_RE.search(line)
        if m is None:
            continue
        kind, rest = m[1], m[2]
        pairs = dict(p.split("=", 1) for p in rest.split())
        try:
            if kind == "scan":
                values = {k: _b64(v) for k, v in pairs.items()}
            elif kind == "matched":
                matched = True
            else:
                report[int(kind.split(".")[1])] = _b64(pairs.get("text", ""))
        except (binascii.Error, ValueError):
            bad_report = True  # a truncated log line ("log string overflowed")
    mbox_files = sorted((folder / "spool" / "scan").glob("*/*.eml"))

    score_int = values.get("spam_score_int")
    result = EximResult(
        argv=argv,
        config=config,
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
        replies=replies,
        data_reply=data_reply,
        scanned=bool(values),
        spam_score=values.get("spam_score"),
        spam_score_int=int(score_int) if score_int else None,
        spam_bar=values.get("spam_bar"),
        spam_action=values.get("spam_action"),
        spam_report=None if bad_report or not values else "".join(report[i] for i in sorted(report)),
        matched=matched,
        mbox=mbox_files[-1].read_bytes() if mbox_files else None,
        log_lines=[x[5:] for x in stderr.splitlines() if x.startswith("LOG: ") and MARKER not in x],
    )
    if debug_on_failure and not result.completed and returncode != -9:
        result.debug_output = run([exim, "-C", str(config), *extra_args, "-d", "-bh", client_ip])[2]
    return result
