"""The milter front end: an MTA's connection, many messages each, through :mod:`.milter`'s
protocol and the service's micro-batcher."""

from __future__ import annotations

import asyncio
import logging
import time

from ..errors import first_line
from ..pipeline import Tagged
from .batcher import MicroBatcher
from .door import Door
from .milter import MilterError, Packet, milter_session, read_packet
from .observe import Metrics
from .peers import peer_identity
from .settings import ServiceSettings

MILTER_PACKET_FACTOR = 10  # inside a message an MTA sends within 10x --timeout (Postfix: 300 s)


class MilterFrontEnd:
    def __init__(
        self,
        settings: ServiceSettings,
        door: Door,
        batcher: MicroBatcher,
        metrics: Metrics,
        log: logging.Logger,
        stopping: asyncio.Event,
        per_user: bool,
    ) -> None:
        self.settings = settings
        self.door = door
        self.batcher = batcher
        self.metrics = metrics
        self.log = log
        self.stopping = stopping  # set at shutdown: a session ends after the message being classified
        self.per_user = per_user  # a single recipient's verdict from their own head
        self.slots, self.pending = door.limits(waiters=0)

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """An MTA's milter connection: many messages, until it quits, it idles longer than
        ``MILTER_PACKET_FACTOR`` x --timeout, or the service stops (then after the message being
        classified). At most --max-connections at once (per peer: --max-per-peer); the MTA treats
        a refused connection as it is told by its milter_default_action."""
        peer_name = self.door.refused(writer, "MILTER")
        if peer_name is None:
            return
        identity = peer_identity(writer.get_extra_info("peername"), writer.get_extra_info("socket"))
        if self.door.unnamed(writer, identity, peer_name, "MILTER"):
            return
        who = identity[0]
        try:
            first = await self.door.first(self.pending, who, writer, read_packet(reader))
        except (MilterError, asyncio.TimeoutError, ConnectionError, OSError) as error:
            self.metrics.requests.labels("MILTER", "closed").inc()
            self.log.warning(
                "milter connection from %s closed: %s", peer_name, first_line(error) or "timeout"
            )
            writer.transport.abort()
            return
        if first is None:  # closed before a word (or as the oldest idle connection)
            writer.close()
            return
        if not self.slots.try_acquire(who):
            self.metrics.requests.labels("MILTER", "busy").inc()
            self.door.say_now("milter-busy", f"too many milter connections: closed one from {peer_name}")
            writer.transport.abort()
            return
        self.metrics.connections.inc()
        try:
            await self._session(reader, writer, peer_name, first)
        finally:
            self.metrics.connections.dec()
            self.slots.release(who)

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer_name: str, first: Packet
    ) -> None:
        async def write(data: bytes) -> None:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.settings.timeout)

        started = time.perf_counter()

        async def tag(raw: bytes, user: str) -> Tagged:
            nonlocal started
            started = time.perf_counter()
            return await self.batcher.tag(raw, user)

        def verdict(outcome: Tagged, action: str) -> None:
            detail = f"{action}, {len(outcome.message)} bytes"
            if outcome.probability is not None:
                self.metrics.verdicts.labels("spam" if outcome.spam else "ham").inc()
                detail = f"{'spam' if outcome.spam else 'clean'} p={outcome.probability:.3f}, " + detail
            else:
                detail += f": {outcome.error}"
            self.door.record("MILTER", "ok" if action != "error" else "error", peer_name, detail, started)

        try:
            await milter_session(
                reader,
                write,
                tag,
                self.settings.milter_policy,
                self.settings.decision,
                self.settings.max_size,
                MILTER_PACKET_FACTOR * self.settings.timeout,
                verdict,
                self.stopping,
                first=first,
                recipients=self.per_user,
            )
        except (MilterError, asyncio.TimeoutError, ConnectionError, OSError) as error:
            self.metrics.requests.labels("MILTER", "closed").inc()
            self.log.warning("milter connection from %s closed: %s", peer_name, first_line(error) or "idle")
        finally:
            writer.close()
