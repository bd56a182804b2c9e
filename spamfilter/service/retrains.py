"""How many user-head retrains the service runs at once, and who waits.

Every user's TELL may start a retrain of their head (numpy, on a thread: CPU and a copy of the
training features each). Unbounded, a local peer sending one TELL as each of many users would queue
as many retrains. So:

- at most ``max_running`` retrains run at once (1 by default);
- a user is at most once in the schedule: a TELL of a user whose retrain waits is already covered
  by it; one of a user whose retrain runs marks them for one more run after it (it reads every
  correction kept by then, so any number of such TELLs coalesce into that one run);
- users beyond the running ones wait in a queue of at most ``max_queued`` users, first come first
  served; a user marked for another run goes to its back. When it is full, ``request`` says so:
  the correction is kept, and the retrain waits for that user's next TELL.

TELL answers at once in every case: learning is asynchronous, as spamd's TELL stores the message.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from enum import Enum
from typing import Any


class Scheduled(Enum):
    STARTED = "started"
    QUEUED = "queued"
    COALESCED = "coalesced"  # already waiting, or running with another run to follow
    FULL = "full"


class RetrainQueue:
    """Runs ``run(user)`` coroutines under the bounds above; used from the event loop only."""

    def __init__(
        self, run: Callable[[str], Coroutine[Any, Any, None]], max_running: int = 1, max_queued: int = 1000
    ) -> None:
        if max_running < 1 or max_queued < 0:
            raise ValueError("max_running must be at least 1 and max_queued at least 0")
        self._run = run
        self.max_running, self.max_queued = max_running, max_queued
        self._running: dict[str, asyncio.Task[None]] = {}
        self._queued: OrderedDict[str, None] = OrderedDict()
        self._again: set[str] = set()
        self._closed = False

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return len(self._queued) + len(self._again)

    def request(self, user: str) -> Scheduled:
        """Schedule a retrain of ``user``'s head (see the module's rules)."""
        if user in self._queued:
            return Scheduled.COALESCED
        if user in self._running:
            self._again.add(user)  # bounded by max_running: one mark per running retrain
            return Scheduled.COALESCED
        if self._closed:
            return Scheduled.FULL
        if len(self._running) < self.max_running:
            self._start(user)
            return Scheduled.STARTED
        if len(self._queued) >= self.max_queued:
            return Scheduled.FULL
        self._queued[user] = None
        return Scheduled.QUEUED

    def _start(self, user: str) -> None:
        task = asyncio.get_running_loop().create_task(self._run(user))
        self._running[user] = task
        task.add_done_callback(lambda _task: self._finished(user))

    def _finished(self, user: str) -> None:
        self._running.pop(user, None)
        if user in self._again and not self._closed:
            self._again.discard(user)
            self._queued[user] = None  # behind those who waited meanwhile (may pass max_queued by one)
        while not self._closed and self._queued and len(self._running) < self.max_running:
            following, _ = self._queued.popitem(last=False)
            self._start(following)

    async def idle(self) -> int:
        """Shutdown: start nothing more, wait for the retrains running now; how many waiting were
        dropped (their corrections stay kept on disk)."""
        self._closed = True
        dropped = len(self._queued) + len(self._again)
        self._queued.clear()
        self._again.clear()
        running = [task for task in self._running.values() if not task.done()]
        if running:
            await asyncio.wait(running)
        return dropped
