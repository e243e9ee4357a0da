"""Consul discovery's pure pieces: the blocking-query index rules, the health answer, back-off."""

from __future__ import annotations

import random

import pytest

from sidecar.config.model import Endpoint
from sidecar.discovery.consul import (
    Backoff,
    ConsulConfig,
    RegistrationConfig,
    duration,
    endpoints_from_health,
    next_index,
    split_address,
)
from sidecar.discovery.registration import registration_payload


@pytest.mark.parametrize(("previous", "returned", "expected"), [
    (0, 7, 7),      # first answer: block on its index next
    (7, 7, 7),      # wait ran out, nothing changed
    (7, 9, 9),      # a change
    (9, 4, 0),      # backwards (server restarted, snapshot restore): reset, read afresh
    (0, 4, 4),      # ... and the fresh read's index is used again
    (0, 0, 1),      # a zero index after an answer: never 0, or every query returns at once
    (5, 0, 1),      # zero later on too: 1 (a query on 1 answers at once, like a fresh read)
    (5, -3, 1),     # a nonsense index is never used as-is
])
def test_next_index(previous: int, returned: int, expected: int) -> None:
    assert next_index(previous, returned) == expected


def test_a_loop_of_answers_never_blocks_on_zero_after_a_reset_settles() -> None:
    index, seen = 0, []
    for returned in [12, 12, 15, 3, 3, 0, 0, 8]:
        index = next_index(index, returned)
        seen.append(index)
    assert seen == [12, 12, 15, 0, 3, 1, 1, 8]


def entry(sid: str, port: int, *, address: str = "", node: str = "10.0.0.1",
          weights: object = None, tags: list[str] | None = None,
          meta: dict[str, str] | None = None) -> dict[str, object]:
    svc: dict[str, object] = {"ID": sid, "Service": "web", "Address": address, "Port": port,
                              "Tags": tags, "Meta": meta}
    if weights is not None:
        svc["Weights"] = weights
    return {"Node": {"Node": "n1", "Address": node}, "Service": svc, "Checks": []}


def test_endpoints_from_health() -> None:
    eps = endpoints_from_health([
        entry("b", 9002, address="10.0.0.9", weights={"Passing": 3, "Warning": 1},
              tags=["v2"], meta={"version": "2.0.0", "zone": "a"}),
        entry("a", 9001),  # no service address: the node's
    ])
    assert eps == (
        Endpoint("10.0.0.1", 9001, 1, (), ()),
        Endpoint("10.0.0.9", 9002, 3, ("v2",), (("version", "2.0.0"), ("zone", "a"))),
    )
    # the same instances in another order are the same set
    assert endpoints_from_health([entry("a", 9001), entry("b", 9002, address="10.0.0.9",
        weights={"Passing": 3}, tags=["v2"], meta={"zone": "a", "version": "2.0.0"})]) == eps
    assert endpoints_from_health([]) == ()


@pytest.mark.parametrize("bad", [
    {"not": "a list"},
    [42],
    [entry("a", 0)],
    [{"Node": {}, "Service": {"Port": 80}}],
    [{"Node": {"Address": "h"}, "Service": "nope"}],
])
def test_endpoints_from_health_rejects_bad_answers(bad: object) -> None:
    with pytest.raises(ValueError):
        endpoints_from_health(bad)


def test_backoff_doubles_to_the_cap_with_full_jitter() -> None:
    b = Backoff(0.1, 5.0, random.Random(1))
    delays = [b.next_delay() for _ in range(12)]
    ceilings = [min(5.0, 0.1 * 2 ** n) for n in range(12)]
    assert all(0.01 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[8:]) > 1.0  # it does grow
    b.reset()
    assert b.next_delay() <= 0.1


def test_duration_and_address() -> None:
    assert duration(30) == "30000ms"
    assert duration(0.0001) == "1ms"
    assert split_address("127.0.0.1:8500") == ("http", "127.0.0.1", 8500)
    assert split_address("https://consul.local") == ("https", "consul.local", 443)
    with pytest.raises(ValueError):
        split_address("ftp://x:1")


def test_config_problems_and_token_kept_out_of_repr() -> None:
    cfg = ConsulConfig(token="s3cret", registration=RegistrationConfig(name="web", port=8080))
    assert cfg.problems() == []
    assert "s3cret" not in repr(cfg)
    bad = ConsulConfig(address="ftp://x", wait=0.5, registration=RegistrationConfig(
        name="", port=70000, check_url="nope", check_timeout=20, deregister_critical_after=5))
    problems = bad.problems()
    for path in ("address", "wait", "registration.name", "registration.port",
                 "registration.check_url", "registration.check_timeout",
                 "registration.deregister_critical_after"):
        assert any(p.startswith(f"discovery.consul.{path}:") for p in problems), path


def test_registration_payload() -> None:
    reg = RegistrationConfig(name="web", id="web-1", address="10.0.0.5", port=8080,
                             tags=("v1",), meta=(("version", "1.2.0"),), weight=2,
                             check_url="http://10.0.0.5:15000/internal/v1/health")
    p = registration_payload(reg)
    assert (p["name"], p["service_id"], p["port"], p["meta"]) == (
        "web", "web-1", 8080, {"version": "1.2.0"})
    assert p["check"] == {
        "CheckID": "service:web-1", "Name": "web sidecar health",
        "HTTP": "http://10.0.0.5:15000/internal/v1/health", "Method": "GET",
        "Interval": "10000ms", "Timeout": "2000ms",
        "DeregisterCriticalServiceAfter": "60000ms"}
    assert p["weights"] == {"Passing": 2, "Warning": 1}


async def test_an_index_reset_is_seen_through_an_outage_and_a_held_empty_answer() -> None:
    """The restarted agent's first answers are empty (not re-synced yet) and are held; the
    answer finally believed is still compared with the index from before the outage."""
    import asyncio

    import consul

    from sidecar.discovery.consul import ConsulDiscovery

    one, two = Endpoint("127.0.0.1", 9001), Endpoint("127.0.0.1", 9002)
    script: list[object] = [(56, (one,)), consul.ConsulException("agent down"),
                            (5, ()), (19, (one, two))]
    asked: list[int] = []

    class Scripted(ConsulDiscovery):
        async def _read(self, service: str, index: int) -> tuple[int, tuple[Endpoint, ...]]:
            asked.append(index)
            if not script:
                await asyncio.Event().wait()  # a blocking query with nothing new
            step = script.pop(0)
            if isinstance(step, Exception):
                raise step
            assert isinstance(step, tuple)
            return step

        async def _registered(self, service: str) -> bool:
            return True

    d = Scripted(ConsulConfig(backoff_base=0.01, backoff_cap=0.02), rng=random.Random(3))
    watched = d.watch("api")
    await d.start()
    try:
        for _ in range(200):
            if watched.value.endpoints == (one, two):
                break
            await asyncio.sleep(0.01)
        info = d.describe()["services"]["api"]  # type: ignore[index]
    finally:
        await d.stop()
    assert watched.value.endpoints == (one, two)
    assert asked == [0, 56, 0, 0, 0]  # afresh after the error and while holding
    assert (info["index"], info["index_resets"]) == (0, 1)
