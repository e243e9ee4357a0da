"""Faults with the real Consul under steady traffic through the sidecar's outbound listener.

- Consul stopped for 30 s while traffic flows, then started again: no request to the
  instances the sidecar already knew fails.
- One of three instances killed under load (its socket closed, its connections reset,
  still registered until its health check fails): under 0.1% of requests fail.
- A failing health check takes an instance out of rotation within seconds, and a passing
  one brings it back: counted on the instances themselves.

The instances are registered through the agent's API with an HTTP check on their health
path every second, as a deploy tool would register them; the sidecar learns them only from
Consul (`/v1/health/service/<name>?passing`). Every test prints its numbers (`pytest -s`).

These tests found two bugs, since fixed: Consul's first answer after an outage emptied
the endpoints when the agent had not re-synced yet (now held for a grace period), and
least-request balancing never tried an endpoint without a latency sample (now probed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sidecar.testing.consul import ConsulAgent

from .consul_faults_support import ConsulApi, Instance, Load, LoadReport, eventually

pytestmark = pytest.mark.timeout(150)

SERVICE = "portfolio"
OUTAGE = 30.0  # the figure: Consul stopped this long while traffic flows


def consul_config(consul: ConsulAgent, balancer: str | None = None) -> dict[str, Any]:
    """A sidecar whose endpoints come from Consul only; every listener on port 0."""
    config: dict[str, Any] = {
        "service": {"name": "trading"},
        "listeners": {name: {"address": "127.0.0.1:0"}
                      for name in ("inbound", "outbound", "admin")},
        "discovery": {"consul": {"address": consul.http_address, "wait": "10s"}},
    }
    if balancer is not None:
        config["upstream"] = {"balancer": balancer}
    return config


@pytest.fixture
async def instances() -> AsyncIterator[list[Instance]]:
    made: list[Instance] = []
    try:
        yield made
    finally:
        for inst in made:
            await inst.close()


@pytest.fixture
async def loads(sidecar: Any) -> AsyncIterator[Any]:
    """`load = loads(sc.outbound, rate=..., connections=...)`: started now, stopped at the
    latest when the test ends (before the sidecar), even if the test failed."""
    started: list[Load] = []

    def start(target: tuple[str, int], rate: float, connections: int) -> Load:
        load = Load(target, SERVICE, rate=rate, connections=connections).start()
        started.append(load)
        return load
    try:
        yield start
    finally:
        for load in started:
            await load.stop()


@pytest.fixture
def api(consul: ConsulAgent, http: aiohttp.ClientSession) -> ConsulApi:
    return ConsulApi(http, consul.http_url)


async def three(instances: list[Instance], api: ConsulApi, delay: float = 0.0) -> list[Instance]:
    """Instances a, b, c of SERVICE, registered and passing in Consul."""
    for name in "abc":
        inst = await Instance(name, delay=delay).start()
        instances.append(inst)
        await api.register(SERVICE, inst)
    await api.wait_passing(SERVICE, {i.port for i in instances})
    return instances


async def all_serving(load: Load, group: list[Instance], timeout: float = 5.0) -> None:
    """Until every instance of `group` has served a request through the sidecar."""
    async def probe() -> bool:
        return all(i.served > 0 for i in group)
    try:
        await eventually(probe, "every instance serving", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; served: {[(i.name, i.served) for i in group]}; "
                             f"{load.report.summary()}") from None
    assert load.report.failed == 0, load.report.summary()


def retries(sc: Any) -> dict[str, float]:
    """sidecar_retries_total by condition (on=...)."""
    out: dict[str, float] = {}
    for line in sc.sidecar.metrics.render().decode().splitlines():
        if line.startswith("sidecar_retries_total{"):
            labels, _, value = line.rpartition(" ")
            on = labels.split('on="', 1)[1].split('"', 1)[0]
            out[on] = out.get(on, 0.0) + float(value)
    return out


def failures_text(report: LoadReport) -> str:
    shown = "\n".join(f"  t={t:6.2f}s {what}" for t, what in report.failures[:20])
    return f"{report.summary()}\nfirst failures:\n{shown}"


def watch_of(sc: Any) -> dict[str, Any]:
    """What the sidecar's Consul watch of SERVICE knows (its describe())."""
    services = sc.sidecar.discovery.describe()["services"]
    return services[SERVICE]  # type: ignore[no-any-return]


@pytest.mark.slow
async def test_consul_down_30s_no_failed_requests_to_known_endpoints(
        consul: ConsulAgent, api: ConsulApi, instances: list[Instance], sidecar: Any,
        loads: Any) -> None:
    group = await three(instances, api)
    sc = await sidecar(consul_config(consul, "round_robin"))
    load = loads(sc.outbound, rate=150, connections=6)
    await all_serving(load, group)
    await load.requests_sent(150, timeout=10)

    served_before = [i.served for i in group]
    sent_before = load.report.sent
    await consul.stop()
    await load.run_for(OUTAGE)
    # The sidecar noticed: its watch has been failing, and it kept the last good endpoints.
    watch = watch_of(sc)
    assert watch["last_error"] is not None, watch
    assert len(watch["endpoints"]) == 3, watch
    during = load.report.sent - sent_before
    served_during = [i.served - n for i, n in zip(group, served_before, strict=True)]

    restarted_at = load.elapsed()
    await consul.start()  # same ports, same data dir: the registrations come back
    await api.wait_passing(SERVICE, {i.port for i in group})
    await load.requests_sent(600, timeout=15)  # a few seconds of traffic after the return
    report = await load.stop()
    watch = watch_of(sc)

    print(f"\n[consul down {OUTAGE:g}s] {report.summary()}; during the outage: {during} "
          f"requests, served by a/b/c {served_during}")
    outage = [f for f in report.failures if f[0] < restarted_at]
    assert not outage, failures_text(report)  # nothing failed while Consul was away
    assert during >= 0.5 * OUTAGE * load.rate, f"too little traffic during the outage: {during}"
    assert all(n > 0 for n in served_during), served_during  # all three kept in rotation
    assert watch["last_error"] is None, watch  # the watch follows Consul again
    assert report.failed == 0, failures_text(report)  # nor after it came back


async def test_consul_back_without_registrations_keeps_known_endpoints(
        consul: ConsulAgent, api: ConsulApi, instances: list[Instance], sidecar: Any,
        loads: Any) -> None:
    """Consul comes back from an outage before the instances are registered again (a dev
    agent's catalog, or an agent that lost its data dir): the sidecar must not drop the
    endpoints it knew on that first answer; the instances re-register a moment later."""
    group = await three(instances, api)
    sc = await sidecar(consul_config(consul, "round_robin"))
    load = loads(sc.outbound, rate=150, connections=6)
    await all_serving(load, group)

    await consul.stop()

    async def watch_failing() -> bool:
        return watch_of(sc)["last_error"] is not None
    await eventually(watch_failing, "the sidecar sees Consul gone", timeout=10)
    await consul.restart(wipe_data=True)

    async def watch_answered() -> bool:
        return watch_of(sc)["last_error"] is None
    await eventually(watch_answered, "the sidecar reads the restarted Consul", timeout=15)
    await load.requests_sent(100, timeout=10)
    for inst in group:  # the deploy tool (or the agent's anti-entropy) registers them again
        await api.register(SERVICE, inst)
    await api.wait_passing(SERVICE, {i.port for i in group})
    await load.requests_sent(150, timeout=10)
    report = await load.stop()

    print(f"\n[consul back empty] {report.summary()}")
    assert report.failed == 0, failures_text(report)


# Round robin sends the dead instance its full third until it is out of every list (the
# harshest case for retries); least request (the default) steers away after one failure.
@pytest.mark.slow
@pytest.mark.parametrize("balancer", ["round_robin", "least_request"])
async def test_one_of_three_killed_under_load_under_a_tenth_of_a_percent_errors(
        consul: ConsulAgent, api: ConsulApi, instances: list[Instance], sidecar: Any,
        loads: Any, balancer: str) -> None:
    # 20 ms per answer: at 200 req/s about four requests are in flight at any time.
    group = await three(instances, api, delay=0.02)
    sc = await sidecar(consul_config(consul, balancer))
    load = loads(sc.outbound, rate=200, connections=10)
    await load.requests_sent(600, timeout=10)
    assert load.report.failed == 0, failures_text(load.report)
    victim = max(group, key=lambda i: i.served)  # (least request may leave one idle)
    others = [i for i in group if i is not victim]

    victim_served = victim.served
    sent_at_kill = load.report.sent
    # Killed as a request reaches it: that one is reset mid-exchange, and so is every
    # other connection; the listening socket is gone (connects are refused), and the
    # instance is still registered, passing, until its check fails.
    await victim.kill_with_next_request()
    out_after = await api.wait_passing(SERVICE, {i.port for i in others})
    await load.requests_sent(1000, timeout=20)  # and on, with two instances
    report = await load.stop()

    print(f"\n[one of three killed, {balancer}] {report.summary()}; the victim had served "
          f"{victim_served}, {victim.in_flight_at_kill} in flight and {victim.reset_at_kill} "
          f"connections reset at the kill; Consul dropped it {out_after:.2f}s later; "
          f"{report.sent - sent_at_kill} requests after the kill; "
          f"retries by condition {retries(sc)}")
    assert report.failed * 1000 < report.sent, failures_text(report)
    assert all(i.served > 0 for i in others)


@pytest.mark.slow
@pytest.mark.parametrize("balancer", ["round_robin", "least_request"])
async def test_failing_health_check_takes_instance_out_and_back(
        consul: ConsulAgent, api: ConsulApi, instances: list[Instance], sidecar: Any,
        loads: Any, balancer: str) -> None:
    a, b, c = await three(instances, api)
    sc = await sidecar(consul_config(consul, balancer))
    load = loads(sc.outbound, rate=100, connections=4)
    await all_serving(load, [a, b, c])

    async def b_untouched_for(n: int) -> bool:
        """No request reached b while `n` more went through the sidecar."""
        mark = b.served
        await load.requests_sent(n, timeout=10)
        return b.served == mark

    # Sick: its check fails, Consul marks it critical, the sidecar stops sending to it.
    b.healthy = False
    t0 = asyncio.get_running_loop().time()
    out_in_consul = await api.wait_passing(SERVICE, {a.port, c.port}, timeout=10)
    await eventually(lambda: b_untouched_for(60), "b out of rotation", timeout=10)
    out_via_sidecar = asyncio.get_running_loop().time() - t0
    before = (a.served, b.served, c.served)
    await load.requests_sent(200, timeout=10)
    assert b.served == before[1], "b still receives requests"
    if balancer == "round_robin":
        assert a.served > before[0] and c.served > before[2]
    else:  # least request may favour one of the two for a while: it learned latencies
        # Up to `connections` of the 200 answers were for requests served before the mark.
        assert a.served + c.served >= before[0] + before[2] + 200 - 4

    # Well again: back in Consul's passing set, and requests reach it again.
    b.healthy = True
    t0 = asyncio.get_running_loop().time()
    back_in_consul = await api.wait_passing(SERVICE, {a.port, b.port, c.port}, timeout=10)
    mark = b.served

    async def b_serving() -> bool:
        return b.served > mark
    try:
        await eventually(b_serving, "b back in rotation", timeout=10)
    except AssertionError as exc:  # say what the sidecar believed
        cluster = sc.sidecar.clusters.get(SERVICE)
        endpoints = [str(ue.endpoint) for ue in cluster.endpoints] if cluster else None
        raise AssertionError(f"{exc}; b is {b.port}; sidecar endpoints: {endpoints}; "
                             f"discovery: {sc.sidecar.discovery.describe()}; "
                             f"{load.report.summary()}") from None
    back_via_sidecar = asyncio.get_running_loop().time() - t0
    mark = b.served
    await load.requests_sent(150, timeout=10)
    report = await load.stop()

    print(f"\n[health check, {balancer}] {report.summary()}; out of Consul after {out_in_consul:.2f}s, "
          f"no request to b after {out_via_sidecar:.2f}s; back in Consul after "
          f"{back_in_consul:.2f}s, b served again after {back_via_sidecar:.2f}s; "
          f"b served {b.served - mark} of the last 150")
    assert b.served - mark > 0
    assert report.failed == 0, failures_text(report)
