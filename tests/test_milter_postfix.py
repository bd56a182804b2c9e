"""``spamfilter serve --milter`` behind a real Postfix (``smtpd_milters``): a private Postfix on
loopback (postfix_harness.py) takes mail over SMTP, hands each message to the milter and delivers
to a Maildir. Delivered mail carries exactly the X-Spam-Flag / X-Spam-Status fields that
``filter --format email`` writes; ``--reject-above`` refuses spam at the end of DATA with a 550;
``--quarantine-above`` puts it on hold; a milter that is down gets Postfix's
``milter_default_action``. Needs root and Postfix (CI unpacks the Debian package, see the harness)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_email
from support import unavailable
from support.exim_harness import closed_port
from support.postfix_harness import Postfix, group_alive, postfix_unavailable
from support.spamd_server import Server, filter_email

SPAM_TEXT = "WINNER!! You have won a £1000 prize. Call 09061701461 to claim now"
HAM_TEXT = "Are we still meeting for lunch tomorrow at noon?"
# What virtual(8) puts above everything when it delivers (a milter never sees these).
DELIVERY_FIELDS = ["Return-Path", "X-Original-To", "Delivered-To"]
OUR_FIELDS = ("X-Spam-Flag", "X-Spam-Status", "X-Spam-Level")


def message(subject: str, body: str, extra: str = "") -> bytes:
    """A message as a client submits it: conftest's, without the Return-Path an MTA adds."""
    raw = make_email(subject, body, extra=extra)
    assert raw.startswith(b"Return-Path: ")
    return raw.split(b"\n", 1)[1]


SPAM = message("You have WON", SPAM_TEXT)
HAM = message("lunch", HAM_TEXT)


@pytest.fixture(scope="module", autouse=True)
def postfix_installed() -> None:
    reason = postfix_unavailable()
    if reason is not None:
        unavailable(reason)


def milter_server(model: Path, *args: str) -> Server:
    return Server(model, *args, listen=(), milter=("127.0.0.1:0",))


def milter_address(server: Server) -> str:
    host, port = server.milter_address
    return f"inet:{host}:{port}"


@pytest.fixture(scope="module")
def milter(trained_model: Path) -> Iterator[Server]:
    with milter_server(trained_model) as server:
        yield server


@pytest.fixture(scope="module")
def mta(milter: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postfix]:
    # tempfail: a milter that fails shows as a 4xx here, not as untagged mail.
    address = milter_address(milter)
    with Postfix(
        tmp_path_factory.mktemp("postfix"), address, non_smtpd_milters=address, default_action="tempfail"
    ) as running:
        yield running


# --- messages as bytes -----------------------------------------------------------------------


def fields(raw: bytes) -> list[bytes]:
    """The header fields, each with its continuation lines."""
    head = raw.split(b"\n\n", 1)[0]
    out: list[bytes] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] += b"\n" + line
        else:
            out.append(line)
    return out


def names(raw: bytes) -> list[str]:
    return [field.split(b":", 1)[0].decode() for field in fields(raw)]


def values(raw: bytes, name: str) -> list[str]:
    prefix = name.lower().encode() + b":"
    return [f.split(b":", 1)[1].strip().decode() for f in fields(raw) if f.lower().startswith(prefix)]


def without(raw: bytes, *drop: str) -> bytes:
    """``raw`` without the fields named (any case), every other byte kept."""
    lowered = {name.lower() for name in drop}
    kept = [f for f in fields(raw) if f.split(b":", 1)[0].decode().lower() not in lowered]
    return b"\n".join(kept) + b"\n\n" + raw.split(b"\n\n", 1)[1]


def first_fields_removed(raw: bytes, count: int) -> bytes:
    return b"\n".join(fields(raw)[count:]) + b"\n\n" + raw.split(b"\n\n", 1)[1]


def score(raw: bytes) -> float:
    status = values(raw, "X-Spam-Status")
    assert len(status) == 1, raw
    found = re.search(r"score=([0-9.]+)", status[0])
    assert found is not None, status
    return float(found.group(1))


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "flag"), [(SPAM, "YES"), (HAM, "NO")], ids=["spam", "ham"])
def test_delivered_mail_is_tagged_as_filter_tags_it(
    mta: Postfix, trained_model: Path, raw: bytes, flag: str
) -> None:
    reply = mta.send(raw)
    assert reply.code == 250, (reply, mta.log())
    delivered = mta.wait_delivered(reply)

    # Delivery fields on top, then ours (inserted at the milter's index 0, which is above the
    # Received field Postfix itself added), then what was sent, byte for byte.
    assert names(delivered)[:7] == [*DELIVERY_FIELDS, *OUR_FIELDS, "Received"], delivered
    received = fields(delivered)[len(DELIVERY_FIELDS) + len(OUR_FIELDS)]
    assert f"by mx.test.example (Postfix) with ESMTP id {reply.queue_id}\n".encode() in received
    assert delivered.endswith(received + b"\n" + raw), delivered
    assert values(delivered, "X-Spam-Flag") == [flag]

    # What the milter saw is the delivered message without virtual(8)'s fields; filter on it
    # without our two fields gives it back byte for byte.
    seen = first_fields_removed(delivered, len(DELIVERY_FIELDS))
    assert filter_email(trained_model, without(seen, *OUR_FIELDS)) == seen
    # And on the whole delivered message (delivery fields included): the same verdict and value.
    refiltered = filter_email(trained_model, without(delivered, *OUR_FIELDS))
    for name in OUR_FIELDS:
        assert values(refiltered, name) == values(delivered, name)
    assert (score(delivered) >= 0.5) is (flag == "YES")


def test_forged_verdict_fields_are_replaced(mta: Postfix, trained_model: Path) -> None:
    forged = message(
        "You have WON",
        SPAM_TEXT,
        extra="X-Spam-Status: No, score=0.000 required=0.500\nX-Spam-Flag: NO\nX-Spam-Flag: NO\n",
    )
    reply = mta.send(forged)
    assert reply.code == 250, (reply, mta.log())
    delivered = mta.wait_delivered(reply)
    assert values(delivered, "X-Spam-Flag") == ["YES"]
    assert len(values(delivered, "X-Spam-Status")) == 1
    seen = first_fields_removed(delivered, len(DELIVERY_FIELDS))
    received = fields(seen)[len(OUR_FIELDS)]
    # filter on what the milter got (Received + the forged message) writes what was delivered.
    assert filter_email(trained_model, received + b"\n" + forged) == seen


def test_local_submission_goes_through_non_smtpd_milters(mta: Postfix) -> None:
    before = len(mta.delivered())
    mta.submit(SPAM)
    found = mta.wait_for_log(r"postfix/pickup\[\d+\]: ([0-9A-F]+): uid=0 from=<sender@example.org>")
    mta.wait_for_log(rf"{found.group(1)}: to=<alice@test.example>, relay=virtual, .*status=sent")
    delivered = mta.delivered()[before:]
    assert len(delivered) == 1
    assert names(delivered[0])[:7] == [*DELIVERY_FIELDS, *OUR_FIELDS, "Received"]
    assert values(delivered[0], "X-Spam-Flag") == ["YES"]
    assert b"(Postfix, from userid 0)" in fields(delivered[0])[len(DELIVERY_FIELDS) + len(OUR_FIELDS)]


def test_several_messages_on_one_connection(mta: Postfix, milter: Server) -> None:
    """One SMTP session, one milter connection, a message after a refused recipient (RSET)."""
    seen_before = len(milter.log().splitlines())
    replies = mta.send_session([SPAM, HAM, SPAM, HAM], rcpt=["alice@test.example"])
    refused = mta.send_session([HAM, SPAM], rcpt=["alice@elsewhere.example"])
    assert [reply.code for reply in refused] == [550, 550]
    assert [reply.code for reply in replies] == [250] * 4, (replies, mta.log())
    flags = [values(mta.wait_delivered(reply), "X-Spam-Flag") for reply in replies]
    assert flags == [["YES"], ["NO"], ["YES"], ["NO"]]
    peers = re.findall(r"MILTER from (\S+): ok", "\n".join(milter.log().splitlines()[seen_before:]))
    assert len(peers) == 4 and len(set(peers)) == 1, milter.log()


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_older_milter_protocols(milter: Server, trained_model: Path, tmp_path: Path, protocol: int) -> None:
    """Postfix's milter_protocol 2-4: no "no reply" steps, no leading spaces: same result."""
    with Postfix(tmp_path, milter_address(milter), default_action="tempfail", protocol=protocol) as mta:
        for raw, flag in ((SPAM, "YES"), (HAM, "NO")):
            reply = mta.send(raw)
            assert reply.code == 250, (reply, mta.log())
            delivered = mta.wait_delivered(reply)
            assert names(delivered)[:7] == [*DELIVERY_FIELDS, *OUR_FIELDS, "Received"]
            assert values(delivered, "X-Spam-Flag") == [flag]
            seen = first_fields_removed(delivered, len(DELIVERY_FIELDS))
            if flag == "YES":
                assert filter_email(trained_model, without(seen, *OUR_FIELDS)) == seen


def test_reject_above_refuses_spam_at_end_of_data(trained_model: Path, tmp_path: Path) -> None:
    with (
        milter_server(trained_model, "--reject-above", "5.0") as server,
        Postfix(tmp_path, milter_address(server), default_action="tempfail") as mta,
    ):
        refused = mta.send(SPAM)
        assert refused.code == 550, (refused, mta.log())
        assert refused.command == "end of data"
        found = re.fullmatch(
            r"5\.7\.1 Message refused as spam \(score \d+\.\d/5\.0, P\(spam\) ([01]\.\d{3})\)", refused.text
        )
        assert found is not None and float(found.group(1)) >= 0.5, refused
        mta.wait_for_log(
            r"milter-reject: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]: 5\.7\.1 Message refused as spam"
        )
        # Ham passes; once it is delivered, it is the only message there.
        accepted = mta.send(HAM)
        assert accepted.code == 250, (accepted, mta.log())
        delivered = mta.wait_delivered(accepted)
        assert mta.delivered() == [delivered]
        assert values(delivered, "X-Spam-Flag") == ["NO"]
        assert mta.queue_files("deferred") == [] and mta.queue_files("hold") == []
    assert "rejected" in server.log()


def test_quarantine_above_puts_spam_on_hold(trained_model: Path, tmp_path: Path) -> None:
    with (
        milter_server(trained_model, "--quarantine-above", "5.0") as server,
        Postfix(tmp_path, milter_address(server), default_action="tempfail") as mta,
    ):
        held = mta.send(SPAM)
        assert held.code == 250, (held, mta.log())
        mta.wait_for_log(rf"{held.queue_id}: milter-hold: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]")
        accepted = mta.send(HAM)
        delivered = mta.wait_delivered(accepted)
        assert mta.delivered() == [delivered]
        assert [path.name for path in mta.queue_files("hold")] == [held.queue_id]
    assert "quarantined" in server.log()


def test_milter_down_default_action_accept_delivers_untagged(tmp_path: Path) -> None:
    down = f"inet:127.0.0.1:{closed_port()}"
    with Postfix(tmp_path, down, default_action="accept") as mta:
        reply = mta.send(SPAM)
        assert reply.code == 250, (reply, mta.log())
        delivered = mta.wait_delivered(reply)
        assert names(delivered)[:4] == [*DELIVERY_FIELDS, "Received"]
        assert values(delivered, "X-Spam-Flag") == [] and values(delivered, "X-Spam-Status") == []
        assert re.search(rf"warning: connect to Milter service {down}: Connection refused", mta.log())


def test_milter_down_default_action_tempfail_defers_the_client(tmp_path: Path) -> None:
    down = f"inet:127.0.0.1:{closed_port()}"
    with Postfix(tmp_path, down, default_action="tempfail") as mta:
        reply = mta.send(SPAM)
        # Postfix holds the refusal of the connection until MAIL (smtpd_delay_reject).
        assert (reply.code, reply.command) == (451, "MAIL"), (reply, mta.log())
        assert reply.text == "4.7.1 Service unavailable - try again later", reply
        mta.wait_for_log(r"NOQUEUE: milter-reject: MAIL from localhost\[127\.0\.0\.1\]: 451 4\.7\.1 ")
        assert re.search(rf"warning: connect to Milter service {down}: Connection refused", mta.log())
        assert mta.delivered() == []
        assert mta.queue_files("incoming") == [] and mta.queue_files("deferred") == []


def test_harness_queue_matches_postfix_and_nothing_is_left(tmp_path: Path) -> None:
    """The queue the harness makes (for quick starts) is the one Postfix's own start-up makes;
    stopping leaves no process of the master's group and no folder."""
    layouts = []
    for checks in (True, False):
        mta = Postfix(tmp_path, checks=checks).start()
        try:
            assert mta.postfix("status").returncode == 0
            assert mta.postfix("check").returncode == 0, mta.log()
            layouts.append(
                {
                    path.name: (path.stat().st_mode, path.stat().st_uid, path.stat().st_gid)
                    for path in mta.queue_directory.iterdir()
                    if path.is_dir()
                }
            )
            pgid, root = mta.master_pid, mta.root
        finally:
            mta.stop()
        assert not group_alive(pgid)
        assert not root.exists()
    assert layouts[0] == layouts[1]
    assert "active" in layouts[0] and "maildrop" in layouts[0]
