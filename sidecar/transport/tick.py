"""Bytes that wait for the end of the loop's tick, then go out connection after connection.

Why: on loopback the sender of a write does the receiver's work and wakes it, and waking
an idle peer costs more than the rest of a proxy hop (perf, py-spy on the live sidecar).
The requests and responses of one tick written back to back wake each peer once. The
listener batches its clients' writes, each pool its upstream connections'. A connection
keeps its own bytes, in order, and queues itself once per tick; `send_queued()` writes
them (and a close calls it first, so nothing queued is lost).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["Queued", "TickWrites"]


class Queued(Protocol):
    def send_queued(self) -> None: ...


class TickWrites:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._conns: list[Queued] = []
        self._send = self.send  # bound once: compiled, `self.send` makes a bound method per use

    def add(self, conn: Queued) -> None:
        """`conn` has bytes to send when this tick ends (add it once per tick)."""
        conns = self._conns
        conns.append(conn)
        if len(conns) == 1:
            self.loop.call_soon(self._send)

    def send(self) -> None:
        """The end of the tick: every queued connection writes its bytes."""
        conns, self._conns = self._conns, []
        for conn in conns:
            conn.send_queued()
