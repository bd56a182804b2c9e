"""Per-user heads through the real service (serve --per-user) and real spamc -u: a user's TELLs
train that user's head and change that user's verdicts only; every other user's reply stays the
same bytes; names that could be paths are refused; the bounds hold; the milter's one recipient."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from support import SHARED_DATA, require_tool
from support.spamd_server import Server, request, spamd_request

from spamfilter.learn import current_head, window_features
from spamfilter.mail import iter_mail_source
from spamfilter.modeldir import open_model_directory
from spamfilter.pipeline import message_text
from spamfilter.service.milter import RCPT, SMFIP_NORCPT, _Message, negotiate, packet
from spamfilter.user_heads import MAX_USER_LENGTH, UserHeads, score_with_head

CORPUS = SHARED_DATA / "spamassassin"
ALICE, BOB = "alice@example.org", "bob@example.org"


def spamc(server: Server, message: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    host, port = server.address
    command = [require_tool("spamc", "spamc"), "-d", host, "-p", str(port), *args]
    return subprocess.run(command, input=message, capture_output=True, timeout=120)


def flagged_ham(model: Path, count: int) -> list[bytes]:
    """Ham of the SpamAssassin corpus that the (SMS-trained) test model marks as spam."""
    directory = open_model_directory(model)
    raws = list(iter_mail_source(CORPUS / "easy_ham.mbox"))[:80]
    features, owners, discounts = window_features(directory, [message_text(raw) for raw in raws])
    scores = score_with_head(current_head(directory), features, owners, len(raws), discounts)
    flagged = [raw for raw, score in zip(raws, scores, strict=True) if score >= directory.threshold]
    assert len(flagged) >= count, "the SMS model should mark some of this email as spam"
    return flagged[:count]


def filter_as(model: Path, message: bytes, *options: str) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "spamfilter", "filter", "--format", "email", "-q", "-m", str(model)]
    return subprocess.run([*command, *options], input=message, capture_output=True, timeout=300)


def test_a_users_tells_change_their_verdicts_and_no_one_elses(model_copy: Path) -> None:
    taught = flagged_ham(model_copy, 12)
    corrections, duplicates = taught[:10], taught  # the 10 taught, and their exact copies again
    options = ("--allow-tell", "--per-user", "--learn-after", "10", "--metrics", "127.0.0.1:0")
    with Server(model_copy, *options) as server:
        before = {user: [spamc(server, raw, "-u", user).stdout for raw in taught] for user in (ALICE, BOB)}
        assert before[ALICE] == before[BOB]  # no head yet: everyone gets the shared bytes
        assert all(b"X-Spam-Flag: YES" in tagged for tagged in before[BOB])
        for raw in corrections:
            told = spamc(server, raw, "-u", ALICE, "-L", "ham")
            assert told.returncode == 0, told.stderr
        told_at = time.monotonic()
        server.wait_for_log(f"user '{ALICE}': head trained", timeout=300)
        after = {user: [spamc(server, raw, "-u", user).stdout for raw in duplicates] for user in (ALICE, BOB)}
        seconds = time.monotonic() - told_at
        # Alice's corrected messages (sent again: exact duplicates) are now ham for her ...
        assert all(b"X-Spam-Flag: NO" in tagged for tagged in after[ALICE][:10]), after[ALICE]
        # ... and Bob's replies, and those of a client without -u (spamc sends its login), are the
        # same bytes as before.
        assert after[BOB] == before[BOB]
        assert [spamc(server, raw).stdout for raw in taught] == before[BOB]
        metrics = urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=30).read().decode()
        assert "spamfilter_user_heads_loaded" in metrics
        loaded = [line for line in metrics.splitlines() if line.startswith("spamfilter_user_heads_loaded ")]
        assert float(loaded[0].split()[1]) >= 2  # alice's head and bob's absence of one
        assert "spamfilter_user_retrain_seconds_count 1.0" in metrics
    print(f"TELL of the 10th correction to its duplicates scored as corrected: {seconds:.1f} s")
    # filter --user reads the same head; another user's output is the shared model's, byte for byte.
    alice = filter_as(model_copy, corrections[0], "--user", ALICE)
    assert alice.returncode == 0 and b"X-Spam-Flag: NO" in alice.stdout, alice.stderr
    shared = filter_as(model_copy, corrections[0])
    assert filter_as(model_copy, corrections[0], "--user", BOB).stdout == shared.stdout
    assert b"X-Spam-Flag: YES" in shared.stdout


@pytest.mark.parametrize("name", ["../x", "/etc", "x" * 300, "a/../../b"])
def test_a_name_that_could_be_a_path_gets_the_shared_verdict_and_cannot_teach(
    model_copy: Path, name: str
) -> None:
    message = flagged_ham(model_copy, 1)[0]
    with Server(model_copy, "--allow-tell", "--per-user", "--learn-after", "1") as server:
        shared = spamc(server, message, "-u", "carol").stdout
        assert spamc(server, message, "-u", name).stdout == shared
        told = spamc(server, message, "-u", name, "-L", "ham")
        assert told.returncode != 0
        server.wait_for_log("TELL refused: ")
        assert "Traceback" not in server.log()
    assert not (model_copy / "users").exists() or not any((model_copy / "users").iterdir())
    refused = filter_as(model_copy, message, "--user", name)
    assert refused.returncode == 2
    assert refused.stderr.decode().strip().splitlines()[-1].startswith("Error: "), refused.stderr
    assert b"Traceback" not in refused.stderr


def test_a_nul_in_the_user_header_is_refused(model_copy: Path) -> None:
    message = flagged_ham(model_copy, 1)[0]
    with Server(model_copy, "--allow-tell", "--per-user") as server:
        reply = request(server.address, spamd_request("CHECK", message, User="a\0b"))
        assert b" 76 Bad header line: (User header contains control chars)" in reply, reply
        reply = request(
            server.address,
            spamd_request("TELL", message, Message_class="ham", Set="local", User="a\0b"),
        )
        assert b" 76 Bad header line: (User header contains control chars)" in reply, reply
    assert not (model_copy / "users").exists()


def test_the_bounds_on_users_and_corrections_hold(model_copy: Path) -> None:
    messages = flagged_ham(model_copy, 4)
    bounds = ("--max-users", "1", "--max-user-corrections", "2", "--learn-after", "0")
    with Server(model_copy, "--allow-tell", "--per-user", *bounds) as server:
        for raw in messages[:2]:
            assert spamc(server, raw, "-u", ALICE, "-L", "ham").returncode == 0
        third = spamc(server, messages[2], "-u", ALICE, "-L", "ham")
        assert third.returncode != 0
        server.wait_for_log("TELL refused: ")
        second_user = spamc(server, messages[3], "-u", BOB, "-L", "ham")
        assert second_user.returncode != 0
        server.wait_for_log("the most allowed")
    heads = UserHeads(model_copy)
    assert heads.users() == [ALICE]
    assert len(list(heads.corrections(ALICE))) == 2


def test_the_milter_asks_for_recipients_only_for_per_user_heads_and_uses_exactly_one() -> None:
    offer = (6).to_bytes(4, "big") + (0x1FF).to_bytes(4, "big") + (0x1FFFFF).to_bytes(4, "big")
    steps = int.from_bytes(negotiate(offer)[13:17], "big")
    assert steps & SMFIP_NORCPT  # shared model only: RCPT is not sent at all
    steps = int.from_bytes(negotiate(offer, recipients=True)[13:17], "big")
    assert not steps & SMFIP_NORCPT and steps & 0x8000  # RCPT sent, without a reply
    message = _Message()
    message.recipients.append(b"<Alice@Example.org>")
    assert message.user() == ALICE
    message.recipients.append(b"<bob@example.org>")
    assert message.user() == ""  # several recipients: the shared model's verdict
    assert _Message().user() == ""
    assert packet(RCPT, b"<a@b>\0")[4:5] == bytes([RCPT])


def test_max_user_length_is_what_the_readme_says() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"{MAX_USER_LENGTH} characters" in readme


def test_learn_user_trains_that_users_head_from_the_command_line(model_copy: Path, tmp_path: Path) -> None:
    corrections = flagged_ham(model_copy, 10)
    mbox = tmp_path / "wanted.mbox"
    mbox.write_bytes(
        b"".join(b"From someone Mon Jan  1 00:00:00 2024\n" + raw + b"\n" for raw in corrections)
    )
    command = [sys.executable, "-m", "spamfilter", "learn", "-m", str(model_copy)]
    refused = subprocess.run(
        [*command, "--user", "../x", "--ham", str(mbox)], capture_output=True, timeout=300
    )
    assert refused.returncode == 2 and b"Traceback" not in refused.stderr
    learnt = subprocess.run([*command, "--user", ALICE, "--ham", str(mbox)], capture_output=True, timeout=600)
    assert learnt.returncode == 0, learnt.stderr
    assert f"{ALICE}: head retrained on 10 corrections".encode() in learnt.stdout
    assert b"X-Spam-Flag: NO" in filter_as(model_copy, corrections[0], "--user", ALICE).stdout
    assert b"X-Spam-Flag: YES" in filter_as(model_copy, corrections[0]).stdout  # the shared model untouched


def test_the_milter_scores_a_message_for_its_one_recipient_with_their_head(model_copy: Path) -> None:
    from miltertest import constants as smfi
    from support.milter_client import connect, quit_, send_message

    corrections = flagged_ham(model_copy, 10)
    with Server(model_copy, "--allow-tell", "--per-user", "--learn-after", "10") as server:
        for raw in corrections:
            assert spamc(server, raw, "-u", ALICE, "-L", "ham").returncode == 0
        server.wait_for_log(f"user '{ALICE}': head trained", timeout=300)
    with Server(model_copy, "--per-user", listen=(), milter=("127.0.0.1:0",)) as server:
        conn = connect(server.milter_address)
        assert not conn.protocol_flags & smfi.SMFIP_NORCPT  # --per-user asks for the recipients

        def flag(*recipients: str) -> str:
            for recipient in recipients:
                conn._send(smfi.SMFIC_RCPT, args=[f"<{recipient}>"])  # negotiated: no reply
            replies = send_message(conn, corrections[0], replies=False)
            found = [
                r[1]["value"]
                for r in replies
                if r[0] == smfi.SMFIR_INSHEADER and r[1]["name"].endswith("Flag")
            ]
            return found[0].strip()

        assert flag(ALICE.upper()) == "NO"  # her head (the address in any case)
        assert flag(BOB) == "YES"  # no head: the shared verdict
        assert flag(ALICE, BOB) == "YES"  # two recipients: the shared verdict
        quit_(conn)


def retrain_gauges(server: Server) -> tuple[float, float]:
    """The service's (running, waiting) user-head retrains, from its metrics endpoint."""
    text = urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=30).read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("spamfilter_"))
    running, waiting = values["spamfilter_user_retrains_running"], values["spamfilter_user_retrains_waiting"]
    return float(running), float(waiting)


def most_retrains_at_once(log: str) -> int:
    """From the service's log, in the order it did things: retrains between start and end."""
    running = most = 0
    for line in log.splitlines():
        if ": head retrain started (" in line:
            running += 1
            most = max(most, running)
        elif ": head trained in " in line or ": head removed" in line or "head failed" in line:
            running -= 1
    return most


@pytest.mark.parametrize("max_retrains", [None, 2])
def test_many_users_telling_at_once_retrain_at_most_max_retrains_at_a_time_and_each_correction_takes_effect(
    model_copy: Path, max_retrains: int | None
) -> None:
    """By default one retrain at a time; with --max-retrains 2, two: six users' TELLs at once keep
    as many running as allowed (the queued ones start as a slot frees), so the most seen is the cap."""
    users = [f"user{n}@example.org" for n in range(6)]
    taught = dict(zip(users, flagged_ham(model_copy, len(users)), strict=True))  # user N: message N is ham
    options = ["--allow-tell", "--per-user", "--learn-after", "1", "--metrics", "127.0.0.1:0"]
    if max_retrains is not None:
        options += ["--max-retrains", str(max_retrains)]
    cap = max_retrains or 1
    with Server(model_copy, *options) as server, ThreadPoolExecutor(len(users)) as pool:
        tells = [pool.submit(spamc, server, raw, "-u", user, "-L", "ham") for user, raw in taught.items()]
        seen = []  # (running, waiting) while the retrains go on
        while server.log().count(": head trained in ") < len(users) and server.process.poll() is None:
            seen.append(retrain_gauges(server))
            time.sleep(0.05)
        assert all(tell.result().returncode == 0 for tell in tells), [tell.result().stderr for tell in tells]
        assert most_retrains_at_once(server.log()) == cap, server.log()
        assert max(running for running, _ in seen) <= cap
        assert retrain_gauges(server) == (0.0, 0.0)
        # Every user's one correction took effect for that user; a user without one keeps the shared verdict.
        for user, raw in taught.items():
            assert f"user '{user}': head trained in " in server.log()
            assert b"X-Spam-Flag: NO" in spamc(server, raw, "-u", user).stdout, user
            assert b"X-Spam-Flag: YES" in spamc(server, raw, "-u", BOB).stdout
        assert "Traceback" not in server.log()


def test_one_users_retrains_are_at_least_an_interval_apart(model_copy: Path) -> None:
    """With --learn-after 1 a local user kept the retrain thread busy (61 retrains in 40 s, a
    core, everyone's latency up fourfold) by flipping a message between spam and ham. A user's
    head is now retrained at most once per --retrain-interval; corrections that come sooner are
    trained on once it has passed, without another TELL."""
    import datetime

    first, second = flagged_ham(model_copy, 2)
    options = ("--allow-tell", "--per-user", "--learn-after", "1", "--retrain-interval", "4")
    trained = f"user '{ALICE}': head trained in "
    with Server(model_copy, *options) as server:
        assert spamc(server, first, "-u", ALICE, "-L", "ham").returncode == 0
        server.wait_for_log(trained, timeout=120)
        for label in ("spam", "ham", "spam", "ham"):  # flips: never charged to a quota
            assert spamc(server, second, "-u", ALICE, "-L", label).returncode == 0
        deadline = time.monotonic() + 120
        # the last word (ham) is learnt once the interval has passed, with no TELL after it
        while server.log().count(trained) < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.5)
        assert b"X-Spam-Flag: NO" in spamc(server, second, "-u", ALICE).stdout
        log = server.log()
    started = [
        datetime.datetime.strptime(line.split(" spamfilter serve[")[0], "%Y-%m-%d %H:%M:%S,%f")
        for line in log.splitlines()
        if f"user '{ALICE}': head retrain started" in line
    ]
    assert 2 <= len(started) <= 3, log  # the first, then one (or two, if a flip came during it)
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(started, started[1:], strict=False)]
    assert min(gaps) >= 4 - 0.01, gaps


def test_a_users_report_moves_that_users_next_copies_at_once_and_the_report_says_why(
    model_copy: Path,
) -> None:
    """The memory of corrected mail (memory.py): a message Alice reports as spam (one this model
    calls ham: a newsletter she never wanted) makes its next copy spam for her, before any
    retrain of her head (--learn-after 1000 keeps it from training); Bob's verdicts stay the same
    bytes."""
    from spamfilter.runtime import Classifier

    raws = [
        raw
        for raw in list(iter_mail_source(CORPUS / "easy_ham.mbox"))[:300]
        if len(message_text(raw).split()) > 40
    ]
    classifier = Classifier.load(model_copy)
    p = classifier.spam_probability([message_text(raw) for raw in raws])
    # Far from the threshold both ways: int8's last digits follow the batch (the service scores it
    # alone) and the CPU's kernels, and the memory adds at most 10 to its log-odds.
    cut = float(np.log(classifier.threshold / (1 - classifier.threshold)))
    margin = {i: cut - float(np.log(p[i] / (1 - p[i]))) for i in range(len(raws))}
    called_ham = [i for i in margin if 1.0 < margin[i] < 8.0]
    assert called_ham, "the SMS model should call some of this email ham, by a clear margin"
    reported = raws[min(called_ham, key=lambda i: abs(margin[i] - 3.0))]
    copy = reported.rstrip(b"\n") + b"\n\nThis week's issue again, with one more line at the end.\n"
    options = ("--allow-tell", "--per-user", "--learn-after", "1000", "--explain", "all")
    with Server(model_copy, *options) as server:
        before = {user: spamc(server, copy, "-u", user, "-R").stdout for user in (ALICE, BOB)}
        assert before[ALICE] == before[BOB]
        told = spamc(server, reported, "-u", ALICE, "-L", "spam")
        assert told.returncode == 0, told.stderr
        after = {user: spamc(server, copy, "-u", user, "-R").stdout for user in (ALICE, BOB)}
        assert "head trained" not in server.log()
    assert after[BOB] == before[BOB]
    points = [float(reply.split(b"/")[0]) for reply in (before[ALICE], after[ALICE])]
    assert points[0] < 5.0 <= points[1], (before[ALICE], after[ALICE])  # ham before, spam now
    assert b"memory +" in after[ALICE] and b"of a spam reported" in after[ALICE], after[ALICE]
