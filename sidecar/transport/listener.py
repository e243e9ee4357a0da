"""A listening socket and its client connections: admission, deadlines, drain.

The listener's `state` (limits, router, counters) is swapped whole on reload;
connections read it per request, so a reload never touches open connections.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from time import monotonic
from typing import Any, cast

from ..config.model import Limits
from ..core.errors import ErrorCode
from ..inbound.policy import Denied
from ..routing.router import Router
from ..telemetry import names
from ..telemetry.metrics import Metrics, RequestStats
from ..telemetry.tracing import Tracer
from .downstream import DownstreamConnection
from .tick import TickWrites
from .tls import TlsGate, TlsServerConnection

log = logging.getLogger("sidecar.listener")

SWEEP_INTERVAL = 0.1  # resolution of every timeout, in seconds
# A policy step that raised: the request is refused rather than let through unchecked.
_FAILED = Denied(ErrorCode.INTERNAL_ERROR, "a policy check failed", [])


@dataclass(frozen=True, slots=True)
class ListenerState:
    direction: str  # "inbound" or "outbound"
    service: str  # the local service (names errors made before routing)
    proto: bytes  # X-Forwarded-Proto for requests arriving here
    limits: Limits
    router: Router
    stats: RequestStats  # requests answered before a route was found
    tracer: Tracer | None = None  # when tracing is on
    access_log: Any = None  # telemetry.access_log.AccessLog, when on


class Listener:
    def __init__(self, name: str, state: ListenerState, metrics: Metrics,
                 loop: asyncio.AbstractEventLoop, tls: TlsGate | None = None) -> None:
        self.name = name
        self.tls = tls  # mTLS (strict or permissive) on this listener
        self.state = state
        self.metrics = metrics
        self.loop = loop
        self.connections: set[DownstreamConnection] = set()
        self.server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None
        self.draining = False
        self.accepted = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._waits: set[asyncio.Task[None]] = set()
        self.writes = TickWrites(loop)  # client bytes for the end of this tick

    async def start(self, address: tuple[str, int]) -> None:
        host, port = address
        self.server = await self.loop.create_server(
            self._protocol, host, port, backlog=2048, reuse_address=True)
        server: Any = self.server  # typeshed says its sockets are a tuple; uvloop's, a list
        sock = server.sockets[0].getsockname()
        self.address = (sock[0], sock[1])
        self._sweeper = self.loop.create_task(self._sweep())
        log.info("listening", extra={"listener": self.name,
                                     "address": f"{self.address[0]}:{self.address[1]}"})

    def wait_for(self, awaitable: Any, then: Any) -> None:
        """Await `awaitable` off the hot path (a policy step that must wait) and hand its
        result to `then`; a failure is logged and answered as a denial would not be: 500."""
        async def run() -> None:
            try:
                result = await awaitable
            except Exception:
                log.exception("a policy step failed")
                result = _FAILED
            then(result)

        task = self.loop.create_task(run())
        self._waits.add(task)
        task.add_done_callback(self._waits.discard)

    def _protocol(self) -> asyncio.Protocol:
        conn = DownstreamConnection(self)
        if self.tls is not None:
            return TlsServerConnection(self.tls, conn)
        # A protocol by its methods: a compiled class cannot also subclass asyncio's.
        return cast(asyncio.Protocol, conn)

    def admit(self, conn: DownstreamConnection) -> bool:
        if self.draining or len(self.connections) >= self.state.limits.max_connections:
            reason = "draining" if self.draining else "max_connections"
            self.metrics.inc(names.CONNECTIONS_REJECTED, listener=self.name, reason=reason)
            assert conn.transport is not None
            conn.closed = True
            conn.transport.abort()
            return False
        self.connections.add(conn)
        self.accepted += 1
        return True

    def forget(self, conn: DownstreamConnection) -> None:
        self.connections.discard(conn)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = monotonic()
            for conn in [c for c in self.connections if c.deadline and c.deadline < now]:
                try:
                    conn.expired(now)
                except Exception:  # a broken invariant in one connection must not stop the rest
                    log.exception("deadline handling failed; closing the connection")
                    conn.abort()

    async def drain(self, deadline: float, grace: float = 1.0) -> None:
        """Stop accepting; let exchanges in flight finish; close everything by `deadline`."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            if conn.exchange is not None:
                conn.exchange.keep_alive = False
        # Idle keep-alive clients get a moment: one that is sending right now gets its
        # answer (with `Connection: close`) instead of a reset.
        grace_end = min(deadline, monotonic() + grace)
        while self.connections and monotonic() < grace_end:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.drain()
        while self.connections and monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
