"""A circuit breaker on an upstream cluster: failing calls open it, and then the
sidecar answers 503 CIRCUIT_OPEN at once without touching the upstream."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from .support import sidecar_config


async def get(sc: Any, path: str = "/") -> tuple[int, dict[str, Any] | str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
            s.get("http://%s:%d%s" % (*sc.outbound, path), headers={"Host": "portfolio"}) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


async def test_failures_open_the_breaker_and_it_answers_at_once(upstreams, sidecar) -> None:
    calls = []

    async def broken(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.Response(status=500, text="boom")

    app = web.Application()
    app.router.add_get("/{tail:.*}", broken)
    up = await upstreams.aiohttp(app)
    sc = await sidecar(sidecar_config(
        services={"portfolio": [up.address]},
        upstream={"circuit_breaker": {"minimum_calls": 5, "window_size": 10,
                                      "failure_rate": 50, "wait_in_open": "30s"}}))

    for _ in range(5):
        assert (await get(sc))[0] == 500  # the upstream's own answers pass through
    status, body = await get(sc)

    assert status == 503 and isinstance(body, dict)
    assert body["error"]["code"] == "CIRCUIT_OPEN" and body["error"]["service"] == "portfolio"
    assert len(calls) == 5  # the refused call never reached the upstream
    async with aiohttp.ClientSession() as s, \
            s.get("http://%s:%d/internal/v1/metrics" % sc.admin) as r:
        text = await r.text()
    assert 'sidecar_circuit_breaker_state{route="",service="portfolio",state="open"} 1.0' in text
    assert 'sidecar_circuit_breaker_transitions_total{route="",service="portfolio",to="open"} 1.0' \
        in text


async def test_without_configuration_there_is_no_breaker(upstreams, sidecar) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_get("/{tail:.*}", broken)
    up = await upstreams.aiohttp(app)
    sc = await sidecar(sidecar_config(services={"portfolio": [up.address]}))

    statuses = {(await get(sc))[0] for _ in range(30)}
    assert statuses == {500}


async def test_a_route_can_have_its_own_breaker(upstreams, sidecar) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=500 if request.path.startswith("/reports") else 200)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    up = await upstreams.aiohttp(app)
    sc = await sidecar(sidecar_config(services={"portfolio": [up.address]}, routes=[
        {"name": "reports", "service": "portfolio",
         "match": {"host": "portfolio", "path_prefix": "/reports"},
         "circuit_breaker": {"minimum_calls": 3, "window_size": 5, "wait_in_open": "30s"}},
        {"name": "rest", "service": "portfolio", "match": {"host": "portfolio"}}],
        upstream={"retries": False}))

    for _ in range(3):
        assert (await get(sc, "/reports/q1"))[0] == 500
    status, body = await get(sc, "/reports/q2")
    assert status == 503 and isinstance(body, dict) and body["error"]["code"] == "CIRCUIT_OPEN"
    assert (await get(sc, "/holdings"))[0] == 200  # the service's other routes are untouched
    async with aiohttp.ClientSession() as s, \
            s.get("http://%s:%d/internal/v1/clusters" % sc.admin) as r:
        assert (await r.json())["route_breakers"] == {"reports": "open"}
