"""A sidecar whose discovery is the real Consul: it registers itself, routes by what
Consul says, follows changes within a second, and leaves the catalog on drain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.testing import running_sidecar
from sidecar.testing.consul import ConsulAgent

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def portfolio() -> AsyncIterator[int]:
    """An upstream app: answers who it is."""
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"service": "portfolio", "path": request.path})

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


async def eventually(probe: Callable[[], Awaitable[Any]], what: str,
                     timeout: float = 5.0) -> float:
    """Seconds until `probe()` is truthy."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await probe():
            return time.monotonic() - t0
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout}s")


async def test_sidecar_registers_routes_follows_and_deregisters(
        consul: ConsulAgent, http: aiohttp.ClientSession, portfolio: int) -> None:
    base = consul.http_url

    async def put(path: str, body: Any = None) -> None:
        async with http.put(f"{base}{path}", json=body) as r:
            assert r.status == 200, await r.text()

    await put("/v1/agent/service/register",
              {"Name": "portfolio", "ID": "portfolio-1", "Address": "127.0.0.1",
               "Port": portfolio, "Meta": {"version": "v1"}})
    config = {
        "service": {"name": "trading", "version": "v2"},
        "listeners": {"inbound": {"address": "127.0.0.1:0"},
                      "outbound": {"address": "127.0.0.1:0"},
                      "admin": {"address": "127.0.0.1:0"}},
        "discovery": {"consul": {"address": consul.http_address, "wait": "5s",
                                 "registration": {"check_interval": "1s",
                                                  "check_timeout": "500ms"}}},
    }
    async with running_sidecar(config) as sc:
        out = "http://%s:%d" % sc.outbound

        async def status(path: str = "/api/x") -> int:
            async with http.get(out + path, headers={"Host": "portfolio"}) as r:
                await r.read()
                return r.status

        # The first request to a service starts its watch and waits for Consul's answer.
        assert await status() == 200
        async with http.get(out + "/x", headers={"Host": "nothing-here"}) as r:
            assert r.status == 404  # a name the catalog does not have

        # Our own registration: in the catalog, with the check on our admin health passing.
        async def our_check_passing() -> bool:
            async with http.get(f"{base}/v1/health/service/trading?passing") as r:
                entries = await r.json()
            return bool(entries) and entries[0]["Service"]["Meta"].get("version") == "v2"
        await eventually(our_check_passing, "trading registered and passing", timeout=10)

        # A change in Consul reaches routing within one second (the service gone: 404).
        await put("/v1/agent/service/deregister/portfolio-1")
        took = await eventually(lambda: _is(status(), 404), "portfolio gone from routing")
        assert took < 1.0, f"deregistration reached routing after {took:.3f}s"

        # Draining takes us out of the catalog before anything else.
        await sc.sidecar.drain()
        async with http.get(f"{base}/v1/catalog/service/trading") as r:
            assert await r.json() == []


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
