"""TLS for spamd connections that keeps a half-closed connection writable.

spamc -S sends its request and then shuts down its sending side, as it does in the clear, and
waits for the reply. asyncio's own TLS transport closes the whole connection when the peer's
side ends, so the reply could never be sent. Here the TLS layer runs on ``ssl.MemoryBIO``s over
a plain transport: the end of the client's data reaches the reader as end-of-file, and the
reply still goes out, followed by TLS's close_notify.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any

Handler = Callable[[asyncio.StreamReader, "TlsWriter"], None]
_CHUNK = 65536


class TlsWriter:
    """The part of ``asyncio.StreamWriter`` that the service uses, over the TLS layer."""

    def __init__(self, transport: asyncio.Transport, tls: ssl.SSLObject, outgoing: ssl.MemoryBIO) -> None:
        self.transport = transport
        self._tls = tls
        self._outgoing = outgoing
        self.handshaken = asyncio.Event()  # nothing can be written before it

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._tls.write(view[:_CHUNK])
            view = view[written:]
            self.flush()

    def flush(self) -> None:
        pending = self._outgoing.read()
        if pending and not self.transport.is_closing():
            self.transport.write(pending)

    async def drain(self) -> None:
        # The transport buffers what it cannot send yet; wait until it has taken it all.
        while self.transport.get_write_buffer_size() and not self.transport.is_closing():
            await asyncio.sleep(0.01)

    def can_write_eof(self) -> bool:
        return self.handshaken.is_set()

    def write_eof(self) -> None:
        """TLS's end of data: close_notify. The client may still send (its own close_notify), and
        a client that reads until the end (aiospamc) gets it at once."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self._tls.unwrap()
        self.flush()

    def close(self) -> None:
        if self.transport.is_closing():
            return
        with contextlib.suppress(ssl.SSLError, ValueError):
            self._tls.unwrap()  # close_notify
        self.flush()
        self.transport.close()


class TlsServerProtocol(asyncio.Protocol):
    """One TLS connection: handshake and decryption into a ``StreamReader``; ``handler(reader,
    writer)`` is called at once on connection (before a byte is read, so that the allow-list is
    checked first), and reads whatever arrives after the handshake."""

    def __init__(self, context: ssl.SSLContext, handler: Handler, limit: int) -> None:
        self._context = context
        self._handler = handler
        self._reader = asyncio.StreamReader(limit=limit)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._writer: TlsWriter | None = None
        self._handshaken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._writer = TlsWriter(transport, self._tls, self._outgoing)
        self._reader.set_transport(transport)
        self._handler(self._reader, self._writer)

    def data_received(self, data: bytes) -> None:
        assert self._writer is not None
        self._incoming.write(data)
        try:
            if not self._handshaken:
                self._tls.do_handshake()
                self._handshaken = True
                self._writer.handshaken.set()
            while True:
                chunk = self._tls.read(_CHUNK)
                if not chunk:
                    self._reader.feed_eof()
                    break
                self._reader.feed_data(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:  # the client's close_notify
            self._reader.feed_eof()
        except ValueError:  # data after our close_notify (unwrap done): nothing more is read
            self._reader.feed_eof()
        except ssl.SSLError as error:
            self._reader.set_exception(ConnectionResetError(f"TLS: {error.reason or error}"))
            self._writer.flush()  # the alert, if any
            self._writer.transport.close()
            return
        self._writer.flush()  # handshake replies

    def eof_received(self) -> bool:
        self._reader.feed_eof()
        return True  # keep the connection open: the reply still has to go out

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._reader.set_exception(exc)
        else:
            self._reader.feed_eof()


async def start_tls_server(
    handler: Handler, host: str, port: int, context: ssl.SSLContext, limit: int, start_serving: bool = False
) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: TlsServerProtocol(context, handler, limit), host, port, start_serving=start_serving
    )
