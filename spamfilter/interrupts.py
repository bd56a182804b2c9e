"""Ctrl-C (SIGINT) and SIGTERM during a batch command: stop soon, never in the middle of writing.

The one owner of these signals in the batch commands (``filter``, ``adapt``); the service installs
its own on its event loop (``service/server.py``), and ``train`` keeps Python's default (its state
is saved after each epoch).

Python's default turns Ctrl-C into a ``KeyboardInterrupt`` at whatever line is running, which can
cut a message in half on its way out or drop messages that were read but not yet written. While
``stop_on_signals()`` is active (the CLI's ``filter`` and ``adapt``), a signal only records a stop
request; the loops look at it between chunks (filter) or steps (adapt). Inside ``interruptible()``
(a model call, the only step that can take long, or adapt's phases before its first step) it
raises ``Interrupted`` at once; ``stop_between_steps()`` ends that early, once a loop has progress
to save. Without ``stop_on_signals()`` (library use) these helpers do nothing and Python's default
applies.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

from .errors import signal_exit_code

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A stop signal arrived during a model call. A BaseException, as ``KeyboardInterrupt``, so
    that handlers for ordinary errors do not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    active = False  # stop_on_signals() installed its handlers
    inside_model_call = False
    requested: int | None = None  # the signal number of the first stop request


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _State.requested is None:
        _State.requested = signum
    if _State.inside_model_call:
        _State.inside_model_call = False  # raise once
        raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into stop requests for the duration (main thread only)."""
    try:
        previous = {signum: signal.signal(signum, _on_signal) for signum in SIGNALS}
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    _State.active, _State.requested = True, None
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _State.active, _State.inside_model_call = False, False


def requested() -> int | None:
    """The signal number of a pending stop request, or None."""
    return _State.requested if _State.active else None


def raise_if_requested() -> None:
    signum = requested()
    if signum is not None:
        raise Interrupted(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """A section a stop signal may cut short (raising ``Interrupted``); a request made before it
    starts is raised at once."""
    raise_if_requested()
    _State.inside_model_call = _State.active
    try:
        yield
    finally:
        _State.inside_model_call = False


def stop_between_steps() -> None:
    """Inside ``interruptible()``: from now on a stop signal is only recorded, for the loop to stop
    (and save what it reached) at its next step (``requested``)."""
    _State.inside_model_call = False


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number."""
    return signal_exit_code(signum)
