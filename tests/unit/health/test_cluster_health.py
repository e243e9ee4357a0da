"""The combined view the balancer reads: ejections, active verdicts, penalties, panic,
and the promise that nothing is recomputed while nothing changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.health import (
    ClusterHealth,
    Failure,
    HealthCheck,
    HealthSettings,
    OutlierDetection,
    RetryAfter,
)
from sidecar.testing import FakeClock


@dataclass(frozen=True)
class Ep:
    name: str

    @property
    def address(self) -> tuple[str, int]:
        return (self.name, 80)


A, B, C = Ep("a"), Ep("b"), Ep("c")
EPS = (A, B, C)


def make(endpoints: tuple[Ep, ...] = EPS, active: bool = False, **outlier: Any
         ) -> tuple[ClusterHealth[Ep], FakeClock, list[tuple[str, Any]]]:
    clock = FakeClock(100.0)
    events: list[tuple[str, Any]] = []
    settings = HealthSettings(health_check=HealthCheck() if active else None,
                              outlier_detection=OutlierDetection(**outlier),
                              retry_after=RetryAfter())
    health: ClusterHealth[Ep] = ClusterHealth(settings, clock, wall=lambda: 1e9,
                                              listeners=[lambda e, a: events.append((e, a))])
    health.update(endpoints)
    return health, clock, events


def fail(h: ClusterHealth[Ep], ep: Ep, n: int = 5, result: int | Failure = 503) -> None:
    for _ in range(n):
        h.on_result(ep, result)


def test_everything_is_available_and_the_same_tuple_comes_back() -> None:
    h, _, _ = make()
    first = h.available(EPS)
    assert first is EPS  # nothing excluded: the caller's own tuple
    for _ in range(3):
        h.on_result(A, 200)
        assert h.available(EPS) is first


def test_an_ejected_endpoint_is_left_out_until_its_time_is_up() -> None:
    h, clock, events = make()
    fail(h, B)
    assert h.available(EPS) == (A, C)
    assert events == [("ejected", B.address)]
    clock.advance(29)
    assert h.available(EPS) == (A, C)
    clock.advance(1)
    assert h.available(EPS) == EPS
    assert events[-1] == ("returned", B.address)


def test_the_answer_is_recomputed_only_when_something_changed() -> None:
    h, clock, _ = make()
    fail(h, B)
    out = h.available(EPS)
    version = h.version
    for _ in range(10):
        h.on_result(A, 200)
        h.on_result(C, 404)
        clock.advance(1)
        assert h.available(EPS) is out
    assert h.version == version


def test_a_new_endpoint_tuple_is_answered_afresh() -> None:
    h, _, _ = make()
    fail(h, B)
    shorter = (A, B)
    h.update(shorter)
    assert h.available(shorter) == (A,)


def test_at_most_one_of_three_is_ejected_by_default() -> None:
    h, _, _ = make()
    for ep in EPS:
        fail(h, ep, 20)
    assert len(h.available(EPS)) == 2


def test_connect_failures_eject_too() -> None:
    h, _, _ = make(consecutive_connect_failures=2)
    fail(h, C, 2, Failure.CONNECT)
    assert h.available(EPS) == (A, B)


def test_429_sets_an_endpoint_aside_for_retry_after_capped() -> None:
    h, clock, events = make()
    h.on_result(A, 429, b"5")
    assert h.available(EPS) == (B, C)
    assert events == [("penalized", A.address)]
    h.on_result(B, 429, b"86400")  # asks for a day, gets the 60 s cap
    assert h.available(EPS) == (C,)
    clock.advance(5)
    assert h.available(EPS) == (A, C)
    clock.advance(55)
    assert h.available(EPS) == EPS


def test_503_with_retry_after_is_a_penalty_and_a_bare_503_is_not() -> None:
    h, _, _ = make()
    h.on_result(A, 503)
    assert h.available(EPS) == EPS
    h.on_result(A, 503, b"Thu, 01 Jan 1970 00:00:01 GMT")  # in the past: no penalty
    assert h.available(EPS) == EPS
    h.on_result(A, 503, b"2")
    assert h.available(EPS) == (B, C)


def test_when_every_endpoint_is_penalized_all_are_used() -> None:
    h, _, _ = make()
    for ep in EPS:
        h.on_result(ep, 429, b"10")
    assert h.available(EPS) == EPS


def test_penalties_never_empty_what_ejection_left() -> None:
    h, _, _ = make()
    fail(h, A)
    h.on_result(B, 429)
    assert h.available(EPS) == (C,)
    h.on_result(C, 429)
    assert h.available(EPS) == (B, C)  # all the healthy are penalized: use them anyway


def test_retry_after_off_means_no_penalty() -> None:
    h: ClusterHealth[Ep] = ClusterHealth(HealthSettings(retry_after=None), FakeClock())
    h.update(EPS)
    h.on_result(A, 429, b"30")
    assert h.available(EPS) == EPS


def test_active_checks_pending_then_healthy() -> None:
    h, _, events = make(active=True)
    assert h.available(EPS) == EPS  # all pending: panic, serve anyway
    h.on_probe(A.address, True)
    assert h.available(EPS) == (A,)
    h.on_probe(B.address, True)
    h.on_probe(C.address, False)
    assert h.available(EPS) == (A, B)
    assert events == [("healthy", A.address), ("healthy", B.address),
                      ("unhealthy", C.address)]


def test_active_thresholds_take_an_endpoint_out_and_bring_it_back() -> None:
    h, _, _ = make(active=True)
    for ep in EPS:
        h.on_probe(ep.address, True)
    for _ in range(2):
        h.on_probe(B.address, False)
    assert h.available(EPS) == EPS
    h.on_probe(B.address, False)  # the third
    assert h.available(EPS) == (A, C)
    h.on_probe(B.address, True)
    assert h.available(EPS) == (A, C)
    h.on_probe(B.address, True)  # the second pass
    assert h.available(EPS) == EPS


def test_a_passing_health_check_returns_an_ejected_endpoint() -> None:
    h, _, events = make(active=True)
    for ep in EPS:
        h.on_probe(ep.address, True)
    fail(h, B)
    assert h.available(EPS) == (A, C)
    h.on_probe(B.address, True)
    assert h.available(EPS) == EPS
    assert events[-2:] == [("ejected", B.address), ("returned", B.address)]


def test_unejecting_by_health_check_can_be_turned_off() -> None:
    h, _, _ = make(active=True, health_check_unejects=False)
    for ep in EPS:
        h.on_probe(ep.address, True)
    fail(h, B)
    h.on_probe(B.address, True)
    assert h.available(EPS) == (A, C)


def test_everything_out_means_everything_in() -> None:
    h, _, _ = make(active=True)
    h.on_probe(A.address, True)
    h.on_probe(B.address, False)
    h.on_probe(C.address, False)
    fail(h, A)  # A is the last healthy one, but the cluster has room for one ejection
    assert h.available(EPS) == EPS


def test_update_forgets_removed_endpoints() -> None:
    h, clock, _ = make()
    fail(h, B)
    h.on_result(C, 429, b"10")
    two = (A, C)
    h.update(two)
    assert h.available(two) == (A,)
    clock.advance(10)
    assert h.available(two) == two
    h.update(EPS)  # B is back from discovery: a fresh start, not ejected
    assert h.available(EPS) == EPS


def test_describe() -> None:
    h, clock, _ = make(active=True)
    h.on_probe(A.address, True)
    fail(h, A)
    h.on_result(B, 429, b"8")
    clock.advance(3)
    rows = {r["address"]: r for r in h.describe()}
    assert rows["a:80"]["active"] == "healthy"
    assert rows["a:80"]["ejected_for"] == 27.0
    assert rows["b:80"]["penalized_for"] == 5.0
    assert rows["c:80"]["active"] == "pending"
