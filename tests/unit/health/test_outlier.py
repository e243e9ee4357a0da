"""Passive outlier detection (Envoy's consecutive-5xx semantics) on a fake clock, no sockets."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.health import Failure, OutlierDetection, OutlierDetector
from sidecar.testing import FakeClock

A, B, C, D = ("a", 80), ("b", 80), ("c", 80), ("d", 80)


def make(members: tuple[Any, ...] = (A, B, C), **settings: Any
         ) -> tuple[OutlierDetector, FakeClock]:
    clock = FakeClock(1000.0)
    detector = OutlierDetector(OutlierDetection(**settings), clock)
    detector.retain(members)
    return detector, clock


def report(d: OutlierDetector, address: Any, result: int | Failure, n: int) -> list[bool]:
    return [d.on_result(address, result) for _ in range(n)]


def test_five_consecutive_5xx_eject_for_the_base_time() -> None:
    d, _ = make()
    assert report(d, A, 503, 5) == [False] * 4 + [True]
    assert d.ejected == {A: 1030.0}
    assert d.next_return == 1030.0


def test_a_success_breaks_the_streak() -> None:
    d, _ = make()
    report(d, A, 500, 4)
    d.on_result(A, 200)
    assert report(d, A, 500, 4) == [False] * 4
    assert d.ejected == {}


@pytest.mark.parametrize("status", [200, 204, 301, 404, 429, 499])
def test_answers_below_500_are_successes(status: int) -> None:
    d, _ = make(consecutive_5xx=2)
    d.on_result(A, 500)
    d.on_result(A, status)
    assert d.on_result(A, 500) is False


def test_resets_and_timeouts_count_as_5xx() -> None:
    d, _ = make(consecutive_5xx=3)
    assert [d.on_result(A, r) for r in (Failure.RESET, 502, Failure.TIMEOUT)] == \
        [False, False, True]


def test_consecutive_connect_failures_eject_on_their_own_count() -> None:
    d, _ = make(consecutive_5xx=0, consecutive_connect_failures=3)
    assert report(d, A, Failure.CONNECT, 3) == [False, False, True]


def test_a_5xx_ends_the_connect_streak_but_a_connect_failure_keeps_the_5xx_one() -> None:
    d, _ = make(consecutive_5xx=3, consecutive_connect_failures=3)
    report(d, A, Failure.CONNECT, 2)
    d.on_result(A, 500)  # it connected: the connect streak is over (5xx streak: 1)
    assert report(d, A, Failure.CONNECT, 2) == [False, False]
    assert d.on_result(A, 500) is False  # 5xx streak: 2
    assert d.on_result(A, 503) is True  # 3


def test_zero_disables_a_kind() -> None:
    d, _ = make(consecutive_5xx=0, consecutive_connect_failures=0)
    assert not any(report(d, A, 500, 50) + report(d, A, Failure.CONNECT, 50))


def test_ejected_endpoint_returns_when_its_time_is_up() -> None:
    d, clock = make()
    report(d, A, 500, 5)
    clock.advance(29.9)
    assert d.expire(clock()) is False
    assert A in d.ejected
    clock.advance(0.1)
    assert d.expire(clock()) is True
    assert d.ejected == {}
    assert d.next_return == float("inf")


def test_results_while_ejected_are_ignored_and_the_streak_restarts_on_return() -> None:
    d, clock = make()
    report(d, A, 500, 5)
    assert report(d, A, 500, 10) == [False] * 10  # in-flight requests finishing late
    clock.advance(30)
    d.expire(clock())
    assert report(d, A, 500, 5) == [False] * 4 + [True]


def test_ejection_time_grows_with_each_ejection_in_a_row_up_to_the_cap() -> None:
    d, clock = make(base_ejection_time=10.0, max_ejection_time=35.0, interval=100.0)
    lengths = []
    for _ in range(5):
        report(d, A, 500, 5)
        start, until = clock(), d.ejected[A]
        lengths.append(until - start)
        clock.now = until
        d.expire(clock())
    assert lengths == [10.0, 20.0, 30.0, 35.0, 35.0]


def test_time_back_in_service_forgets_past_ejections() -> None:
    d, clock = make(base_ejection_time=10.0, interval=10.0)
    for _ in range(3):  # ejected 3 times in a row: the next would last 40 s
        report(d, A, 500, 5)
        clock.now = d.ejected[A]
        d.expire(clock())
    clock.advance(25)  # two whole intervals back in service: two ejections forgotten
    report(d, A, 500, 5)
    assert d.ejected[A] - clock() == 20.0
    clock.now = d.ejected[A]
    d.expire(clock())
    clock.advance(1000)  # long healthy: starts from scratch
    report(d, A, 500, 5)
    assert d.ejected[A] - clock() == 10.0


@pytest.mark.parametrize(("members", "percent", "most"), [
    (3, 50, 1),  # 2/3 > 50%
    (4, 50, 2),
    (5, 50, 2),
    (10, 10, 1),
    (10, 35, 3),
    (3, 10, 1),  # the first ejection is always allowed (as Envoy)...
    (2, 100, 1),  # ...but never the last endpoint standing
    (1, 100, 0),
    (4, 0, 0),  # 0%: never
])
def test_never_more_than_max_ejection_percent(members: int, percent: float, most: int) -> None:
    addresses = [(f"h{i}", 80) for i in range(members)]
    d, _ = make(tuple(addresses), max_ejection_percent=percent)
    for a in addresses:
        report(d, a, 500, 5)
    assert len(d.ejected) == most


def test_an_endpoint_refused_for_lack_of_room_is_ejected_at_its_next_failure_once_room_frees(
) -> None:
    d, clock = make()  # 3 endpoints, 50%: one at a time
    report(d, A, 500, 5)
    assert report(d, B, 500, 6) == [False] * 6
    clock.advance(30)
    d.expire(clock())  # A is back: there is room again
    assert d.on_result(B, 500) is True
    assert set(d.ejected) == {B}


def test_uneject_returns_at_once_and_counts_as_a_return() -> None:
    d, clock = make(base_ejection_time=10.0, interval=10.0)
    report(d, A, 500, 5)
    clock.advance(3)
    assert d.uneject(A) is True
    assert d.uneject(A) is False
    assert d.ejected == {} and d.next_return == float("inf")
    report(d, A, 500, 5)  # right after: the second ejection in a row
    assert d.ejected[A] - clock() == 20.0


def test_retain_forgets_gone_endpoints_and_unknown_ones_are_ignored() -> None:
    d, _ = make((A, B, C, D))
    report(d, A, 500, 5)
    report(d, B, 500, 4)
    assert d.retain((B, C, D)) is True  # the ejected A left
    assert d.ejected == {} and d.next_return == float("inf")
    assert report(d, A, 500, 10) == [False] * 10  # not a member: nothing to eject
    assert d.on_result(B, 500) is True  # B's streak survived the update


def test_describe() -> None:
    d, clock = make()
    report(d, A, 500, 5)
    report(d, B, Failure.CONNECT, 2)
    clock.advance(10)
    assert d.describe(A, clock()) == {"ejected_for": 20.0, "ejections": 1,
                                      "consecutive_5xx": 0, "consecutive_connect_failures": 0}
    assert d.describe(B, clock()) == {"ejected_for": 0.0, "ejections": 0,
                                      "consecutive_5xx": 0, "consecutive_connect_failures": 2}
