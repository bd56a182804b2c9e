"""A real Postfix on loopback for the milter's tests: ``with Postfix(tmp_path, milter=...) as mta``
starts one with a private configuration, accepting SMTP on a free 127.0.0.1 port and delivering
every recipient of its test domain to one Maildir; ``mta.send(message)`` runs an SMTP transaction
(smtplib) and returns the reply that ended it, ``mta.delivered()`` the messages exactly as Postfix
wrote them, ``mta.log()`` its mail log. Leaving the block stops it (``postfix stop``; the master's
process group is killed if anything is left) and removes its folder.

Which Postfix: ``$POSTFIX_ROOT`` if set, else an installed one (``postfix`` on PATH or in
/usr/sbin), else ``/opt/postfix``. A root folder is a Debian package unpacked with
``dpkg-deb -x postfix_*.deb DIR``: on Debian, Postfix and Exim cannot both be installed with apt
(each is *the* mail-transport-agent, they conflict) and the Exim tests need exim4-daemon-heavy. Its
programs find their shared libraries through ``LD_LIBRARY_PATH`` (their RUNPATH is
/usr/lib/postfix), which ``import_environment`` passes on to the daemons and
``export_environment`` to the commands Postfix runs (sendmail's postdrop: so postdrop and
postqueue must stay without their set-gid bit there, the loader ignores LD_LIBRARY_PATH then);
``command_directory``, ``daemon_directory``, ``shlib_directory`` and ``meta_directory``
(``postfix-files``, the list the queue is made from) point into the root.

Requirements: root (the master binds and switches users), and the accounts of a packaged Postfix:
user ``postfix`` (``mail_owner``) and group ``postdrop`` (``setgid_group``); Debian's postinst
creates them. For an unpacked package (what CI does; the package's libraries, libdb5.3, libicu72,
libnsl2, libsasl2-2 and libssl3 on bookworm, are usually there already)::

    tmp=$(mktemp -d) && (cd "$tmp" && apt-get download postfix) &&
        dpkg-deb -x "$tmp"/postfix_*.deb /opt/postfix && rm -rf "$tmp"
    getent group postfix >/dev/null || groupadd --system postfix
    getent group postdrop >/dev/null || groupadd --system postdrop
    getent passwd postfix >/dev/null || useradd --system --gid postfix \\
        --home-dir /var/spool/postfix --no-create-home --shell /usr/sbin/nologin postfix

One instance's folder (a fresh 0755 folder under /tmp, not pytest's ``tmp_path``: that is under
``/tmp/pytest-of-root``, mode 0700, and the daemons run as ``postfix`` and the delivery as
``nobody``, who must reach their files)::

    etc/        config_directory: main.cf, master.cf (owned by root)
    spool/      queue_directory: its subfolders made as Postfix's ``postfix-files`` lists them
                (owner, group, mode), and a ``quick-start`` file, which makes ``postfix start-fg``
                skip its integrity checks (``post-install create-missing``, ``postsuper``, the
                ``find`` runs: 0.3 s of shell); ``checks=True`` leaves it all to Postfix
    data/       data_directory, owned by postfix
    mail/inbox/ the Maildir virtual(8) delivers to, as nobody: ``virtual_mailbox_maps =
                static:inbox/`` for every address in ``virtual_mailbox_domains``
    maillog     maillog_file, written by postlogd (``maillog_file_prefixes`` is the folder)

master.cf has no chroot (column 5 is n) and the SMTP service on ``127.0.0.1:PORT``; recipients in
any other domain are refused at RCPT (``default_transport = error:...``), so nothing leaves.
Both files are dated a minute back: every Postfix program pauses up to 1.8 s to "let main.cf cool
down" when it changed in the last second or two. ``postfix start-fg`` runs the master in the
foreground (``master -s``: as it is not PID 1, the master still becomes a session leader); the
harness waits for its "daemon started" line and ``pid/master.pid``.

What Postfix adds on the way (``milter`` off or on): a ``Received:`` field at the top (the milter
sees it as the first header), ``Return-Path:``, ``X-Original-To:`` and ``Delivered-To:`` above
everything at delivery (virtual(8); a milter never sees them); ``Date:`` and ``Message-Id:`` when
missing.
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import os
import pty
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

ROOT_ENV = "POSTFIX_ROOT"
DEFAULT_ROOT = Path("/opt/postfix")
DOMAIN = "test.example"
MAIL_OWNER = "postfix"
SETGID_GROUP = "postdrop"
MAILBOX_USER = "nobody"
START_TIMEOUT = 30.0
_QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")
_BIND_FAILED = "Address already in use"

# The services Postfix itself needs (its stock master.cf without the comments and extras), all
# without chroot. The SMTP service is added in front of them.
_MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass(frozen=True)
class Installation:
    """Where one Postfix's programs are; ``env``: what they must run with."""

    command_directory: Path
    daemon_directory: Path
    shlib_directory: str  # a folder, or "no" for a build without shared libraries
    meta_directory: Path
    version: str
    env: Mapping[str, str]

    def command(self, name: str) -> str:
        return str(self.command_directory / name)


def _postconf_defaults(postconf: Path, env: Mapping[str, str]) -> dict[str, str] | None:
    names = ["mail_version", "command_directory", "daemon_directory", "shlib_directory", "meta_directory"]
    try:
        out = subprocess.run(
            [str(postconf), "-d", *names],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    values = dict(line.split(" = ", 1) for line in out.stdout.splitlines() if " = " in line)
    return values if out.returncode == 0 and set(names) <= set(values) else None


def _from_root(root: Path) -> Installation | None:
    """A package unpacked under ``root``: its compiled-in folders, moved there."""
    libs = root / "usr" / "lib" / "postfix"
    env = {"PATH": _PATH, "LD_LIBRARY_PATH": str(libs)}
    defaults = _postconf_defaults(root / "usr" / "sbin" / "postconf", env)
    if defaults is None:
        return None

    def moved(folder: str) -> Path:
        return root / folder.lstrip("/")

    shlib = defaults["shlib_directory"]
    return Installation(
        command_directory=moved(defaults["command_directory"]),
        daemon_directory=moved(defaults["daemon_directory"]),
        shlib_directory=shlib if shlib == "no" else str(moved(shlib)),
        meta_directory=moved(defaults["meta_directory"]),
        version=defaults["mail_version"],
        env=env,
    )


def _installed() -> Installation | None:
    postfix = shutil.which("postfix", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin")
    if postfix is None:
        return None
    env = {"PATH": _PATH}
    defaults = _postconf_defaults(Path(postfix).parent / "postconf", env)
    if defaults is None:
        return None
    return Installation(
        command_directory=Path(defaults["command_directory"]),
        daemon_directory=Path(defaults["daemon_directory"]),
        shlib_directory=defaults["shlib_directory"],
        meta_directory=Path(defaults["meta_directory"]),
        version=defaults["mail_version"],
        env=env,
    )


_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@cache
def find_postfix() -> Installation | None:
    """``$POSTFIX_ROOT``, else an installed Postfix, else /opt/postfix; None if none works."""
    if os.environ.get(ROOT_ENV):
        return _from_root(Path(os.environ[ROOT_ENV]))
    installed = _installed()
    if installed is not None:
        return installed
    return _from_root(DEFAULT_ROOT) if (DEFAULT_ROOT / "usr" / "sbin" / "postfix").exists() else None


def postfix_unavailable() -> str | None:
    """Why no Postfix can be started here, or None."""
    if find_postfix() is None:
        where = os.environ.get(ROOT_ENV) or f"PATH, /usr/sbin or {DEFAULT_ROOT}"
        return f"no working Postfix in {where} (install or unpack one: see tests/support/postfix_harness.py)"
    if os.geteuid() != 0:
        return "a private Postfix must be started as root"
    missing = []
    for name, lookup in (
        (MAIL_OWNER, pwd.getpwnam),
        (MAILBOX_USER, pwd.getpwnam),
        (SETGID_GROUP, grp.getgrnam),
    ):
        try:
            lookup(name)
        except KeyError:
            missing.append(name)
    if missing:
        return f"missing accounts for Postfix: {', '.join(missing)} (see tests/support/postfix_harness.py)"
    return None


def postfix_available() -> bool:
    return postfix_unavailable() is None


class Reply(NamedTuple):
    """The SMTP reply that ended a transaction: to MAIL or RCPT when refused, to DATA when
    refused, else the reply after the message (``command`` "DATA" or "end of data")."""

    code: int
    text: str
    command: str

    @property
    def queue_id(self) -> str | None:
        found = _QUEUED.search(self.text)
        return found.group(1) if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postfix:
    """A private Postfix (see the module's text). ``milter``: ``smtpd_milters`` (e.g.
    ``inet:127.0.0.1:PORT``); ``non_smtpd_milters`` for ``submit()``; ``default_action``:
    ``milter_default_action`` (accept, tempfail, reject, quarantine); ``settings``: more main.cf
    parameters, overriding the harness's. ``tmp_dir``: where the mail log is copied when it stops
    (pytest keeps that); ``keep``: leave the instance's folder in place; ``checks``: let
    ``postfix start-fg`` make the queue and run its integrity checks; ``verbose``: smtpd and
    cleanup with ``-v`` (the milter conversation in the log: packets sent and replies, from both)."""

    def __init__(
        self,
        tmp_dir: Path | None = None,
        milter: str = "",
        *,
        non_smtpd_milters: str = "",
        default_action: str = "accept",
        protocol: int = 6,
        settings: Mapping[str, str] | None = None,
        keep: bool = False,
        checks: bool = False,
        verbose: bool = False,
    ) -> None:
        reason = postfix_unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        installation = find_postfix()
        assert installation is not None
        self.installation = installation
        self.tmp_dir = tmp_dir
        self.keep = keep
        self.checks = checks
        self.verbose = verbose
        self.root = Path(tempfile.mkdtemp(prefix="postfix-harness-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.config_directory = self.root / "etc"
        self.queue_directory = self.root / "spool"
        self.mailbox = self.root / "mail" / "inbox"
        self.maillog = self.root / "maillog"
        self.smtp_port = 0
        self.master_pid = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._settings = self._main_cf(milter, non_smtpd_milters, default_action, protocol, settings or {})
        self._make_folders()

    # -- configuration --------------------------------------------------------------------------

    def _main_cf(
        self,
        milter: str,
        non_smtpd_milters: str,
        default_action: str,
        protocol: int,
        extra: Mapping[str, str],
    ) -> dict[str, str]:
        inst = self.installation
        nobody = pwd.getpwnam(MAILBOX_USER)
        imported = "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME"
        exported = "TZ MAIL_CONFIG LANG"
        if "LD_LIBRARY_PATH" in inst.env:
            # The daemons get import_environment; commands Postfix runs (sendmail's postdrop)
            # export_environment.
            imported += f" LD_LIBRARY_PATH={inst.env['LD_LIBRARY_PATH']}"
            exported += " LD_LIBRARY_PATH"
        settings = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_directory),
            "queue_directory": str(self.queue_directory),
            "data_directory": str(self.root / "data"),
            "command_directory": str(inst.command_directory),
            "daemon_directory": str(inst.daemon_directory),
            "shlib_directory": inst.shlib_directory,
            "meta_directory": str(inst.meta_directory),
            "import_environment": imported,
            "export_environment": exported,
            "mail_owner": MAIL_OWNER,
            "setgid_group": SETGID_GROUP,
            "default_privs": MAILBOX_USER,
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "syslog_name": "postfix",
            "myhostname": f"mx.{DOMAIN}",
            "mydomain": DOMAIN,
            "myorigin": DOMAIN,
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "mydestination": "",
            "relayhost": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "virtual_mailbox_domains": DOMAIN,
            "virtual_mailbox_base": str(self.mailbox.parent),
            "virtual_mailbox_maps": f"static:{self.mailbox.name}/",
            "virtual_uid_maps": f"static:{nobody.pw_uid}",
            "virtual_gid_maps": f"static:{nobody.pw_gid}",
            "default_transport": "error:this test Postfix delivers only to its own domain",
            "relay_transport": "error:this test Postfix delivers only to its own domain",
            "in_flow_delay": "0s",
            "biff": "no",
            "smtpd_milters": milter,
            "non_smtpd_milters": non_smtpd_milters,
            "milter_default_action": default_action,
            "milter_protocol": str(protocol),
            "milter_connect_timeout": "10s",
            "milter_command_timeout": "30s",
            "milter_content_timeout": "60s",
        }
        settings.update(extra)
        return settings

    def _make_folders(self) -> None:
        owner = pwd.getpwnam(MAIL_OWNER)
        nobody = pwd.getpwnam(MAILBOX_USER)
        self.config_directory.mkdir()
        self.queue_directory.mkdir()
        (self.root / "data").mkdir()
        os.chown(self.root / "data", owner.pw_uid, owner.pw_gid)
        os.chmod(self.root / "data", 0o700)
        self.mailbox.parent.mkdir()
        for sub in ("", "tmp", "new", "cur"):
            folder = self.mailbox / sub
            folder.mkdir(exist_ok=True)
            os.chown(folder, nobody.pw_uid, nobody.pw_gid)
            os.chmod(folder, 0o700)
        main_cf = "".join(f"{name} = {value}\n" for name, value in self._settings.items())
        _write_cool(self.config_directory / "main.cf", main_cf)
        if not self.checks and self._make_queue():
            (self.queue_directory / "quick-start").touch()

    def _make_queue(self) -> bool:
        """The queue's folders as ``postfix-files`` lists them; False if it lists none."""
        names = {"$mail_owner": MAIL_OWNER, "$setgid_group": SETGID_GROUP}
        made = False
        listing = self.installation.meta_directory / "postfix-files"
        for line in listing.read_text().splitlines() if listing.exists() else []:
            fields = line.split(":")
            if len(fields) < 5 or fields[1] != "d" or not fields[0].startswith("$queue_directory/"):
                continue
            folder = self.queue_directory / fields[0].removeprefix("$queue_directory/")
            folder.mkdir(exist_ok=True)
            owner = pwd.getpwnam(names.get(fields[2], fields[2])).pw_uid
            group = -1 if fields[3] == "-" else grp.getgrnam(names.get(fields[3], fields[3])).gr_gid
            os.chown(folder, owner, group)
            os.chmod(folder, int(fields[4], 8))
            made = True
        return made

    def _write_master_cf(self) -> None:
        smtpd = f"127.0.0.1:{self.smtp_port} inet n - n - - smtpd\n"
        services = _MASTER_CF
        if self.verbose:
            smtpd = smtpd.replace("smtpd\n", "smtpd -v\n")
            services = services.replace("0       cleanup\n", "0       cleanup -v\n")
        _write_cool(self.config_directory / "master.cf", smtpd + services)

    # -- running --------------------------------------------------------------------------------

    def argv(self, command: str, *args: str) -> list[str]:
        """A Postfix command of this instance: ``COMMAND -c CONFIG ARGS``."""
        return [self.installation.command(command), "-c", str(self.config_directory), *args]

    def postfix(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``postfix -c CONFIG ARGS`` (check, status, stop, flush, ...)."""
        return self._run(self.argv("postfix", *args), timeout)

    def postconf(self, *args: str) -> str:
        return self._run(self.argv("postconf", *args)).stdout

    def _run(self, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            env=dict(self.installation.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> Postfix:
        for attempt in range(3):
            if attempt and not self.checks:  # start-fg removed it
                (self.queue_directory / "quick-start").touch()
            self.smtp_port = free_port()
            self._write_master_cf()
            log_start = len(self.log())
            out = open(self.root / "start-fg.out", "ab")  # noqa: SIM115 - the child keeps it
            try:
                self._process = subprocess.Popen(
                    self.argv("postfix", "start-fg"),
                    env=dict(self.installation.env),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            finally:
                out.close()
            if self._wait_started(log_start):
                _RUNNING.add(self)
                return self
            self._stop_master()
            if _BIND_FAILED not in self.log()[log_start:] or attempt == 2:
                break
        log = self.log() + self._diagnose()
        self.stop()
        raise RuntimeError(f"Postfix did not start:\n{log}")

    def _diagnose(self) -> str:
        """What ``postfix check`` says on a terminal: a Postfix command that fails before its
        logging is set up (a bad main.cf) writes why only to stderr, and only to a terminal."""
        main, sub = pty.openpty()
        try:
            subprocess.run(
                self.argv("postfix", "check"),
                env=dict(self.installation.env),
                stdin=subprocess.DEVNULL,
                stdout=sub,
                stderr=sub,
                timeout=60,
                check=False,
            )
        finally:
            os.close(sub)
        chunks = []
        with contextlib.suppress(OSError):  # EIO once it is all read
            while chunk := os.read(main, 65536):
                chunks.append(chunk)
        os.close(main)
        return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")

    def _wait_started(self, log_start: int) -> bool:
        assert self._process is not None
        pid_file = self.queue_directory / "pid" / "master.pid"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if "daemon started" in self.log()[log_start:] and pid_file.exists():
                self.master_pid = int(pid_file.read_text().split()[0])
                return True
            if self._process.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Stop the master (see ``_stop_master``), keep the log in ``tmp_dir``, remove the folder."""
        _RUNNING.discard(self)
        self._stop_master()
        if self.tmp_dir is not None and self.maillog.exists():
            shutil.copyfile(self.maillog, self.tmp_dir / "maillog")
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def _stop_master(self) -> None:
        """``postfix stop`` (the master signals its process group and exits); whatever is left of
        that group after 10 s is killed, and so is the ``start-fg`` process."""
        pid_file = self.queue_directory / "pid" / "master.pid"
        if not self.master_pid:  # a start that failed: its master, if it is there
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(pid_file.read_text().split()[0])
                if os.readlink(f"/proc/{pid}/exe") == str(self.installation.daemon_directory / "master"):
                    self.master_pid = pid
        if self.master_pid and group_alive(self.master_pid):
            self.postfix("stop", timeout=30)
            deadline = time.monotonic() + 10
            while group_alive(self.master_pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if group_alive(self.master_pid):
                _kill_group(self.master_pid)
        self.master_pid = 0
        pid_file.unlink(missing_ok=True)
        process, self._process = self._process, None
        if process is not None:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                _kill_group(process.pid)
                process.wait()

    def __enter__(self) -> Postfix:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- mail -----------------------------------------------------------------------------------

    def send(
        self,
        message: bytes,
        sender: str = "sender@example.org",
        rcpt: str | Sequence[str] = f"alice@{DOMAIN}",
        timeout: float = 60.0,
    ) -> Reply:
        """One SMTP transaction (EHLO, MAIL, RCPT, DATA; the message with CRLF line ends,
        dot-stuffed by smtplib; BODY=8BITMIME for 8-bit text). Returns the reply that ended it."""
        return self.send_session([message], sender, rcpt, timeout)[0]

    def send_session(
        self,
        messages: Sequence[bytes],
        sender: str = "sender@example.org",
        rcpt: str | Sequence[str] = f"alice@{DOMAIN}",
        timeout: float = 60.0,
    ) -> list[Reply]:
        """Several transactions on one SMTP connection (Postfix then keeps one milter connection
        for all of them; RSET after a transaction refused before its data)."""
        recipients = [rcpt] if isinstance(rcpt, str) else list(rcpt)
        smtp = smtplib.SMTP("127.0.0.1", self.smtp_port, local_hostname="client.example.org", timeout=timeout)
        try:
            smtp.ehlo()
            replies = []
            for message in messages:
                reply = _transaction(smtp, message, sender, recipients)
                if reply.command in ("MAIL", "RCPT", "DATA"):
                    smtp.rset()
                replies.append(reply)
            return replies
        finally:
            try:
                smtp.quit()
            except smtplib.SMTPException:
                smtp.close()

    def submit(
        self, message: bytes, sender: str = "sender@example.org", rcpt: str = f"alice@{DOMAIN}"
    ) -> None:
        """Local submission (``sendmail``, postdrop, pickup): the ``non_smtpd_milters`` path."""
        argv = [
            self.installation.command("sendmail"),
            "-C",
            str(self.config_directory),
            "-f",
            sender,
            "-i",
            rcpt,
        ]
        done = subprocess.run(
            argv, input=message, env=dict(self.installation.env), capture_output=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"sendmail failed ({done.returncode}): {done.stderr.decode(errors='replace')}")

    def delivered(self) -> list[bytes]:
        """The messages in the Maildir, exactly as delivered, oldest first."""
        files = [path for sub in ("new", "cur") for path in (self.mailbox / sub).iterdir() if path.is_file()]
        files.sort(key=lambda path: (path.stat().st_mtime_ns, path.name))
        return [path.read_bytes() for path in files]

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first match of the regular expression ``pattern`` in the mail log, waited for."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.log(), re.MULTILINE)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not in the Postfix log:\n{self.log()}")
            time.sleep(0.05)

    def wait_delivered(self, reply: Reply, timeout: float = 30.0) -> bytes:
        """The message that ``reply`` queued, once virtual(8) has written it."""
        queue_id = reply.queue_id
        assert queue_id is not None, f"not queued: {reply}"
        self.wait_for_log(rf"{queue_id}: to=<[^>]*>, relay=virtual, .*status=sent", timeout)
        mine = [m for m in self.delivered() if re.search(rf"\bid {queue_id}\b".encode(), m.split(b"\n\n")[0])]
        assert len(mine) == 1, f"{len(mine)} delivered messages with queue id {queue_id}:\n{self.log()}"
        return mine[0]

    def queue_files(self, queue: str) -> list[Path]:
        """The queue files in one of the queue's folders (``hold``, ``deferred``, ...)."""
        return sorted(path for path in (self.queue_directory / queue).rglob("*") if path.is_file())

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""


# Started and not yet stopped: stopped when the interpreter exits, whatever happened to the test.
_RUNNING: set[Postfix] = set()


@atexit.register
def _stop_all() -> None:
    for running in list(_RUNNING):
        running.stop()


def _transaction(smtp: smtplib.SMTP, message: bytes, sender: str, recipients: Sequence[str]) -> Reply:
    data = re.sub(rb"\r?\n", b"\r\n", message)
    options = ["BODY=8BITMIME"] if any(b > 127 for b in data) and smtp.has_extn("8bitmime") else []
    code, text = smtp.mail(sender, options)
    if code != 250:
        return Reply(code, text.decode(errors="replace"), "MAIL")
    for recipient in recipients:
        code, text = smtp.rcpt(recipient)
        if code not in (250, 251):
            return Reply(code, text.decode(errors="replace"), "RCPT")
    try:
        code, text = smtp.data(data)
    except smtplib.SMTPDataError as refused:  # the reply to DATA itself
        return Reply(refused.smtp_code, _text(refused.smtp_error), "DATA")
    return Reply(code, text.decode(errors="replace"), "end of data")


def _text(reply: bytes | str) -> str:
    return reply if isinstance(reply, str) else reply.decode(errors="replace")


def _write_cool(path: Path, text: str) -> None:
    """Write a configuration file dated a minute ago: Postfix reads a file changed in the last
    second or two only after "letting it cool down" (up to six 0.3 s pauses, every program)."""
    path.write_text(text)
    past = time.time() - 60
    os.utime(path, (past, past))


def group_alive(pgid: int) -> bool:
    """Whether a process that is not a zombie is left in the process group ``pgid``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # state ppid pgrp ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
