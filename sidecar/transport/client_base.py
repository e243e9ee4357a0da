"""What the parts of a client connection share: its state, and the operations one part
calls on another.

`DownstreamConnection` is one chain of single inheritance, a file per concern:

    ClientConnectionBase ← Tunnelling ← Failures ← Responding ← DownstreamConnection
    (shared state)         (tunnel.py)  (failures.py) (responses.py) (downstream.py)

Single inheritance, not mixins, because the hot path is compiled with mypyc (see
setup.py) and a compiled class has one base. The operations below are defined by
`DownstreamConnection`; declaring them here lets every part call them, type-checked.
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

    def flush(self) -> None:
        raise NotImplementedError

    def send_queued(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def close_after_flush(self) -> None:
        raise NotImplementedError

    def block_reading(self, reason: int) -> None:
        raise NotImplementedError

    def unblock_reading(self, reason: int) -> None:
        raise NotImplementedError

    def forward(self, ex: Exchange) -> None:
        raise NotImplementedError

    def _finish(self, ex: Exchange) -> None:
        raise NotImplementedError
