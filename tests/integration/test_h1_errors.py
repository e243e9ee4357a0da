"""Errors made by the sidecar itself: one JSON envelope, exact statuses and codes."""

from __future__ import annotations

import asyncio
import time

import pytest

from .rawclient import build_request
from .support import assert_error, closed_port, sidecar_config
from .upstream import (
    close_after_head,
    echo_reply,
    garbage,
    never_answer,
)

# -- errors made by the sidecar ---------------------------------------------------------


async def test_unknown_host_is_404_no_route(upstreams, sidecar, clients):
    portfolio = await upstreams.raw(name="portfolio")
    sc = await sidecar(sidecar_config(services={"portfolio": [portfolio.address]}))
    c = await clients.connect(sc.outbound)

    r = await c.get("/x", host="unknown-svc")

    assert_error(r, 404, "NO_ROUTE")
    assert portfolio.bytes_received == 0


async def test_error_response_keeps_the_connection_in_sync(upstreams, sidecar, clients):
    # A 404 for a request with a body: the body must be consumed (or the connection
    # closed with `Connection: close`), never parsed as the next request.
    portfolio = await upstreams.raw(name="portfolio")
    sc = await sidecar(sidecar_config(services={"portfolio": [portfolio.address]}))
    c = await clients.connect(sc.outbound)
    smuggled = build_request("GET", "/smuggled", [("Host", "portfolio")])

    r = await c.request("POST", "/x", [("Host", "unknown-svc")], smuggled)

    assert_error(r, 404, "NO_ROUTE")
    if "close" in r.connection_tokens:
        await c.expect_closed()
    else:
        ok = await c.get("/next", host="portfolio")
        assert ok.status == 200, ok
        assert [q.target for q in portfolio.requests] == ["/next"]
    assert all(q.target != "/smuggled" for q in portfolio.requests)


async def test_service_without_endpoints_is_503(upstreams, sidecar, clients):
    sc = await sidecar(sidecar_config(services={"empty": []}))
    c = await clients.connect(sc.outbound)

    r = await c.get("/x", host="empty")

    assert_error(r, 503, "NO_HEALTHY_ENDPOINTS", service="empty")


async def test_closed_endpoint_port_is_502_connect_failed(upstreams, sidecar, clients):
    sc = await sidecar(sidecar_config(services={"dead": [("127.0.0.1", closed_port())]}))
    c = await clients.connect(sc.outbound)

    r = await c.get("/x", host="dead")

    assert_error(r, 502, "UPSTREAM_CONNECT_FAILED", service="dead")


async def test_app_down_is_502_connect_failed_on_inbound(upstreams, sidecar, clients):
    sc = await sidecar(sidecar_config(app=("127.0.0.1", closed_port())))
    c = await clients.connect(sc.inbound)

    r = await c.get("/x")

    assert_error(r, 502, "UPSTREAM_CONNECT_FAILED")


GARBAGE = {
    "not-http": b"this is not http at all\r\n\r\n",
    "ssh-banner": b"SSH-2.0-OpenSSH_9.6\r\n",
    "bad-status": b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
    "two-content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "bad-header-name": b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 0\r\n\r\n",
    "binary": bytes(range(256)),
}


@pytest.mark.parametrize("data", GARBAGE.values(), ids=GARBAGE.keys())
async def test_upstream_garbage_is_502_protocol_error(upstreams, sidecar, clients, data):
    up = await upstreams.raw(garbage(data), name="portfolio")
    sc = await sidecar(sidecar_config(services={"portfolio": [up.address]}))
    c = await clients.connect(sc.outbound)

    r = await c.get("/x", host="portfolio")

    assert_error(r, 502, "UPSTREAM_PROTOCOL_ERROR", service="portfolio")
    # That upstream connection is unusable: the sidecar must drop it.
    async with asyncio.timeout(3):
        await up.connections[0].closed.wait()


@pytest.mark.parametrize("where", ["route", "upstream-default"])
async def test_upstream_that_never_answers_is_504(upstreams, sidecar, clients, where):
    up = await upstreams.raw(never_answer(), name="slow")
    if where == "route":
        cfg = sidecar_config(services={"slow": [up.address]},
                             routes=[{"name": "slow", "service": "slow",
                                      "match": {"host": "slow"}, "timeout": "300ms"}])
    else:
        cfg = sidecar_config(services={"slow": [up.address]}, upstream={"timeout": "300ms"})
    sc = await sidecar(cfg)
    c = await clients.connect(sc.outbound)

    t0 = time.monotonic()
    r = await c.get("/x", host="slow")
    elapsed = time.monotonic() - t0

    assert_error(r, 504, "UPSTREAM_TIMEOUT", service="slow")
    assert 0.25 <= elapsed < 2.0, elapsed
    async with asyncio.timeout(3):
        await up.connections[0].closed.wait()  # never reused for another request


@pytest.mark.parametrize("partial", [b"", b"HTTP/1.1 200 OK\r\nContent-Le"],
                         ids=["nothing", "half-a-head"])
async def test_upstream_closing_without_answer_is_502(upstreams, sidecar, clients, partial):
    up = await upstreams.raw(close_after_head(partial), name="portfolio")
    sc = await sidecar(sidecar_config(services={"portfolio": [up.address]}))
    c = await clients.connect(sc.outbound)

    r = await c.get("/x", host="portfolio")

    err = assert_error(r, 502, None, service="portfolio")
    assert err["code"].startswith("UPSTREAM_"), err


async def test_upstream_reset_without_answer_is_502(upstreams, sidecar, clients):
    async def reset(conn):
        await conn.read_head()
        conn.abort()

    up = await upstreams.raw(reset, name="portfolio")
    sc = await sidecar(sidecar_config(services={"portfolio": [up.address]}))
    c = await clients.connect(sc.outbound)

    r = await c.get("/x", host="portfolio")

    err = assert_error(r, 502, None, service="portfolio")
    assert err["code"].startswith("UPSTREAM_"), err


async def test_stale_pooled_connection_closed_by_upstream_is_not_an_error(upstreams, sidecar,
                                                                         clients):
    # The upstream closes its keep-alive connection after each response (without saying
    # so). The next request must go out on a fresh connection, not fail on the dead one.
    async def one_shot(conn):
        req = await conn.read_request()
        if req is not None:
            await echo_reply(req, conn).write(conn)
            conn.close()

    up = await upstreams.raw(one_shot, name="portfolio")
    sc = await sidecar(sidecar_config(services={"portfolio": [up.address]}))
    c = await clients.connect(sc.outbound)

    for i in range(3):
        await up.wait_until(lambda: all(x.closed.is_set() for x in up.connections),
                            "upstream connections closed")
        r = await c.get(f"/{i}", host="portfolio")
        assert r.status == 200, (i, r)
    assert up.accepted == 3
