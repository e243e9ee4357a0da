"""Consul discovery and registration against the real agent (`consul agent -dev`, loopback).

Instances are registered through Consul's own HTTP API (aiohttp), the way another service's
sidecar would; what the sidecar sees comes only through `ConsulDiscovery` and `Registration`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.core.watch import Watched
from sidecar.discovery.base import EndpointSet
from sidecar.discovery.consul import ConsulConfig, ConsulDiscovery, RegistrationConfig
from sidecar.discovery.registration import Registration
from sidecar.testing.consul import ConsulAgent, TcpTarget

pytestmark = pytest.mark.timeout(120)

CHANGE_BOUND = 1.0  # the issue: a change in Consul reaches routing within one second


@pytest.fixture
async def discovery(consul: ConsulAgent) -> AsyncIterator[ConsulDiscovery]:
    d = ConsulDiscovery(ConsulConfig(address=consul.http_address, wait=30.0))
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


@pytest.fixture
async def target() -> AsyncIterator[TcpTarget]:
    t = await TcpTarget().start()
    try:
        yield t
    finally:
        await t.stop()


@pytest.fixture
async def admin_health() -> AsyncIterator[str]:
    """A stand-in for the sidecar's admin health endpoint: its URL."""
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/internal/v1/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/internal/v1/health"
    finally:
        await runner.cleanup()


# -- helpers ---------------------------------------------------------------------------------

class Recorder:
    """Every value a Watched takes, with when it took it."""

    def __init__(self, watched: Watched[EndpointSet]) -> None:
        self.watched = watched
        self.changed = asyncio.Event()
        self.history: list[tuple[float, EndpointSet]] = []
        watched.subscribe(self._seen)

    def _seen(self, value: EndpointSet) -> None:
        self.history.append((time.monotonic(), value))
        self.changed.set()

    async def until(self, pred: Callable[[EndpointSet], bool], what: str,
                    timeout: float = 10.0) -> float:
        """Waits until pred(value); returns the monotonic time the value arrived."""
        deadline = time.monotonic() + timeout
        while True:
            for at, value in reversed(self.history):
                if pred(value) and value == self.watched.value:
                    return at
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"not within {timeout:g}s: {what} "
                                     f"(now {self.watched.value!r})")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


def ports(value: EndpointSet) -> list[int]:
    return sorted(e.port for e in value.endpoints)


def has(port: int) -> Callable[[EndpointSet], bool]:
    return lambda v: port in ports(v)


def lacks(port: int) -> Callable[[EndpointSet], bool]:
    return lambda v: port not in ports(v)


async def put(http: aiohttp.ClientSession, consul: ConsulAgent, path: str,
              body: Any = None) -> None:
    async with http.put(consul.http_url + path, json=body) as resp:
        assert resp.status == 200, (path, resp.status, await resp.text())


async def get(http: aiohttp.ClientSession, consul: ConsulAgent, path: str) -> Any:
    async with http.get(consul.http_url + path) as resp:
        assert resp.status == 200, (path, resp.status, await resp.text())
        return await resp.json()


def instance(name: str, sid: str, port: int, *, tcp_check: bool = False,
             meta: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"Name": name, "ID": sid, "Address": "127.0.0.1", "Port": port,
                            "Tags": ["v1"], "Meta": meta or {"version": "1.0.0"}}
    if tcp_check:
        body["Check"] = {"Name": f"{sid} tcp", "TCP": f"127.0.0.1:{port}",
                         "Interval": "1s", "Timeout": "1s", "Status": "passing"}
    return body


async def eventually(probe: Callable[[], Awaitable[Any]], what: str,
                     timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout:g}s: {what} (last: {last!r})")


def registration_config(consul: ConsulAgent, check_url: str) -> ConsulConfig:
    return ConsulConfig(address=consul.http_address, registration=RegistrationConfig(
        name="web", id="web-1", address="127.0.0.1", port=8080, tags=("v1",),
        meta=(("version", "1.4.0"),), weight=3, check_url=check_url,
        check_interval=1.0, check_timeout=1.0, resync_interval=0.5))


# -- tests -----------------------------------------------------------------------------------

async def test_registration_in_the_catalog_with_its_check_then_deregistered(
        consul: ConsulAgent, http: aiohttp.ClientSession, admin_health: str,
        discovery: ConsulDiscovery) -> None:
    reg = Registration(registration_config(consul, admin_health))
    rec = Recorder(discovery.watch("web"))
    await reg.start()
    try:
        entries = await eventually(lambda: get(http, consul, "/v1/catalog/service/web"),
                                   "web-1 in the catalog", timeout=5.0)
        assert [(e["ServiceID"], e["ServiceAddress"], e["ServicePort"], e["ServiceTags"],
                 e["ServiceMeta"], e["ServiceWeights"]["Passing"]) for e in entries] == [
            ("web-1", "127.0.0.1", 8080, ["v1"], {"version": "1.4.0"}, 3)]
        checks = await get(http, consul, "/v1/agent/checks")
        check = checks["service:web-1"]
        assert (check["ServiceID"], check["Type"], check["Interval"], check["Timeout"]) == (
            "web-1", "http", "1s", "1s")
        # (the agent API does not show DeregisterCriticalServiceAfter back; the unit test
        # of registration_payload covers what is sent)

        # the check passes against the health endpoint, so the instance is discovered
        await rec.until(lambda v: ports(v) == [8080], "web-1 passing, discovered")
        checks = await get(http, consul, "/v1/agent/checks")
        assert checks["service:web-1"]["Status"] == "passing"
        assert checks["service:web-1"]["Output"].startswith(f"HTTP GET {admin_health}: 200")
        ep = discovery.watch("web").value.endpoints[0]
        assert (ep.host, ep.weight, ep.tags, dict(ep.meta)) == (
            "127.0.0.1", 3, ("v1",), {"version": "1.4.0"})
        assert reg.describe()["last_error"] is None

        await reg.deregister()

        async def gone() -> bool:
            return bool(await get(http, consul, "/v1/catalog/service/web") == [])

        await eventually(gone, "web-1 gone from the catalog", timeout=5.0)
        # Deregistered: the catalog has no web any more, so it is no longer known either.
        await rec.until(lambda v: v.settled and not v.known and not v.endpoints,
                        "web-1 no longer discovered")
        await asyncio.sleep(1.5)  # three watchdog periods: it must not register again
        assert await get(http, consul, "/v1/catalog/service/web") == []
        assert "service:web-1" not in await get(http, consul, "/v1/agent/checks")
        assert reg.registrations == 1
    finally:
        await reg.stop()


async def test_watch_sees_instances_added_and_removed_within_a_second(
        consul: ConsulAgent, http: aiohttp.ClientSession,
        discovery: ConsulDiscovery) -> None:
    rec = Recorder(discovery.watch("api"))
    # Consul answered: nothing registered yet, so not known (Consul answers [] for any name).
    await rec.until(lambda v: v.settled and not v.known and not v.endpoints,
                    "api answered, empty", timeout=5.0)
    await asyncio.sleep(0.3)  # the loop is now parked in a blocking query

    latencies: list[float] = []
    for round_ in range(3):
        port = 9000 + round_
        t0 = time.monotonic()
        await put(http, consul, "/v1/agent/service/register", instance("api", f"api-{port}", port))
        seen = await rec.until(has(port), f"api-{port} added")
        latencies.append(seen - t0)
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        await put(http, consul, f"/v1/agent/service/deregister/api-{port}")
        seen = await rec.until(lacks(port), f"api-{port} removed")
        latencies.append(seen - t0)
        await asyncio.sleep(0.2)

    print(f"\nconsul change -> watched value: {', '.join(f'{x * 1000:.0f}ms' for x in latencies)}")
    assert max(latencies) < CHANGE_BOUND, latencies
    described = discovery.describe()["services"]
    assert isinstance(described, dict)
    assert described["api"]["answers"] >= 7  # one read per change: blocking, not polling


async def test_failing_check_leaves_the_passing_set_and_comes_back(
        consul: ConsulAgent, http: aiohttp.ClientSession, target: TcpTarget,
        discovery: ConsulDiscovery) -> None:
    rec = Recorder(discovery.watch("pay"))
    await put(http, consul, "/v1/agent/service/register",
              instance("pay", "pay-1", target.port, tcp_check=True))
    await put(http, consul, "/v1/agent/service/register", instance("pay", "pay-2", 9999))
    await rec.until(lambda v: ports(v) == sorted([target.port, 9999]), "both passing")

    await target.stop()  # pay-1's check fails within about one interval (1 s)
    t0 = time.monotonic()
    seen = await rec.until(lambda v: ports(v) == [9999], "pay-1 out", timeout=10.0)
    assert seen - t0 < 5.0

    await target.start()  # same port: the check passes again
    await rec.until(lambda v: ports(v) == sorted([target.port, 9999]), "pay-1 back",
                    timeout=10.0)


async def test_agent_down_keeps_the_last_good_set_then_resumes_with_the_index_reset(
        consul: ConsulAgent, http: aiohttp.ClientSession,
        discovery: ConsulDiscovery) -> None:
    rec = Recorder(discovery.watch("api"))
    # Push the index well up, so that the restarted dev server (its catalog rebuilt
    # from nothing) answers with a lower one.
    for n in range(40):
        await put(http, consul, "/v1/agent/service/register",
                  instance("api", "api-1", 9001, meta={"version": "1.0.0", "n": str(n)}))
    await rec.until(lambda v: any(("n", "39") in e.meta for e in v.endpoints), "api-1 n=39")
    good = rec.watched.value
    info = discovery.describe()["services"]
    assert isinstance(info, dict)
    index_before = info["api"]["index"]
    assert discovery.describe()["last_error"] is None

    await consul.stop()
    t_stop = time.time()

    async def failing() -> bool:
        return discovery.describe()["last_error"] is not None

    await eventually(failing, "describe() reports the error", timeout=5.0)
    described = discovery.describe()
    since = described["error_since"]
    assert isinstance(since, float) and t_stop - 1 <= since <= time.time()
    await asyncio.sleep(2.0)  # a few back-off rounds against a dead agent
    assert rec.watched.value is good  # last known good set kept, untouched
    assert rec.watched.value.known and ports(good) == [9001]
    assert len(discovery.describe()["services"]["api"]["last_error"]) > 0  # type: ignore[index]

    await consul.start()  # same ports and data dir: api-1 comes back from the agent's state
    await put(http, consul, "/v1/agent/service/register", instance("api", "api-2", 9002))
    # within the capped back-off (5 s) plus a read
    await rec.until(lambda v: ports(v) == [9001, 9002], "watch resumed after restart",
                    timeout=10.0)
    info = discovery.describe()["services"]
    assert isinstance(info, dict)
    assert info["api"]["last_error"] is None and discovery.describe()["last_error"] is None
    assert info["api"]["index_resets"] >= 1, (index_before, info["api"])

    async def blocking_on_a_lower_index() -> bool:  # after the reset's fresh read
        return 0 < discovery.describe()["services"]["api"]["index"] < index_before  # type: ignore[index,no-any-return]

    await eventually(blocking_on_a_lower_index, "index below the one before the restart",
                     timeout=2.0)

    # and after the reset the loop blocks again: a change still arrives within the bound
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    await put(http, consul, "/v1/agent/service/register", instance("api", "api-3", 9003))
    seen = await rec.until(lambda v: ports(v) == [9001, 9002, 9003], "api-3 after restart")
    assert seen - t0 < CHANGE_BOUND


async def test_unknown_until_consul_answers(consul: ConsulAgent) -> None:
    await consul.stop()
    d = ConsulDiscovery(ConsulConfig(address=consul.http_address))
    w = d.watch("never")
    await d.start()
    try:
        await eventually(lambda: asyncio.sleep(0, d.describe()["last_error"]), "an error")
        # Consul never answered: not known, and settled so that waiting requests give up.
        assert w.value == EndpointSet("never")
    finally:
        await d.stop()


async def test_agent_restarted_with_wiped_data_gets_the_registration_again(
        consul: ConsulAgent, http: aiohttp.ClientSession, admin_health: str) -> None:
    reg = Registration(registration_config(consul, admin_health))
    await reg.start()
    try:
        await eventually(lambda: get(http, consul, "/v1/catalog/service/web"),
                         "web-1 in the catalog", timeout=5.0)
        assert reg.registrations == 1

        await consul.restart(wipe_data=True)  # the agent forgets web-1
        t0 = time.monotonic()
        entries = await eventually(lambda: get(http, consul, "/v1/catalog/service/web"),
                                   "web-1 registered again", timeout=15.0)
        print(f"\nre-registered {time.monotonic() - t0:.2f}s after the wiped agent was up")
        assert [e["ServiceID"] for e in entries] == ["web-1"]
        assert reg.registrations == 2
        checks = await get(http, consul, "/v1/agent/checks")
        assert checks["service:web-1"]["Type"] == "http"
        assert reg.describe()["last_error"] is None
        await reg.deregister()
        assert await get(http, consul, "/v1/agent/services") == {}
    finally:
        await reg.stop()
