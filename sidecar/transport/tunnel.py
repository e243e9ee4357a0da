"""A client connection after `Upgrade` (WebSocket): bytes pass through both ways, untouched.

A link of `DownstreamConnection`'s chain (see client_base.py). The client's bytes sent after
the Upgrade request are held until the upstream answers 101; then both connections are
joined and the exchange is over as far as HTTP is concerned.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING

from ..core.exchange import Exchange
from . import hop_telemetry
from .client_base import ClientConnectionBase

if TYPE_CHECKING:
    from .upstream import UpstreamConnection

IDLE = 0  # the deadline's idle state (see failures.py)
UPSTREAM_CONNECTING = 1  # a reason to stop reading from the client (see downstream.py)


class Tunnelling(ClientConnectionBase):
    def _upgrade_requested(self, rest: bytes) -> None:
        # Everything after an Upgrade request is the new protocol's: hold it until the 101.
        if self.exchange is not None and self.exchange.route is not None:
            self.tunnel_buf = [rest] if rest else []
        else:
            self.transport.close()  # type: ignore[union-attr]

    def response_upgrade(self, rest: bytes) -> None:
        ex = self.exchange
        assert ex is not None and ex.upstream is not None
        up = ex.upstream
        up.become_tunnel(self)
        self.start_tunnel(ex, up, rest)

    def start_tunnel(self, ex: Exchange, up: UpstreamConnection, rest: bytes) -> None:
        """The upstream switched protocols: from now on, bytes pass through untouched."""
        self.tunnel = up
        if rest:
            self.wbuf.append(rest)
        pending = self.tunnel_buf or []
        self.tunnel_buf = None
        if pending:
            up.write(b"".join(pending))
        self.unblock_reading(UPSTREAM_CONNECTING)
        ex.settle(monotonic() - ex.start, True)
        if ex.span is not None or self.listener.state.access_log is not None:
            hop_telemetry.report(self, ex, monotonic() - ex.start)  # type: ignore[arg-type]
        self.exchange = None
        self.timer = IDLE
        self.deadline = 0.0  # a tunnel has no idle limit of ours; the endpoints' own apply

    def tunnel_write(self, data: bytes) -> None:
        # Through wbuf, like a response: after the 101 and anything queued before it.
        if not self.closed:
            self.wbuf.append(data)
            self.flush()

    def tunnel_closed(self) -> None:
        self.send_queued()
        if self.transport is not None:
            self.transport.close()
