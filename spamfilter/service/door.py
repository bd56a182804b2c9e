"""What every front end (spamd, milter) does with a connection around its protocol: the
allow-list, the wait for a first line among idle connections, a request's record (metrics, the
summary's tally, the log line) and warnings that a flood could repeat thousands of times."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable
from typing import TypeVar

from ..errors import printable
from .access import peer_allowed
from .limits import FIRST_LINE_SECONDS, MIN_PENDING, PENDING_PER_SLOT, Pending, Slots
from .observe import Metrics, Tally
from .peers import PeerIdentity, unnamed_local
from .settings import ServiceSettings
from .tls import TlsWriter

Writer = asyncio.StreamWriter | TlsWriter
QUIET_SECONDS = 10.0  # a flood's repeated warning: one log line per kind this often
T = TypeVar("T")


class Door:
    def __init__(self, settings: ServiceSettings, metrics: Metrics, log: logging.Logger) -> None:
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self.tally = Tally()
        self._said: dict[str, tuple[float, int]] = {}
        # Whether the kernel names the owner of a local TCP connection (sock_diag; the server asks
        # at start): where it does, a local client it cannot name has closed its socket already.
        self.owners_named = False

    def limits(self, waiters: int) -> tuple[Slots, Pending]:
        """A front end's own slots (``waiters`` more may wait for one) and idle connections kept."""
        total = self.settings.max_connections
        per_peer = self.settings.max_per_peer or total - total // 4  # three quarters: room for others
        pending_per_peer = max(MIN_PENDING, PENDING_PER_SLOT * total)
        return Slots(total, per_peer, waiters=waiters), Pending(2 * pending_per_peer, pending_per_peer)

    def say_now(self, key: str, text: str) -> None:
        """A warning logged at most every ``QUIET_SECONDS`` per kind, with how many were left out."""
        now = time.monotonic()
        last, skipped = self._said.get(key, (-math.inf, 0))
        if now - last < QUIET_SECONDS:
            self._said[key] = (last, skipped + 1)
            return
        self._said[key] = (now, 0)
        more = f" (and {skipped} more like it in the last {now - last:.0f} s)" if skipped else ""
        self.log.warning("%s%s", text, more)

    def refused(self, writer: Writer, command: str) -> str | None:
        """The peer's name, or None after closing a peer outside --allow before a byte is read."""
        peer = writer.get_extra_info("peername")
        if peer_allowed(peer, self.settings.allow):
            return peer_text(peer)
        self.metrics.requests.labels(command, "refused").inc()
        kind = "milter connection" if command == "MILTER" else "connection"
        self.log.warning("refused %s from %s: not in --allow", kind, peer_text(peer))
        writer.transport.abort()
        return None

    def unnamed(self, writer: Writer, identity: PeerIdentity, peer_name: str, command: str) -> bool:
        """True after closing a local TCP client whose owner the kernel could not name where it
        names owners: its socket was closed before the service asked (it sent its request and
        left, and cannot read a reply). Served, it would count as the one peer ``loopback``, a
        second share for whoever it is."""
        if not self.owners_named:
            return False
        if not unnamed_local(writer.get_extra_info("peername"), writer.get_extra_info("socket"), identity):
            return False
        self.metrics.requests.labels(command, "closed").inc()
        self.say_now(
            "unnamed",
            f"closed a connection from {peer_name} unserved: the client's socket was closed before "
            "the kernel could name its owner",
        )
        writer.transport.abort()
        return True

    async def first(self, pending: Pending, who: str, writer: Writer, read: Awaitable[T]) -> T:
        """What ``read`` gives (a request line, a milter packet) within the first-line timeout,
        the connection counted as pending meanwhile (holding no slot, the first closed when too
        many are idle)."""
        token, closed = pending.add(who, writer.transport)
        if closed:
            self.say_now(
                "idle", f"closed {closed} idle connection(s) to make room for one from {who} (no request yet)"
            )
        try:
            return await asyncio.wait_for(read, min(self.settings.timeout, FIRST_LINE_SECONDS))
        finally:
            pending.discard(token)

    def record(self, command: str, outcome: str, peer: str, detail: str, started: float) -> None:
        seconds = time.perf_counter() - started
        self.metrics.requests.labels(command, outcome).inc()
        self.metrics.latency.observe(seconds)
        self.tally.requests += 1
        self.tally.seconds += seconds
        self.tally.errors += outcome not in ("ok",)
        self.tally.spam += detail.startswith("spam")
        if self.settings.log_interval <= 0:
            what = command or "(no command)"
            said = f": {printable(detail)}" if detail else ""  # a peer's User: may hold escapes
            self.log.info("%s from %s: %s%s in %.1f ms", what, peer, outcome, said, 1000 * seconds)

    def summary(self) -> str:
        """The summary line of the requests since the last one (``--log-interval``), counting anew."""
        line = self.tally.line()
        self.tally = Tally()
        return line


def peer_text(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "unix socket"
