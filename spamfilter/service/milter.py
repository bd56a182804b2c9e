"""The milter protocol (Sendmail's libmilter, version 6, as Postfix and Sendmail speak it): the MTA
side hands over each message while the sender is still connected; at its end the classifier's
verdict becomes header changes (earlier fields of the prefix removed, the new ones inserted at the
top, as ``filter --format email`` writes them: both from ``verdict.Decision``), a 5xx reply (the
decision's ``reject_above``) or a quarantine (``quarantine_above``), scores on the scale spamc
prints.

A packet is a 4-byte big-endian length, a command byte and its data. The milter asks only for
what it uses: headers and body, no replies to the steps before them, and header values with
their leading space (so the message is put back together byte for byte). Headers and body
together are kept up to ``max_size`` bytes, what the classifier reads; the rest of the body is
only counted, and a message whose headers alone pass ``max_size`` is let through untagged.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..pipeline import Tagged
from ..verdict import Decision

VERSION = 6
# Postfix sends body chunks of 64 KB and header fields of at most its header_size_limit (100 KB),
# Sendmail chunks of 64 KB unless a larger size is negotiated (we do not): larger is no MTA.
MAX_PACKET = 256 * 1024
HEADER_OVERHEAD = 4  # a header as the message holds it: name, ": ", value, line end
# Header fields kept per message. A kept field costs about 130 bytes of Python objects beside its
# own, so 70,000 two-byte fields within --max-size took 9 MB per connection; real mail has tens.
# Past this many, fields are only counted; the message is classified on those kept.
MAX_HEADER_FIELDS = 1000

# Commands from the MTA (libmilter's mfdef.h)
ABORT, BODY, CONNECT, MACRO, BODYEOB, HELO, QUIT_NC, HEADER = b"ABCDEHKL"
MAIL, EOH, OPTNEG, QUIT, RCPT, DATA, UNKNOWN = b"MNOQRTU"
# Replies and actions
ACCEPT, CONTINUE, REPLYCODE, TEMPFAIL = b"acyt"
CHGHEADER, INSHEADER, QUARANTINE = b"miq"

# Actions we may take (SMFIF_*) and the protocol steps we do not want (SMFIP_*).
SMFIF_ADDHDRS, SMFIF_CHGHDRS, SMFIF_QUARANTINE = 0x01, 0x10, 0x20
SMFIP_NOCONNECT, SMFIP_NOHELO, SMFIP_NOMAIL, SMFIP_NORCPT = 0x01, 0x02, 0x04, 0x08
SMFIP_NOUNKNOWN, SMFIP_NODATA = 0x100, 0x200
SMFIP_NR_HDR, SMFIP_NR_EOH, SMFIP_NR_BODY = 0x80, 0x40000, 0x80000
# The "no reply" bit of each step: without it negotiated, the step is answered with CONTINUE.
NO_REPLY = {
    CONNECT: 0x1000,
    HELO: 0x2000,
    MAIL: 0x4000,
    RCPT: 0x8000,
    DATA: 0x10000,
    UNKNOWN: 0x20000,
    EOH: SMFIP_NR_EOH,
    HEADER: SMFIP_NR_HDR,
    BODY: SMFIP_NR_BODY,
}
SMFIP_HDR_LEADSPC = 0x100000
WANTED_ACTIONS = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_QUARANTINE
SKIPPED_STEPS = SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT | SMFIP_NOUNKNOWN | SMFIP_NODATA
QUIET_STEPS = SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY


class MilterError(Exception):
    """A peer that does not speak the milter protocol: the connection is closed."""


@dataclass
class MilterPolicy:
    on_error: str = "accept"  # accept (untagged) or tempfail, as Postfix's milter_default_action


@dataclass
class _Message:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    header_bytes: int = 0  # kept or not: once past max_size, headers are only counted
    header_fields: int = 0  # likewise: past MAX_HEADER_FIELDS only counted
    body: bytearray = field(default_factory=bytearray)
    body_size: int = 0
    recipients: list[bytes] = field(default_factory=list)  # RCPT TO, when asked for (per-user heads)

    def user(self) -> str:
        """The user whose head scores this message: its one recipient's address (lower case, no
        angle brackets); "" (the shared model) for several recipients or none known."""
        if len(self.recipients) != 1:
            return ""
        return self.recipients[0].strip().strip(b"<>").decode("utf-8", "replace").lower()

    def room(self, max_size: int) -> int:
        return max(0, max_size - self.header_bytes - len(self.body))


Packet = tuple[int, bytes]


def packet(command: int, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + bytes([command]) + data


async def read_packet(reader: asyncio.StreamReader) -> Packet | None:
    """The next (command, data), or None at the end of the connection."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as short:
        if short.partial:
            raise MilterError("connection closed inside a packet length") from None
        return None
    (length,) = struct.unpack(">I", head)
    if not 1 <= length <= MAX_PACKET:
        raise MilterError(f"packet length {length} out of range")
    try:
        data = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise MilterError("connection closed inside a packet") from None
    return data[0], data[1:]


def negotiate(data: bytes, recipients: bool = False) -> bytes:
    """Our answer to the MTA's SMFIC_OPTNEG: version 6, the actions we use, the steps we skip
    (RCPT too, unless ``recipients``: per-user heads need each message's recipient)."""
    if len(data) < 12:
        raise MilterError("option negotiation too short")
    version, offered_actions, offered_steps = struct.unpack(">III", data[:12])
    if version < 2:
        raise MilterError(f"milter protocol version {version} is too old")
    actions = WANTED_ACTIONS & offered_actions
    wanted = ((SKIPPED_STEPS & ~SMFIP_NORCPT) | NO_REPLY[RCPT]) if recipients else SKIPPED_STEPS
    steps = (wanted | QUIET_STEPS | SMFIP_HDR_LEADSPC) & offered_steps
    return packet(OPTNEG, struct.pack(">III", min(version, VERSION), actions, steps))


def message_bytes(message: _Message, leading_space: bool) -> bytes:
    """The message as the MTA will write it (LF line ends): headers, a blank line, the body."""
    lines = []
    for name, value in message.headers:
        separator = b":" if leading_space else b": "
        lines.append(name + separator + value.replace(b"\r\n", b"\n") + b"\n")
    return b"".join(lines) + b"\n" + bytes(message.body).replace(b"\r\n", b"\n")


def header_actions(
    message: _Message, outcome: Tagged, decision: Decision, leading_space: bool
) -> list[bytes]:
    """Earlier fields of the decision's prefix removed (by their index among fields of that name),
    the new fields inserted at the top: what ``Decision.tag`` does to the bytes."""
    removed = {name.lower().encode("ascii") for name in decision.removed_names()}
    removals = []
    seen: dict[bytes, int] = {}
    for name, _value in message.headers:
        key = name.lower()
        seen[key] = seen.get(key, 0) + 1
        if key in removed:
            # Removing is changing the field to an empty value; each index counts fields of one name.
            removals.append(packet(CHGHEADER, struct.pack(">I", seen[key]) + name + b"\0\0"))
    actions = removals[::-1]  # the last first: no removal moves an index still to come
    assert outcome.verdict is not None
    space = b" " if leading_space else b""
    # Inserted at index 0 in reverse order, so that the first field ends up first.
    explanation = getattr(outcome, "explanation", None)  # the Report field, where explained
    for field_name, value in reversed(decision.fields(outcome.verdict, explanation)):
        data = field_name.encode("ascii") + b"\0" + space + value.encode("ascii") + b"\0"
        actions.append(packet(INSHEADER, struct.pack(">I", 0) + data))
    return actions


Tagger = Callable[[bytes, str], Awaitable[Tagged]]  # (message, user: "" for the shared model)


async def milter_session(
    reader: asyncio.StreamReader,
    write: Callable[[bytes], Awaitable[None]],
    tag: Tagger,
    policy: MilterPolicy,
    decision: Decision,
    max_size: int,
    timeout: float,
    on_verdict: Callable[[Tagged, str], None] | None = None,
    stopping: asyncio.Event | None = None,
    first: Packet | None = None,
    recipients: bool = False,
) -> None:
    """One MTA connection: any number of messages, until QUIT or the end of the connection, or
    ``stopping`` (the service's SIGTERM) while no message is being classified, or ``timeout``
    seconds without a packet (``asyncio.TimeoutError``). ``write`` sends bytes (and waits until
    they are taken); ``tag`` classifies one message (for its one recipient with ``recipients``);
    ``first``: a packet already read."""
    message = _Message()
    leading_space = False
    steps = 0  # the protocol bits agreed on
    stop = stopping or asyncio.Event()
    while True:
        received = first if first is not None else await _next_packet(reader, timeout, stop)
        first = None
        if received is None:
            return
        command, data = received
        if command == OPTNEG:
            answer = negotiate(data, recipients)
            steps = struct.unpack(">III", answer[5:17])[2]
            leading_space = bool(steps & SMFIP_HDR_LEADSPC)
            await write(answer)
        elif command == MACRO:
            pass  # {i}, {mail_addr}, ...: nothing the classifier needs
        elif command == ABORT:
            message = _Message()
        elif command == RCPT and recipients and len(message.recipients) < 2:
            # Only whether there is one recipient matters: an MTA's client may send RCPT without
            # end (1 GB of them grew the service by 1 GB), so no more than two are kept.
            message.recipients.append(data.split(b"\0", 1)[0])
        elif command == HEADER:
            name, _, rest = data.partition(b"\0")
            message.header_bytes += len(name) + len(rest) + HEADER_OVERHEAD
            message.header_fields += 1
            if message.header_bytes <= max_size and message.header_fields <= MAX_HEADER_FIELDS:
                message.headers.append((name, rest.rstrip(b"\0")))  # beyond: counted, not kept
        elif command == BODY:
            message.body_size += len(data)
            message.body += data[: message.room(max_size)]
        elif command == BODYEOB:
            message.body += data[: message.room(max_size)]  # the last chunk may come with the end
            for reply in await _end_of_message(
                message, leading_space, tag, policy, decision, on_verdict, max_size
            ):
                await write(reply)
            message = _Message()
        elif command in (QUIT, QUIT_NC):
            if command == QUIT:
                return
            message = _Message()
        elif command not in NO_REPLY:
            raise MilterError(f"unknown milter command {bytes([command])!r}")
        if command in NO_REPLY and not steps & NO_REPLY[command]:
            # A step the MTA sends (it may not offer to skip it) and wants answered.
            await write(packet(CONTINUE))


async def _next_packet(reader: asyncio.StreamReader, timeout: float, stop: asyncio.Event) -> Packet | None:
    """The next packet; None at the end of the connection or once ``stop`` is set (the MTA then
    does what its milter_default_action says for a message it was sending)."""
    if stop.is_set():
        return None
    reading = asyncio.ensure_future(read_packet(reader))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({reading, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if reading in done:
        return reading.result()
    reading.cancel()
    if not done:
        raise asyncio.TimeoutError
    return None


async def _end_of_message(
    message: _Message,
    leading_space: bool,
    tag: Tagger,
    policy: MilterPolicy,
    decision: Decision,
    on_verdict: Callable[[Tagged, str], None] | None,
    max_size: int,
) -> list[bytes]:
    if message.header_bytes > max_size:  # as spamc does with a message over its -s: untagged
        if on_verdict is not None:
            too_big = f"headers of {message.header_bytes} bytes are over --max-size {max_size}"
            on_verdict(Tagged(b"", error=too_big), "error")
        return [packet(ACCEPT)]
    # Past MAX_HEADER_FIELDS fields the message is classified on the fields kept (the Subject the
    # model reads is among the first): letting it through untagged let 1,001 fields of 'X: a'
    # carry any spam past the filter.
    raw = message_bytes(message, leading_space)
    outcome = await tag(raw, message.user())
    verdict = outcome.verdict
    if outcome.error is not None or verdict is None:
        if on_verdict is not None:
            on_verdict(outcome, "error")
        return [packet(TEMPFAIL if policy.on_error == "tempfail" else ACCEPT)]
    said = f"score {verdict.score:.1f}/{verdict.required:.1f}, P(spam) {verdict.probability:.3f}"
    action = decision.milter_action(verdict)
    if action == "reject":
        if on_verdict is not None:
            on_verdict(outcome, "rejected")
        return [packet(REPLYCODE, f"550 5.7.1 Message refused as spam ({said})".encode() + b"\0")]
    replies = header_actions(message, outcome, decision, leading_space)
    if action == "quarantine":
        replies.append(packet(QUARANTINE, f"spam, {said}".encode() + b"\0"))
    action = {"quarantine": "quarantined", "tag": "tagged"}[action]
    if on_verdict is not None:
        on_verdict(outcome, action)
    return [*replies, packet(ACCEPT)]
