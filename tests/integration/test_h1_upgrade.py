"""Upgrade / WebSocket: after the upstream's 101 the connection is a two-way tunnel."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from .support import sidecar_config
from .upstream import UpstreamConn, echo_reply, websocket_echo_app

WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=5, ws_close=5)


@pytest.mark.parametrize("side", ["inbound", "outbound"])
async def test_websocket_echo_through_the_sidecar(upstreams, sidecar, side):
    seen: list[dict[str, Any]] = []
    app = await upstreams.aiohttp(websocket_echo_app(seen))
    sc = await sidecar(sidecar_config(app=app.address, services={"chat": [app.address]}))
    host, port = getattr(sc, side)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.ws_connect(f"http://{host}:{port}/ws", headers={"Host": "chat"},
                                      timeout=WS_TIMEOUT, autoping=False) as ws:
            await ws.send_str("hello")
            assert (await ws.receive_str(timeout=5)) == "hello"
            payload = bytes(range(256)) * 400  # 100 KiB: several frames' worth of TCP
            await ws.send_bytes(payload)
            assert (await ws.receive_bytes(timeout=5)) == payload
            for i in range(20):
                await ws.send_str(f"m{i}")
            assert [await ws.receive_str(timeout=5) for _ in range(20)] == \
                   [f"m{i}" for i in range(20)]
            await ws.close()
        assert ws.close_code == aiohttp.WSCloseCode.OK

    [req] = seen
    assert req["headers"].get("Upgrade", "").lower() == "websocket"
    assert "upgrade" in req["headers"].get("Connection", "").lower()
    assert "Sec-WebSocket-Key" in req["headers"]


async def test_plain_request_still_works_after_a_tunnel(upstreams, sidecar):
    app = await upstreams.aiohttp(websocket_echo_app())
    sc = await sidecar(sidecar_config(app=app.address))
    host, port = sc.inbound
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.ws_connect(f"http://{host}:{port}/ws", timeout=WS_TIMEOUT) as ws:
            await ws.send_str("x")
            assert await ws.receive_str(timeout=5) == "x"
        async with session.get(f"http://{host}:{port}/plain") as r:
            assert r.status == 200
            assert await r.text() == "plain"


def _raw_upgrade_server(echo_prefix: bytes = b"") -> Any:
    """101 to `Upgrade: foo`, then echo raw bytes (with a prefix) until EOF."""

    async def handler(conn: UpstreamConn) -> None:
        req = await conn.read_head()
        if req is None:
            return
        if (req.header("upgrade") or "").lower() != "foo":
            await conn.read_body(req)
            await echo_reply(req, conn).write(conn)
            return
        await conn.send(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                        b"Upgrade: foo\r\n\r\n")
        while True:
            data = await conn.read_some()
            if not data:
                return
            await conn.send(echo_prefix + data)

    return handler


async def test_raw_upgrade_tunnels_arbitrary_bytes(upstreams, sidecar, clients):
    app = await upstreams.raw(_raw_upgrade_server(), name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(b"GET /tunnel HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\n"
                 b"Upgrade: foo\r\n\r\n")
    head = await c.read_head(timeout=3)
    assert head.status == 101, head
    assert (head.header("upgrade") or "").lower() == "foo"
    assert "upgrade" in head.connection_tokens

    [req] = app.requests
    assert (req.header("upgrade") or "").lower() == "foo"
    assert "upgrade" in (req.header("connection") or "").lower()

    for msg in (b"\x00\x01binary\xff", b"GET / HTTP/1.1\r\n\r\n", b"x" * 100_000):
        await c.send(msg)
        got = b""
        async with asyncio.timeout(3):
            while len(got) < len(msg):
                piece = await c.reader.read(65536)
                assert piece, "tunnel closed"
                got += piece
        assert got == msg


async def test_bytes_sent_right_after_the_upgrade_request_are_tunnelled(upstreams, sidecar,
                                                                        clients):
    app = await upstreams.raw(_raw_upgrade_server(), name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    # The first tunnel bytes ride in the same segment as the request head.
    await c.send(b"GET /tunnel HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\n"
                 b"Upgrade: foo\r\n\r\nearly-bytes")
    head = await c.read_head(timeout=3)
    assert head.status == 101
    async with asyncio.timeout(3):
        got = await c.reader.readexactly(len(b"early-bytes"))
    assert got == b"early-bytes"


async def test_tunnel_closes_when_the_upstream_closes(upstreams, sidecar, clients):
    async def handler(conn: UpstreamConn) -> None:
        await conn.read_head()
        await conn.send(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                        b"Upgrade: foo\r\n\r\nbye")
        conn.close()

    app = await upstreams.raw(handler, name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(b"GET /t HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n")
    assert (await c.read_head(timeout=3)).status == 101
    assert await c.expect_closed(timeout=3) == b"bye"


async def test_tunnel_closes_upstream_when_the_client_closes(upstreams, sidecar, clients):
    app = await upstreams.raw(_raw_upgrade_server(), name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(b"GET /t HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n")
    assert (await c.read_head(timeout=3)).status == 101
    await c.close()

    async with asyncio.timeout(3):
        await app.connections[0].closed.wait()


async def test_declined_upgrade_is_an_ordinary_response(upstreams, sidecar, clients):
    async def decline(conn: UpstreamConn) -> None:
        while True:
            req = await conn.read_request()
            if req is None:
                return
            await echo_reply(req, conn).write(conn)

    app = await upstreams.raw(decline, name="app")
    sc = await sidecar(sidecar_config(app=app.address))
    c = await clients.connect(sc.inbound)

    await c.send(b"GET /a HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: bar\r\n\r\n")
    r1 = await c.read_response()
    assert r1.status == 200 and r1.json()["target"] == "/a"
    if "close" in r1.connection_tokens:  # allowed: the server may end the connection
        await c.expect_closed()
        c = await clients.connect(sc.inbound)
    r2 = await c.get("/b")
    assert r2.status == 200 and r2.json()["target"] == "/b"
