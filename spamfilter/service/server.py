"""The service's life cycle: listeners, reload and shutdown, around its front ends.

The front ends speak the protocols (:mod:`.spamd_front`: one request per connection, as with
spamd; :mod:`.milter_front`: an MTA's milter connections), both through the admission rules of
:mod:`.door` (a peer outside the allow-list is closed before a byte is read, idle connections are
bounded) and the one micro-batcher (:mod:`.batcher`); corrections go to :mod:`.learning`. Here:
every listener is bound before the model loads; SIGHUP loads the model directory again and swaps
it in only if it works; SIGTERM and SIGINT stop accepting, answer every request already taken,
and return.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..errors import SpamfilterError, first_line
from ..pipeline import Scorer
from .access import Address, BoundSocket, bind_unix_socket, peer_allowed
from .batcher import EXPLANATION_START_WAIT, MicroBatcher
from .door import Door, Writer, peer_text
from .learning import Teaching, UserLearning
from .limits import raise_open_files_limit
from .milter_front import MilterFrontEnd
from .observe import HttpEndpoint, Metrics
from .peers import kernel_names_owners
from .settings import ServiceSettings as ServiceSettings  # declared there, light, for the command line
from .spamd_front import SpamdFrontEnd
from .tls import start_tls_server

STREAM_LIMIT = 64 * 1024  # longest request line or header line


class ListenError(SpamfilterError):
    """An address the service cannot listen on (in use, not ours, no such interface)."""


class SpamdService:
    def __init__(
        self,
        settings: ServiceSettings,
        scorer: Scorer | None,
        load: Callable[[], Scorer],
        logger: logging.Logger,
        loaded: Callable[[Scorer], None] | None = None,
    ) -> None:
        """``scorer`` None: ``run`` binds every listener first (a busy port fails before the model's
        seconds of loading), then calls ``load`` and ``loaded(scorer)``, then serves."""
        self.settings = settings
        self.load = load  # loads the model directory again (SIGHUP)
        self.loaded = loaded
        self.log = logger
        self.metrics = Metrics()
        self.users: UserLearning | None = None
        if settings.user_heads is not None:
            self.users = UserLearning(settings.user_heads, settings.user_limits, settings.learn_after, logger)
            self.users.on_trained = lambda _user, seconds: self.metrics.user_retrains.observe(seconds)
            self.metrics.user_heads.set_function(lambda: self.users.loaded if self.users else 0)
            retrains = self.users.retrains
            self.metrics.user_retrains_running.set_function(lambda: retrains.running)
            self.metrics.user_retrains_waiting.set_function(lambda: retrains.queued)
        self.teaching = Teaching(settings, logger, self.users, self._reload_soon)
        self.batcher = MicroBatcher(
            scorer,
            settings.batch_max,
            settings.batch_wait,
            settings.decision,
            self._batch_done,
            self.users.head_of if self.users is not None else None,
        )
        self.health: dict[str, str] = {}
        if scorer is not None:
            self._describe(scorer)
        self._stop = asyncio.Event()
        self.door = Door(settings, self.metrics, logger)
        self.batcher.on_explanation_skipped = lambda: self.door.say_now(
            "explanations-behind",
            "an explanation was left out: the explanation thread is more than "
            f"{EXPLANATION_START_WAIT:.0f} s behind (--explain costs tens of classifications a message)",
        )
        self.spamd = SpamdFrontEnd(settings, self.door, self.batcher, self.teaching, self.metrics, logger)
        self.milter = MilterFrontEnd(
            settings, self.door, self.batcher, self.metrics, logger, self._stop, self.users is not None
        )
        self._handlers: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._reloading: asyncio.Task[bool] | None = None
        self._reload_again = False
        self.bound: list[str] = []  # what each listener really bound (port 0 becomes a port)
        self._listeners: list[tuple[asyncio.AbstractServer, str]] = []  # bound, not yet serving
        self._sockets: list[BoundSocket] = []  # unix sockets this process made: removed at exit
        self._serving = False

    # ----------------------------------------------------------------------- life cycle

    async def run(self, handle_signals: bool = True) -> None:
        """Serve until SIGTERM/SIGINT (or ``stop()``), then finish what is in flight. Signals can
        only be handled on the main thread: elsewhere pass ``handle_signals=False``."""
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_exception)
        before, after = raise_open_files_limit()  # a connection is a file descriptor
        if after != before:
            self.log.info("open files: %d allowed (raised from %d)", after, before)
        try:
            if handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(signum, self.stop, signum)
                loop.add_signal_handler(signal.SIGHUP, self._reload_soon)
            for address in self.settings.listen:
                await self._listen(address)
            for address in self.settings.milter:
                await self._listen(address, milter=True)
            if self.settings.metrics is not None:
                await self._listen_http(self.settings.metrics)
            if self.users is not None:
                await loop.run_in_executor(None, self.users.load)
            if self.batcher.scorer is None:
                scorer = await loop.run_in_executor(None, self.load)
                self.batcher.swap(scorer)
                self._describe(scorer)
                if self.loaded is not None:
                    self.loaded(scorer)
            if self._stop.is_set():  # stopped while the model loaded
                return
            why = kernel_names_owners()
            self.teaching.owners_named = self.door.owners_named = why is None
            if why is not None:  # e.g. a unit's RestrictAddressFamilies without AF_NETLINK
                self.log.warning(
                    "cannot ask the kernel who owns a local TCP connection (sock_diag: %s): every "
                    "loopback client counts as one peer, and a TELL for a user's head over "
                    "loopback TCP is refused (use the unix socket and --tell-users)",
                    why,
                )
            self.batcher.start()
            for server, where in self._listeners:
                await server.start_serving()
                self.log.info("%s", where)
            self._serving = True
            summary = loop.create_task(self._summaries()) if self.settings.log_interval > 0 else None
            await self._stop.wait()
            if summary is not None:
                summary.cancel()
        finally:
            await self._shut_down()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Out of file descriptors (or memory for sockets), asyncio stops accepting for a second
        and says so with a traceback each time: here one line now and then instead."""
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in (
            errno.EMFILE,
            errno.ENFILE,
            errno.ENOBUFS,
            errno.ENOMEM,
        ):
            self.door.say_now(
                "accept", f"cannot accept connections for now: {error.strerror}; retrying every second"
            )
            return
        loop.default_exception_handler(context)

    def stop(self, signum: int | None = None) -> None:
        if not self._stop.is_set():
            name = signal.Signals(signum).name if signum else "stop"
            self.log.info("%s: no new connections; finishing %d in flight", name, len(self._handlers))
        self._stop.set()

    async def _listen(self, address: Address, milter: bool = False) -> None:
        try:
            await self._bind(address, milter)
        except OSError as error:
            raise ListenError(f"cannot listen on {address}: {error.strerror or error}") from None

    async def _listen_http(self, address: Address) -> None:
        endpoint = HttpEndpoint(self.metrics, self.health, self.settings.timeout, self._metrics_refused)
        try:
            server = await asyncio.start_server(
                endpoint.handle, address.host, address.port, start_serving=False
            )
        except OSError as error:
            raise ListenError(f"cannot listen on --metrics {address}: {error.strerror or error}") from None
        self._servers.append(server)
        self._listeners.append((server, f"metrics on http://{_bound(server)}/metrics, health on /health"))

    async def _bind(self, address: Address, milter: bool) -> None:
        server: asyncio.AbstractServer
        accept = self._accept_milter if milter else self._accept
        # Bound now, served only once the model is loaded (until then the kernel queues clients).
        if address.path is not None:
            sock, made = bind_unix_socket(address.path, self.settings.socket_mode, self.settings.socket_owner)
            self._sockets.append(made)
            server = await asyncio.start_unix_server(
                accept, sock=sock, limit=STREAM_LIMIT, start_serving=False
            )
        elif milter:  # MTAs speak milter in the clear (on loopback or a unix socket)
            server = await asyncio.start_server(
                accept, address.host, address.port, limit=STREAM_LIMIT, start_serving=False
            )
        elif self.settings.tls is not None:
            server = await start_tls_server(
                self._accept, address.host, address.port, self.settings.tls, STREAM_LIMIT
            )
        else:
            server = await asyncio.start_server(
                self._accept, address.host, address.port, limit=STREAM_LIMIT, start_serving=False
            )
        self._servers.append(server)
        where = _bound(server) if address.path is None else str(address)
        self.bound.append(where)
        tls = " (TLS)" if self.settings.tls is not None and address.path is None and not milter else ""
        protocol_name = "milter" if milter else "spamd"
        self._listeners.append((server, f"listening on {where}{tls} ({protocol_name} protocol)"))

    async def _shut_down(self) -> None:
        for server in self._servers:
            server.close()
        self.spamd.pending.close_all()  # idle connections go now; those with a request get their reply
        self.milter.pending.close_all()
        if self._handlers:
            # Each handler is bounded by the read and write timeouts plus the model's time.
            await asyncio.wait(set(self._handlers))
        self.teaching.stop_waiting()  # a retrain due after --retrain-interval: not started now
        if self._reloading is not None:
            with contextlib.suppress(BaseException):
                await self._reloading
        await self.batcher.stop()
        if self.users is not None:
            await self.users.idle()
            self.users.close()
        for made in self._sockets:  # only the sockets bound here, and only while still ours
            made.remove()
        self.log.info("stopped")

    # ----------------------------------------------------------------------- reload

    def _reload_soon(self) -> None:
        if not self._serving:  # the model is still loading: what it loads is already the newest
            return
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self._reload_until_current())
        else:  # a deploy signalled again while a load runs: load once more after it
            self._reload_again = True

    async def _reload_until_current(self) -> bool:
        loaded = await self.reload()
        while self._reload_again:
            self._reload_again = False
            loaded = await self.reload()
        return loaded

    async def reload(self) -> bool:
        """Load the model directory again; swap it in only if it loads and classifies. One log line."""
        loop = asyncio.get_running_loop()
        try:
            scorer = await loop.run_in_executor(None, self._load_and_check)
        except Exception as error:
            self.metrics.reloads.labels("refused").inc()
            self.log.error("reload refused, still serving the previous model: %s", first_line(error))
            return False
        self.batcher.swap(scorer)
        if self.users is not None:  # heads of the model now loaded (a retrained trunk drops them)
            await loop.run_in_executor(None, self.users.load)
        self._describe(scorer)
        self.metrics.reloads.labels("ok").inc()
        self.log.info("reloaded %s: %s on %s", self.settings.model_name, scorer.variant, scorer.provider)
        return True

    def _load_and_check(self) -> Scorer:
        scorer = self.load()
        probability = float(scorer.spam_probability(["Reload check: is this model able to classify?"])[0])
        if not 0.0 <= probability <= 1.0 or math.isnan(probability):
            raise ValueError(f"the new model answers P(spam) = {probability}")
        return scorer

    def _describe(self, scorer: Scorer) -> None:
        identity = {
            "model": self.settings.model_name,
            "variant": scorer.variant,
            "provider": scorer.provider,
            "threshold": f"{self.settings.decision.for_model(scorer.threshold).cut:.4f}",
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **self.settings.extra_health,
        }
        self.health.clear()
        self.health.update(identity)
        self.metrics.model.info(identity)

    # ----------------------------------------------------------------------- connections

    def _accept(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        """Called for each new spamd connection (a plain callback, so that the task is ours to
        track until shutdown)."""
        self._track(self.spamd.connection(reader, writer))

    def _accept_milter(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track(self.milter.connection(reader, writer))

    def _track(self, handler: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(handler)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    def _metrics_refused(self, peer: object) -> bool:
        if peer_allowed(peer, self.settings.allow):
            return False
        self.door.say_now("metrics", f"refused metrics connection from {peer_text(peer)}: not in --allow")
        return True

    def _batch_done(self, size: int, seconds: float, windows: int) -> None:
        # Called on the worker thread: prometheus_client's metrics are thread-safe.
        self.metrics.batch_size.observe(size)
        self.metrics.batch_seconds.observe(seconds)
        self.metrics.windows.inc(windows)

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.settings.log_interval)
            self.log.info(self.door.summary())


def _bound(server: asyncio.AbstractServer) -> str:
    sockets = getattr(server, "sockets", None) or []
    names = []
    for sock in sockets:
        name = sock.getsockname()
        names.append(f"[{name[0]}]:{name[1]}" if ":" in str(name[0]) else f"{name[0]}:{name[1]}")
    return ", ".join(names)


def serve(
    settings: ServiceSettings,
    scorer: Scorer | None,
    load: Callable[[], Scorer],
    logger: logging.Logger,
    loaded: Callable[[Scorer], None] | None = None,
) -> None:
    """Run the service on a fresh event loop until a stop signal; returns when it has stopped.
    ``scorer`` None: the listeners are bound before ``load`` runs (see ``SpamdService``)."""
    asyncio.run(SpamdService(settings, scorer, load, logger, loaded).run())
