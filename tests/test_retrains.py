"""The bound on user-head retrains in the service (service/retrains.py): at most max_running at
once, each user once in the schedule, TELLs meanwhile coalesced, a bounded queue. The retrain here
is a coroutine the test releases by hand (the real one is tested through spamc in
test_serve_users.py), so that every interleaving checked is the one intended."""

from __future__ import annotations

import asyncio

import pytest

from spamfilter.service.retrains import RetrainQueue, Scheduled


class Retrains:
    """A retrain per call that runs until the test releases it; records the concurrency seen."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.now = self.most = 0

    async def run(self, user: str) -> None:
        self.started.append(user)
        gate = self.gates[len(self.started) - 1] = asyncio.Event()
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await gate.wait()
        finally:
            self.now -= 1

    async def release(self, index: int) -> None:
        self.gates[index].set()
        for _ in range(5):  # the task ends, its done callback starts the next
            await asyncio.sleep(0)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_one_at_a_time_by_default_the_rest_queued_once_each_in_order() -> None:
    async def scenario() -> None:
        fake = Retrains()
        queue = RetrainQueue(fake.run)
        outcomes = [queue.request(f"user{n}") for n in range(5)]
        assert outcomes == [Scheduled.STARTED] + [Scheduled.QUEUED] * 4
        assert queue.request("user3") is Scheduled.COALESCED  # already waiting: once only
        await settle()
        assert (queue.running, queue.queued) == (1, 4)
        for index in range(5):
            await fake.release(index)
        await settle()
        assert fake.started == [f"user{n}" for n in range(5)]
        assert fake.most == 1
        assert (queue.running, queue.queued) == (0, 0)

    asyncio.run(scenario())


def test_tells_during_a_users_retrain_coalesce_into_one_more_run_behind_the_waiting() -> None:
    async def scenario() -> None:
        fake = Retrains()
        queue = RetrainQueue(fake.run, max_running=1)
        queue.request("alice")
        await settle()
        queue.request("bob")
        assert [queue.request("alice") for _ in range(10)] == [Scheduled.COALESCED] * 10
        assert queue.queued == 2  # bob, and alice's one more run
        await fake.release(0)
        await fake.release(1)
        await fake.release(2)
        await settle()
        assert fake.started == ["alice", "bob", "alice"]  # ten TELLs, one more run, after bob's

    asyncio.run(scenario())


def test_the_cap_is_an_option_and_the_queue_is_bounded() -> None:
    async def scenario() -> None:
        fake = Retrains()
        queue = RetrainQueue(fake.run, max_running=2, max_queued=3)
        outcomes = [queue.request(f"user{n}") for n in range(7)]
        assert outcomes == [Scheduled.STARTED] * 2 + [Scheduled.QUEUED] * 3 + [Scheduled.FULL] * 2
        await settle()
        assert (queue.running, queue.queued, fake.most) == (2, 3, 2)
        await fake.release(0)
        assert queue.request("user5") is Scheduled.QUEUED  # a place came free: asked again, taken
        for index in range(1, 6):
            await fake.release(index)
        await settle()
        assert sorted(fake.started) == sorted(f"user{n}" for n in range(6))
        assert fake.most == 2

    asyncio.run(scenario())


def test_shutdown_waits_for_the_running_and_starts_none_of_the_waiting() -> None:
    async def scenario() -> None:
        fake = Retrains()
        queue = RetrainQueue(fake.run)
        for name in ("a", "b", "c"):
            queue.request(name)
        await settle()
        stopping = asyncio.create_task(queue.idle())
        await settle()
        assert not stopping.done()
        await fake.release(0)
        assert await stopping == 2
        assert fake.started == ["a"]
        assert queue.request("d") is Scheduled.FULL

    asyncio.run(scenario())


def test_bounds_below_one_are_refused() -> None:
    with pytest.raises(ValueError):
        RetrainQueue(Retrains().run, max_running=0)
