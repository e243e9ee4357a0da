"""Routing and balancing without sockets."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sidecar.balance import RoundRobin
from sidecar.config.model import Endpoint, Upstream
from sidecar.discovery import EndpointSet
from sidecar.protocol.events import RequestHead
from sidecar.routing.cluster import Cluster
from sidecar.routing.router import RouteEntry, Router, host_of
from sidecar.telemetry.metrics import RequestStats

STATS = RequestStats("outbound", "test")


@dataclass
class Item:
    name: str
    weight: int = 1


def test_round_robin_is_even_and_smooth_when_weighted() -> None:
    rr = RoundRobin([Item("a"), Item("b"), Item("c")])
    assert [rr.pick().name for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]  # type: ignore[union-attr]
    weighted = RoundRobin([Item("a", 5), Item("b", 1), Item("c", 1)])
    picks = [weighted.pick().name for _ in range(7)]  # type: ignore[union-attr]
    assert Counter(picks) == {"a": 5, "b": 1, "c": 1}
    assert picks == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's smooth order, no bursts
    assert RoundRobin([]).pick() is None


def test_host_of() -> None:
    assert host_of(b"portfolio:8080") == b"portfolio"
    assert host_of(b"portfolio") == b"portfolio"
    assert host_of(b"[::1]:80") == b"[::1]"
    assert host_of(b"[::1]") == b"[::1]"


def head(authority: bytes, target: bytes = b"/") -> RequestHead:
    h = RequestHead(b"GET", target, "1.1", [(b"host", authority)], True)
    h.authority = authority
    return h


@pytest.fixture(autouse=True)
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    global LOOP
    LOOP = asyncio.new_event_loop()  # pools only keep it; nothing runs in these tests
    yield LOOP
    LOOP.close()


LOOP: asyncio.AbstractEventLoop


def cluster(name: str, *ports: int) -> Cluster:
    c = Cluster(name, Upstream(), LOOP)
    c.update(EndpointSet(name, tuple(Endpoint("127.0.0.1", p) for p in ports), known=True))
    return c


def test_first_matching_route_wins_then_the_implicit_service_route() -> None:
    api, other, implicit = cluster("api", 1), cluster("other", 2), cluster("portfolio", 3)
    router = Router(
        [RouteEntry("v1", api, STATS, 1.0, host="gw", prefix="/v1"),
         RouteEntry("any", other, STATS, 1.0, host="gw")],
        implicit=lambda host: RouteEntry(host, implicit, STATS, 1.0) if host == "portfolio" else None)
    assert router.route(head(b"gw", b"/v1/users")).name == "v1"  # type: ignore[union-attr]
    assert router.route(head(b"gw:80", b"/v2")).name == "any"  # type: ignore[union-attr]
    assert router.route(head(b"portfolio:15001")).cluster is implicit  # type: ignore[union-attr]
    assert router.route(head(b"unknown")) is None


def test_implicit_route_waits_until_discovery_knows_the_service() -> None:
    c = Cluster("late", Upstream(), LOOP)
    router = Router([], implicit=lambda host: RouteEntry(host, c, STATS, 1.0))
    assert router.route(head(b"late")) is None
    c.update(EndpointSet("late", (Endpoint("127.0.0.1", 9),), known=True))
    assert router.route(head(b"late")).cluster is c  # type: ignore[union-attr]


def test_cluster_update_keeps_pools_of_endpoints_that_stay() -> None:
    c = cluster("svc", 1, 2)
    pool_of_2 = c.endpoints[1].pool
    c.update(EndpointSet("svc", (Endpoint("127.0.0.1", 2), Endpoint("127.0.0.1", 3)), known=True))
    assert [ue.endpoint.port for ue in c.endpoints] == [2, 3]
    assert c.endpoints[0].pool is pool_of_2
    assert c.pick() is not None


def test_a_service_discovery_has_not_answered_for_yet_is_routed_to_wait() -> None:
    c = Cluster("pending", Upstream(), LOOP)
    c.update(EndpointSet("pending", settled=False))
    router = Router([], implicit=lambda host: RouteEntry(host, c, STATS, 1.0))
    entry = router.route(head(b"pending"))
    assert entry is not None and not entry.cluster.settled
    woken: list[str] = []
    c.when_settled(lambda: woken.append("now"))
    assert woken == []
    c.update(EndpointSet("pending", (Endpoint("127.0.0.1", 9),), known=True))
    assert woken == ["now"] and c.pick() is not None
    c.update(EndpointSet("pending"))  # settled, unknown: no route any more
    assert router.route(head(b"pending")) is None
