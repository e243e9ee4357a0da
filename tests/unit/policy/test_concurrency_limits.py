"""Envoy-style concurrency limits: counters, overflows, and releases that must match."""

from __future__ import annotations

import pytest

from sidecar.policy.limits import ConcurrencyLimits, LimitsConfig


def test_requests_up_to_the_limit_then_overflow() -> None:
    limits = ConcurrencyLimits(LimitsConfig(max_requests=3))
    assert [limits.acquire_request() for _ in range(5)] == [True, True, True, False, False]
    assert (limits.requests, limits.request_overflows) == (3, 2)
    limits.release_request()
    assert limits.acquire_request()
    assert not limits.acquire_request()
    assert limits.request_overflows == 3


def test_connections_and_pending_are_limited_apart() -> None:
    limits = ConcurrencyLimits(LimitsConfig(max_connections=1, max_pending=2, max_requests=1))
    assert limits.acquire_connection() and not limits.acquire_connection()
    assert limits.acquire_pending() and limits.acquire_pending() and not limits.acquire_pending()
    assert limits.acquire_request()  # the other counters do not use this one up
    assert (limits.connection_overflows, limits.pending_overflows, limits.request_overflows) == (
        1, 1, 0)
    limits.release_connection()
    limits.release_pending()
    assert (limits.connections, limits.pending, limits.requests) == (0, 1, 1)
    assert limits.acquire_connection() and limits.acquire_pending()


@pytest.mark.parametrize("kind", ["connection", "pending", "request"])
def test_a_release_without_an_acquire_is_a_bug(kind: str) -> None:
    limits = ConcurrencyLimits()
    assert getattr(limits, f"acquire_{kind}")()
    getattr(limits, f"release_{kind}")()
    with pytest.raises(RuntimeError):
        getattr(limits, f"release_{kind}")()


def test_envoy_defaults_and_validation() -> None:
    assert LimitsConfig() == LimitsConfig(1024, 1024, 1024)
    with pytest.raises(ValueError) as e:
        LimitsConfig(max_connections=0, max_pending=0, max_requests=0)
    assert str(e.value).splitlines() == ["max_connections: must be >= 1",
                                         "max_pending: must be >= 1",
                                         "max_requests: must be >= 1"]
