"""Upstream writes wait for the end of the loop's tick and then go out together: one
write per connection, in order; a close sends what is queued, an abort drops it."""

from __future__ import annotations

import asyncio
from typing import Any

from sidecar.config.model import Config
from sidecar.transport.pool import Pool
from sidecar.transport.upstream import UpstreamConnection


class Recording:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def connection(pool: Pool) -> tuple[UpstreamConnection, Recording]:
    conn, transport = UpstreamConnection(pool), Recording()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def test_writes_of_one_tick_go_out_at_its_end_one_per_connection_in_order() -> None:
    pool = Pool(("127.0.0.1", 8080), Config().upstream, asyncio.get_running_loop())
    (a, ta), (b, tb) = connection(pool), connection(pool)
    a.write(b"GET /1 HTTP/1.1\r\n\r\n")
    b.write(b"GET /2 HTTP/1.1\r\n\r\n")
    a.write(b"body")
    assert ta.writes == tb.writes == []  # not before the tick ends
    await asyncio.sleep(0)
    assert ta.writes == [b"GET /1 HTTP/1.1\r\n\r\nbody"]
    assert tb.writes == [b"GET /2 HTTP/1.1\r\n\r\n"]
    a.write(b"more")  # a later tick: a batch of its own
    await asyncio.sleep(0)
    assert ta.writes[-1] == b"more" and len(ta.writes) == 2


async def test_close_sends_what_is_queued_and_abort_drops_it() -> None:
    pool = Pool(("127.0.0.1", 8080), Config().upstream, asyncio.get_running_loop())
    (a, ta), (b, tb) = connection(pool), connection(pool)
    a.write(b"last words")
    b.write(b"never sent")
    a.close()
    b.abort()
    assert ta.writes == [b"last words"] and ta.closed
    await asyncio.sleep(0)
    assert tb.writes == [] and tb.aborted
