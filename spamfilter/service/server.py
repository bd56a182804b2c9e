"""The spamd-protocol daemon: listeners, one request per connection, limits, reload and shutdown.

Every connection gets one request and one reply, as with spamd. The rules that keep a mail flow
safe: a peer outside the allow-list is closed before a byte is read; a request must arrive whole
within ``timeout`` seconds and its reply be taken within as long; at most ``max_connections``
are served at once (more wait, up to ``timeout``, for a slot); bad requests get spamd's error
replies, a model failure gets an error reply (so spamc's safe fallback delivers the mail
untagged); SIGHUP loads the model directory again and swaps it in only if it works; SIGTERM and
SIGINT stop accepting, answer every request already taken, and return.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ..errors import SpamfilterError, first_line
from ..pipeline import EMPTY_MESSAGE, Scorer, Tagged
from . import protocol
from .access import Address, BoundSocket, bind_unix_socket, peer_allowed
from .batcher import MicroBatcher
from .learning import Teaching, UserLearning
from .limits import (
    FIRST_LINE_SECONDS,
    MIN_PENDING,
    PENDING_PER_SLOT,
    Pending,
    Slots,
    peer_key,
)
from .milter import MilterError, Packet, milter_session, read_packet
from .observe import HttpEndpoint, Metrics, Tally
from .settings import ServiceSettings as ServiceSettings  # declared there, light, for the command line
from .tls import TlsWriter, start_tls_server

Writer = asyncio.StreamWriter | TlsWriter

STREAM_LIMIT = 64 * 1024  # longest request line or header line
MILTER_PACKET_FACTOR = 10  # inside a message an MTA sends within 10x --timeout (Postfix: 300 s)
LINGER_SECONDS = 2.0  # how long a refused request's rest is read and dropped before closing
QUIET_SECONDS = 10.0  # a flood's repeated warning: one log line per kind this often
T = TypeVar("T")


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
        total = settings.max_connections
        per_peer = settings.max_per_peer or total - total // 4  # three quarters, leaving room for others
        # Beyond the slots, as many connections again may wait for one (then: 75, try later).
        self._slots = Slots(settings.max_connections, per_peer, waiters=settings.max_connections)
        self._milter_slots = Slots(settings.max_connections, per_peer, waiters=0)
        # Idle connections kept (before the oldest is closed): per peer, and in all.
        pending_per_peer = max(MIN_PENDING, PENDING_PER_SLOT * settings.max_connections)
        self._pending = Pending(2 * pending_per_peer, pending_per_peer)
        self._milter_pending = Pending(2 * pending_per_peer, pending_per_peer)
        self._said: dict[str, tuple[float, int]] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._stop = asyncio.Event()
        self._reloading: asyncio.Task[bool] | None = None
        self._reload_again = False
        self._tally = Tally()
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
            self._say_now(
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
        self._pending.close_all()  # idle connections go now; those with a request get their reply
        self._milter_pending.close_all()
        if self._handlers:
            # Each handler is bounded by the read and write timeouts plus the model's time.
            await asyncio.wait(set(self._handlers))
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
        self._track(self._connection(reader, writer))

    def _accept_milter(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track(self._milter_connection(reader, writer))

    def _track(self, handler: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(handler)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    def _metrics_refused(self, peer: object) -> bool:
        if peer_allowed(peer, self.settings.allow):
            return False
        self._say_now("metrics", f"refused metrics connection from {_peer_text(peer)}: not in --allow")
        return True

    def _refused(self, writer: Writer, command: str) -> str | None:
        """The peer's name, or None after closing a peer outside --allow before a byte is read."""
        peer = writer.get_extra_info("peername")
        if peer_allowed(peer, self.settings.allow):
            return _peer_text(peer)
        self.metrics.requests.labels(command, "refused").inc()
        kind = "milter connection" if command == "MILTER" else "connection"
        self.log.warning("refused %s from %s: not in --allow", kind, _peer_text(peer))
        writer.transport.abort()
        return None

    async def _connection(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        peer_name = self._refused(writer, "")
        if peer_name is None:
            return
        who = peer_key(writer.get_extra_info("peername"), writer.get_extra_info("socket"))
        started = time.perf_counter()
        try:
            line = await self._first(self._pending, who, writer, protocol.read_line(reader))
        except protocol.RequestError as error:  # (line too long, or cut off): spamd's 76
            await self._answer(writer, error.reply(), reader)
            self._record("", "error", peer_name, error.text, started)
            return
        except asyncio.TimeoutError:
            await self._answer(writer, self._timeout_reply(), reader)
            self._record("", "timeout", peer_name, "no request line in time", started)
            return
        except (ConnectionError, OSError):
            line = b""
        if not line or writer.transport.is_closing():
            # Closed before a request: by the client, or as an idle connection (the oldest, or at
            # shutdown, where the line can arrive just as the connection is closed).
            writer.close()
            return
        if not await self._slots.acquire(who, 2 * self.settings.timeout + LINGER_SECONDS):
            if isinstance(writer, TlsWriter):  # nothing can be written before the handshake
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(writer.handshaken.wait(), self.settings.timeout)
            busy = protocol.error_reply(protocol.EX_TEMPFAIL, "Too many connections")
            await self._answer(writer, busy, reader)
            self.metrics.requests.labels("", "busy").inc()
            self.log.warning("too many connections: answered %s with 75 (retry later)", peer_name)
            return
        self.metrics.connections.inc()
        try:
            await self._serve_one(reader, writer, peer_name, line)
        finally:
            self.metrics.connections.dec()
            self._slots.release(who)

    async def _first(self, pending: Pending, who: str, writer: Writer, read: Awaitable[T]) -> T:
        """What ``read`` gives (a request line, a milter packet) within the first-line timeout,
        the connection counted as pending meanwhile (holding no slot, the first closed when too
        many are idle)."""
        token, closed = pending.add(who, writer.transport)
        if closed:
            self._say_now(
                "idle", f"closed {closed} idle connection(s) to make room for one from {who} (no request yet)"
            )
        try:
            return await asyncio.wait_for(read, min(self.settings.timeout, FIRST_LINE_SECONDS))
        finally:
            pending.discard(token)

    def _timeout_reply(self) -> bytes:
        seconds = f"{self.settings.timeout:g}"
        return protocol.error_reply(
            protocol.EX_TIMEOUT, f"Timeout: ({seconds} second socket timeout reading input from client)"
        )

    async def _milter_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """An MTA's milter connection: many messages, until it quits, it idles longer than
        ``MILTER_PACKET_FACTOR`` x --timeout, or the service stops (then after the message being
        classified). At most --max-connections at once (per peer: --max-per-peer); the MTA treats
        a refused connection as it is told by its milter_default_action."""
        peer_name = self._refused(writer, "MILTER")
        if peer_name is None:
            return
        who = peer_key(writer.get_extra_info("peername"), writer.get_extra_info("socket"))
        try:
            first = await self._first(self._milter_pending, who, writer, read_packet(reader))
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
        if not self._milter_slots.try_acquire(who):
            self.metrics.requests.labels("MILTER", "busy").inc()
            self._say_now("milter-busy", f"too many milter connections: closed one from {peer_name}")
            writer.transport.abort()
            return
        self.metrics.connections.inc()
        try:
            await self._milter_session(reader, writer, peer_name, first)
        finally:
            self.metrics.connections.dec()
            self._milter_slots.release(who)

    async def _milter_session(
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
            self._record("MILTER", "ok" if action != "error" else "error", peer_name, detail, started)

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
                self._stop,
                first=first,
                recipients=self.users is not None,
            )
        except (MilterError, asyncio.TimeoutError, ConnectionError, OSError) as error:
            self.metrics.requests.labels("MILTER", "closed").inc()
            self.log.warning("milter connection from %s closed: %s", peer_name, first_line(error) or "idle")
        finally:
            writer.close()

    def _say_now(self, key: str, text: str) -> None:
        """A warning that a flood could repeat thousands of times a second: logged at most every
        ``QUIET_SECONDS`` per kind, with how many were left out."""
        now = time.monotonic()
        last, skipped = self._said.get(key, (-math.inf, 0))
        if now - last < QUIET_SECONDS:
            self._said[key] = (last, skipped + 1)
            return
        self._said[key] = (now, 0)
        more = f" (and {skipped} more like it in the last {now - last:.0f} s)" if skipped else ""
        self.log.warning("%s%s", text, more)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: Writer, peer: str, line: bytes) -> None:
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
                reply, outcome, detail = await self._respond(request, writer)
        except protocol.RequestError as error:
            reply, detail = error.reply(), error.text
        except asyncio.TimeoutError:
            reply = self._timeout_reply()
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
        self._record(command, outcome, peer, detail, started)

    async def _respond(self, request: protocol.Request, writer: Writer) -> tuple[bytes, str, str]:
        """(reply, outcome, log detail) for a request read whole."""
        if request.command == "PING":
            return protocol.ping_reply(), "ok", ""
        if request.command == "SKIP":
            return b"", "ok", ""
        if request.command == "TELL":
            return await self.teaching.tell(request, writer)
        if not request.message.strip():
            error = protocol.unavailable(EMPTY_MESSAGE)
            return error.reply(), "error", error.text
        outcome = await self.batcher.tag(request.message, request.user)
        verdict = outcome.verdict
        if outcome.error is not None or verdict is None:
            error = protocol.unavailable(outcome.error or "not classified")
            return error.reply(), "error", error.text
        self.metrics.verdicts.labels("spam" if verdict.spam else "ham").inc()
        detail = (
            f"{'spam' if verdict.spam else 'clean'} ({verdict.score:.1f}/{verdict.required:.1f}) "
            f"p={verdict.probability:.3f}, {len(request.message)} bytes"
            + (f", user={request.user}" if request.user else "")
        )
        return protocol.check_reply(request, verdict, outcome.message, _report(outcome)), "ok", detail

    async def _answer(self, writer: Writer, reply: bytes, reader: asyncio.StreamReader | None = None) -> bool:
        """Write the reply and close; a client that does not take it in time is dropped. What the
        client still sends (the rest of a refused request) is read and dropped for a moment first:
        closing a socket with unread data resets it, and the reset can destroy the reply. False
        when the reply could not be handed to the kernel (the connection was already gone)."""
        if writer.transport.is_closing():  # aborted meanwhile (the client reset it, or shutdown)
            writer.close()
            return False
        try:
            writer.write(reply)
            await asyncio.wait_for(writer.drain(), self.settings.timeout)
            if writer.can_write_eof():
                writer.write_eof()
            if reader is not None:
                await asyncio.wait_for(_discard(reader), LINGER_SECONDS)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            writer.transport.abort()
            return False
        finally:
            writer.close()
        return True

    def _record(self, command: str, outcome: str, peer: str, detail: str, started: float) -> None:
        seconds = time.perf_counter() - started
        self.metrics.requests.labels(command, outcome).inc()
        self.metrics.latency.observe(seconds)
        self._tally.requests += 1
        self._tally.seconds += seconds
        self._tally.errors += outcome not in ("ok",)
        self._tally.spam += detail.startswith("spam")
        if self.settings.log_interval <= 0:
            what = command or "(no command)"
            said = f": {detail}" if detail else ""
            self.log.info("%s from %s: %s%s in %.1f ms", what, peer, outcome, said, 1000 * seconds)

    def _batch_done(self, size: int, seconds: float, windows: int) -> None:
        # Called on the worker thread: prometheus_client's metrics are thread-safe.
        self.metrics.batch_size.observe(size)
        self.metrics.batch_seconds.observe(seconds)
        self.metrics.windows.inc(windows)

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.settings.log_interval)
            self.log.info(self._tally.line())
            self._tally = Tally()


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


def _bound(server: asyncio.AbstractServer) -> str:
    sockets = getattr(server, "sockets", None) or []
    names = []
    for sock in sockets:
        name = sock.getsockname()
        names.append(f"[{name[0]}]:{name[1]}" if ":" in str(name[0]) else f"{name[0]}:{name[1]}")
    return ", ".join(names)


def _peer_text(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "unix socket"


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
