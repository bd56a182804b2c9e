"""The mail-system recipes in examples/recipes/, run with the real tools where they are installed.

procmail, formail and lockfile (Debian/Ubuntu package ``procmail``), maildrop (``maildrop``) and
Dovecot's sieve-test with the extprograms plugin (``dovecot-sieve``, which needs ``dovecot-core``) are
run for real; CI installs them (.ci/run): there a missing tool fails the test, elsewhere it is skipped
with the reason. Postfix cannot run in a test (it needs root, a queue and its daemons), so for it the
tests run the wrapper the recipe calls, in the environment pipe(8) gives it.

Every spamfilter run uses the small real model of the session fixture ``trained_model``.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import default_model_file, make_email
from support import require_tool
from support.delivery import (
    FAKE_SENDMAIL,
    FLAG,
    HAM_TEXT,
    SPAM_TEXT,
    TIMEOUT,
    maildir_messages,
    mbox_messages,
    run,
    tagged_as,
    with_envelope,
)

from spamfilter.mail import remove_spam_headers

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "examples" / "recipes"
SAMPLE_MBOX = ROOT / "examples" / "sample.mbox"
SAMPLE_MESSAGES = 10
EX_TEMPFAIL = 75


# --------------------------------------------------------------------------- helpers and fixtures


@pytest.fixture(scope="session")
def spamfilter_bin() -> Path:
    """The installed console script, as a mail system would run it."""
    path = Path(sys.executable).parent / "spamfilter"
    if not path.exists():
        found = shutil.which("spamfilter")
        assert found, "the spamfilter console script is not installed (pip install -e .)"
        path = Path(found)
    return path


@pytest.fixture
def env(tmp_path: Path, spamfilter_bin: Path, trained_model: Path) -> dict[str, str]:
    """A small environment with spamfilter on PATH and the trained model; HOME points to an empty
    folder so that no default model directory of the machine can stand in for it."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": f"{spamfilter_bin.parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "HOME": str(home),
        "SPAMFILTER_MODEL": str(trained_model),
        "LC_ALL": "C.UTF-8",
        "TMPDIR": str(tmp_path),
    }


@pytest.fixture
def spam() -> bytes:
    return make_email("Claim your prize now", SPAM_TEXT, sender="lotto@prize.example")


@pytest.fixture
def ham() -> bytes:
    return make_email("Lunch tomorrow", HAM_TEXT, sender="bob@example.org")


# --------------------------------------------------------------------------- procmail


def install_for_user(home: Path, spamfilter_bin: Path, model: Path | None) -> None:
    """spamfilter where the recipes look for it: ~/.local/bin/spamfilter, and (unless None) the
    model as ~/.local/share/spamfilter/model."""
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "spamfilter").symlink_to(spamfilter_bin)
    if model is not None:
        (home / ".local" / "share" / "spamfilter").mkdir(parents=True)
        (home / ".local" / "share" / "spamfilter" / "model").symlink_to(model)


def procmail_home(tmp_path: Path, spamfilter_bin: Path, model: Path | None) -> tuple[Path, Path]:
    """A home folder laid out as examples/recipes/procmailrc expects, and a verbatim copy of that rc.

    procmail clears the environment and sets its own PATH, so the recipe finds everything through
    HOME: spamfilter in ~/.local/bin, the model in ~/.local/share/spamfilter/model, mail in ~/Mail.
    The copy only gets the permissions procmail insists on (no group or world write)."""
    home = tmp_path / "pm-home"
    (home / "Mail").mkdir(parents=True)
    install_for_user(home, spamfilter_bin, model)
    rc = tmp_path / "procmailrc"
    shutil.copyfile(RECIPES / "procmailrc", rc)
    rc.chmod(0o644)
    return home, rc


def deliver_with_procmail(home: Path, rc: Path, raw: bytes) -> None:
    procmail = require_tool("procmail")
    # -m: procmail as a general mail filter: no system rcfile, no delivery to the system spool
    # unless the rc says so. HOME=... is assigned before the rc is read.
    result = run([procmail, "-m", f"HOME={home}", str(rc)], {"PATH": os.defpath}, raw)
    assert result.returncode == 0, result.stderr.decode(errors="replace")


def test_procmail_recipe_files_spam_and_delivers_ham(
    tmp_path: Path, spamfilter_bin: Path, trained_model: Path, spam: bytes, ham: bytes
) -> None:
    home, rc = procmail_home(tmp_path, spamfilter_bin, trained_model)
    spam_in = with_envelope(spam, "lotto@prize.example")
    ham_in = with_envelope(ham, "bob@example.org")
    deliver_with_procmail(home, rc, spam_in)
    deliver_with_procmail(home, rc, ham_in)

    mail = home / "Mail"
    log = (mail / "procmail.log").read_text(errors="replace")
    (spam_out,) = mbox_messages(mail / "spam")
    (ham_out,) = mbox_messages(mail / "inbox")
    assert tagged_as(spam_out) == b"YES", log
    assert tagged_as(ham_out) == b"NO", log
    # The headers went in right after the envelope line, everything else is the original, byte for
    # byte (procmail only ends each mbox message with an empty line).
    for out, original in ((spam_out, spam_in), (ham_out, ham_in)):
        assert out.split(b"\n", 2)[1].startswith(b"X-Spam-Flag: ")
        assert remove_spam_headers(out).rstrip(b"\n") == original.rstrip(b"\n")
    # The filter's lockfile is gone once procmail is done.
    assert not (mail / "spamfilter.lock").exists()


def test_procmail_recipe_delivers_untagged_mail_when_the_classifier_fails(
    tmp_path: Path, spamfilter_bin: Path, spam: bytes, ham: bytes
) -> None:
    """No model: spamfilter passes each message through unchanged and nothing is lost or filed as
    spam."""
    home, rc = procmail_home(tmp_path, spamfilter_bin, model=None)
    spam_in = with_envelope(spam, "lotto@prize.example")
    ham_in = with_envelope(ham, "bob@example.org")
    deliver_with_procmail(home, rc, spam_in)
    deliver_with_procmail(home, rc, ham_in)

    mail = home / "Mail"
    assert not (mail / "spam").exists()
    delivered = mbox_messages(mail / "inbox")
    assert [m.rstrip(b"\n") for m in delivered] == [spam_in.rstrip(b"\n"), ham_in.rstrip(b"\n")]
    assert "passed through untagged" in (mail / "procmail.log").read_text(errors="replace")


# --------------------------------------------------------------------------- SpamAssassin first

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"  # SpamAssassin: spam, always


def header_fields(raw: bytes, prefix: str) -> dict[str, list[str]]:
    """The values of the header block's ``prefix``-* fields, unfolded, by the rest of their name."""
    head = raw.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    fields: dict[str, list[str]] = {}
    for match in re.finditer(rf"^{re.escape(prefix)}-([A-Za-z-]+):(.*(?:\n[ \t].*)*)", head, re.MULTILINE):
        fields.setdefault(match.group(1), []).append(" ".join(match.group(2).split()))
    return fields


def one_verdict(raw: bytes, prefix: str, spamassassin: bool = False) -> bool:
    """Spam or not by ``prefix``'s fields, which must not contradict each other: one Flag, one
    Status, one Level, and they all say the same. SpamAssassin itself writes no Flag for ham."""
    fields = header_fields(raw, prefix)
    if spamassassin and "Flag" not in fields:
        fields["Flag"] = ["NO"]
    assert [len(fields.get(name, [])) for name in ("Flag", "Status", "Level")] == [1, 1, 1], fields
    flag, status, level = fields["Flag"][0], fields["Status"][0], fields["Level"][0]
    found = re.match(r"(Yes|No), score=(-?[0-9.]+) required=([0-9.]+) ", status)
    assert found is not None, status
    spam = flag == "YES"
    assert (found.group(1) == "Yes") is spam and (float(found.group(2)) >= float(found.group(3))) is spam
    assert level == "*" * min(50, max(0, int(float(found.group(2))))), (
        level,
        status,
    )  # SpamAssassin: 50 at most
    return spam


def spamassassin_then_spamfilter(home: Path, rc: Path, messages: list[bytes]) -> list[bytes]:
    """Each message delivered through the rc; all that procmail filed, in the inbox and spam."""
    require_tool("spamassassin", "spamassassin")
    for raw in messages:
        deliver_with_procmail(home, rc, raw)
    mail = home / "Mail"
    return [
        m for folder in ("inbox", "spam") if (mail / folder).exists() for m in mbox_messages(mail / folder)
    ]


def spamassassin_rc(
    tmp_path: Path, spamfilter_bin: Path, model: Path, prefix: str | None
) -> tuple[Path, Path]:
    """examples/recipes/procmailrc-spamassassin, SpamAssassin run offline (-L: no network tests);
    with ``prefix`` None the filter keeps the default X-Spam names."""
    home, _ = procmail_home(tmp_path, spamfilter_bin, model)
    text = (RECIPES / "procmailrc-spamassassin").read_text()
    text = text.replace("SPAMASSASSIN=spamassassin ", "SPAMASSASSIN='spamassassin -L' ")
    if prefix is None:
        text = text.replace(" --header-prefix X-Spamfilter", "")
    rc = tmp_path / "procmailrc-spamassassin"
    rc.write_text(text)
    rc.chmod(0o644)
    return home, rc


def test_after_spamassassin_the_default_names_carry_one_verdict(
    tmp_path: Path, spamfilter_bin: Path, trained_model: Path, spam: bytes, ham: bytes
) -> None:
    """The real spamassassin tags first (GTUBE: spam with 1000 points, 50 stars); spamfilter with
    the default names replaces SpamAssassin's Flag/Status/Level/Checker-Version/Report, so no
    field contradicts another."""
    gtube = make_email("test", f"{HAM_TEXT}\n{GTUBE}\n", sender="bob@example.org")
    home, rc = spamassassin_rc(tmp_path, spamfilter_bin, trained_model, prefix=None)
    delivered = spamassassin_then_spamfilter(
        home, rc, [with_envelope(m, "x@example.org") for m in (spam, ham, gtube)]
    )
    assert len(delivered) == 3
    for out in delivered:
        one_verdict(out, "X-Spam")
        assert not {"Checker-Version", "Report"} & set(header_fields(out, "X-Spam"))


def test_after_spamassassin_another_prefix_keeps_both_verdicts(
    tmp_path: Path, spamfilter_bin: Path, trained_model: Path, ham: bytes
) -> None:
    gtube = make_email("test", f"{HAM_TEXT}\n{GTUBE}\n", sender="bob@example.org")
    home, rc = spamassassin_rc(tmp_path, spamfilter_bin, trained_model, prefix="X-Spamfilter")
    delivered = spamassassin_then_spamfilter(
        home, rc, [with_envelope(m, "x@example.org") for m in (ham, gtube)]
    )
    assert len(delivered) == 2
    by_spamassassin = sorted(one_verdict(out, "X-Spam", spamassassin=True) for out in delivered)
    assert by_spamassassin == [False, True]  # SpamAssassin's own fields, as it wrote them
    for out in delivered:
        one_verdict(out, "X-Spamfilter")
        assert header_fields(out, "X-Spam")["Checker-Version"][0].startswith("SpamAssassin")
    # What SpamAssassin called spam went to the spam folder by the recipe's second rule.
    assert len(mbox_messages(home / "Mail" / "spam")) >= 1


# --------------------------------------------------------------------------- formail


def test_formail_splits_the_filtered_mbox_into_the_same_messages(env: dict[str, str]) -> None:
    formail = require_tool("formail")
    filtered = run(["spamfilter", "filter", "--quiet", str(SAMPLE_MBOX)], env)
    assert filtered.returncode == 0, filtered.stderr.decode(errors="replace")

    def field_per_message(mbox: bytes, field: str) -> list[str]:
        # formail -s runs the command once per message; formail -X prints that field.
        result = run([formail, "-s", formail, "-X", f"{field}:"], env, mbox)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        return result.stdout.decode().splitlines()

    original_ids = field_per_message(SAMPLE_MBOX.read_bytes(), "Message-ID")
    assert len(original_ids) == SAMPLE_MESSAGES
    assert field_per_message(filtered.stdout, "Message-ID") == original_ids
    spam_flags = field_per_message(filtered.stdout, "X-Spam-Flag")
    assert len(spam_flags) == SAMPLE_MESSAGES
    assert all(line in ("X-Spam-Flag: YES", "X-Spam-Flag: NO") for line in spam_flags)


# --------------------------------------------------------------------------- Postfix pipe filter
#
# Postfix itself cannot run in a test (it needs root, a queue and its daemons), so the wrapper is
# run the way pipe(8) runs it per postfix-master.cf, with a fake sendmail first on PATH that records
# what would have been re-injected.


@pytest.fixture
def postfix_env(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    sendmail = bin_dir / "sendmail"
    sendmail.write_text(FAKE_SENDMAIL)
    sendmail.chmod(0o755)
    return env | {
        "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}",
        "FAKE_SENDMAIL_OUT": str(tmp_path / "reinjected"),
    }


def postfix_filter(env: dict[str, str], raw: bytes, *args: str) -> subprocess.CompletedProcess:
    argv = args or ("-f", "lotto@prize.example", "--", "alice@example.org", "-carol@example.org")
    return run(["sh", str(RECIPES / "postfix-filter.sh"), *argv], env, raw)


def test_postfix_master_cf_passes_the_arguments_the_wrapper_expects() -> None:
    text = (RECIPES / "postfix-master.cf").read_text()
    assert re.search(r"^  -o content_filter=spamfilter:dummy$", text, re.MULTILINE)
    assert re.search(r"^spamfilter unix .* pipe$", text, re.MULTILINE)
    assert "argv=/usr/local/bin/postfix-filter.sh -f ${sender} -- ${recipient}\n" in text


@pytest.mark.parametrize("kind", ["spam", "ham"])
def test_postfix_filter_reinjects_the_tagged_message(
    tmp_path: Path, postfix_env: dict[str, str], spam: bytes, ham: bytes, kind: str
) -> None:
    original = spam if kind == "spam" else ham
    result = postfix_filter(postfix_env, original)
    assert result.returncode == 0, result.stderr.decode(errors="replace")

    args = (tmp_path / "reinjected.args").read_text().splitlines()
    assert args == ["-G", "-i", "-f", "lotto@prize.example", "--", "alice@example.org", "-carol@example.org"]
    reinjected = (tmp_path / "reinjected.msg").read_bytes()
    assert tagged_as(reinjected) == (b"YES" if kind == "spam" else b"NO")
    assert reinjected.startswith(b"X-Spam-Flag: ")
    assert remove_spam_headers(reinjected) == original


def test_postfix_filter_keeps_an_empty_envelope_sender(
    postfix_env: dict[str, str], tmp_path: Path, ham: bytes
) -> None:
    """Bounces have the null sender (null_sender= in master.cf): it must stay empty, not vanish."""
    result = postfix_filter(postfix_env, ham, "-f", "", "--", "alice@example.org")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert (tmp_path / "reinjected.args").read_text().splitlines() == [
        "-G",
        "-i",
        "-f",
        "",
        "--",
        "alice@example.org",
    ]


def broken_model(tmp_path: Path, trained_model: Path) -> Path:
    """A copy of the model directory whose ONNX file no longer matches its recorded sha256."""
    copy = tmp_path / "broken-model"
    shutil.copytree(trained_model, copy)
    onnx = default_model_file(copy)
    onnx.write_bytes(onnx.read_bytes()[:-16])
    return copy


@pytest.mark.parametrize("model", ["missing", "corrupt"])
def test_postfix_filter_defers_with_75_when_the_classifier_fails(
    tmp_path: Path, postfix_env: dict[str, str], trained_model: Path, spam: bytes, model: str
) -> None:
    path = tmp_path / "no-such-model" if model == "missing" else broken_model(tmp_path, trained_model)
    result = postfix_filter(postfix_env | {"SPAMFILTER_MODEL": str(path)}, spam)
    assert result.returncode == EX_TEMPFAIL, result.stderr.decode(errors="replace")
    assert b"deferred" in result.stderr
    # Nothing was re-injected: Postfix keeps the message queued and retries it later.
    assert not (tmp_path / "reinjected.msg").exists()


def test_postfix_filter_defers_with_75_when_sendmail_fails(
    postfix_env: dict[str, str], tmp_path: Path, spam: bytes
) -> None:
    result = postfix_filter(postfix_env | {"FAKE_SENDMAIL_EXIT": "1"}, spam)
    assert result.returncode == EX_TEMPFAIL, result.stderr.decode(errors="replace")
    assert (tmp_path / "reinjected.msg").exists()  # it was called, and it failed


def test_postfix_filter_defers_on_a_bad_command_line(
    postfix_env: dict[str, str], tmp_path: Path, spam: bytes
) -> None:
    result = postfix_filter(postfix_env, spam, "alice@example.org")
    assert result.returncode == EX_TEMPFAIL
    assert not (tmp_path / "reinjected.msg").exists()


# --------------------------------------------------------------------------- cron over an mbox


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "Mail"
    folder.mkdir()
    path = folder / "inbox"
    shutil.copyfile(SAMPLE_MBOX, path)
    path.chmod(0o600)
    os.utime(path, (1_700_000_000, 1_700_000_100))  # atime before mtime: "new mail" for readers
    return path


def cron_mbox(env: dict[str, str], mbox: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["sh", str(RECIPES / "cron-mbox.sh"), str(mbox), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=TIMEOUT)
    return process.returncode, err.decode(errors="replace")


def assert_tagged_once(mbox: Path) -> list[bytes]:
    """The mailbox holds the sample's 10 messages, each tagged exactly once and otherwise unchanged."""
    messages = mbox_messages(mbox)
    assert len(messages) == SAMPLE_MESSAGES
    for raw in messages:
        tagged_as(raw)
        assert len(re.findall(rb"^X-Spam-Status:", raw, re.MULTILINE)) == 1
    assert b"".join(remove_spam_headers(m) for m in messages) == SAMPLE_MBOX.read_bytes()
    return messages


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "inbox")


def test_cron_mbox_tags_the_mailbox_in_place(env: dict[str, str], inbox: Path) -> None:
    code, err = finish(cron_mbox(env, inbox))
    assert code == 0, err

    # Looked at before reading the file, which may update its access time.
    after = inbox.stat()
    assert (after.st_atime, after.st_mtime) == (1_700_000_000, 1_700_000_100)
    assert stat.S_IMODE(after.st_mode) == 0o600
    assert_tagged_once(inbox)
    assert leftovers(inbox.parent) == []  # no temporary file, no lock left behind


def test_cron_mbox_twice_at_once_leaves_one_intact_mailbox(env: dict[str, str], inbox: Path) -> None:
    first, second = cron_mbox(env, inbox), cron_mbox(env, inbox)
    assert finish(first)[0] == 0
    assert finish(second)[0] == 0
    assert_tagged_once(inbox)
    assert leftovers(inbox.parent) == []


def test_cron_mbox_leaves_the_mailbox_alone_when_the_classifier_fails(
    tmp_path: Path, env: dict[str, str], inbox: Path, trained_model: Path
) -> None:
    code, err = finish(
        cron_mbox(env | {"SPAMFILTER_MODEL": str(broken_model(tmp_path, trained_model))}, inbox)
    )
    assert code == EX_TEMPFAIL, err
    assert "left unchanged" in err
    assert inbox.read_bytes() == SAMPLE_MBOX.read_bytes()
    assert leftovers(inbox.parent) == []


def test_cron_mbox_waits_for_a_flock_held_by_someone_else(env: dict[str, str], inbox: Path) -> None:
    import fcntl

    require_tool("flock", "util-linux")
    with inbox.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, err = finish(cron_mbox(env | {"LOCK_WAIT": "1"}, inbox))
    assert code == EX_TEMPFAIL, err
    assert "cannot flock" in err
    assert inbox.read_bytes() == SAMPLE_MBOX.read_bytes()
    assert leftovers(inbox.parent) == []  # its own dot-lock removed, nobody else's touched


def test_cron_mbox_waits_for_a_dot_lock_held_by_someone_else(env: dict[str, str], inbox: Path) -> None:
    require_tool("lockfile")
    dotlock = inbox.parent / "inbox.lock"
    dotlock.write_bytes(b"")  # a fresh lock, as procmail or a mail reader would hold it
    code, err = finish(cron_mbox(env | {"LOCK_WAIT": "1"}, inbox))
    assert code == EX_TEMPFAIL, err
    assert "cannot dot-lock" in err
    assert inbox.read_bytes() == SAMPLE_MBOX.read_bytes()
    assert dotlock.exists()  # someone else's lock is not ours to remove


def test_crontab_line_runs_the_script_on_an_mbox() -> None:
    lines = [
        line for line in (RECIPES / "crontab").read_text().splitlines() if line and not line.startswith("#")
    ]
    schedule = [line for line in lines if "=" not in line.split()[0]]
    assert len(schedule) == 1
    fields = schedule[0].split()
    assert len(fields) == 7 and fields[5].endswith("/cron-mbox.sh")


# --------------------------------------------------------------------------- maildrop
#
# The real maildrop, as a user dry-runs a filter file: `maildrop FILE < message` (not in delivery
# mode, so no root and no system mailbox). maildrop takes HOME from the password file, not from
# the environment, so the test's copy of the recipe starts with one line that sets HOME to a
# folder laid out as the recipe expects; every other line is examples/recipes/mailfilter verbatim.


def maildrop_home(tmp_path: Path, spamfilter_bin: Path, model: Path | None) -> tuple[Path, Path]:
    """A home folder for examples/recipes/mailfilter, and the filter file to run: the recipe after
    a HOME assignment, with the permissions maildrop insists on (the user's own, not world-writable;
    600 as the recipe says)."""
    home = tmp_path / "md-home"
    for maildir in (home / "Maildir", home / "Maildir" / ".Junk"):  # maildrop creates no Maildir
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
    install_for_user(home, spamfilter_bin, model)
    rc = tmp_path / "mailfilter"
    rc.write_text(f'HOME="{home}"\n' + (RECIPES / "mailfilter").read_text())
    rc.chmod(0o600)
    return home, rc


def deliver_with_maildrop(rc: Path, raw: bytes) -> None:
    maildrop = require_tool("maildrop", "maildrop")
    result = run([maildrop, str(rc)], {"PATH": os.defpath}, raw)
    assert result.returncode == 0, result.stderr.decode(errors="replace")


def test_maildrop_recipe_files_spam_and_delivers_ham(
    tmp_path: Path, spamfilter_bin: Path, trained_model: Path, spam: bytes, ham: bytes
) -> None:
    text = (RECIPES / "mailfilter").read_text()
    assert re.search(r"exception \{\s*xfilter ", text), "the xfilter must stay inside the exception block"
    home, rc = maildrop_home(tmp_path, spamfilter_bin, trained_model)
    # With and without the mbox envelope line: MTAs hand maildrop either.
    spam_in = [spam, with_envelope(spam, "lotto@prize.example")]
    ham_in = [ham, with_envelope(ham, "bob@example.org")]
    for raw in spam_in + ham_in:
        deliver_with_maildrop(rc, raw)

    junk = maildir_messages(home / "Maildir" / ".Junk")
    inbox = maildir_messages(home / "Maildir")
    assert len(junk) == 2 and len(inbox) == 2
    for delivered, verdict, originals in ((junk, b"YES", spam_in), (inbox, b"NO", ham_in)):
        for out in delivered:
            assert tagged_as(out) == verdict
        # Only the two headers were added, right at the top of the header (after the envelope line
        # when there is one); everything else is the original, byte for byte.
        assert sorted(remove_spam_headers(out) for out in delivered) == sorted(originals)
        for out in delivered:
            assert FLAG.match(out.split(b"\n", 1)[out.startswith(b"From ")])


def test_maildrop_recipe_delivers_untagged_mail_when_the_classifier_fails(
    tmp_path: Path, spamfilter_bin: Path, spam: bytes, ham: bytes
) -> None:
    """No model: spamfilter passes each message through unchanged, all of it goes to the inbox."""
    home, rc = maildrop_home(tmp_path, spamfilter_bin, model=None)
    for raw in (spam, ham):
        deliver_with_maildrop(rc, raw)
    assert maildir_messages(home / "Maildir" / ".Junk") == []
    assert maildir_messages(home / "Maildir") == sorted([spam, ham])


# --------------------------------------------------------------------------- Dovecot sieve
#
# The real Pigeonhole sieve-test, with the recipe's 90-sieve-extprograms.conf as its whole Dovecot
# configuration (sieve_filter_bin_dir and sieve_before pointed into the test folder) and
# spamfilter.sieve verbatim. sieve-test runs the `filter` program for real, the way Dovecot's LDA
# and LMTP do (same extension code, same restricted environment, CRLF input), and with -e -l it
# really stores the message: into the Junk folder, or into INBOX for the implicit keep.
#
# Dovecot refuses mail access as root ("Mail access not allowed for root"; only doveadm may), so
# when the tests run as root, sieve-test runs as the unprivileged user `nobody`, who owns the test's
# mail folder, just as a delivery runs as the mail user. That user keeps one capability,
# CAP_DAC_OVERRIDE (ambient, so that it reaches the filter program Dovecot starts), only because
# the test's files are not where an installation puts them: the trained model and pytest's tmp_path
# are in root's 0700 folders, and so, often, is the Python the virtualenv's spamfilter runs on.


def sieve_user() -> tuple[list[str], tuple[int, int] | None]:
    """The command prefix that runs sieve-test as a mail user, and that user's uid and gid (None:
    as the current, unprivileged, user)."""
    if os.geteuid() != 0:
        return [], None
    import pwd

    setpriv = require_tool("setpriv", "util-linux")
    nobody = pwd.getpwnam("nobody")
    prefix = [
        setpriv,
        f"--reuid={nobody.pw_uid}",
        f"--regid={nobody.pw_gid}",
        "--clear-groups",
        "--inh-caps=+dac_override",
        "--ambient-caps=+dac_override",
    ]
    return prefix, (nobody.pw_uid, nobody.pw_gid)


def dovecot_setup(tmp_path: Path, spamfilter_bin: Path, model: Path) -> Path:
    """A folder with the Dovecot config, the sieve script, the filter program and the mail home.

    The wrapper is installed as `spamfilter` in the filter bin dir, verbatim but for one line after
    its #! line that stands in for where an installation puts things: spamfilter on PATH (instead
    of /usr/local/bin) and the model directory (instead of /var/lib/spamfilter/model)."""
    require_tool("sieve-test", "dovecot-sieve")
    root = tmp_path / "dovecot"
    bin_dir = root / "sieve-filter"
    bin_dir.mkdir(parents=True)
    for sub in ("cur", "new", "tmp"):
        (root / "home" / "Maildir" / sub).mkdir(parents=True)
    script = root / "spamfilter.sieve"
    shutil.copyfile(RECIPES / "spamfilter.sieve", script)

    conf = (RECIPES / "90-sieve-extprograms.conf").read_text()
    conf, n_bin = re.subn(r"(?m)^(\s*sieve_filter_bin_dir = ).*$", rf"\g<1>{bin_dir}", conf)
    conf, n_before = re.subn(r"(?m)^(\s*sieve_before = ).*$", rf"\g<1>{script}", conf)
    assert n_bin == n_before == 1
    (root / "dovecot.conf").write_text(conf)

    shebang, rest = (RECIPES / "sieve-spamfilter").read_text().split("\n", 1)
    program = bin_dir / "spamfilter"
    program.write_text(f"{shebang}\nPATH={spamfilter_bin.parent} SPAMFILTER_MODEL={model}\n{rest}")
    program.chmod(0o755)

    _, owner = sieve_user()
    if owner is not None:
        for path in (root, *root.rglob("*")):
            os.chown(path, *owner, follow_symlinks=False)
    return root


def sieve_test(root: Path, raw: bytes) -> str:
    """Runs spamfilter.sieve on the message and stores the result; returns sieve-test's trace."""
    tool = require_tool("sieve-test", "dovecot-sieve")
    prefix, owner = sieve_user()
    mail = root / f"message-{len(list(root.glob('message-*')))}.eml"
    mail.write_bytes(raw)
    if owner is not None:
        os.chown(mail, *owner)
    maildir = f"maildir:{root / 'home' / 'Maildir'}"
    command = [
        *prefix,
        tool,
        "-c",
        str(root / "dovecot.conf"),
        "-o",
        f"mail_location={maildir}",
        "-l",
        maildir,  # with -e: really store the message (fileinto, keep) in this mail store
        "-e",
        "-t",
        "-",  # the runtime trace, on stdout
        str(root / "spamfilter.sieve"),
        str(mail),
    ]
    result = run(command, {"HOME": str(root / "home"), "PATH": os.defpath}, cwd=root)
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, output
    assert "final result: success" in output, output
    return output


def test_sieve_recipe_files_spam_into_junk_and_keeps_ham(
    tmp_path: Path, spamfilter_bin: Path, trained_model: Path, spam: bytes, ham: bytes
) -> None:
    root = dovecot_setup(tmp_path, spamfilter_bin, trained_model)
    for raw, junk in ((spam, True), (ham, False)):
        trace = sieve_test(root, raw)
        # The filter program ran, and its output replaced the message.
        assert "execute program `spamfilter'" in trace, trace
        assert "executed program successfully" in trace and "changed message" in trace, trace
        assert ("fileinto action: stored mail into mailbox 'Junk'" in trace) == junk, trace
        assert ("stored mail into mailbox 'INBOX'" in trace) == (not junk), trace

    maildir = root / "home" / "Maildir"
    (spam_out,) = maildir_messages(maildir / ".Junk")
    (ham_out,) = maildir_messages(maildir)
    # Dovecot piped the message to the filter with CRLF line endings, spamfilter kept them, and
    # Dovecot stored the result with LF again: only the two headers at the top are new.
    for out, original, verdict in ((spam_out, spam, b"YES"), (ham_out, ham, b"NO")):
        assert tagged_as(out) == verdict
        assert out.startswith(b"X-Spam-Flag: ")
        assert remove_spam_headers(out) == original


def test_sieve_recipe_keeps_untagged_mail_when_the_classifier_fails(
    tmp_path: Path, spamfilter_bin: Path, spam: bytes
) -> None:
    """No model: the wrapper's spamfilter writes the message back unchanged and exits 0; the
    message is kept, in INBOX, untagged."""
    root = dovecot_setup(tmp_path, spamfilter_bin, tmp_path / "no-such-model")
    trace = sieve_test(root, spam)
    assert "executed program successfully" in trace, trace
    assert "passed through untagged" in trace, trace  # spamfilter's stderr, passed on by Dovecot
    assert "stored mail into mailbox 'INBOX'" in trace, trace
    assert not (root / "home" / "Maildir" / ".Junk").exists()
    assert maildir_messages(root / "home" / "Maildir") == [spam]


def test_sieve_recipe_wiring() -> None:
    """What an installation must get right between the three files (the config paths are replaced
    in the tests above, so they are checked here)."""
    sieve = (RECIPES / "spamfilter.sieve").read_text()
    conf = (RECIPES / "90-sieve-extprograms.conf").read_text()
    wrapper = (RECIPES / "sieve-spamfilter").read_text()
    # The program name in the script is the file name the wrapper is installed under in
    # sieve_filter_bin_dir, and the extension is enabled for the (global) script.
    (program,) = re.findall(r'^filter "([^"]+)";$', sieve, re.MULTILINE)
    (bin_dir,) = re.findall(r"^\s*sieve_filter_bin_dir = (\S+)$", conf, re.MULTILINE)
    assert f"install -m 755 sieve-spamfilter {bin_dir}/{program}" in wrapper
    assert re.search(r"^\s*sieve_global_extensions = .*\+vnd\.dovecot\.filter", conf, re.MULTILINE)
    (before,) = re.findall(r"^\s*sieve_before = (\S+)$", conf, re.MULTILINE)
    assert f"sieve_before = {before}" in sieve and f"sievec {before}" in sieve
