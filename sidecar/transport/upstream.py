"""The client side of a proxied exchange: one keep-alive connection to one endpoint.

An `UpstreamConnection` serves one exchange at a time. It writes the request the
downstream hands it and parses the response with the sans-IO reader, whose sink is
the downstream connection itself: each part of the response goes straight to the
code that frames it for the client. Back-pressure crosses over: a full upstream
write buffer pauses reading from the client, and the client's full buffer pauses
reading from here.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING, Final

from ..protocol.h1 import ProtocolError, ResponseReader

if TYPE_CHECKING:
    from ..core.exchange import Exchange
    from .downstream import DownstreamConnection
    from .pool import Pool

# Final: in compiled code a static, read without a module-dict lookup per clock read.
monotonic: Final = time.monotonic


class UpstreamConnection:
    """An asyncio protocol by its methods (a compiled class has no Python base)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader()
        self.exchange: Exchange | None = None
        self.tunnel: DownstreamConnection | None = None  # once switched to raw bytes
        self.reused = False  # served an exchange before: a stale close may be retried
        self.got_response = False
        self.reusable = True
        self.idle_since = 0.0
        self.closed = False
        self.out: list[bytes] = []  # bytes queued for the end of this loop tick (write())

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
        ex.sent_at = monotonic()
        self.got_response = False
        reader = self.reader
        reader.sink = ex.downstream
        reader.expect(ex.head.method)
        pending = ex.pending
        if pending:
            ex.pending = None
            pending.insert(0, ex.forwarded)
            self.write(b"".join(pending))
            ex.downstream.unblock_reading(1)
        else:
            ex.pending = None
            self.write(ex.forwarded)

    def write(self, data: bytes) -> None:
        """Queue `data` for the end of this loop tick (see tick.py: 15-20% less CPU per
        request at 50 connections, bench/http_keepalive.py)."""
        out = self.out
        out.append(data)
        if len(out) == 1:
            self.pool.writes.add(self)

    def send_queued(self) -> None:
        out = self.out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.tunnel_write(data)
            return
        ex = self.exchange
        if ex is None:  # nothing was asked: an upstream talking out of turn is not reused
            self.abort()
            return
        self.got_response = True
        ds = ex.downstream
        try:
            self.reader.feed(data)
        except ProtocolError as err:
            self.cancel()
            ds.upstream_failed(ex, err.code, err.message)
            return
        ds.flush()

    def finish(self, clean: bool) -> None:
        """The response ended; `clean` when the whole request was sent too."""
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.upstream = None
        self.pool.release(self, clean)

    def become_tunnel(self, peer: DownstreamConnection) -> None:
        """After a 101: raw bytes from now on; the connection leaves the pool."""
        self._detach()
        self.tunnel = peer

    def eof_received(self) -> bool:
        ex = self.exchange
        if ex is not None and self.tunnel is None and self.reader.eof():
            # A body delimited by the close ends here.
            self.reusable = False
            ds = ex.downstream
            ds.response_end()
            ds.flush()
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
        self.out.clear()
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close(self) -> None:
        self.reusable = False
        self.send_queued()
        if self.transport is not None and not self.closed:
            self.transport.close()


__all__ = ["UpstreamConnection"]
