"""Bounds on what any one peer can take from the service: connection slots shared out per peer, and
the connections that have not yet said anything.

A peer is what :func:`.peers.peer_key` names: a local user, or a remote address. A connection is
*pending* until its first line (spamd) or first packet (milter) has arrived: it holds no slot,
waits at most ``first_line_seconds``, and when a peer (or everyone together) keeps too many
pending, the oldest is closed. So idle connections, however many, never keep a client that speaks
at once from being served.

A connection refused before it holds a slot (a first line over 64 KiB, no first line in time, no
slot free) is answered and then read from for a moment before it is closed (closing with unread
data resets the connection, and the reset can destroy the reply). Those *lingering* connections
are bounded as well (``Lingering``): beyond a peer's share, or everyone's together, one is closed
right after its reply, so that refused connections cannot pile up until the service runs out of
file descriptors.
"""

from __future__ import annotations

import asyncio
import resource
from collections import OrderedDict
from typing import Protocol

FIRST_LINE_SECONDS = 5.0  # spamc, Exim and MTAs send their first line at once (TLS: after the handshake)
PENDING_PER_SLOT = 2  # idle connections one peer may keep, per connection slot, before its oldest goes
MIN_PENDING = 32  # however few the slots: clients that connect at once are not closed as idle


def _one_less(by_peer: dict[str, int], peer: str) -> None:
    """A peer's count lowered by one, and the peer forgotten at none (the table stays as small as
    the peers holding something)."""
    left = by_peer.get(peer, 1) - 1
    if left > 0:
        by_peer[peer] = left
    else:
        by_peer.pop(peer, None)


class _Transport(Protocol):
    def abort(self) -> None: ...


class Slots:
    """``total`` connections served at once, at most ``per_peer`` of them from one peer. A
    connection over either bound waits for a slot (``acquire``), up to ``waiters`` of them at once
    and ``per_peer`` of them from one peer (so one peer cannot take every waiting place either); or
    is refused at once (``try_acquire``)."""

    def __init__(self, total: int, per_peer: int, waiters: int) -> None:
        self.total = total
        self.per_peer = max(1, min(per_peer, total))
        self.waiters = waiters
        self.used = 0
        self._by_peer: dict[str, int] = {}
        self._queue: list[tuple[str, asyncio.Future[None]]] = []  # first come, first served

    def _free_for(self, peer: str) -> bool:
        return self.used < self.total and self._by_peer.get(peer, 0) < self.per_peer

    def _take(self, peer: str) -> None:
        self.used += 1
        self._by_peer[peer] = self._by_peer.get(peer, 0) + 1

    def try_acquire(self, peer: str) -> bool:
        if not self._free_for(peer):
            return False
        self._take(peer)
        return True

    async def acquire(self, peer: str, timeout: float) -> bool:
        if self.try_acquire(peer):
            return True
        if len(self._queue) >= self.waiters:
            return False
        if sum(waiter == peer for waiter, _ in self._queue) >= self.per_peer:
            return False
        entry = (peer, asyncio.get_running_loop().create_future())
        self._queue.append(entry)
        try:
            await asyncio.wait_for(entry[1], timeout)  # a slot handed over by release()
        except asyncio.TimeoutError:
            return False
        finally:
            if entry in self._queue:
                self._queue.remove(entry)
        return True

    def release(self, peer: str) -> None:
        self.used -= 1
        _one_less(self._by_peer, peer)
        for entry in list(self._queue):  # the longest waiting whose peer is under its share
            waiter, granted = entry
            if not granted.done() and self._free_for(waiter):
                self._take(waiter)
                granted.set_result(None)
                self._queue.remove(entry)
                break


class Pending:
    """Connections that have not sent their first line yet, oldest first. ``add`` closes the
    oldest of the same peer beyond ``per_peer``, and the oldest of all beyond ``total``."""

    def __init__(self, total: int, per_peer: int) -> None:
        self.total = total
        self.per_peer = per_peer
        self._entries: OrderedDict[int, tuple[str, _Transport]] = OrderedDict()
        self._by_peer: dict[str, int] = {}
        self._next = 0

    def add(self, peer: str, transport: _Transport) -> tuple[int, int]:
        """(the entry's token for ``discard``, how many older connections were closed for it)."""
        closed = 0
        if self._by_peer.get(peer, 0) >= self.per_peer:
            oldest = next(token for token, (who, _) in self._entries.items() if who == peer)
            self._close(oldest)
            closed += 1
        while len(self._entries) >= self.total:
            self._close(next(iter(self._entries)))
            closed += 1
        self._next += 1
        self._entries[self._next] = (peer, transport)
        self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        return self._next, closed

    def discard(self, token: int) -> None:
        entry = self._entries.pop(token, None)
        if entry is not None:
            left = self._by_peer[entry[0]] - 1
            if left > 0:
                self._by_peer[entry[0]] = left
            else:
                del self._by_peer[entry[0]]

    def close_all(self) -> None:
        """At shutdown: idle connections are closed (those with a request go on to their reply)."""
        for token in list(self._entries):
            self._close(token)

    def __len__(self) -> int:
        return len(self._entries)

    def _close(self, token: int) -> None:
        transport = self._entries[token][1]
        self.discard(token)
        transport.abort()  # the reader sees the end of the connection: the handler closes quietly


class Lingering:
    """Refused connections read from (and dropped) for a moment after their reply: at most
    ``per_peer`` of one peer and ``total`` of all at once. ``try_add`` says whether one more may
    linger; one that may not is closed right after its reply."""

    def __init__(self, total: int, per_peer: int) -> None:
        self.total = total
        self.per_peer = max(1, min(per_peer, total))
        self.count = 0
        self._by_peer: dict[str, int] = {}

    def try_add(self, peer: str) -> bool:
        if self.count >= self.total or self._by_peer.get(peer, 0) >= self.per_peer:
            return False
        self.count += 1
        self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        return True

    def discard(self, peer: str) -> None:
        self.count -= 1
        _one_less(self._by_peer, peer)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft limit of open files to its hard limit (systemd starts services
    with 1024 soft, 524288 hard; every connection takes one): (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or (soft != resource.RLIM_INFINITY and soft >= hard):
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):  # a sandbox that refuses it: the limit stays as it was
        return soft, soft
    return soft, hard
