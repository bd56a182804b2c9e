"""The milter front end of ``spamfilter serve``, driven from the MTA side by the independent
``miltertest`` package: option negotiation with and without "no reply" steps, header actions
that reproduce ``filter --format email``, bodies over 64 KB, several messages on one connection,
an abort mid-message, unknown macros, the reject and quarantine policies, and a peer that does
not speak milter. Every server runs the session's small real model."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import StandIn, make_email
from miltertest import constants as smfi
from support.milter_client import connect, quit_, send_message, split
from support.spamd_server import Server, filter_email, request, service_in_thread, spamd_request

from spamfilter.pipeline import tag_message
from spamfilter.runtime import Classifier
from spamfilter.service.access import parse_address, parse_networks
from spamfilter.service.milter import MilterPolicy
from spamfilter.service.server import ServiceSettings

SPAMFILTER = [sys.executable, "-m", "spamfilter"]

SPAM = make_email("You have WON", "WINNER!! You have won a £1000 prize. Call 09061701461 to claim now")
HAM = make_email("lunch", "Are we still meeting for lunch tomorrow at noon? I'll bring the notes.")
MILTER = re.compile(r"listening on (\S+):(\d+) \(milter protocol\)")
# What an MTA that wants every step answered offers: all v6 steps but the "no reply" ones.
NR_BITS = 0x80 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000 | 0x40000 | 0x80000


def start(model: Path, *args: str) -> tuple[Server, tuple[str, int]]:
    server = Server(model, "--milter", "127.0.0.1:0", *args)
    server.wait_for_log("(milter protocol)")
    found = MILTER.search(server.log())
    assert found is not None, server.log()
    return server, (found.group(1), int(found.group(2)))


@pytest.fixture(scope="module")
def milter(trained_model: Path) -> Iterator[tuple[str, int]]:
    server, address = start(trained_model, "--quarantine-above", "9.0")
    yield address
    assert server.stop() == 0


@pytest.fixture(scope="module")
def classifier(trained_model: Path) -> Classifier:
    return Classifier.load(trained_model)


def apply(message: bytes, actions: list) -> bytes:
    """What an MTA does with the header actions: removals by index per name, insertions at 0."""
    fields, body = split(message)
    for command, args in actions:
        if command == smfi.SMFIR_CHGHEADER:
            matching = [i for i, (name, _) in enumerate(fields) if name.lower() == args["name"].lower()]
            assert args["value"] == ""
            del fields[matching[args["index"] - 1]]
        elif command == smfi.SMFIR_INSHEADER:
            assert args["index"] == 0
            fields.insert(0, (args["name"], args["value"]))
    head = "".join(f"{name}:{value}\n" for name, value in fields)
    return head.encode() + b"\n" + body


@pytest.mark.parametrize("replies", [False, True], ids=["no-reply steps", "every step answered"])
def test_header_actions_give_exactly_what_filter_writes(
    milter: tuple[str, int], classifier: Classifier, replies: bool
) -> None:
    conn = connect(milter, smfi.SMFI_V6_PROT & ~NR_BITS if replies else smfi.SMFI_V6_PROT)
    assert bool(conn.protocol_flags & smfi.SMFIP_NR_HDR) is not replies
    stale = make_email(
        "old verdict", "Are we still on for Friday?", extra="X-Spam-Flag: YES\nX-Spam-Status: Yes, x\n"
    )
    for message in (HAM, stale):
        actions = send_message(conn, message, replies)
        assert actions[-1][0] == smfi.SMFIR_ACCEPT
        expected = tag_message(message, lambda: classifier).message
        assert apply(message, actions[:-1]) == expected
    quit_(conn)


def test_body_over_64k_and_several_messages_on_one_connection(
    milter: tuple[str, int], classifier: Classifier
) -> None:
    long_body = "Minutes of the meeting.\n" + "The budget line was discussed again at length.\n" * 6000
    long = make_email("minutes", long_body)
    assert len(long) > 3 * 65535
    conn = connect(milter)
    for message in (long, HAM, SPAM, HAM):
        actions = send_message(conn, message, replies=False)
        assert apply(message, actions[:-1]) == tag_message(message, lambda: classifier).message
    quit_(conn)


def test_abort_mid_message_and_unknown_macros(milter: tuple[str, int], classifier: Classifier) -> None:
    conn = connect(milter)
    conn.send_macro(smfi.SMFIC_MAIL, **{"{mail_addr}": "a@example.org", "{x-unknown-macro}": "whatever"})
    conn.send_macro("Z", **{"{no_such_stage}": "1"})
    fields, _ = split(SPAM)
    for name, value in fields[:3]:
        conn._send(smfi.SMFIC_HEADER, name=name, value=value)
    conn._send(smfi.SMFIC_BODY, buf="half a body of a message that the client gave up on\r\n")
    conn._send(smfi.SMFIC_ABORT)
    actions = send_message(conn, HAM, replies=False)  # nothing of the aborted one is left
    assert apply(HAM, actions[:-1]) == tag_message(HAM, lambda: classifier).message
    quit_(conn)


def test_quarantine_above(milter: tuple[str, int], classifier: Classifier) -> None:
    verdict = tag_message(SPAM, lambda: classifier).verdict
    assert verdict is not None and verdict.score >= 9.0, "the test's spam must be confident"
    conn = connect(milter)
    actions = send_message(conn, SPAM, replies=False)
    said = f"score {verdict.score:.1f}/5.0, P(spam) {verdict.probability:.3f}"
    assert (smfi.SMFIR_QUARANTINE, {"reason": f"spam, {said}"}) in actions
    assert actions[-1][0] == smfi.SMFIR_ACCEPT
    assert apply(SPAM, actions[:-1]) == tag_message(SPAM, lambda: classifier).message  # tagged too
    ham = send_message(conn, HAM, replies=False)
    assert not [action for action in ham if action[0] == smfi.SMFIR_QUARANTINE]
    quit_(conn)


def test_reject_above_refuses_with_550(trained_model: Path, classifier: Classifier) -> None:
    server, address = start(trained_model, "--reject-above", "5.0")
    try:
        conn = connect(address)
        actions = send_message(conn, SPAM, replies=False)
        assert [(command, args["smtpcode"]) for command, args in actions] == [(smfi.SMFIR_REPLYCODE, "550")]
        assert actions[0][1]["text"].startswith("5.7.1 Message refused as spam (score ")
        ham = send_message(conn, HAM, replies=False)
        assert ham[-1][0] == smfi.SMFIR_ACCEPT
        quit_(conn)
    finally:
        assert server.stop() == 0
    assert "MILTER from" in server.log() and "rejected" in server.log()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--reject-above", "0.99"), ("--quarantine-above", "4.9"), ("--reject-above", "10.5")],
)
def test_cutoffs_that_would_act_on_clean_mail_are_refused_at_start(
    trained_model: Path, option: str, value: str
) -> None:
    # The cut-offs are on the score's scale, where 5.0 is the model's threshold: below it they
    # would reject or hold mail the model calls clean (an old P(spam) setting such as 0.99 too).
    done = subprocess.run(
        [*SPAMFILTER, "serve", "-m", str(trained_model), "--milter", "127.0.0.1:0", option, value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]  # click's usage form
    assert len(errors) == 1 and option in errors[0] and "5.0" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_a_peer_that_does_not_speak_milter_is_dropped(
    milter: tuple[str, int], classifier: Classifier
) -> None:
    with socket.create_connection(milter, timeout=30) as garbage:
        garbage.sendall(b"\xff\xff\xff\xffGET / HTTP/1.0\r\n\r\n")
        assert garbage.recv(100) == b""  # closed, nothing answered
    conn = connect(milter)  # the server goes on
    actions = send_message(conn, HAM, replies=False)
    assert actions[-1][0] == smfi.SMFIR_ACCEPT
    quit_(conn)


class FailingModel(StandIn):
    """The model failing at run time: a real onnxruntime failure cannot be caused on purpose."""

    def spam_probability(self, texts: Any) -> Any:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : simulated failure")


@pytest.mark.parametrize(
    ("policy", "reply"), [("accept", smfi.SMFIR_ACCEPT), ("tempfail", smfi.SMFIR_TEMPFAIL)]
)
def test_a_model_error_follows_the_error_policy(trained_model: Path, policy: str, reply: str) -> None:
    settings = ServiceSettings(
        listen=[],
        milter=[parse_address("127.0.0.1:0")],
        milter_policy=MilterPolicy(on_error=policy),
        allow=parse_networks(()),
    )
    with service_in_thread(settings, FailingModel(Classifier.load(trained_model))) as bound:
        host, port = bound[0].rsplit(":", 1)
        conn = connect((host, int(port)))
        assert send_message(conn, SPAM, replies=False) == [(reply, {})]  # no header changes: untagged
        quit_(conn)


@pytest.mark.parametrize("prefix", ["X-Spam", "X-Spamfilter"])
def test_every_front_end_writes_the_same_bytes_and_score(trained_model: Path, prefix: str) -> None:
    """One message through filter (mbox), pipeline mode, the spamd front end (PROCESS), the milter:
    the same tagged bytes, and spamc -c's score/required is the one in the Status field. (The Ray
    engine is held to the local filter's bytes in test_engine_ray.)"""
    options = ("--variant", "fp32", "--header-prefix", prefix)  # fp32: int8 scales per model call
    envelope = b"From bob@example.org  Mon Mar  4 09:12:45 2024\n"
    server, milter_address = start(trained_model, "--listen", "127.0.0.1:0", *options)
    try:
        spamd = re.search(r"listening on (\S+):(\d+) \(spamd protocol\)", server.log())
        assert spamd is not None, server.log()
        for message in (SPAM, HAM):
            piped = filter_email(trained_model, message, *options)
            mbox = subprocess.run(
                [*SPAMFILTER, "filter", "-q", "--format", "mbox", "-m", str(trained_model), *options],
                input=envelope + message,
                capture_output=True,
                timeout=120,
            )
            assert mbox.returncode == 0, mbox.stderr
            assert mbox.stdout == envelope + piped  # the tagged fields go after the From_ line
            processed = request((spamd.group(1), int(spamd.group(2))), spamd_request("PROCESS", message))
            assert processed.split(b"\r\n\r\n", 1)[1] == piped
            conn = connect(milter_address)
            assert apply(message, send_message(conn, message, replies=False)[:-1]) == piped
            quit_(conn)
            checked = request((spamd.group(1), int(spamd.group(2))), spamd_request("CHECK", message))
            shown = re.search(rb"Spam: (True|False) ; (\S+) / (\S+)\r\n", checked)
            status = re.search(
                rb"^" + prefix.encode() + rb"-Status: (Yes|No), score=(\S+) required=(\S+) ", piped, re.M
            )
            assert shown is not None and status is not None, (checked, piped)
            assert shown.group(2, 3) == status.group(2, 3) and status.group(3) == b"5.0"
            assert (shown.group(1) == b"True") is (status.group(1) == b"Yes")
    finally:
        assert server.stop() == 0


def test_recipients_without_end_are_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-user heads need to know only whether a message has one recipient: an MTA's client
    that sends RCPT after RCPT (1 GB of them grew the service by 1 GB) leaves no more than two
    addresses kept (5,000 were kept before)."""
    import asyncio
    import struct

    from spamfilter.service import milter

    messages: list[Any] = []
    real = milter._Message
    monkeypatch.setattr(milter, "_Message", lambda: messages.append(real()) or messages[-1])
    optneg = milter.packet(milter.OPTNEG, struct.pack(">III", 6, 0x1FF, NR_BITS))
    rcpts = b"".join(milter.packet(milter.RCPT, b"<user%05d@example.org>\0" % i) for i in range(5000))

    async def session() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(optneg + rcpts)
        reader.feed_eof()
        await milter.milter_session(
            reader,
            _ignore,
            None,
            MilterPolicy(),
            None,
            1 << 20,
            5.0,
            recipients=True,  # type: ignore[arg-type]
        )

    asyncio.run(session())
    assert messages and max(len(m.recipients) for m in messages) == 2
    assert messages[0].recipients[0] == b"<user00000@example.org>"


async def _ignore(reply: bytes) -> None:
    pass


def test_tiny_header_fields_without_end_are_counted_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kept header field costs about 130 bytes of Python objects beside its own bytes, so a
    client sending 70,000 two-byte fields within --max-size held 9 MB per connection (44
    connections took the service from 103 to 495 MB). Past ``MAX_HEADER_FIELDS`` fields are only
    counted, and the message is classified on the fields kept (letting it through untagged would
    let 1,001 fields of 'X: a' carry any spam past the filter)."""
    import asyncio
    import struct

    from spamfilter.pipeline import Tagged
    from spamfilter.service import milter

    optneg = milter.packet(milter.OPTNEG, struct.pack(">III", 6, 0x1FF, NR_BITS))
    seen: list[Any] = []
    real = milter._Message

    def run(fields: int) -> list[bytes]:
        headers = b"".join(milter.packet(milter.HEADER, b"X%d\0v\0" % i) for i in range(fields))
        end = milter.packet(milter.BODYEOB, b"")
        replies: list[bytes] = []
        tagged: list[bytes] = []
        seen.clear()

        async def write(reply: bytes) -> None:
            replies.append(reply)

        async def tag(raw: bytes, user: str) -> Tagged:
            tagged.append(raw)
            return Tagged(raw, error="no model in this test")

        async def session() -> None:
            reader = asyncio.StreamReader()
            reader.feed_data(optneg + headers + end)
            reader.feed_eof()
            await milter.milter_session(
                reader,
                write,
                tag,
                MilterPolicy(),
                None,  # type: ignore[arg-type]
                1 << 20,
                5.0,
                on_verdict=lambda outcome, action: seen.append((outcome.error, action)),
            )

        kept: list[Any] = []
        monkeypatch.setattr(milter, "_Message", lambda: kept.append(real()) or kept[-1])
        asyncio.run(session())
        assert max(len(m.headers) for m in kept) <= milter.MAX_HEADER_FIELDS
        return tagged

    assert len(run(milter.MAX_HEADER_FIELDS)) == 1  # classified (the stand-in answers an error)
    classified = run(milter.MAX_HEADER_FIELDS * 20)
    assert len(classified) == 1  # classified too, on the fields kept
    assert classified[0].count(b"\n") == milter.MAX_HEADER_FIELDS + 1  # those fields, a blank line
