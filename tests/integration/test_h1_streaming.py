"""Bodies that stream: 100-continue, incremental relay, back-pressure, large bodies with
flat memory, and either side going away in the middle of a body."""

from __future__ import annotations

import asyncio
import contextlib
import os
import zlib
from pathlib import Path

import pytest

from .rawclient import ConnectionClosed, RawClient
from .support import sidecar_config
from .upstream import UpstreamConn, continue_then_serve, echo_reply

# -- Expect: 100-continue -------------------------------------------------------------


async def test_expect_100_continue_is_relayed_from_the_upstream(upstreams, sidecar, clients):
    gate = asyncio.Event()

    async def handler(conn: UpstreamConn) -> None:
        req = await conn.read_head()
        assert req is not None and req.header("expect") == "100-continue"
        await gate.wait()
        await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        await conn.read_body(req)
        await echo_reply(req, conn).write(conn)

    app = await upstreams.raw(handler, name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)
    body = os.urandom(5000)

    await c.send(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 5000\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    await app.wait_requests(1)
    # Until the upstream says so, the client hears nothing: the 100 is relayed, not invented.
    assert await c.is_open_after(0.2)
    gate.set()
    interim = await c.read_head(timeout=3)
    assert interim.status == 100, interim
    assert app.connections[0].received.endswith(b"\r\n\r\n"), "body went up before 100"
    await c.send(body)
    r = await c.read_response()

    assert r.status == 200, r
    assert app.requests[0].body == body


async def test_expect_100_continue_then_next_request_on_same_connection(upstreams, sidecar,
                                                                        clients):
    app = await upstreams.raw(continue_then_serve(), name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    for i in range(2):
        await c.send(b"POST /u%d HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n"
                     b"Expect: 100-continue\r\n\r\n" % i)
        assert (await c.read_head(timeout=3)).status == 100
        await c.send(b"abc")
        r = await c.read_response()
        assert r.status == 200 and r.json()["target"] == f"/u{i}"
    assert [q.body for q in app.requests] == [b"abc", b"abc"]


async def test_final_response_instead_of_100_reaches_the_client(upstreams, sidecar, clients):
    async def refuse(conn: UpstreamConn) -> None:
        req = await conn.read_head()
        assert req is not None
        await conn.send(b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 4\r\n"
                        b"Connection: close\r\n\r\nnope")
        conn.close()

    app = await upstreams.raw(refuse, name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 100000\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    r = await c.read_response(timeout=3)

    assert r.status == 417 and r.body == b"nope"
    assert r.interim == []
    assert not app.requests[0].complete


# -- incremental relay --------------------------------------------------------------------


async def test_response_body_is_relayed_before_it_is_complete(upstreams, sidecar, clients):
    release = asyncio.Event()

    async def handler(conn: UpstreamConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nfirst\r\n")
        await release.wait()
        await conn.send(b"6\r\nsecond\r\n0\r\n\r\n")

    app = await upstreams.raw(handler, name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(b"GET /stream HTTP/1.1\r\nHost: app\r\n\r\n")
    head = await c.read_head(timeout=3)
    assert head.status == 200
    body = c.iter_body(head, timeout=3)
    got = b""
    while len(got) < 5:
        got += await anext(body)
    assert got == b"first"
    release.set()
    async for piece in body:
        got += piece
    assert got == b"firstsecond"


async def test_request_body_is_relayed_before_it_is_complete(upstreams, sidecar, clients):
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(b"POST /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nfirst\r\n")
    await app.wait_until(lambda: b"first" in app.all_received(), "the first chunk upstream")
    await c.send(b"6\r\nsecond\r\n0\r\n\r\n")
    r = await c.read_response()

    assert r.status == 200
    assert app.requests[0].body == b"firstsecond"


# -- back-pressure ------------------------------------------------------------------------

STALL = 1.0  # seconds without progress that count as "the writer is blocked"
BOUND = 64 << 20  # kernel socket buffers on loopback can hold a few MB per hop


async def test_slow_reader_client_pushes_back_on_the_upstream(upstreams, sidecar, clients):
    total = 1 << 30
    result: dict[str, int] = {}

    async def firehose(conn: UpstreamConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"x" * (256 << 10)
        written = 0
        while written < total:
            conn.writer.write(block)
            written += len(block)
            try:
                async with asyncio.timeout(STALL):
                    await conn.writer.drain()
            except TimeoutError:
                break
        result["written"] = written
        conn.server.notify()
        await conn.wait_closed_by_peer()

    app = await upstreams.raw(firehose, name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(b"GET /firehose HTTP/1.1\r\nHost: app\r\n\r\n")
    assert (await c.read_head(timeout=3)).status == 200
    # The client reads nothing more: the upstream must be stalled, not buffered in the sidecar.
    await app.wait_until(lambda: "written" in result, "the upstream to stall", timeout=60)
    assert result["written"] < BOUND, f"{result['written'] >> 20} MB accepted without a reader"
    c.abort()


async def test_slow_reader_upstream_pushes_back_on_the_client(upstreams, sidecar, clients):
    async def sluggard(conn: UpstreamConn) -> None:
        await conn.read_head()
        await asyncio.Event().wait()  # ...and never reads the body (cancelled at teardown)

    app = await upstreams.raw(sluggard, name="app", record=False)
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)
    total = 1 << 30

    c.writer.write(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: %d\r\n\r\n" % total)
    block = b"y" * (256 << 10)
    written = 0
    while written < total:
        c.writer.write(block)
        written += len(block)
        try:
            async with asyncio.timeout(STALL):
                await c.writer.drain()
        except TimeoutError:
            break
    assert written < BOUND, f"{written >> 20} MB accepted while the upstream reads nothing"
    c.abort()


# -- either side going away mid-body --------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_upstream_dying_mid_body_closes_the_client_connection(upstreams, sidecar,
                                                                    clients, framing):
    async def dies(conn: UpstreamConn) -> None:
        await conn.read_request()
        if framing == "chunked":
            await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"400\r\n" + b"z" * 1024 + b"\r\n")
        else:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"z" * 1024)
        conn.close()

    app = await upstreams.raw(dies, name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n")
    head = await c.read_head(timeout=3)
    assert head.status == 200
    got = b""
    # The client must learn the body is truncated: the sidecar closes, it never hangs
    # and never terminates the chunked body as if it were complete.
    with pytest.raises(ConnectionClosed):
        async for piece in c.iter_body(head, timeout=3):
            got += piece
    assert got == b"z" * 1024


async def test_client_leaving_mid_response_releases_the_upstream(upstreams, sidecar, clients):
    async def handler(conn: UpstreamConn) -> None:
        while True:
            req = await conn.read_request()
            if req is None:
                return
            if req.target != "/endless":
                await echo_reply(req, conn).write(conn)
                continue
            await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            while True:
                await conn.send(b"400\r\n" + b"e" * 1024 + b"\r\n")
                if conn._reader.at_eof():
                    return

    app = await upstreams.raw(handler, name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(b"GET /endless HTTP/1.1\r\nHost: app\r\n\r\n")
    head = await c.read_head(timeout=3)
    body = c.iter_body(head, timeout=3)
    await anext(body)
    await body.aclose()
    c.reset()

    async with asyncio.timeout(3):
        await app.connections[0].closed.wait()
    async with await RawClient.connect(sc.inbound) as c2:
        r = await c2.get("/after")
    assert r.status == 200 and r.json()["target"] == "/after"


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_client_leaving_mid_request_body_releases_the_upstream(upstreams, sidecar,
                                                                     clients, how):
    # EOF in the middle of a request body is not a polite half-close: that request can
    # never complete, so the upstream exchange must be aborted at once.
    app = await upstreams.raw(name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(b"POST /x HTTP/1.1\r\nHost: app\r\nContent-Length: 1000000\r\n\r\n"
                 + b"q" * 1000)
    await app.wait_bytes(1000)
    if how == "fin":
        await c.close()
    else:
        c.reset()

    async with asyncio.timeout(3):
        await app.connections[0].closed.wait()
    assert not app.requests[0].complete
    async with await RawClient.connect(sc.inbound) as c2:
        r = await c2.get("/after")
    assert r.status == 200


# -- large bodies, flat memory --------------------------------------------------------------


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.mark.slow
async def test_large_bodies_stream_both_ways_with_flat_memory(upstreams, sidecar_process):
    size = int(os.environ.get("SIDECAR_TEST_BIG_MB", "200")) << 20
    block = os.urandom(1 << 16)
    n_blocks = size // len(block)
    expected_crc = 0
    for _ in range(n_blocks):
        expected_crc = zlib.crc32(block, expected_crc)
    seen: dict[str, int] = {}

    async def handler(conn: UpstreamConn) -> None:
        req = await conn.read_head()
        assert req is not None
        crc = n = 0
        async for piece in conn.iter_body(req):
            crc = zlib.crc32(piece, crc)
            n += len(piece)
        seen.update(up_bytes=n, up_crc=crc)
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(n_blocks):
            await conn.send(block)

    app = await upstreams.raw(handler, name="app", record=False)
    sc = await sidecar_process(sidecar_config(app=app.address, upstream={"timeout": "120s"}))
    pid = sc.proc.pid
    rss_before = _rss_kb(pid)

    async with await RawClient.connect(sc.inbound) as c:
        async def upload() -> None:
            c.writer.write(b"POST /big HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (len(block), block)
            for _ in range(n_blocks):
                c.writer.write(chunk)
                async with asyncio.timeout(30):
                    await c.writer.drain()
            c.writer.write(b"0\r\n\r\n")
            await c.writer.drain()

        sender = asyncio.create_task(upload())
        try:
            head = await c.read_head(timeout=120)
            crc = n = 0
            async for piece in c.iter_body(head, timeout=30):
                crc = zlib.crc32(piece, crc)
                n += len(piece)
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender

    assert head.status == 200
    assert seen == {"up_bytes": size, "up_crc": expected_crc}
    assert (n, crc) == (size, expected_crc)
    peak_growth_mb = (_rss_kb(pid, "VmHWM") - rss_before) / 1024
    assert peak_growth_mb < 50, (f"sidecar RSS peaked {peak_growth_mb:.0f} MB above its "
                                 f"{rss_before // 1024} MB start for a {size >> 20} MB body")
