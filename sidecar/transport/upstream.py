"""The client side of a proxied exchange: one keep-alive connection to one endpoint.

An `UpstreamConnection` serves one exchange at a time. It writes the request the
downstream hands it, parses the response with the sans-IO reader and passes every
event to the downstream connection, which frames it for the client. Back-pressure
crosses over: a full upstream write buffer pauses reading from the client, and the
client's full buffer pauses reading from here.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

from ..protocol.events import Data, EndOfMessage, ResponseHead, Upgraded
from ..protocol.h1 import ProtocolError, ResponseReader

if TYPE_CHECKING:
    from ..core.exchange import Exchange
    from .pool import Pool


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader()
        self.exchange: Exchange | None = None
        self.tunnel: Any = None  # the downstream connection once switched to raw bytes
        self.reused = False  # served an exchange before: a stale close may be retried
        self.got_response = False
        self.reusable = True
        self.idle_since = 0.0
        self.closed = False

    # asyncio protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def attach(self, ex: Exchange) -> None:
        """Start sending `ex`'s request on this connection."""
        assert self.transport is not None and self.exchange is None
        self.exchange = ex
        ex.upstream = self
        self.got_response = False
        self.reader.expect(ex.head.method)
        pending = ex.pending
        if pending:
            ex.pending = None
            pending.insert(0, ex.forwarded)
            self.transport.write(b"".join(pending))
            ex.downstream.unblock_reading(1)
        else:
            ex.pending = None
            self.transport.write(ex.forwarded)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.transport.write(data)
            return
        ex = self.exchange
        if ex is None:  # nothing was asked: an upstream talking out of turn is not reused
            self.abort()
            return
        self.got_response = True
        try:
            events = self.reader.feed(data)
        except ProtocolError as err:
            self.cancel()
            ex.downstream.upstream_failed(ex, err.code, err.message)
            return
        ds = ex.downstream
        for ev in events:
            t = type(ev)
            if t is Data:
                ds.response_data(ex, ev.data)  # type: ignore[union-attr]
            elif t is ResponseHead:
                if not ev.keep_alive:  # type: ignore[union-attr]
                    self.reusable = False
                ds.response_head(ex, ev)
            elif t is EndOfMessage:
                self.exchange = None
                ex.upstream = None
                self.pool.release(self, ex.request_done)
                ds.response_end(ex, ev.trailers)  # type: ignore[union-attr]
            elif t is Upgraded:
                self._detach()  # a tunnel belongs to its client now, not to the pool
                self.tunnel = ds
                ds.start_tunnel(ex, self, ev.rest)  # type: ignore[union-attr]
        ds.flush()

    def eof_received(self) -> bool:
        ex = self.exchange
        if ex is not None and self.tunnel is None:
            for ev in self.reader.eof():  # a body delimited by the close ends here
                self.exchange = None
                ex.upstream = None
                self.reusable = False
                self.pool.release(self, False)
                ex.downstream.response_end(ex, ev.trailers)  # type: ignore[union-attr]
                ex.downstream.flush()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self.pool.lost(self)
        if self.tunnel is not None:
            self.tunnel.tunnel_closed()
            return
        ex = self._detach()
        if ex is not None:
            ex.downstream.upstream_lost(ex, self.reused and not self.got_response)

    def pause_writing(self) -> None:
        peer = self.tunnel or (self.exchange.downstream if self.exchange else None)
        if peer is not None:
            peer.block_reading(2)

    def resume_writing(self) -> None:
        peer = self.tunnel or (self.exchange.downstream if self.exchange else None)
        if peer is not None:
            peer.unblock_reading(2)

    # control ---------------------------------------------------------------------
    def _detach(self) -> Exchange | None:
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.upstream = None
            self.pool.busy -= 1
        return ex

    def cancel(self) -> None:
        """The exchange is over without us (client gone, timeout): never reuse."""
        self._detach()
        self.abort()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()


__all__ = ["UpstreamConnection"]
