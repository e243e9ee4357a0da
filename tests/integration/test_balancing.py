"""Client-side balancing through the outbound listener: least-request steers away
from a slow endpoint, and a dead endpoint costs no request (a connect failure is
retried on another endpoint)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

from sidecar.testing import free_port

from .support import sidecar_config


def who(name: str, delay: float = 0.0) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text=name)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


async def send(sc: Any, n: int, concurrency: int = 4) -> tuple[Counter[str], Counter[int]]:
    bodies: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    url = "http://%s:%d/" % sc.outbound
    queue = iter(range(n))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in queue:
            async with session.get(url, headers={"Host": "portfolio"}) as r:
                statuses[r.status] += 1
                bodies[await r.text()] += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
    return bodies, statuses


async def test_least_request_steers_away_from_a_slow_endpoint(upstreams, sidecar) -> None:
    fast1 = await upstreams.aiohttp(who("fast1"))
    fast2 = await upstreams.aiohttp(who("fast2"))
    slow = await upstreams.aiohttp(who("slow", delay=0.05))
    sc = await sidecar(sidecar_config(
        services={"portfolio": [fast1.address, fast2.address, slow.address]}))

    bodies, statuses = await send(sc, 300)

    assert statuses == {200: 300}
    # Round robin would give the slow one 100; least-request learns within a few picks.
    assert bodies["slow"] < 30, bodies


async def test_a_dead_endpoint_costs_no_request(upstreams, sidecar) -> None:
    a = await upstreams.aiohttp(who("a"))
    b = await upstreams.aiohttp(who("b"))
    dead = ("127.0.0.1", free_port())  # nobody listens: every connect is refused
    sc = await sidecar(sidecar_config(services={"portfolio": [a.address, dead, b.address]}))

    bodies, statuses = await send(sc, 200)

    assert statuses == {200: 200}, statuses
    assert set(bodies) == {"a", "b"}


async def test_round_robin_can_be_chosen(upstreams, sidecar) -> None:
    a = await upstreams.aiohttp(who("a"))
    b = await upstreams.aiohttp(who("b"))
    config = sidecar_config(services={"portfolio": [a.address, b.address]},
                            upstream={"balancer": "round_robin"})

    sc = await sidecar(config)
    bodies, _ = await send(sc, 100, concurrency=1)

    assert bodies == {"a": 50, "b": 50}
