"""Micro-batching: messages that arrive together are classified together.

Each connection hands its message to ``MicroBatcher.tag`` and awaits the result. One task collects
what is waiting (up to ``max_batch`` messages, waiting at most ``max_wait`` seconds for more once
the first has come) and runs the whole batch on one worker thread, off the event loop: text
extraction, then ``Scorer.spam_probability`` (the library's one batching path, which sorts the
texts by length and pads each ONNX batch only to its longest). While a batch runs, the next one
gathers, so a busy server runs full batches and an idle one answers a lone message at once.

One model is in memory however many clients there are; ``swap`` replaces it between batches
(SIGHUP's reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import first_line
from ..pipeline import Scorer, Tagged, explanation_for, message_text, tagged_message
from ..user_heads import UserHead

if TYPE_CHECKING:
    from ..explain import Explanation
from ..verdict import Decision

BatchObserver = Callable[[int, float, int], None]  # (messages in the batch, seconds the model took, windows)


@dataclass(frozen=True)
class Explained(Tagged):
    """A tagged message and, where the decision explains its verdict, the explanation (for
    REPORT's body and the milter's Report field)."""

    explanation: Explanation | None = None


# A user's head (or None: the shared model's verdict); called on the worker thread.
HeadOf = Callable[[str], "UserHead | None"]


@dataclass
class _Waiting:
    raw: bytes
    result: asyncio.Future[Tagged]
    user: str = ""
    explain: bool = True  # False: the reply shows no explanation, so none is computed


# An explanation that has not started this long after its verdict is left out: the reply goes
# with the verdict alone. The explanation thread runs one at a time, first come first served, so a
# client sending many spam with --explain made every other client's reply wait behind all of them
# (21 s behind 24 on the test model; long enough for spamc's and Exim's timeouts to pass the mail
# untagged). Now a reply waits at most about this long plus two explanations' time.
EXPLANATION_START_WAIT = 5.0


@dataclass(frozen=True)
class _ToExplain:
    """A classified message whose verdict the decision explains: tagged once explained."""

    raw: bytes
    text: str
    probability: float
    decision: Decision
    user: str | None = None  # whose memory of corrected mail counted besides the shared one
    ready: float = field(default_factory=time.monotonic)  # when its verdict was known


def _deliver(result: asyncio.Future[Tagged], raw: bytes, done: asyncio.Future[Tagged]) -> None:
    """The explained message to its caller; should tagging it fail, the message unchanged."""
    if result.done():
        return
    error = None if done.cancelled() else done.exception()
    if done.cancelled() or error is not None:
        reason = first_line(error) if error is not None else "cancelled"
        result.set_result(Tagged(raw, error=f"model error: {reason}"[:300]))
    else:
        result.set_result(done.result())


class MicroBatcher:
    def __init__(
        self,
        scorer: Scorer | None,
        max_batch: int,
        max_wait: float,
        decision: Decision | None = None,
        on_batch: BatchObserver | None = None,
        head_of: HeadOf | None = None,
    ) -> None:
        self.scorer = scorer
        self.head_of = head_of  # per-user heads (service/learning.py); None: every verdict shared
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.decision = decision or Decision()  # bound to each batch's model in _run
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        # One thread: batches run one after another, and onnxruntime uses the cores inside each.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spamfilter-model")
        # Explanations (tens of classifications each) on a thread of their own, after the verdict:
        # no message waits for another's explanation, only for its own.
        self._explainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spamfilter-explain")
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.explanations_skipped = 0  # left out: not started within EXPLANATION_START_WAIT
        self.on_explanation_skipped: Callable[[], None] | None = None  # called on the event loop

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._collect(), name="micro-batcher")

    async def stop(self) -> None:
        """After the last request has been answered: end the collecting task and the worker."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._worker.shutdown(wait=True)
        self._explainer.shutdown(wait=True)

    def swap(self, scorer: Scorer) -> None:
        """Use another model from the next batch on (the running batch keeps the one it has)."""
        self.scorer = scorer

    async def tag(self, raw: bytes, user: str = "", explain: bool = True) -> Tagged:
        """The message tagged as ``filter --format email`` tags it (by ``user``'s head where that
        user has one); on a model error it comes back unchanged with ``error`` set. Raises nothing
        of the model's. ``explain=False`` for a reply that shows no explanation (spamd's CHECK and
        SYMBOLS): an explanation costs tens of classifications, and a client must not be able to
        make the model worker spend that on answers that throw it away."""
        result: asyncio.Future[Tagged] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Waiting(raw, result, user, explain))
        return await result

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            batch = [waiting for waiting in batch if not waiting.result.done()]  # callers gone
            if not batch:
                continue
            scorer = self.scorer
            assert scorer is not None, "the batcher starts once a model is loaded"
            outcomes = await loop.run_in_executor(
                self._worker,
                self._run,
                scorer,
                [waiting.raw for waiting in batch],
                [w.user for w in batch],
                [w.explain for w in batch],
            )
            for waiting, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, _ToExplain):
                    done = loop.run_in_executor(self._explainer, self._explained, scorer, outcome)
                    done.add_done_callback(functools.partial(_deliver, waiting.result, waiting.raw))
                elif not waiting.result.done():
                    waiting.result.set_result(outcome)

    def _run(
        self,
        scorer: Scorer,
        raws: list[bytes],
        users: list[str] | None = None,
        explains: list[bool] | None = None,
    ) -> list[Tagged | _ToExplain]:
        """On the worker thread: never raises; a failed batch comes back untagged, with the reason.
        A verdict to explain comes back as what its explanation needs (``_explained`` then)."""
        started = time.perf_counter()
        windows_before = getattr(scorer, "windows_scored", 0)  # a Classifier counts its windows
        try:
            decision = self.decision.for_model(scorer.threshold)
            texts = [message_text(raw) for raw in raws]
            found = self._heads(users) if users else [None] * len(raws)
            named: list[str | None] = [user or None for user in users] if users else [None] * len(raws)
            if any(found) or (any(named) and hasattr(scorer, "memory_evidence")):
                # Only a batch with a user head asks the model for its features as well; a user's
                # memory of corrected mail counts for their messages (memory.py).
                probabilities = scorer.spam_probability(  # type: ignore[call-arg]
                    texts, heads=[head.head if head else None for head in found], users=named
                )
            else:
                probabilities = scorer.spam_probability(texts)
            if not np.all(np.isfinite(probabilities)):
                raise ValueError("the model answered a P(spam) that is not a number")
            decisions = [decision.for_model(head.threshold) if head else decision for head in found]
            outcomes: list[Tagged | _ToExplain] = []
            wanted = explains or [True] * len(raws)
            for text, raw, p, chosen, head, explain, user in zip(
                texts, raws, probabilities, decisions, found, wanted, named, strict=True
            ):
                # Explained alone (its phrases never depend on the batch), by the shared model:
                # a message scored by a user's head goes without one.
                if explain and head is None and chosen.explains(chosen.verdict(float(p))):
                    outcomes.append(_ToExplain(raw, text, float(p), chosen, user))
                else:
                    tagged = tagged_message(raw, float(p), chosen)
                    outcomes.append(Explained(tagged.message, tagged.verdict, tagged.error))
        except Exception as error:  # the model failed: every message goes back unchanged
            reason = " ".join(str(error).split()) or type(error).__name__
            outcomes = [Tagged(raw, error=f"model error: {reason}"[:300]) for raw in raws]
        if self.on_batch is not None:
            windows = getattr(scorer, "windows_scored", 0) - windows_before
            self.on_batch(len(raws), time.perf_counter() - started, max(windows, 0))
        return outcomes

    def _explained(self, scorer: Scorer, todo: _ToExplain) -> Tagged:
        """On the explanation thread: never raises (an explanation that fails is left out, as one
        that could not start within ``EXPLANATION_START_WAIT`` of its verdict)."""
        if time.monotonic() - todo.ready > EXPLANATION_START_WAIT:
            explanation = None
            self.explanations_skipped += 1
            if self._loop is not None and self.on_explanation_skipped is not None:
                self._loop.call_soon_threadsafe(self.on_explanation_skipped)
        else:
            explanation = explanation_for(
                scorer, todo.decision, todo.decision.verdict(todo.probability), todo.text, todo.user
            )
        tagged = tagged_message(todo.raw, todo.probability, todo.decision, explanation)
        return Explained(tagged.message, tagged.verdict, tagged.error, explanation)

    def _heads(self, users: list[str]) -> list[UserHead | None]:
        if self.head_of is None or not any(users):
            return [None] * len(users)
        return [self.head_of(user) if user else None for user in users]
