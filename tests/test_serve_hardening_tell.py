"""TELL hardening: who may teach (TCP addresses by --tell-allow, unix-socket peers by uid/gid),
a bound on what one teacher keeps stored (refused with 73 and a log line), and one class per
message when the same message is told as spam and as ham at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import make_email
from support import as_unprivileged_user, require_sock_diag, unavailable
from support.spamd_server import Server, request, spamd_request

from spamfilter.corrections import Corrections, Quota, QuotaExceeded
from spamfilter.labelled import message_key
from spamfilter.service import protocol
from spamfilter.service.access import parse_networks
from spamfilter.service.learning import Teaching
from spamfilter.service.peers import kernel_names_owners
from spamfilter.service.settings import ServiceSettings


def tell(message: bytes, what: str) -> bytes:
    return spamd_request("TELL", message, Message_class=what, Set="local")


def from_address(address: tuple[str, int], source: str, data: bytes) -> bytes:
    with socket.create_connection(address, timeout=30, source_address=(source, 0)) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def over_unix(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(str(path))
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        return conn.recv(4096)


def test_tell_from_an_address_outside_tell_allow_is_refused(model_copy: Path) -> None:
    message = make_email("mine", "Teach me.")
    args = ("--allow", "127.0.0.0/8", "--allow-tell", "--tell-allow", "127.0.0.1", "--learn-after", "0")
    with Server(model_copy, *args) as server:
        refused = from_address(server.address, "127.0.0.2", tell(message, "spam"))
        assert refused.startswith(b"SPAMD/1.0 77 TELL refused: 127.0.0.2 is not allowed"), refused
        assert Corrections(model_copy).pending() == 0
        # Checking is still open to 127.0.0.2 (--allow), and TELL to 127.0.0.1.
        assert from_address(server.address, "127.0.0.2", spamd_request("CHECK", message)).startswith(
            b"SPAMD/1.1 0"
        )
        assert from_address(server.address, "127.0.0.1", tell(message, "spam")).startswith(
            b"SPAMD/1.1 0 EX_OK"
        )
        server.wait_for_log("TELL refused: 127.0.0.2")


def test_tell_over_a_unix_socket_goes_by_the_peers_uid(model_copy: Path, tmp_path: Path) -> None:
    path = tmp_path / "spamd.sock"
    message = make_email("mine", "Teach me over a socket.")
    others = str(os.geteuid() + 4242)  # a uid that is not ours: our own TELL is refused
    args = ("--allow-tell", "--learn-after", "0")
    with Server(model_copy, *args, "--tell-users", others, listen=(f"unix:{path}",)) as server:
        refused = over_unix(path, tell(message, "spam"))
        assert refused.startswith(b"SPAMD/1.0 77 TELL refused: uid %d" % os.geteuid()), refused
    with Server(model_copy, *args, listen=(f"unix:{path}",)) as server:  # default: our own uid
        assert over_unix(path, tell(message, "spam")).startswith(b"SPAMD/1.1 0 EX_OK")
        server.stop()
    assert {key for key, _, _ in Corrections(model_copy)} == {message_key(message).hex()}


def test_stored_corrections_are_bounded_per_teacher(model_copy: Path) -> None:
    """A local teacher is one user however many loopback addresses it uses (by address, each of
    the 16 million 127.x addresses had a quota of its own)."""
    args = ("--allow-tell", "--learn-after", "0", "--tell-max", "3")
    messages = [make_email(f"n{i}", f"Correction number {i}.") for i in range(5)]
    # The kernel names the test's own uid; a sandbox without sock_diag makes every loopback client
    # the one peer "loopback", which must still be one quota.
    teacher = f"uid {os.getuid()}" if kernel_names_owners() is None else "loopback"
    with Server(model_copy, *args) as server:
        replies = [
            from_address(server.address, f"127.0.0.{1 + i}", tell(message, "spam"))
            for i, message in enumerate(messages)
        ]
        assert all(reply.startswith(b"SPAMD/1.1 0 EX_OK") for reply in replies[:3])
        refused = f"SPAMD/1.0 73 TELL refused: {teacher} keeps 3 corrections".encode()
        for reply in replies[3:]:
            assert reply.startswith(refused), reply
        # Moving a kept message to the other class costs nothing; forgetting one frees a place.
        assert request(server.address, tell(messages[0], "ham")).startswith(b"SPAMD/1.1 0 EX_OK")
        forget = spamd_request("TELL", messages[1], Remove="local")
        assert request(server.address, forget).startswith(b"SPAMD/1.1 0 EX_OK")
        assert request(server.address, tell(messages[3], "spam")).startswith(b"SPAMD/1.1 0 EX_OK")
        server.wait_for_log(f"TELL refused: {teacher} keeps 3 corrections")
    assert len(list(Corrections(model_copy))) == 3


def test_the_byte_bound(tmp_path: Path) -> None:
    corrections = Corrections(tmp_path)
    quota = Quota(count=100, bytes=1000)
    corrections.add(b"Subject: a\n\n" + b"a" * 600, 1, teacher="t", quota=quota)
    with pytest.raises(QuotaExceeded):
        corrections.add(b"Subject: b\n\n" + b"b" * 600, 1, teacher="t", quota=quota)
    corrections.add(b"Subject: b\n\n" + b"b" * 600, 1, teacher="someone else", quota=quota)


def test_concurrent_spam_and_ham_end_in_one_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both TELLs are held just before writing until the other gets there too (or 2 s pass): without
    a lock both write, and the message is kept as spam and as ham."""
    import spamfilter.corrections as module

    meet = threading.Barrier(2, timeout=2)
    real = module.tempfile.mkstemp

    def mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        with contextlib.suppress(threading.BrokenBarrierError):  # the other is held by the lock
            meet.wait()
        return real(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(module.tempfile, "mkstemp", mkstemp)
    message = make_email("race", "The same message, told both ways at once.")
    threads = [threading.Thread(target=Corrections(tmp_path).add, args=(message, label)) for label in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    key = message_key(message).hex()
    classes = [label for found, label, _ in Corrections(tmp_path) if found == key]
    assert len(classes) == 1, f"kept as {classes}"


def test_counting_waiting_corrections_runs_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After each TELL the corrections are counted (is a retrain due?): that reads all of them, a
    third of a second at 50,000, which on the event loop held every other client."""
    threads: list[threading.Thread] = []
    real = Corrections.pending

    def pending(self: Corrections) -> int:
        threads.append(threading.current_thread())
        return real(self)

    monkeypatch.setattr(Corrections, "pending", pending)
    settings = ServiceSettings(
        listen=[], allow=parse_networks(()), corrections=tmp_path, learn_after=100, learn_command=["true"]
    )
    teaching = Teaching(settings, logging.getLogger("test-tell"), None, lambda: None)

    class Writer:  # a TCP client on loopback, as the front end hands it over
        @staticmethod
        def get_extra_info(name: str) -> object:
            return ("127.0.0.1", 4000) if name == "peername" else None

    message = make_email("counted", "A correction.")
    told = protocol.Request("TELL", 1.5, {"message-class": "spam", "set": "local"}, message)
    _reply, outcome, _detail = asyncio.run(teaching.tell(told, Writer(), ("loopback", None)))
    assert outcome == "ok" and len(list(Corrections(tmp_path))) == 1
    assert threads and all(thread is not threading.main_thread() for thread in threads)


SEND_AS_ANOTHER_USER = """
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60) as conn:
    conn.sendall(bytes.fromhex(sys.argv[2]))
    conn.shutdown(socket.SHUT_WR)
    sys.stdout.write(conn.recv(4096).hex())
"""


def reply_to_another_user(port: int, data: bytes) -> bytes:
    """The service's reply to ``data`` sent over loopback TCP by user nobody."""
    if os.geteuid() != 0:
        unavailable("needs root to connect as another local user")
    python = shutil.which("python3", path="/usr/bin:/bin")  # root's own Python may be private
    assert python is not None
    command = [*as_unprivileged_user(), python, "-c", SEND_AS_ANOTHER_USER, str(port), data.hex()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return bytes.fromhex(done.stdout)


def test_a_local_user_teaches_only_its_own_head(model_copy: Path) -> None:
    """Every local user may connect from 127.0.0.1, as the MTA and IMAPSieve do: with --per-user,
    one outside --tell-users telling `spamc -u alice -L ham` about a spam campaign decided what
    alice was let through. Such a user now teaches its own account's head only; root (in
    --tell-users by default) still teaches anyone's."""
    require_sock_diag()
    message = make_email("campaign", "Cheap meds, click here now.")
    nobody = pwd.getpwnam("nobody")
    with Server(model_copy, "--allow-tell", "--per-user", "--learn-after", "0") as server:
        told = spamd_request("TELL", message, Message_class="ham", Set="local", User="alice")
        refused = reply_to_another_user(server.port, told)
        expected = f"SPAMD/1.0 77 TELL refused: uid {nobody.pw_uid} may teach only its own".encode()
        assert refused.startswith(expected), refused
        own = spamd_request("TELL", message, Message_class="ham", Set="local", User=nobody.pw_name)
        assert reply_to_another_user(server.port, own).startswith(b"SPAMD/1.1 0 EX_OK")
        assert request(server.address, told).startswith(b"SPAMD/1.1 0 EX_OK")  # root, as the test
        server.wait_for_log("may teach only its own user's head, not 'alice'")


def test_concurrent_tells_share_one_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each TELL counted every correction, all at once: N TELLs, N full reads. Now one count runs
    at a time, and one more after it for the TELLs that came meanwhile, which sees them all."""
    import time

    seen: list[int] = []
    real = Corrections.pending

    def pending(self: Corrections) -> int:
        time.sleep(1.0)  # as a large corrections folder takes (and longer than six files' writes)
        seen.append(len(list(self)))
        return real(self)

    monkeypatch.setattr(Corrections, "pending", pending)
    settings = ServiceSettings(
        listen=[], allow=parse_networks(()), corrections=tmp_path, learn_after=100, learn_command=["true"]
    )
    teaching = Teaching(settings, logging.getLogger("test-tell"), None, lambda: None)

    class Writer:
        @staticmethod
        def get_extra_info(name: str) -> object:
            return ("192.0.2.1", 4000) if name == "peername" else None

    settings.tell_allow = parse_networks(("192.0.2.0/24",))

    async def tell_all() -> list[str]:
        told = [
            protocol.Request("TELL", 1.5, {"message-class": "spam", "set": "local"}, make_email(f"m{i}", "x"))
            for i in range(6)
        ]
        return [
            outcome
            for _, outcome, _ in await asyncio.gather(
                *(teaching.tell(t, Writer(), ("192.0.2.1", None)) for t in told)
            )
        ]

    assert asyncio.run(tell_all()) == ["ok"] * 6
    assert 1 <= len(seen) <= 2 and seen[-1] == 6, seen


@pytest.mark.parametrize("owners_named", [True, False], ids=["kernel names owners", "no sock_diag"])
def test_a_loopback_teller_the_kernel_cannot_name(tmp_path: Path, owners_named: bool) -> None:
    """A local user who sends a TELL and closes the socket at once is gone when the service asks
    the kernel whose connection it was, and was counted as the shared peer ``loopback``: 49 of 50
    such TELLs were stored beyond that user's own quota. Where the kernel names owners, such a
    TELL is now refused (77); where it cannot (a sandbox without sock_diag) every loopback client
    is ``loopback`` and teaches the shared model, as before."""
    settings = ServiceSettings(
        listen=[], allow=parse_networks(()), corrections=tmp_path, learn_after=0, learn_command=["true"]
    )
    teaching = Teaching(settings, logging.getLogger("test-tell"), None, lambda: None)
    teaching.owners_named = owners_named

    class Writer:
        @staticmethod
        def get_extra_info(name: str) -> object:
            return ("127.0.0.1", 40000) if name == "peername" else None

    told = protocol.Request("TELL", 1.5, {"message-class": "spam", "set": "local"}, make_email("m", "x"))
    reply, outcome, detail = asyncio.run(teaching.tell(told, Writer(), ("loopback", None)))
    if owners_named:
        assert reply.startswith(b"SPAMD/1.0 77 TELL refused: 127.0.0.1 (a local client that closed"), reply
        assert outcome == "refused" and list(Corrections(tmp_path)) == []
    else:
        assert outcome == "ok", detail
        assert len(list(Corrections(tmp_path))) == 1


def test_the_service_knows_whether_the_kernel_names_owners(model_copy: Path) -> None:
    """The refusal above rests on the service's own check at start (``kernel_names_owners``):
    TELLs sent by a client that closes at once are either named (counted against its uid) or
    refused, never stored for ``loopback``."""
    import json

    require_sock_diag()
    with Server(model_copy, "--allow-tell", "--learn-after", "0") as server:
        for i in range(20):  # send and close before the service asks the kernel, as an attacker does
            with socket.create_connection(server.address, timeout=30) as conn:
                conn.sendall(tell(make_email(f"early {i}", "Cheap meds."), "ham"))
        told = request(server.address, tell(make_email("named", "Cheap meds."), "ham"))
        assert told.startswith(b"SPAMD/1.1 0 EX_OK"), told  # a client that waits is named and taught
    teachers = [json.loads(p.read_text()) for p in (model_copy / "corrections" / ".teachers").glob("*.json")]
    named = {t["teacher"]: len(t["stored"]) for t in teachers}
    assert "loopback" not in named and named.get(f"uid {os.geteuid()}", 0) >= 1, named
    assert len(list(Corrections(model_copy))) == sum(named.values())


def test_flipping_a_message_between_classes_retrains_at_most_once_an_interval(tmp_path: Path) -> None:
    """Moving a kept message to the other class is never charged to a quota, and each move made
    it pending again: a local user flipping a few messages kept a retrain (a `learn --retrain`
    process writing the model) and a reload going without end, 13 a minute on the test model.
    Now retrains are at least --retrain-interval apart; one due sooner runs once it has passed."""
    settings = ServiceSettings(
        listen=[], allow=parse_networks(()), corrections=tmp_path, learn_after=1, learn_command=["true"]
    )
    settings.retrain_interval = 2.0
    started: list[float] = []

    class Counter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("retraining on the corrections"):
                started.append(time.monotonic())

    log = logging.getLogger("test-retrain-interval")
    log.setLevel(logging.INFO)
    log.addHandler(Counter())
    teaching = Teaching(settings, log, None, lambda: None)

    class Writer:
        @staticmethod
        def get_extra_info(name: str) -> object:
            return ("127.0.0.1", 40000) if name == "peername" else None

    message = make_email("flip", "Cheap meds.")

    async def flip() -> float:
        began = time.monotonic()
        for n in range(12):  # spam, ham, spam, ... as fast as the service answers
            told = protocol.Request(
                "TELL", 1.5, {"message-class": "spam" if n % 2 == 0 else "ham", "set": "local"}, message
            )
            _, outcome, detail = await teaching.tell(told, Writer(), ("uid 12345", 12345))
            assert outcome == "ok", detail
            await asyncio.sleep(0.05)
        flipping = time.monotonic() - began
        await asyncio.sleep(3.0)  # the retrain due after the last interval
        return flipping

    flipping = asyncio.run(flip())
    # However slow the machine: at most one retrain per interval while flipping, then one more
    # (before: one per flip, 12 in 0.6 s).
    assert 2 <= len(started) <= 2 + int(flipping / 2.0), (started, flipping)
    gaps = [later - earlier for earlier, later in zip(started, started[1:], strict=False)]
    assert min(gaps) >= 2.0 - 0.05, gaps


class FromUid:
    """A loopback TCP client as the front end hands it over (its owner is named by ``identity``)."""

    @staticmethod
    def get_extra_info(name: str) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else None


def test_only_the_teacher_who_stored_a_shared_correction_moves_or_forgets_it(tmp_path: Path) -> None:
    """Any local user (--tell-allow is loopback by default) could move anyone's shared correction
    to the other class, or forget it, uncharged: a spammer undid every report of its campaign.
    Now only the teacher who stored it (the ``.teachers`` record), or a privileged one (root, the
    service's own user: --tell-users), may; others get 77. A message stored by ``spamfilter
    learn`` (no teacher) is for privileged teachers alone."""
    settings = ServiceSettings(listen=[], allow=parse_networks(()), corrections=tmp_path, learn_after=0)
    teaching = Teaching(settings, logging.getLogger("test-tell-owner"), None, lambda: None)
    owner, other, root = ("uid 12345", 12345), ("uid 23456", 23456), ("uid 0", 0)
    reported = make_email("campaign", "Cheap meds, click here now.")
    learnt = make_email("by learn", "Cheap watches, click here now.")
    Corrections(tmp_path).add(learnt, 1)  # as `spamfilter learn --spam` stores it

    def tell_as(identity: tuple[str, int], message: bytes, **headers: str) -> bytes:
        told = protocol.Request(
            "TELL", 1.5, {k.lower().replace("_", "-"): v for k, v in headers.items()}, message
        )
        reply, _outcome, _detail = asyncio.run(teaching.tell(told, FromUid(), identity))
        return reply

    def kept() -> dict[str, int]:
        return {key: label for key, label, _ in Corrections(tmp_path)}

    key, learnt_key = message_key(reported).hex(), message_key(learnt).hex()
    assert tell_as(owner, reported, Message_class="spam", Set="local").startswith(b"SPAMD/1.1 0 EX_OK")
    for attempt in ({"Message_class": "ham", "Set": "local"}, {"Remove": "local"}):
        for message in (reported, learnt):
            refused = tell_as(other, message, **attempt)
            assert refused.startswith(b"SPAMD/1.0 77 TELL refused: uid 23456 did not store"), refused
    assert kept() == {key: 1, learnt_key: 1}
    # Telling what is already kept changes nothing and is no move: answered as before.
    assert tell_as(other, reported, Message_class="spam", Set="local").startswith(b"SPAMD/1.1 0 EX_OK")
    assert tell_as(owner, reported, Message_class="ham", Set="local").startswith(b"SPAMD/1.1 0 EX_OK")
    assert kept() == {key: 0, learnt_key: 1}
    assert tell_as(root, learnt, Remove="local") == b"SPAMD/1.1 0 EX_OK\r\nDidRemove: local\r\n\r\n\r\n"
    assert tell_as(owner, reported, Remove="local").startswith(b"SPAMD/1.1 0 EX_OK\r\nDidRemove: local")
    assert kept() == {}
    # Forgotten, then stored again by another: the first teacher's old record no longer owns it.
    assert tell_as(other, reported, Message_class="ham", Set="local").startswith(b"SPAMD/1.1 0 EX_OK")
    for attempt in ({"Message_class": "spam", "Set": "local"}, {"Remove": "local"}):
        refused = tell_as(owner, reported, **attempt)
        assert refused.startswith(b"SPAMD/1.0 77 TELL refused: uid 12345 did not store"), refused
    assert kept() == {key: 0}


def test_another_local_user_cannot_undo_roots_report(model_copy: Path) -> None:
    """The same through the service, with real peers: root (the test; the MTA's user) reports a
    spam, user nobody over loopback TCP cannot move it to ham or forget it; its own report it
    can."""
    require_sock_diag()
    campaign = make_email("campaign", "Cheap meds, click here now.")
    own = make_email("nobody's", "A newsletter nobody reported.")
    with Server(model_copy, "--allow-tell", "--learn-after", "0") as server:
        assert request(server.address, tell(campaign, "spam")).startswith(b"SPAMD/1.1 0 EX_OK")
        for attempt in (tell(campaign, "ham"), spamd_request("TELL", campaign, Remove="local")):
            refused = reply_to_another_user(server.port, attempt)
            assert refused.startswith(b"SPAMD/1.0 77 TELL refused: uid "), refused
        assert reply_to_another_user(server.port, tell(own, "spam")).startswith(b"SPAMD/1.1 0 EX_OK")
        assert reply_to_another_user(server.port, tell(own, "ham")).startswith(b"SPAMD/1.1 0 EX_OK")
        server.wait_for_log("did not store this correction")
    kept = {key: label for key, label, _ in Corrections(model_copy)}
    assert kept == {message_key(campaign).hex(): 1, message_key(own).hex(): 0}
