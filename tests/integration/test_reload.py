"""Configuration changes while traffic flows: admin reload (valid and invalid) and the
hot-reloaded static discovery file."""

from __future__ import annotations

import asyncio
import copy
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from .support import assert_error, sidecar_config

RELOAD = "/internal/v1/config/reload"


async def admin(sc: Any, method: str, path: str) -> tuple[int, Any]:
    host, port = sc.admin
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
                s.request(method, f"http://{host}:{port}{path}") as r):
        text = await r.text()
        status = r.status
    try:
        body: Any = yaml.safe_load(text) if text else None  # JSON is YAML
    except yaml.YAMLError:
        body = text
    return status, body


def write_yaml(path: Path, data: Any) -> None:
    """Replace the file atomically, as an editor or a Kubernetes mount would."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    os.replace(tmp, path)


def strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in strings(v)]
    return []


async def test_valid_reload_applies_without_dropping_connections(upstreams, sidecar_process,
                                                                 clients):
    a = await upstreams.raw(name="a")
    b = await upstreams.raw(name="b")
    sc = await sidecar_process(sidecar_config(services={"portfolio": [a.address]}))
    cfg = sc.config  # with the listener ports the child was given
    c = await clients.connect(sc.outbound)
    assert (await c.get("/1", host="portfolio")).json()["upstream"] == "a"
    assert_error(await c.get("/v1/x", host="api.example"), 404, "NO_ROUTE")

    new = copy.deepcopy(cfg)
    new["discovery"]["static"]["services"] = {"portfolio": [b.hostport]}
    new["routes"] = [{"name": "api", "service": "portfolio",
                      "match": {"host": "api.example", "path_prefix": "/v1"},
                      "host_rewrite": "portfolio.internal"}]
    write_yaml(Path(sc.config_path), new)
    status, body = await admin(sc, "POST", RELOAD)
    assert status == 200, body

    # Same client connection, still open, now served by the new configuration.
    r = await c.get("/2", host="portfolio")
    assert r.status == 200 and r.json()["upstream"] == "b", r
    r = await c.get("/v1/x", host="api.example")
    assert r.status == 200 and r.json()["upstream"] == "b", r
    assert b.requests[-1].header("host") == "portfolio.internal"
    assert [q.target for q in a.requests] == ["/1"]

    status, effective = await admin(sc, "GET", "/internal/v1/config")
    assert status == 200
    assert "api.example" in strings(effective) or "api.example" in str(effective)


async def test_invalid_reload_is_refused_and_the_running_config_stays(upstreams,
                                                                     sidecar_process,
                                                                     clients):
    a = await upstreams.raw(name="a")
    sc = await sidecar_process(sidecar_config(services={"portfolio": [a.address]}))
    cfg = sc.config
    c = await clients.connect(sc.outbound)
    assert (await c.get("/1", host="portfolio")).status == 200

    bad = copy.deepcopy(cfg)
    bad["routes"] = [{"name": "r", "service": "portfolio", "timeout": "soon"}]
    bad["limits"] = {"max_connections": 0}
    write_yaml(Path(sc.config_path), bad)
    status, body = await admin(sc, "POST", RELOAD)

    assert status == 400, body
    problems = strings(body)
    assert any(p.startswith("routes[0].timeout: must be a duration") for p in problems), body
    assert any(p.startswith("limits.max_connections: must be") for p in problems), body

    # Traffic keeps flowing on the old config, on the old connection and on new ones.
    r = await c.get("/2", host="portfolio")
    assert r.status == 200 and r.json()["upstream"] == "a"
    c2 = await clients.connect(sc.outbound)
    assert (await c2.get("/3", host="portfolio")).status == 200
    status, effective = await admin(sc, "GET", "/internal/v1/config")
    assert status == 200 and "soon" not in str(effective)


async def test_unparsable_reload_is_refused(upstreams, sidecar_process, clients):
    a = await upstreams.raw(name="a")
    sc = await sidecar_process(sidecar_config(services={"portfolio": [a.address]}))
    Path(sc.config_path).write_text("service: {name: trading\nroutes: [")

    status, body = await admin(sc, "POST", RELOAD)

    assert status == 400, body
    c = await clients.connect(sc.outbound)
    assert (await c.get("/x", host="portfolio")).status == 200


async def test_reload_under_load_fails_no_request(upstreams, sidecar_process, clients):
    a = await upstreams.raw(name="a")
    b = await upstreams.raw(name="b")
    sc = await sidecar_process(sidecar_config(services={"portfolio": [a.address]}))
    cfg = sc.config
    stop = asyncio.Event()
    statuses: list[int] = []

    async def load() -> None:
        c = await clients.connect(sc.outbound)
        while not stop.is_set():
            statuses.append((await c.get("/", host="portfolio")).status)

    tasks = [asyncio.create_task(load()) for _ in range(4)]
    try:
        await a.wait_requests(20, timeout=10)
        for target in (b, a, b):
            new = copy.deepcopy(cfg)
            new["discovery"]["static"]["services"] = {"portfolio": [target.hostport]}
            write_yaml(Path(sc.config_path), new)
            status, body = await admin(sc, "POST", RELOAD)
            assert status == 200, body
        n = len(b.requests)
        await b.wait_requests(n + 20, timeout=10)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)
    assert set(statuses) == {200}, sorted(set(statuses))


async def test_in_process_reload_applies_new_routes(upstreams, sidecar, clients):
    a = await upstreams.raw(name="a")
    cfg = sidecar_config(services={"portfolio": [a.address]})
    sc = await sidecar(cfg)
    c = await clients.connect(sc.outbound)
    assert_error(await c.get("/v1/q", host="api.example"), 404, "NO_ROUTE")

    new = copy.deepcopy(cfg)
    new["routes"] = [{"name": "api", "service": "portfolio",
                      "match": {"host": "api.example", "path_prefix": "/v1"}}]
    sc.write_config(new)
    problems = await sc.reload()

    assert problems == []
    r = await c.get("/v1/q", host="api.example")
    assert r.status == 200 and r.json()["upstream"] == "a", r

    bad = copy.deepcopy(new)
    bad["routes"][0]["timeout"] = "soon"
    sc.write_config(bad)
    problems = await sc.reload()
    assert any(p.startswith("routes[0].timeout: must be a duration") for p in problems), problems
    assert (await c.get("/v1/q", host="api.example")).status == 200


async def test_static_discovery_file_change_applies_without_reload(upstreams, sidecar,
                                                                   clients, tmp_path):
    a = await upstreams.raw(name="a")
    b = await upstreams.raw(name="b")
    services = tmp_path / "services.yaml"
    write_yaml(services, {"services": {"portfolio": [a.hostport]}})
    sc = await sidecar(sidecar_config(discovery_file=str(services)))
    c = await clients.connect(sc.outbound)
    assert (await c.get("/", host="portfolio")).json()["upstream"] == "a"

    write_yaml(services, {"services": {"portfolio": [b.hostport]}})
    t0 = time.monotonic()
    while True:
        r = await c.get("/", host="portfolio")  # the same keep-alive connection
        assert r.status == 200, r
        if r.json()["upstream"] == "b":
            break
        assert time.monotonic() - t0 < 3.0, "new endpoints not used after 3 s"
        await asyncio.sleep(0.05)
    assert time.monotonic() - t0 < 2.5


async def test_broken_discovery_file_keeps_last_good_endpoints(upstreams, sidecar, clients,
                                                               tmp_path):
    a = await upstreams.raw(name="a")
    services = tmp_path / "services.yaml"
    write_yaml(services, {"services": {"portfolio": [a.hostport]}})
    sc = await sidecar(sidecar_config(discovery_file=str(services), poll_interval="100ms"))
    c = await clients.connect(sc.outbound)
    assert (await c.get("/", host="portfolio")).status == 200

    write_yaml(services, "services: {portfolio: [oops\n")
    deadline = time.monotonic() + 0.6  # several poll periods
    while time.monotonic() < deadline:
        r = await c.get("/", host="portfolio")
        assert r.status == 200 and r.json()["upstream"] == "a", r
        await asyncio.sleep(0.05)
