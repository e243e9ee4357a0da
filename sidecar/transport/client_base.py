"""What the parts of a client connection share: its state, and the operations one part
calls on another.

`DownstreamConnection` is one chain of single inheritance, a file per concern:

    ClientConnectionBase ← Tunnelling ← Failures ← Responding ← DownstreamConnection
    (shared state)         (tunnel.py)  (failures.py) (responses.py) (downstream.py)

Single inheritance, not mixins, because the hot path is compiled with mypyc (see
setup.py) and a compiled class has one base. Here: the shared state, the writing and
reading every part does, and the two steps of an exchange that `DownstreamConnection`
defines (declared so that every part can call them, type-checked).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from ..core.exchange import Exchange

if TYPE_CHECKING:
    from .listener import Listener
    from .upstream import UpstreamConnection

__all__ = ["ClientConnectionBase"]


class ClientConnectionBase:
    listener: Listener
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport | None
    exchange: Exchange | None  # the one in flight
    backlog: deque[tuple[int, Any]]  # pipelined requests read ahead of their turn
    wbuf: list[bytes]  # bytes for the client, written once per batch by flush()
    timer: int  # what the deadline guards (IDLE, HEADER, RESPONSE, BODY in failures.py)
    deadline: float
    activity: int  # bytes moved since the last deadline check
    failed: bool  # the client sent something unparseable: read no more
    closed: bool
    tunnel: UpstreamConnection | None  # after a 101: the upstream joined to this client
    tunnel_buf: list[bytes] | None  # client bytes sent after an Upgrade, before the 101
    write_queued: bool  # in the listener's writes for the end of this tick
    blocked: int  # reasons reading is paused, one bit each

    # writing and reading: what every part calls ------------------------------------
    def flush(self) -> None:
        """Send `wbuf` at the end of this loop tick (see tick.py)."""
        if self.wbuf and not self.write_queued and not self.closed:
            self.write_queued = True
            self.listener.writes.add(self)

    def send_queued(self) -> None:
        """Send `wbuf` now: the end of the tick, or a close that must not lose it."""
        self.write_queued = False
        wbuf = self.wbuf
        if wbuf and not self.closed:
            data = wbuf[0] if len(wbuf) == 1 else b"".join(wbuf)
            wbuf.clear()
            self.transport.write(data)  # type: ignore[union-attr]

    def close_after_flush(self) -> None:
        self.send_queued()
        self.wbuf.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self.wbuf.clear()
        if self.transport is not None:
            self.transport.abort()

    def block_reading(self, reason: int) -> None:
        if not self.blocked and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.blocked |= reason

    def unblock_reading(self, reason: int) -> None:
        if self.blocked & reason:
            self.blocked &= ~reason
            if not self.blocked and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def forward(self, ex: Exchange) -> None:
        raise NotImplementedError

    def _finish(self, ex: Exchange) -> None:
        raise NotImplementedError
