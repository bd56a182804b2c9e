"""What the service tells its operator: log lines (stderr, optionally syslog), Prometheus metrics
and a health endpoint. Nothing here ever sees a message's content: a log line names the command,
the peer, the verdict, the size and the time."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..errors import UsageError
from .limits import FIRST_LINE_SECONDS, Pending
from .peers import peer_key

LOGGER_NAME = "spamfilter.serve"
_MAX_HTTP_HEAD = 8192
# Connections to the metrics listener still waiting for their request (a scraper sends it at once):
# beyond these the oldest is closed, so that idle ones cannot use up the process's descriptors.
HTTP_WAITING = 32
HTTP_WAITING_PER_PEER = 16


def setup_logging(syslog_address: str | None = None) -> logging.Logger:
    """Lines on stderr; with ``syslog_address`` (a unix socket such as /dev/log, or HOST:PORT for
    UDP) also to syslog, facility mail, as spamd logs."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s spamfilter serve[%(process)d]: %(message)s"))
    logger.addHandler(console)
    if syslog_address:
        host, colon, port = syslog_address.rpartition(":")
        address: str | tuple[str, int] = (host, int(port)) if colon and port.isdigit() else syslog_address
        if isinstance(address, str) and not os.path.exists(address):
            raise UsageError(f"--syslog {address}: no such socket (is a syslog daemon running?)")
        syslog = _QuietSysLogHandler(address, logging.handlers.SysLogHandler.LOG_MAIL)
        syslog.setFormatter(logging.Formatter("spamfilter[%(process)d]: %(message)s"))
        logger.addHandler(syslog)
    return logger


class _QuietSysLogHandler(logging.handlers.SysLogHandler):
    """A syslog that goes away (restarted, full) costs one line on stderr, not a traceback per
    record; the handler reconnects by itself when it comes back."""

    _said = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if not self._said:
            self._said = True
            sys.stderr.write("spamfilter serve: syslog unreachable; logging on stderr only\n")


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series would only double the output
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "spamfilter_requests",
            "Requests by spamd command and outcome (ok, error, refused, timeout).",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.verdicts = Counter(
            "spamfilter_verdicts", "Classified messages by verdict.", ["verdict"], registry=self.registry
        )
        self.latency = Histogram(
            "spamfilter_request_seconds",
            "Time from a request's first byte to its reply.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "spamfilter_batch_size",
            "Messages per model call (micro-batch).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "spamfilter_batch_seconds",
            "Time the model took per micro-batch (text extraction included).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.windows = Counter(
            "spamfilter_windows",
            "Model windows scored: a message longer than the model's window is read in several.",
            registry=self.registry,
        )
        self.connections = Gauge("spamfilter_connections", "Open client connections.", registry=self.registry)
        self.reloads = Counter(
            "spamfilter_reloads", "Model reloads (SIGHUP) by outcome.", ["outcome"], registry=self.registry
        )
        self.model = Info("spamfilter_model", "The model being served.", registry=self.registry)
        self.user_heads = Gauge(
            "spamfilter_user_heads_loaded",
            "Users whose head (or its absence) is held in memory (at most --max-loaded-heads).",
            registry=self.registry,
        )
        self.user_retrains = Histogram(
            "spamfilter_user_retrain_seconds",
            "Time a user's head took to retrain after their TELL.",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
            registry=self.registry,
        )
        self.user_retrains_running = Gauge(
            "spamfilter_user_retrains_running",
            "User-head retrains running now (at most max_retrains).",
            registry=self.registry,
        )
        self.user_retrains_waiting = Gauge(
            "spamfilter_user_retrains_waiting",
            "Users waiting for a head retrain (each at most once; at most retrain_queue).",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class Tally:
    """Counts for the summary log line (``--log-interval``)."""

    requests: int = 0
    spam: int = 0
    errors: int = 0
    seconds: float = 0.0
    since: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        mean = 1000 * self.seconds / self.requests if self.requests else 0.0
        span = time.monotonic() - self.since
        return (
            f"{self.requests} requests in the last {span:.0f} s: {self.spam} spam, {self.errors} errors, "
            f"mean {mean:.1f} ms"
        )


class HttpEndpoint:
    """``GET /metrics`` (Prometheus text format) and ``GET /health`` (JSON, 200 while a model is
    loaded) on their own listener: a minimal HTTP/1.0 server, one request per connection. A peer
    that ``refused(peer)`` (outside --allow) is disconnected before a byte is read."""

    def __init__(
        self,
        metrics: Metrics,
        health: dict[str, str],
        timeout: float,
        refused: Callable[[object], bool] = lambda _peer: False,
    ) -> None:
        self.metrics = metrics
        self.health = health  # updated in place by the service (model, variant, provider)
        self.timeout = timeout
        self.refused = refused
        self.waiting = Pending(HTTP_WAITING, HTTP_WAITING_PER_PEER)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if self.refused(peer):
            writer.transport.abort()
            return
        token, _closed = self.waiting.add(peer_key(peer, writer.get_extra_info("socket")), writer.transport)
        try:
            try:
                read = reader.readuntil(b"\r\n\r\n")
                head = await asyncio.wait_for(read, min(self.timeout, FIRST_LINE_SECONDS))
            finally:
                self.waiting.discard(token)
            method, _, rest = head.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                status, kind, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                status, kind, body = "200 OK", CONTENT_TYPE_LATEST, self.metrics.exposition()
            elif path in ("/health", "/healthz"):
                status, kind = "200 OK", "application/json"
                body = (json.dumps({"status": "ok", **self.health}) + "\n").encode()
            else:
                status, kind, body = "404 Not Found", "text/plain", b"try /metrics or /health\n"
            header = (
                f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode("latin-1")
            writer.write(header if method == "HEAD" else header + body)
            await asyncio.wait_for(writer.drain(), self.timeout)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
