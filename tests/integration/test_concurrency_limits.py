"""Envoy-style concurrency limits per upstream service: requests in flight, and requests
waiting for a connection. Past them the sidecar answers 503 UPSTREAM_OVERFLOW at once."""

from __future__ import annotations

import asyncio

from .support import assert_error, sidecar_config
from .upstream import never_answer


async def test_requests_in_flight_past_the_limit_overflow(upstreams, sidecar, clients) -> None:
    up = await upstreams.raw(never_answer(), name="stuck")
    sc = await sidecar(sidecar_config(services={"portfolio": [up.address]},
                                      upstream={"max_requests": 2, "retries": False}))
    stuck = [await clients.connect(sc.outbound) for _ in range(2)]
    for c in stuck:
        await c.send(b"GET / HTTP/1.1\r\nHost: portfolio\r\n\r\n")
    await up.wait_connections(2)

    c = await clients.connect(sc.outbound)
    r = await c.get("/", host="portfolio")
    err = assert_error(r, 503, "UPSTREAM_OVERFLOW", "portfolio")
    assert "2 requests already in flight" in err["message"]


async def test_requests_waiting_for_a_connection_past_the_limit_overflow(
        upstreams, sidecar, clients) -> None:
    up = await upstreams.raw(never_answer(), name="stuck")
    sc = await sidecar(sidecar_config(services={"portfolio": [up.address]}, upstream={
        "max_connections_per_endpoint": 1, "max_pending_per_endpoint": 1, "retries": False}))
    first, second = await clients.connect(sc.outbound), await clients.connect(sc.outbound)
    await first.send(b"GET /1 HTTP/1.1\r\nHost: portfolio\r\n\r\n")
    await up.wait_connections(1)
    await second.send(b"GET /2 HTTP/1.1\r\nHost: portfolio\r\n\r\n")  # waits for the one
    await asyncio.sleep(0.05)

    third = await clients.connect(sc.outbound)
    r = await third.get("/3", host="portfolio")
    assert_error(r, 503, "UPSTREAM_OVERFLOW", "portfolio")
    assert len(up.connections) == 1
