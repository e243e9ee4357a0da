"""The real Consul the discovery tests run against: `consul agent -dev` on loopback.

These tests check the ground the Consul discovery stands on, through Consul's own HTTP API:
registration with a health check, the catalog and health views, blocking queries, a check
that fails and recovers, deregistration, agent restarts, and agents side by side. A missing
Consul binary fails them (ConsulNotFound, with the command that builds it); it never skips.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import astuple
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.testing.consul import ConsulAgent, ConsulNotFound, TcpTarget, find_consul

pytestmark = pytest.mark.timeout(90)



@pytest.fixture
async def target() -> AsyncIterator[TcpTarget]:
    t = await TcpTarget().start()
    try:
        yield t
    finally:
        await t.stop()


# -- helpers ---------------------------------------------------------------------------------

async def get(http: aiohttp.ClientSession, consul: ConsulAgent, path: str,
              **params: str) -> tuple[Any, int]:
    """GET a JSON answer and its X-Consul-Index (0 for endpoints that have none)."""
    async with http.get(consul.http_url + path, params=params) as resp:
        assert resp.status == 200, (path, resp.status, await resp.text())
        return await resp.json(), int(resp.headers.get("X-Consul-Index", "0"))


async def put(http: aiohttp.ClientSession, consul: ConsulAgent, path: str,
              body: Any = None) -> None:
    async with http.put(consul.http_url + path, json=body) as resp:
        assert resp.status == 200, (path, resp.status, await resp.text())


async def listed(http: aiohttp.ClientSession, consul: ConsulAgent,
                 name: str) -> list[dict[str, Any]]:
    """The catalog's entries for a service (an empty list when there are none)."""
    body, _ = await get(http, consul, f"/v1/catalog/service/{name}")
    assert isinstance(body, list)
    return body


def service(name: str, sid: str, port: int, *, version: str = "1.0.0",
            status: str | None = None) -> dict[str, Any]:
    check: dict[str, Any] = {
        "Name": f"{sid} tcp", "TCP": f"127.0.0.1:{port}", "Interval": "1s", "Timeout": "1s",
        "DeregisterCriticalServiceAfter": "1m"}
    if status:
        check["Status"] = status
    return {"Name": name, "ID": sid, "Address": "127.0.0.1", "Port": port,
            "Tags": [f"v{version.split('.')[0]}"], "Meta": {"version": version},
            "Check": check}


async def eventually(probe: Callable[[], Awaitable[Any]], what: str,
                     timeout: float = 10.0) -> Any:
    """Until probe() returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout:g}s: {what} (last: {last!r})")


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return sorted(e["Service"]["ID"] for e in entries)


# -- tests -----------------------------------------------------------------------------------

async def test_agent_is_a_dev_server_on_loopback_ports_of_its_own(
        consul: ConsulAgent, http: aiohttp.ClientSession) -> None:
    assert consul.http_address == f"127.0.0.1:{consul.ports.http}"
    ports = astuple(consul.ports)
    assert len(set(ports)) == len(ports) == 7
    leader, _ = await get(http, consul, "/v1/status/leader")
    assert leader == f"127.0.0.1:{consul.ports.server}"
    me, _ = await get(http, consul, "/v1/agent/self")
    assert me["Config"]["Version"] == "1.16.2"
    assert me["Config"]["Server"] is True
    assert me["DebugConfig"]["DevMode"] is True
    assert me["DebugConfig"]["ClientAddrs"] == ["127.0.0.1"]
    assert me["DebugConfig"]["BindAddr"] == "127.0.0.1"


async def test_register_read_back_block_fail_recover_deregister(
        consul: ConsulAgent, http: aiohttp.ClientSession, target: TcpTarget) -> None:
    await put(http, consul, "/v1/agent/service/register",
              service("web", "web-1", target.port, version="1.4.0"))

    # The catalog has it at once (the agent syncs a new registration straight away).
    entries = await eventually(lambda: listed(http, consul, "web"), "web-1 in the catalog",
                               timeout=5.0)
    assert [(e["ServiceID"], e["ServiceAddress"], e["ServicePort"]) for e in entries] == [
        ("web-1", "127.0.0.1", target.port)]
    assert entries[0]["ServiceTags"] == ["v1"]
    assert entries[0]["ServiceMeta"] == {"version": "1.4.0"}

    # A TCP check starts critical and passes after its first run (interval 1 s).
    async def passing() -> tuple[list[dict[str, Any]], int] | None:
        body, index = await get(http, consul, "/v1/health/service/web", passing="1")
        return (body, index) if body else None

    healthy, index = await eventually(passing, "web-1 passing", timeout=10.0)
    assert ids(healthy) == ["web-1"]
    checks = {c["CheckID"]: c["Status"] for c in healthy[0]["Checks"]}
    assert checks == {"serfHealth": "passing", "service:web-1": "passing"}
    assert index > 0

    # A blocking query with nothing changing returns when `wait` runs out, same index.
    t0 = time.monotonic()
    body, same = await get(http, consul, "/v1/health/service/web",
                           passing="1", index=str(index), wait="1s")
    waited = time.monotonic() - t0
    assert same == index and ids(body) == ["web-1"]
    assert 0.9 <= waited < 5.0, waited

    # A change while a blocking query waits ends it early, with a higher index.
    async def register_second() -> None:
        await asyncio.sleep(0.3)
        await put(http, consul, "/v1/agent/service/register",
                  service("web", "web-2", target.port, version="2.0.0", status="passing"))

    t0 = time.monotonic()
    (body, newer), _ = await asyncio.gather(
        get(http, consul, "/v1/health/service/web", passing="1", index=str(index), wait="10s"),
        register_second())
    waited = time.monotonic() - t0
    assert ids(body) == ["web-1", "web-2"]
    assert newer > index
    assert waited < 5.0, waited

    # The checked port stops answering: both instances leave the passing set, through
    # blocking queries, within a few check intervals; they come back when it answers again.
    await target.stop()

    async def follow(want: list[str], since: int) -> int:
        index = since
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            body, index = await get(http, consul, "/v1/health/service/web",
                                    passing="1", index=str(index), wait="2s")
            if ids(body) == want:
                return index
        raise AssertionError(f"passing set never became {want}")

    t0 = time.monotonic()
    index = await follow([], newer)
    assert time.monotonic() - t0 < 6.0
    await target.start()  # same port
    index = await follow(["web-1", "web-2"], index)

    # Deregistration leaves the catalog and the health view.
    for sid in ("web-1", "web-2"):
        await put(http, consul, f"/v1/agent/service/deregister/{sid}")

    async def gone() -> bool:
        return await listed(http, consul, "web") == []

    await eventually(gone, "web gone from the catalog", timeout=5.0)
    body, _ = await get(http, consul, "/v1/health/service/web")
    assert body == []


async def test_restart_same_ports_registrations_come_back(
        consul: ConsulAgent, http: aiohttp.ClientSession, target: TcpTarget) -> None:
    address = consul.http_address
    await put(http, consul, "/v1/agent/service/register",
              service("api", "api-1", target.port, status="passing"))
    await eventually(lambda: listed(http, consul, "api"), "api-1 in the catalog", timeout=5.0)

    # A plain restart: dev mode's catalog is in memory, but the agent persisted its own
    # registrations in the data dir and syncs them back.
    await consul.restart()
    assert consul.running and consul.http_address == address
    leader, _ = await get(http, consul, "/v1/status/leader")
    assert leader
    body = await eventually(lambda: listed(http, consul, "api"), "api-1 back after restart")
    assert [e["ServiceID"] for e in body] == ["api-1"]

    # The restarted agent takes new registrations and answers blocking queries.
    _, index = await get(http, consul, "/v1/health/service/api")
    await put(http, consul, "/v1/agent/service/register",
              service("api", "api-2", target.port, status="passing"))
    body, newer = await get(http, consul, "/v1/health/service/api",
                            index=str(index), wait="5s")
    assert newer > index and ids(body) == ["api-1", "api-2"]

    # An agent that lost its state (data dir wiped) comes back empty: whoever registered
    # there has to notice and register again.
    await consul.restart(wipe_data=True)
    assert consul.http_address == address
    body, _ = await get(http, consul, "/v1/catalog/service/api")
    assert body == []
    services, _ = await get(http, consul, "/v1/agent/services")
    assert services == {}


async def test_agents_side_by_side_do_not_collide(http: aiohttp.ClientSession) -> None:
    async with ConsulAgent(node_name="one") as one, ConsulAgent(node_name="two") as two:
        assert set(astuple(one.ports)).isdisjoint(astuple(two.ports))
        await put(http, one, "/v1/agent/service/register", {"Name": "only-in-one"})
        await eventually(lambda: listed(http, one, "only-in-one"), "registration in agent one",
                         timeout=5.0)
        body, _ = await get(http, two, "/v1/catalog/service/only-in-one")
        assert body == []
        nodes, _ = await get(http, two, "/v1/catalog/nodes")
        assert [n["Node"] for n in nodes] == ["two"]
    assert not one.running and not two.running
    assert not one.workdir.exists() and not two.workdir.exists()


async def test_agent_that_cannot_start_fails_with_its_log() -> None:
    agent = ConsulAgent(extra_args=("-this-flag-does-not-exist",), start_timeout=10.0)
    with pytest.raises(RuntimeError, match="exited with") as info:
        async with agent:
            pass
    assert "this-flag-does-not-exist" in str(info.value)
    assert not agent.running


def test_missing_consul_is_an_error_naming_the_install_script(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SIDECAR_CONSUL", raising=False)
    monkeypatch.setenv("SIDECAR_TOOLS", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConsulNotFound, match=re.escape("scripts/install-consul.sh")):
        find_consul()
    monkeypatch.setenv("SIDECAR_CONSUL", str(tmp_path / "nope"))
    with pytest.raises(ConsulNotFound, match="SIDECAR_CONSUL"):
        find_consul()
