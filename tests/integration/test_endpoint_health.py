"""Endpoint health through the sidecar: outlier ejection, Retry-After, active checks.

Three real upstreams behind the outbound listener; one misbehaves, and the balancer
stops choosing it (and takes it back) as its health changes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiohttp import web

from .support import sidecar_config
from .test_balancing import send


def app(name: str, state: dict[str, Any]) -> web.Application:
    """Answers its name; `state["status"]` (and `state["headers"]`) say how; /health too."""
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=name, status=state.get("status", 200),
                            headers=state.get("headers", {}))

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok", status=state.get("health", 200))

    a = web.Application()
    a.router.add_get("/health", health)
    a.router.add_get("/{tail:.*}", handler)
    return a


async def three(upstreams: Any, sidecar: Any, **upstream: Any
                ) -> tuple[Any, list[dict[str, Any]]]:
    states: list[dict[str, Any]] = [{}, {}, {}]
    ups = [await upstreams.aiohttp(app(f"e{i}", states[i])) for i in range(3)]
    sc = await sidecar(sidecar_config(services={"portfolio": [u.address for u in ups]},
                                      upstream={"balancer": "round_robin", **upstream}))
    return sc, states


def endpoints_gauge(sc: Any, state: str) -> float:
    for name, labels, value in sc.sidecar._gauges():
        if name == "sidecar_upstream_endpoints" and labels == {"service": "portfolio",
                                                               "state": state}:
            return float(value)
    raise AssertionError("no sidecar_upstream_endpoints series for portfolio")


async def test_an_endpoint_answering_5xx_is_ejected(upstreams, sidecar, http) -> None:
    sc, states = await three(upstreams, sidecar,
                             outlier_detection={"consecutive_5xx": 3,
                                                "base_ejection_time": "30s"})
    states[1]["status"] = 500

    bodies, statuses = await send(sc, 60, concurrency=1)

    # Round robin sends it every third request until the third 5xx in a row ejects it.
    assert statuses[500] == 3, statuses
    assert bodies["e1"] == 3 and bodies["e0"] + bodies["e2"] == 57, bodies
    assert endpoints_gauge(sc, "unhealthy") == 1
    cluster = sc.sidecar.clusters["portfolio"]
    [row] = [r for r in cluster.health.describe() if r["ejected_for"]]
    host, port = cluster.endpoints[1].address
    assert row["address"] == f"{host}:{port}" and 29 < row["ejected_for"] <= 30
    assert row["ejections"] == 1

    async with http.get("http://%s:%d/internal/v1/clusters" % sc.admin) as resp:
        view = (await resp.json())["clusters"]["portfolio"]
    assert [e["balanced"] for e in view["endpoints"]] == [True, False, True]
    assert view["endpoints"][1]["ejections"] == 1


async def test_retry_after_rests_an_endpoint(upstreams, sidecar) -> None:
    sc, states = await three(upstreams, sidecar, outlier_detection=False)
    states[0].update(status=429, headers={"Retry-After": "30"})

    bodies, statuses = await send(sc, 30, concurrency=1)

    assert statuses[429] == 1 and bodies["e0"] == 1, (statuses, bodies)  # asked once, left alone
    assert endpoints_gauge(sc, "unhealthy") == 1


async def test_active_checks_take_an_endpoint_out_and_bring_it_back(upstreams, sidecar) -> None:
    sc, states = await three(upstreams, sidecar, health_check={
        "path": "/health", "interval": "50ms", "jitter": 0, "timeout": "1s",
        "healthy_threshold": 2, "unhealthy_threshold": 2})
    await send(sc, 1)  # the cluster exists once a request asked for it
    cluster = sc.sidecar.clusters["portfolio"]

    async def healthy(n: int) -> None:
        async with asyncio.timeout(5):
            while endpoints_gauge(sc, "healthy") != n:
                await asyncio.sleep(0.02)

    await healthy(3)
    states[2]["health"] = 503
    await healthy(2)
    bodies, _ = await send(sc, 30, concurrency=1)
    assert bodies["e2"] == 0 and bodies["e0"] == bodies["e1"] == 15, bodies

    states[2]["health"] = 200
    await healthy(3)
    bodies, _ = await send(sc, 30, concurrency=1)
    assert bodies == Counter(e0=10, e1=10, e2=10), bodies
    assert cluster.prober is not None and len(cluster.prober.addresses) == 3
