"""The spamc recipes in examples/recipes/ (``procmailrc-spamc``, ``mailfilter-spamc``,
``postfix-master-spamc.cf``, ``exim-acl-spamc.conf``) and the systemd unit in examples/systemd/,
run with the real tools against a real ``spamfilter serve``.

The recipes name the daemon's default address, 127.0.0.1 port 11783; a test server listens on a
free port, so each test runs a copy of the recipe in which only that port is replaced (in the one
line that names it, so the recipes cannot drift apart from what is tested). procmail, maildrop and spamc
come from Debian's packages of those names, Exim from exim4-daemon-heavy; CI installs them
(.ci/run): there a missing tool fails the test, elsewhere it is skipped with the reason. Postfix
cannot run in a test, so the pipe(8) command line of its recipe is run as pipe runs it, with a
fake sendmail. Every server runs the session's small real model.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_email
from support import require_tool, unavailable
from support.delivery import (
    FAKE_SENDMAIL,
    HAM_TEXT,
    SPAM_TEXT,
    maildir_messages,
    mbox_messages,
    run,
    tagged_as,
    with_envelope,
)
from support.exim_harness import closed_port, exim_supports_spam, find_exim, parse_replies, smtp_dialog
from support.spamd_server import Server, filter_email

from spamfilter.cli import cli
from spamfilter.service.access import DEFAULT_PORT

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "examples" / "recipes"
UNIT = ROOT / "examples" / "systemd" / "spamfilter.service"
SPAMC_ADDRESS = re.compile(r"-d 127\.0\.0\.1 -p 11783\b")
EXIM_ADDRESS = re.compile(r"^spamd_address = 127\.0\.0\.1 11783$", re.MULTILINE)

# The messages of test_recipes.py: the session's model calls the first spam and the second not.
SPAM = make_email("Claim your prize now", SPAM_TEXT, sender="lotto@prize.example")
HAM = make_email("Lunch tomorrow", HAM_TEXT, sender="bob@example.org")


# --------------------------------------------------------------------------- helpers and fixtures


@pytest.fixture(scope="module")
def server(trained_model: Path):
    with Server(trained_model) as running:
        yield running


@pytest.fixture(scope="module")
def spamc() -> str:
    return require_tool("spamc", "spamc")


def recipe_for_port(name: str, port: int, pattern: re.Pattern[str] = SPAMC_ADDRESS) -> str:
    """The recipe's text with the daemon's port replaced by ``port`` in its one configuration line
    that names the address (comments are left alone)."""
    replacement = (
        f"spamd_address = 127.0.0.1 {port}" if pattern is EXIM_ADDRESS else f"-d 127.0.0.1 -p {port}"
    )
    lines, replaced = [], 0
    for line in (RECIPES / name).read_text().splitlines(keepends=True):
        if not line.lstrip().startswith("#"):
            line, count = pattern.subn(replacement, line)
            replaced += count
        lines.append(line)
    assert replaced == 1, f"{name} should name the daemon's address in one line"
    return "".join(lines)


def test_the_recipes_and_the_unit_name_the_daemons_default_address() -> None:
    assert DEFAULT_PORT == 11783
    for name in ("procmailrc-spamc", "mailfilter-spamc", "postfix-master-spamc.cf"):
        assert "spamc -d 127.0.0.1 -p 12345" in recipe_for_port(name, 12345), name
    assert "spamd_address = 127.0.0.1 12345\n" in recipe_for_port("exim-acl-spamc.conf", 12345, EXIM_ADDRESS)
    assert "--listen 127.0.0.1:11783" in UNIT.read_text()


# --------------------------------------------------------------------------- procmail


def procmail_deliver(tmp_path: Path, port: int, *messages: bytes) -> Path:
    """Deliver each message with a copy of procmailrc-spamc for ``port``; returns the mail folder."""
    procmail = require_tool("procmail")
    home = tmp_path / "pm-home"
    (home / "Mail").mkdir(parents=True, exist_ok=True)
    rc = tmp_path / "procmailrc"
    rc.write_text(recipe_for_port("procmailrc-spamc", port))
    rc.chmod(0o644)
    for raw in messages:
        # -m: a general purpose filter (no system rcfile); HOME=... is assigned before the rc is read.
        done = run([procmail, "-m", f"HOME={home}", str(rc)], {"PATH": os.defpath}, raw)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
    return home / "Mail"


def test_procmail_recipe_delivers_what_filter_writes(
    tmp_path: Path, spamc: str, server: Server, trained_model: Path
) -> None:
    spam_in = with_envelope(SPAM, "lotto@prize.example")
    ham_in = with_envelope(HAM, "bob@example.org")
    mail = procmail_deliver(tmp_path, server.port, spam_in, ham_in)

    log = (mail / "procmail.log").read_text(errors="replace")
    (spam_out,) = mbox_messages(mail / "spam")
    (ham_out,) = mbox_messages(mail / "inbox")
    assert tagged_as(spam_out) == b"YES" and tagged_as(ham_out) == b"NO", log
    # Byte for byte what filter writes, the envelope line kept first (procmail only ends each mbox
    # message with an empty line).
    for out, original in ((spam_out, spam_in), (ham_out, ham_in)):
        assert out.rstrip(b"\n") == filter_email(trained_model, original).rstrip(b"\n")
        assert out.split(b"\n", 2)[1].startswith(b"X-Spam-Flag: ")


def test_procmail_recipe_delivers_untagged_when_the_daemon_is_down(tmp_path: Path, spamc: str) -> None:
    spam_in = with_envelope(SPAM, "lotto@prize.example")
    mail = procmail_deliver(tmp_path, closed_port(), spam_in)
    assert not (mail / "spam").exists()
    assert [m.rstrip(b"\n") for m in mbox_messages(mail / "inbox")] == [spam_in.rstrip(b"\n")]


# --------------------------------------------------------------------------- maildrop
#
# The real maildrop, dry-running the filter file (`maildrop FILE < message`, no delivery mode, no
# root). maildrop takes HOME from the password file, so the copy starts with a HOME assignment.


def maildrop_deliver(tmp_path: Path, port: int, *messages: bytes) -> Path:
    """Deliver each message with a copy of mailfilter-spamc for ``port``; returns the Maildir."""
    maildrop = require_tool("maildrop", "maildrop")
    home = tmp_path / "md-home"
    for maildir in (home / "Maildir", home / "Maildir" / ".Junk"):  # maildrop creates no Maildir
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
    rc = tmp_path / "mailfilter"
    rc.write_text(f'HOME="{home}"\n' + recipe_for_port("mailfilter-spamc", port))
    rc.chmod(0o600)
    for raw in messages:
        done = run([maildrop, str(rc)], {"PATH": os.defpath}, raw)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
    return home / "Maildir"


def test_maildrop_recipe_delivers_what_filter_writes(
    tmp_path: Path, spamc: str, server: Server, trained_model: Path
) -> None:
    assert re.search(r"exception \{\s*xfilter ", (RECIPES / "mailfilter-spamc").read_text())
    maildir = maildrop_deliver(tmp_path, server.port, SPAM, HAM)
    assert maildir_messages(maildir / ".Junk") == [filter_email(trained_model, SPAM)]
    assert maildir_messages(maildir) == [filter_email(trained_model, HAM)]
    assert tagged_as(maildir_messages(maildir / ".Junk")[0]) == b"YES"


def test_maildrop_recipe_delivers_untagged_when_the_daemon_is_down(tmp_path: Path, spamc: str) -> None:
    maildir = maildrop_deliver(tmp_path, closed_port(), SPAM, HAM)
    assert maildir_messages(maildir / ".Junk") == []
    assert maildir_messages(maildir) == sorted([SPAM, HAM])


# --------------------------------------------------------------------------- Postfix pipe + spamc
#
# The recipe's argv= line, run as pipe(8) runs it: no shell, ${sender} and ${recipient} expanded
# (one argument per recipient), the message (with the Return-Path: that flags=R puts first) on
# stdin. spamc and sendmail are the installed spamc and a fake sendmail that records what would have
# been re-injected.


def postfix_argv(port: int, spamc: str, sendmail: Path, sender: str, recipients: list[str]) -> list[str]:
    text = recipe_for_port("postfix-master-spamc.cf", port)
    assert re.search(r"^  -o content_filter=spamfilter:dummy$", text, re.MULTILINE)
    assert re.search(r"^spamfilter unix .* pipe$", text, re.MULTILINE)
    (line,) = re.findall(r"^  argv=(.*)$", text, re.MULTILINE)
    argv: list[str] = []
    for word in line.split():
        if word == "${recipient}":
            argv += recipients
        else:
            argv.append(word.replace("${sender}", sender))
    assert argv[0] == "/usr/bin/spamc" and "/usr/sbin/sendmail" in argv
    return [
        spamc if w == "/usr/bin/spamc" else str(sendmail) if w == "/usr/sbin/sendmail" else w for w in argv
    ]


@pytest.fixture
def sendmail(tmp_path: Path) -> Path:
    path = tmp_path / "sendmail"
    path.write_text(FAKE_SENDMAIL)
    path.chmod(0o755)
    return path


def postfix_pipe(tmp_path: Path, argv: list[str], raw: bytes, **env: str) -> subprocess.CompletedProcess:
    return run(argv, {"PATH": os.defpath, "FAKE_SENDMAIL_OUT": str(tmp_path / "reinjected"), **env}, raw)


@pytest.mark.parametrize("kind", ["spam", "ham"])
def test_postfix_spamc_reinjects_what_filter_writes(
    tmp_path: Path, spamc: str, server: Server, trained_model: Path, sendmail: Path, kind: str
) -> None:
    original = SPAM if kind == "spam" else HAM
    recipients = ["alice@example.org", "-carol@example.org"]
    argv = postfix_argv(server.port, spamc, sendmail, "lotto@prize.example", recipients)
    done = postfix_pipe(tmp_path, argv, original)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    args = (tmp_path / "reinjected.args").read_text().splitlines()
    assert args == ["-G", "-i", "-f", "lotto@prize.example", "--", *recipients]
    reinjected = (tmp_path / "reinjected.msg").read_bytes()
    assert reinjected == filter_email(trained_model, original)
    assert tagged_as(reinjected) == (b"YES" if kind == "spam" else b"NO")


def test_postfix_spamc_reinjects_untagged_when_the_daemon_is_down(
    tmp_path: Path, spamc: str, sendmail: Path
) -> None:
    argv = postfix_argv(closed_port(), spamc, sendmail, "", ["alice@example.org"])
    done = postfix_pipe(tmp_path, argv, SPAM)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert (tmp_path / "reinjected.msg").read_bytes() == SPAM
    # The null sender of a bounce stays empty (null_sender=).
    assert (tmp_path / "reinjected.args").read_text().splitlines()[:4] == ["-G", "-i", "-f", ""]


def test_postfix_spamc_exit_codes_the_recipe_explains(
    tmp_path: Path, spamc: str, server: Server, sendmail: Path
) -> None:
    """sendmail's exit code reaches pipe(8); with -x spamc exits 69 (down) or 74 (error reply),
    codes that pipe(8) bounces on, and -X turns only the first into 75."""
    argv = postfix_argv(server.port, spamc, sendmail, "s@example.org", ["alice@example.org"])
    assert postfix_pipe(tmp_path, argv, HAM, FAKE_SENDMAIL_EXIT="75").returncode == 75
    down = ["-d", "127.0.0.1", "-p", str(closed_port())]
    for options, expected in ((["-x"], 69), (["-x", "-X"], 75)):
        assert run([spamc, *options, *down], {}, SPAM).returncode == expected
    error_reply = ["-d", "127.0.0.1", "-p", str(server.port)]  # an empty message: an error reply
    assert run([spamc, "-x", "-X", *error_reply], {}, b"\n").returncode == 74


# --------------------------------------------------------------------------- Exim
#
# A private Exim configuration: a few main options for a test run (spool and logs under tmp_path,
# Exim's user the caller's own, as in exim_harness.py), then exim-acl-spamc.conf verbatim but for
# the port, then a RCPT ACL that accepts. `exim -bs -odq` receives one SMTP session on stdin and
# queues the message without delivering it; the spool's header file shows the headers the ACL
# added, and the ones it removed (flagged "*").


@pytest.fixture(scope="module")
def exim() -> str:
    exim = find_exim()
    if exim is None or not exim_supports_spam(exim):
        reason = "exim with content scanning is not installed (Debian: apt-get install exim4-daemon-heavy)"
        unavailable(reason)
    return exim


def exim_config(folder: Path, port: int) -> Path:
    folder.mkdir(parents=True)
    config = folder / "exim.conf"
    config.write_text(
        f"exim_user = {os.geteuid()}\n"
        f"exim_group = {os.getegid()}\n"
        "primary_hostname = recipe-test.invalid\n"
        f"spool_directory = {folder / 'spool'}\n"
        f"log_file_path = {folder / 'log'}/%slog\n"
        "keep_environment =\n"
        "tls_advertise_hosts =\n"
        "host_lookup =\n"
        "rfc1413_hosts =\n"
        "acl_smtp_rcpt = test_rcpt\n"
        "\n" + recipe_for_port("exim-acl-spamc.conf", port, EXIM_ADDRESS) + "\n"
        "test_rcpt:\n"
        "  accept\n"
    )
    config.chmod(0o644)  # as root, Exim refuses a group- or world-writable -C file
    return config


def exim_receive(exim: str, config: Path, raw: bytes) -> tuple[int, list[tuple[str, str]]]:
    """One SMTP session through `exim -bs`: the reply to the message, and the queued message's
    header lines as (flag, line) ("*": removed), empty when it was not accepted."""
    done = subprocess.run(
        [exim, "-C", str(config), "-odq", "-bs"],
        input=smtp_dialog(raw, sender="sender@example.com", recipient="rcpt@example.org"),
        capture_output=True,
        timeout=120,
    )
    replies = parse_replies(done.stdout.decode("utf-8", "replace"))
    codes = [reply.code for reply in replies]
    assert 354 in codes, done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    headers: list[tuple[str, str]] = []
    for spool_file in (config.parent / "spool" / "input").rglob("*-H"):
        for line in spool_file.read_text(errors="replace").splitlines():
            found = re.match(r"^\d{3}(.) (.*)$", line)
            if found:
                headers.append((found.group(1), found.group(2)))
        spool_file.unlink()
    return codes[codes.index(354) + 1], headers


def kept(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [line for flag, line in headers if flag != "*" and line.startswith(f"{name}: ")]


def test_exim_recipe_is_a_valid_configuration(exim: str, tmp_path: Path) -> None:
    config = exim_config(tmp_path / "exim", 11783)
    done = subprocess.run([exim, "-C", str(config), "-bV"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def reports_logged(server: Server, at_least: int) -> int:
    """How many requests the daemon has logged, once it has logged ``at_least`` (it logs a request
    after replying, so the line can come just after the client is done), and a moment later, so
    that a request logged beyond them would be counted too."""
    deadline = time.monotonic() + 30
    while server.log().count("REPORT from") < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    return server.log().count("REPORT from")


def test_exim_recipe_tags_ham_and_rejects_spam(exim: str, server: Server, tmp_path: Path) -> None:
    config = exim_config(tmp_path / "exim", server.port)
    forged = make_email("Lunch tomorrow", HAM_TEXT, sender="bob@example.org", extra="X-Spam-Flag: YES\n")
    before = reports_logged(server, 0)
    code, headers = exim_receive(exim, config, forged)
    assert code == 250
    # The sender's X-Spam-Flag is removed; the daemon's verdict and score are added, and the score
    # is the one the daemon logged for this request (score / threshold, spamd style).
    assert ("*", "X-Spam-Flag: YES") in headers
    assert kept(headers, "X-Spam-Flag") == ["X-Spam-Flag: NO"]
    (score_line,) = kept(headers, "X-Spam-Score")
    reports = reports_logged(server, before + 1)
    logged = re.findall(r"REPORT from \S+ ok: clean \((\d+\.\d)/5\.0\) .*user=nobody", server.log())
    assert logged and score_line.startswith(f"X-Spam-Score: {logged[-1]} ("), (
        score_line,
        server.log()[-2000:],
    )

    code, headers = exim_receive(exim, config, SPAM)
    assert code == 550 and headers == []
    # The deny statement reused the warn statement's result: one request to the daemon.
    assert reports_logged(server, reports + 1) == reports + 1
    assert re.search(r"REPORT from \S+ ok: spam \(\d+\.\d/5\.0\)", server.log())


def test_exim_recipe_accepts_unscanned_when_the_daemon_is_down(exim: str, tmp_path: Path) -> None:
    config = exim_config(tmp_path / "exim", closed_port())
    code, headers = exim_receive(exim, config, SPAM)
    assert code == 250  # /defer_ok: accepted, not 451
    assert kept(headers, "X-Spam-Flag") == [] and kept(headers, "X-Spam-Score") == []


def long_message(size: int) -> bytes:
    """A message of about ``size`` bytes (within one line), in lines of 76 bytes: Exim refuses lines
    over 998 characters."""
    line = "word " * 15 + "\n"
    base = len(make_email("long", ""))
    return make_email("long", line * ((size - base) // len(line)))


def test_exim_recipe_sends_no_message_the_daemon_would_refuse(
    exim: str, server: Server, tmp_path: Path
) -> None:
    """Under 490 KB what Exim sends (with its own headers added) stays under the daemon's default
    --max-size of 512,000 bytes; from 490 KB on, nothing is sent and the message is accepted."""
    config = exim_config(tmp_path / "exim", server.port)
    just_under, just_over = (long_message(490 * 1024 + offset) for offset in (-200, 200))
    assert len(just_under) < 490 * 1024 <= len(just_over) < 512_000
    reports = reports_logged(server, 0)
    code, headers = exim_receive(exim, config, just_under)
    # Classified (accepted with the headers, or rejected as spam), not refused by the daemon.
    assert (code, len(kept(headers, "X-Spam-Score"))) in ((250, 1), (550, 0))
    assert reports_logged(server, reports + 1) == reports + 1
    assert server.log().count("REPORT from") == len(re.findall(r"REPORT from \S+ ok: ", server.log()))
    code, headers = exim_receive(exim, config, just_over)
    assert code == 250 and kept(headers, "X-Spam-Score") == []
    assert server.log().count("REPORT from") == reports + 1


# --------------------------------------------------------------------------- systemd unit


def unit_exec_start() -> list[str]:
    text = UNIT.read_text()
    (command,) = re.findall(r"^ExecStart=((?:.*\\\n)*.*)$", text, re.MULTILINE)
    return shlex.split(command.replace("\\\n", " "))


def test_the_unit_runs_serve_with_real_options() -> None:
    text = UNIT.read_text()
    words = unit_exec_start()
    assert words[1] == "serve"
    usage = CliRunner().invoke(cli, ["serve", "--help"]).output
    for option in (w for w in words[2:] if w.startswith("-")):
        assert re.search(rf"(^|[\s,]){re.escape(option)}[\s,=]", usage, re.MULTILINE), option
    for line in (
        "Environment=SPAMFILTER_MODEL=/var/lib/spamfilter/model",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "DynamicUser=yes",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "RuntimeDirectory=spamfilter",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line
    # The unix socket is in the RuntimeDirectory.
    assert any(w.startswith("unix:/run/spamfilter/") for w in words)


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """Where systemd-analyze is installed (Debian: the systemd package; CI does not install it).
    It checks that ExecStart's program exists, so the copy runs this installation's spamfilter."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    installed = Path(sys.executable).parent / "spamfilter"
    unit = tmp_path / "spamfilter.service"
    unit.write_text(
        UNIT.read_text().replace("ExecStart=/usr/local/bin/spamfilter ", f"ExecStart={installed} ", 1)
    )
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "spamfilter.service:" not in output, output  # no unknown keys, no bad values
