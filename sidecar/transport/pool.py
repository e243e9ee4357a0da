"""Keep-alive connections to one endpoint: LIFO reuse, bounded, connected on demand.

LIFO keeps the hottest connections busy and lets the rest age out (Envoy and
linkerd do the same). At the connection limit, requests wait in a short queue
and take the next connection released.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import TYPE_CHECKING, cast

from ..config.model import Upstream
from ..core.errors import ErrorCode
from .tick import TickWrites
from .upstream import UpstreamConnection

if TYPE_CHECKING:
    from ..core.exchange import Exchange
    from .client_tls import ClientTls


class Pool:
    def __init__(self, address: tuple[str, int], settings: Upstream,
                 loop: asyncio.AbstractEventLoop, tls: ClientTls | None = None) -> None:
        self.address = address
        self.settings = settings
        self.loop = loop
        self.tls = tls  # mTLS to a peer sidecar whose SPIFFE ID is checked
        self.idle: list[UpstreamConnection] = []
        self.busy = 0  # attached to an exchange, or being connected for one
        self.waiting: deque[Exchange] = deque()
        self.closed = False
        self.connect_errors = 0
        self.overflows = 0  # requests refused: too many waiting for a connection
        self._tasks: set[asyncio.Task[None]] = set()
        self.writes = TickWrites(loop)  # upstream bytes for the end of this tick

    def send(self, ex: Exchange) -> None:
        """Send `ex`'s request on an idle connection, a new one, or the next released."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                self.busy += 1
                conn.reused = True
                conn.attach(ex)
                return
        if self.busy >= self.settings.max_connections_per_endpoint:
            if len(self.waiting) >= self.settings.max_pending_per_endpoint:
                self.overflows += 1
                ex.downstream.upstream_failed(
                    ex, ErrorCode.UPSTREAM_OVERFLOW,
                    f"{len(self.waiting)} requests already waiting for a connection to "
                    f"{self.address[0]}:{self.address[1]}")
                return
            self.waiting.append(ex)
            return
        self.connect(ex)

    def connect(self, ex: Exchange) -> None:
        self.busy += 1
        task = self.loop.create_task(self._connect(ex))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, ex: Exchange) -> None:
        host, port = self.address
        tls = self.tls
        conn = UpstreamConnection(self)
        protocol = cast(asyncio.Protocol, conn)  # one by its methods
        try:
            if tls is None:
                connecting = self.loop.create_connection(lambda: protocol, host, port)
            else:
                connecting = self.loop.create_connection(
                    lambda: protocol, host, port, ssl=tls.context(),
                    server_hostname="")  # no SNI, no host check: the SPIFFE ID is checked
            transport, _ = await asyncio.wait_for(connecting, self.settings.connect_timeout)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            self.busy -= 1
            self.connect_errors += 1
            if isinstance(exc, TimeoutError):
                reason = "timed out"
            elif isinstance(exc, ssl.SSLError):
                reason = f"TLS handshake failed: {exc.reason or exc}"
            else:
                reason = exc.strerror or str(exc)
            ex.downstream.upstream_failed(ex, ErrorCode.UPSTREAM_CONNECT_FAILED,
                                          f"cannot connect to {host}:{port}: {reason}")
            return
        if tls is not None:
            why = tls.mismatch(transport)
            if why is not None:
                self.busy -= 1
                self.connect_errors += 1
                conn.close()
                ex.downstream.upstream_failed(ex, ErrorCode.UPSTREAM_IDENTITY_MISMATCH,
                                              f"{host}:{port}: {why}")
                return
        if ex.downstream.abandoned(ex):  # the client left while we connected
            self.release(conn, True)
            return
        conn.attach(ex)

    def _next_waiting(self) -> Exchange | None:
        """The oldest queued exchange whose client is still there."""
        while self.waiting:
            ex = self.waiting.popleft()
            if not ex.downstream.abandoned(ex):
                return ex
        return None

    def release(self, conn: UpstreamConnection, clean: bool) -> None:
        """`conn` finished its exchange; `clean` when the whole request was sent."""
        self.busy -= 1
        if not (clean and conn.reusable) or conn.closed or self.closed:
            conn.close()
            waiting = self._next_waiting() if self.waiting else None
            if waiting is not None:
                self.connect(waiting)
            return
        waiting = self._next_waiting() if self.waiting else None
        if waiting is not None:
            self.busy += 1
            conn.reused = True
            conn.attach(waiting)
            return
        if len(self.idle) >= self.settings.max_idle_per_endpoint:
            conn.close()
            return
        conn.idle_since = 0.0  # stamped by the next sweep: no clock read per request
        self.idle.append(conn)

    def lost(self, conn: UpstreamConnection) -> None:
        """`conn` closed; an idle one leaves the stack (busy ones are counted by their owner)."""
        if conn.exchange is None and conn in self.idle:
            self.idle.remove(conn)

    def sweep(self, now: float) -> None:
        """Close connections idle too long: the oldest are at the bottom of the stack."""
        idle = self.idle
        for conn in reversed(idle):  # the newly idle are on top; stop at the first stamped
            if conn.idle_since:
                break
            conn.idle_since = now
        limit = now - self.settings.idle_timeout
        while idle and idle[0].idle_since < limit:
            idle.pop(0).close()

    def close(self) -> None:
        self.closed = True
        for conn in self.idle:
            conn.close()
        self.idle.clear()
