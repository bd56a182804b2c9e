"""The IMAPSieve recipe in examples/imapsieve/, run with a real Dovecot and Python's imaplib as the
mail client: moving a message into Junk teaches ``spamfilter serve --allow-tell`` spam, moving it
out of Junk teaches ham, Junk to Trash teaches nothing.

Dovecot (Debian: ``dovecot-imapd``, with ``dovecot-sieve`` for the imapsieve and extprograms
plugins) runs with a private configuration: the recipe's 95-imapsieve-spamfilter.conf verbatim
but for the two paths an installation chooses (the sieve scripts' folder and the pipe programs'
folder), included from a configuration of the test's own (its base_dir, log and mail in a
temporary folder, IMAP on a free loopback port, a static passdb and userdb). Dovecot runs without
root: as the current user, or, when the tests run as root, as ``nobody`` (Dovecot refuses mail
access as root), which owns the temporary folder. The pipe program, spamfilter-learn, is
installed verbatim but for its one line naming the service's address, pointed at a real
``spamfilter serve --allow-tell`` on a copy of the session's trained model; what it records is
read back from the model directory's corrections. CI installs Dovecot (.ci/run): there a missing
tool fails the test, elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_email
from support import require_tool
from support.exim_harness import closed_port
from support.spamd_server import Server

from spamfilter.corrections import Corrections
from spamfilter.labelled import message_key

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "imapsieve"
CONF = RECIPE / "95-imapsieve-spamfilter.conf"
LEARN = RECIPE / "spamfilter-learn"
SPAMC_ADDRESS = re.compile(r"-d 127\.0\.0\.1 -p 11783\b")
USER, PASSWORD = "alice", "secret"
START_TIMEOUT = 30.0

MESSAGE = make_email("Your parcel", "Your parcel is waiting, confirm the delivery fee at the link below.")
OTHER = make_email("Lunch", "Are we still meeting for lunch tomorrow at noon?")


# --------------------------------------------------------------------------- Dovecot


def dovecot_binary() -> str:
    """Dovecot's master (in /usr/sbin, which a user's PATH may lack), and the IMAP server and
    sieve plugins it needs; missing: a failure in CI, a skip elsewhere."""
    found = shutil.which("dovecot", path=f"{os.environ.get('PATH', os.defpath)}{os.pathsep}/usr/sbin")
    if found is None:
        require_tool("dovecot", "dovecot-imapd")
    assert found is not None
    libexec = Path("/usr/lib/dovecot")
    if not (libexec / "imap").exists():
        require_tool("dovecot-imap", "dovecot-imapd")  # not on PATH: names the package to install
    if not (libexec / "modules" / "lib95_imap_sieve_plugin.so").exists():
        require_tool("dovecot-imapsieve", "dovecot-sieve")
    return found


def run_as() -> tuple[list[str], str, str, tuple[int, int] | None]:
    """The command prefix that runs Dovecot unprivileged, its user and group names, and the uid and
    gid that must own its files (None: the current user, who owns them already)."""
    import grp
    import pwd

    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return [], me.pw_name, grp.getgrgid(os.getegid()).gr_name, None
    setpriv = require_tool("setpriv", "util-linux")
    nobody = pwd.getpwnam("nobody")
    prefix = [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
    group = grp.getgrgid(nobody.pw_gid).gr_name
    return prefix, nobody.pw_name, group, (nobody.pw_uid, nobody.pw_gid)


def private_config(root: Path, port: int, user: str, group: str) -> str:
    """Dovecot's whole configuration for the test; the recipe's file is included last, as
    Debian's dovecot.conf includes conf.d/*.conf."""
    return f"""\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = home={root}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
namespace inbox {{
  inbox = yes
  mailbox Junk {{
    special_use = \\Junk
    auto = create
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = create
  }}
}}
!include {root}/95-imapsieve-spamfilter.conf
"""


def install_recipe(root: Path, spamd_port: int) -> None:
    """The recipe's files where the copied configuration names them: the scripts in root/sieve,
    the pipe program in root/sieve-pipe, its spamc pointed at ``spamd_port``."""
    (root / "sieve").mkdir()
    (root / "sieve-pipe").mkdir()
    conf = CONF.read_text()
    conf, n_bin = re.subn(r"(?m)^(\s*sieve_pipe_bin_dir = ).*$", rf"\g<1>{root}/sieve-pipe", conf)
    conf, n_scripts = re.subn(r"file:/etc/dovecot/sieve/", f"file:{root}/sieve/", conf)
    assert n_bin == 1 and n_scripts == 2
    (root / CONF.name).write_text(conf)
    for script in ("report-spam.sieve", "report-ham.sieve"):
        shutil.copyfile(RECIPE / script, root / "sieve" / script)
    program = root / "sieve-pipe" / LEARN.name
    text, replaced = SPAMC_ADDRESS.subn(f"-d 127.0.0.1 -p {spamd_port}", LEARN.read_text())
    assert replaced == 1, "spamfilter-learn should name the service's address in one line"
    program.write_text(text)
    program.chmod(0o755)


class Dovecot:
    """A private Dovecot serving IMAP on a free loopback port, the recipe installed, its spamc
    talking to ``spamd_port``."""

    def __init__(self, spamd_port: int) -> None:
        binary = dovecot_binary()
        prefix, user, group, owner = run_as()
        # Not pytest's tmp_path: under root that folder is 0700, and Dovecot runs as nobody.
        self.root = Path(tempfile.mkdtemp(prefix="imapsieve-"))
        self.root.chmod(0o755)
        self.port = closed_port()
        for sub in ("run", "state", "home"):
            (self.root / sub).mkdir()
        install_recipe(self.root, spamd_port)
        (self.root / "dovecot.conf").write_text(private_config(self.root, self.port, user, group))
        if owner is not None:
            for path in (self.root, *self.root.rglob("*")):
                os.chown(path, *owner, follow_symlinks=False)
        command = [*prefix, binary, "-F", "-c", str(self.root / "dovecot.conf")]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._wait_for_greeting()

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait_for_greeting(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
                    if conn.recv(200).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.1)
        output = self.stop()
        code = self.process.returncode
        raise AssertionError(f"Dovecot did not start (exit {code}):\n{output}\n{self.log()}")

    def client(self) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=60)
        imap.login(USER, PASSWORD)
        return imap

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        assert self.process.stdout is not None
        output = self.process.stdout.read().decode(errors="replace")
        self.process.stdout.close()
        return output

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- the mail client


def append(imap: imaplib.IMAP4, folder: str, raw: bytes) -> None:
    status, detail = imap.append(folder, None, None, raw)
    assert status == "OK", detail


def only_uid(imap: imaplib.IMAP4, folder: str) -> bytes:
    status, _ = imap.select(folder)
    assert status == "OK"
    status, data = imap.uid("SEARCH", "ALL")
    assert status == "OK"
    (uid,) = data[0].split()
    return uid


def move(imap: imaplib.IMAP4, source: str, target: str, command: str = "MOVE") -> None:
    """The one message in ``source`` moved (or copied) to ``target``, as a mail client does when
    the user drags it there. The command's OK comes after Dovecot ran the IMAPSieve scripts."""
    uid = only_uid(imap, source)
    status, detail = imap.uid(command, uid, target)
    assert status == "OK", detail


def folder_messages(imap: imaplib.IMAP4, folder: str) -> list[bytes]:
    status, _ = imap.select(folder, readonly=True)
    assert status == "OK"
    _, data = imap.uid("SEARCH", "ALL")
    found = []
    for uid in data[0].split():
        status, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        assert status == "OK"
        found.append(parts[0][1])
    return found


def same_message(stored: bytes, raw: bytes) -> bool:
    return stored.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture()
def served(model_copy: Path) -> Iterator[Server]:
    require_tool("spamc", "spamc")
    with Server(model_copy, "--allow-tell", "--learn-after", "0") as server:
        yield server


@pytest.fixture()
def dovecot(served: Server) -> Iterator[Dovecot]:
    running = Dovecot(served.port)
    try:
        yield running
    finally:
        running.close()


def kept(model: Path) -> dict[str, int]:
    """The corrections the service recorded: message key -> 1 spam, 0 ham."""
    return {key: label for key, label, _ in Corrections(model)}


KEY = message_key(MESSAGE).hex()


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("command", ["MOVE", "COPY"])
def test_moving_a_message_into_junk_teaches_spam(
    dovecot: Dovecot, served: Server, model_copy: Path, command: str
) -> None:
    with dovecot.client() as imap:
        append(imap, "INBOX", MESSAGE)
        assert kept(model_copy) == {}  # delivering (APPEND) teaches nothing
        move(imap, "INBOX", "Junk", command)
        assert kept(model_copy) == {KEY: 1}, dovecot.log() + served.log()
        (in_junk,) = folder_messages(imap, "Junk")
        assert same_message(in_junk, MESSAGE)  # :copy: the message itself is left as it was moved
        assert len(folder_messages(imap, "INBOX")) == (1 if command == "COPY" else 0)
    # The message Dovecot piped is the one the client moved: the stored correction is it.
    (stored,) = (model_copy / "corrections" / "spam").glob("*.eml")
    assert same_message(stored.read_bytes(), MESSAGE)
    served.wait_for_log("tell: spam")
    assert ": Error:" not in dovecot.log(), dovecot.log()


def test_moving_a_message_out_of_junk_teaches_ham(dovecot: Dovecot, served: Server, model_copy: Path) -> None:
    with dovecot.client() as imap:
        append(imap, "Junk", MESSAGE)  # filed there at delivery (e.g. by the sieve recipe)
        assert kept(model_copy) == {}
        move(imap, "Junk", "INBOX")
        assert kept(model_copy) == {KEY: 0}, dovecot.log() + served.log()
        # Back into Junk: the user changed their mind, the message moves to the spam class.
        move(imap, "INBOX", "Junk")
        assert kept(model_copy) == {KEY: 1}
    served.wait_for_log("tell: ham")


def test_moving_a_message_from_junk_to_trash_teaches_nothing(
    dovecot: Dovecot, served: Server, model_copy: Path
) -> None:
    with dovecot.client() as imap:
        append(imap, "Junk", MESSAGE)
        move(imap, "Junk", "Trash")
        assert [same_message(m, MESSAGE) for m in folder_messages(imap, "Trash")] == [True]
        # Other moves that are no judgement: INBOX to Trash, Trash back to INBOX.
        append(imap, "INBOX", OTHER)
        move(imap, "INBOX", "Trash", "COPY")
        # The scripts ran and stopped (or did not run): a move they do act on is seen at once,
        # so the empty corrections above are not a report still on its way.
        assert kept(model_copy) == {}
        move(imap, "INBOX", "Junk")
        assert kept(model_copy) == {message_key(OTHER).hex(): 1}
    assert served.log().count("tell: ") == 1, served.log()


def test_a_move_succeeds_when_the_service_is_down(tmp_path: Path) -> None:
    """spamc cannot reach the service: the report fails (Dovecot logs it), the move does not."""
    dovecot = Dovecot(closed_port())
    try:
        with dovecot.client() as imap:
            append(imap, "INBOX", MESSAGE)
            move(imap, "INBOX", "Junk")
            assert [same_message(m, MESSAGE) for m in folder_messages(imap, "Junk")] == [True]
            assert folder_messages(imap, "INBOX") == []
        assert "exit code 69" in dovecot.log(), dovecot.log()  # spamc's EX_UNAVAILABLE, logged
    finally:
        dovecot.close()


class RecordingSpamd:
    """Records the requests spamc sends and answers each as spamd answers a TELL that was done.
    It stands in for the service only to show which spamd headers the recipe sends: the service
    reads ``User:`` but does not keep corrections per user yet, so its files cannot show it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                while length and len(body) < int(length.group(1)):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                self.requests.append(head)
                conn.sendall(b"SPAMD/1.5 0 EX_OK\r\nDidSet: local\r\n\r\n")

    def close(self) -> None:
        self.listener.close()


def test_the_report_names_the_imap_user_and_the_class() -> None:
    spamd = RecordingSpamd()
    dovecot = Dovecot(spamd.port)
    try:
        with dovecot.client() as imap:
            append(imap, "INBOX", MESSAGE)
            move(imap, "INBOX", "Junk")
            move(imap, "Junk", "INBOX")
    finally:
        dovecot.close()
        spamd.close()
    assert len(spamd.requests) == 2
    for head, kind in zip(spamd.requests, ("spam", "ham"), strict=True):
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("TELL SPAMC/")
        assert f"User: {USER}" in lines
        assert f"Message-class: {kind}" in lines
        assert "Set: local" in lines


def test_spamfilter_learn_refuses_a_bad_class_and_passes_spamc_codes(
    tmp_path: Path, trained_model: Path
) -> None:
    """The pipe program on its own: a usage error is 64 and no report; spamc's failure (nothing
    listening: 69; an error reply such as TELL not allowed: 74) is its exit code, for Dovecot's
    log."""
    bad = subprocess.run([str(LEARN), "junk", USER], input=MESSAGE, capture_output=True, timeout=60)
    assert bad.returncode == 64 and b"usage: spamfilter-learn" in bad.stderr
    require_tool("spamc", "spamc")
    program = tmp_path / "spamfilter-learn"
    program.write_text(SPAMC_ADDRESS.sub(f"-d 127.0.0.1 -p {closed_port()}", LEARN.read_text()))
    program.chmod(0o755)
    down = subprocess.run([str(program), "spam", USER], input=MESSAGE, capture_output=True, timeout=60)
    assert down.returncode == 69, down.stderr
    with Server(trained_model) as refusing:  # no --allow-tell: spamd's error reply, spamc's 74
        program.write_text(SPAMC_ADDRESS.sub(f"-d 127.0.0.1 -p {refusing.port}", LEARN.read_text()))
        refused = subprocess.run([str(program), "ham", USER], input=MESSAGE, capture_output=True, timeout=60)
    assert refused.returncode == 74, refused.stderr


def test_the_recipe_files_name_each_other() -> None:
    """What an installation must get right between the four files (the paths are replaced in the
    tests above, so they are checked here)."""
    conf = CONF.read_text()
    (bin_dir,) = re.findall(r"^\s*sieve_pipe_bin_dir = (\S+)$", conf, re.MULTILINE)
    assert f"install -m 755 spamfilter-learn {bin_dir}/spamfilter-learn" in conf
    before = re.compile(r"^\s*imapsieve_mailbox\d+_before = file:(\S+/(report-\w+\.sieve))$", re.MULTILINE)
    scripts = dict(before.findall(conf))
    assert sorted(scripts.values()) == ["report-ham.sieve", "report-spam.sieve"]
    for path, name in scripts.items():
        text = (RECIPE / name).read_text()
        assert f"sievec {path}" in conf and f"sievec {path}" in text
        assert re.search(r'pipe :copy :try "spamfilter-learn" \["(spam|ham)", "\$\{username\}"\];', text)
    assert re.search(r"^\s*sieve_global_extensions = .*\+vnd\.dovecot\.pipe", conf, re.MULTILINE)
    assert re.search(r"^\s*sieve_plugins = .*\bsieve_imapsieve\b.*\bsieve_extprograms\b", conf, re.MULTILINE)
