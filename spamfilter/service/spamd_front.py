"""The spamd front end: one request per connection, as spamc, Exim and aiospamc send them.

A request must arrive whole within ``timeout`` seconds and its reply be taken within as long; at
most ``max_connections`` are served at once (more wait, up to ``timeout``, for a slot, then get 75);
bad requests get spamd's error replies, a model failure an error reply (so spamc's safe fallback
delivers the mail untagged). Classification goes through the service's micro-batcher; TELL to
:mod:`.learning`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..errors import first_line
from ..pipeline import EMPTY_MESSAGE, Tagged
from . import protocol
from .batcher import MicroBatcher
from .door import Door, Writer
from .learning import Teaching
from .limits import FIRST_LINE_SECONDS, Lingering
from .observe import Metrics
from .peers import PeerIdentity, peer_identity
from .settings import ServiceSettings
from .tls import TlsWriter

LINGER_SECONDS = 2.0  # how long a refused request's rest is read and dropped before closing
UNEXPLAINED = frozenset({"CHECK", "SYMBOLS"})  # replies that show no explanation: none is computed


class SpamdFrontEnd:
    def __init__(
        self,
        settings: ServiceSettings,
        door: Door,
        batcher: MicroBatcher,
        teaching: Teaching,
        metrics: Metrics,
        log: logging.Logger,
    ) -> None:
        self.settings = settings
        self.door = door
        self.batcher = batcher
        self.teaching = teaching
        self.metrics = metrics
        self.log = log
        # Beyond the slots, as many connections again may wait for one (then: 75, try later).
        self.slots, self.pending = door.limits(waiters=settings.max_connections)
        # Refused connections read from for a moment after their reply: a peer's share of slots
        # of them at most, and 2 x --max-connections of all (the others are closed at once).
        self.lingering = Lingering(2 * settings.max_connections, self.slots.per_peer)

    async def connection(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        peer_name = self.door.refused(writer, "")
        if peer_name is None:
            return
        identity = peer_identity(writer.get_extra_info("peername"), writer.get_extra_info("socket"))
        who = identity[0]  # asked of the kernel once per connection: TELL reuses it
        if self.door.unnamed(writer, identity, peer_name, ""):
            return
        started = time.perf_counter()
        try:
            line = await self.door.first(self.pending, who, writer, protocol.read_line(reader))
        except protocol.RequestError as error:  # (line too long, or cut off): spamd's 76
            await self._answer(writer, error.reply(), reader, refused=who)
            self.door.record("", "error", peer_name, error.text, started)
            return
        except asyncio.TimeoutError:
            first_wait = min(self.settings.timeout, FIRST_LINE_SECONDS)
            await self._answer(writer, self._timeout_reply(first_wait), reader, refused=who)
            self.door.record("", "timeout", peer_name, "no request line in time", started)
            return
        except (ConnectionError, OSError):
            line = b""
        if not line or writer.transport.is_closing():
            # Closed before a request: by the client, or as an idle connection (the oldest, or at
            # shutdown, where the line can arrive just as the connection is closed).
            writer.close()
            return
        if not await self.slots.acquire(who, 2 * self.settings.timeout + LINGER_SECONDS):
            if isinstance(writer, TlsWriter):  # nothing can be written before the handshake
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(writer.handshaken.wait(), self.settings.timeout)
            busy = protocol.error_reply(protocol.EX_TEMPFAIL, "Too many connections")
            await self._answer(writer, busy, reader, refused=who)
            self.metrics.requests.labels("", "busy").inc()
            self.door.say_now("busy", f"too many connections: answered {peer_name} with 75 (retry later)")
            return
        self.metrics.connections.inc()
        try:
            await self._serve_one(reader, writer, peer_name, line, identity)
        finally:
            self.metrics.connections.dec()
            self.slots.release(who)

    def _timeout_reply(self, seconds: float) -> bytes:
        return protocol.error_reply(
            protocol.EX_TIMEOUT, f"Timeout: ({seconds:g} second socket timeout reading input from client)"
        )

    async def _serve_one(
        self, reader: asyncio.StreamReader, writer: Writer, peer: str, line: bytes, identity: PeerIdentity
    ) -> None:
        started = time.perf_counter()
        command, outcome, detail, reply = "", "error", "", b""
        try:
            request = await asyncio.wait_for(
                protocol.read_request(reader, self.settings.max_size, line), self.settings.timeout
            )
            if request is None:
                outcome = "closed"
            else:
                command = request.command
                reply, outcome, detail = await self._respond(request, writer, identity)
        except protocol.RequestError as error:
            reply, detail = error.reply(), error.text
        except asyncio.TimeoutError:
            reply = self._timeout_reply(self.settings.timeout)
            outcome, detail = "timeout", "request not complete in time"
        except (ConnectionError, OSError) as error:  # the client went away mid-request
            outcome, detail = "closed", first_line(error)
        except Exception as error:  # a bug: one line, an error reply, the connection closed
            detail = first_line(error)
            self.log.error("internal error on %s from %s: %s", command or "a request", peer, detail)
            reply = protocol.error_reply(protocol.EX_SOFTWARE, "Internal error")
        if reply:
            if not await self._answer(writer, reply, reader):
                outcome, detail = "closed", f"reply not delivered; {detail}".rstrip("; ")
        else:
            writer.close()
        self.door.record(command, outcome, peer, detail, started)

    async def _respond(
        self, request: protocol.Request, writer: Writer, identity: PeerIdentity
    ) -> tuple[bytes, str, str]:
        """(reply, outcome, log detail) for a request read whole."""
        if request.command == "PING":
            return protocol.ping_reply(), "ok", ""
        if request.command == "SKIP":
            return b"", "ok", ""
        if request.command == "TELL":
            return await self.teaching.tell(request, writer, identity)
        if not request.message.strip():
            error = protocol.unavailable(EMPTY_MESSAGE)
            return error.reply(), "error", error.text
        outcome = await self.batcher.tag(request.message, request.user, request.command not in UNEXPLAINED)
        verdict = outcome.verdict
        if outcome.error is not None or verdict is None:
            error = protocol.unavailable(outcome.error or "not classified")
            return error.reply(), "error", error.text
        self.metrics.verdicts.labels("spam" if verdict.spam else "ham").inc()
        detail = (
            f"{'spam' if verdict.spam else 'clean'} ({verdict.score:.1f}/{verdict.required:.1f}) "
            f"p={verdict.probability:.3f}, {len(request.message)} bytes"
            + (f", user={request.user[:200]}" if request.user else "")
        )
        return protocol.check_reply(request, verdict, outcome.message, _report(outcome)), "ok", detail

    async def _answer(
        self, writer: Writer, reply: bytes, reader: asyncio.StreamReader, refused: str | None = None
    ) -> bool:
        """Write the reply and close; a client that does not take it in time is dropped. What the
        client still sends (the rest of a refused request) is read and dropped for a moment first:
        closing a socket with unread data resets it, and the reset can destroy the reply.
        ``refused``: the peer of a connection that holds no slot (refused before one, or turned
        away for want of one): it lingers only within ``self.lingering``'s bounds, else it is
        closed right after the reply. False when the reply could not be handed to the kernel (the
        connection was already gone)."""
        if writer.transport.is_closing():  # aborted meanwhile (the client reset it, or shutdown)
            writer.close()
            return False
        lingers = refused is None or self.lingering.try_add(refused)
        try:
            writer.write(reply)
            await asyncio.wait_for(writer.drain(), self.settings.timeout)
            if writer.can_write_eof():
                writer.write_eof()
            if lingers:
                await asyncio.wait_for(_discard(reader), LINGER_SECONDS)
            else:
                self.door.say_now(
                    "linger",
                    f"closed a refused connection from {refused} at once: too many refused "
                    "connections are still being read from",
                )
        except (asyncio.TimeoutError, ConnectionError, OSError):
            writer.transport.abort()
            return False
        finally:
            if refused is not None and lingers:
                self.lingering.discard(refused)
            writer.close()
        return True


async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


def _report(outcome: Tagged) -> str | None:
    """REPORT's body from the verdict's explanation, where it has one (serve --explain)."""
    explanation = getattr(outcome, "explanation", None)
    if explanation is None or outcome.verdict is None:
        return None
    from ..explain import spamd_report

    verdict = outcome.verdict
    return spamd_report(explanation, verdict.score, verdict.required, protocol.RULE_NAME)
