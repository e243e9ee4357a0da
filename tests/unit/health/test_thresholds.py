"""Active health verdicts: thresholds in both directions, new and removed endpoints."""

from __future__ import annotations

from sidecar.health import HealthCheck, Thresholds, Verdict

A, B = ("a", 80), ("b", 80)


def make(**check: int) -> Thresholds:
    t = Thresholds(HealthCheck(**check))  # type: ignore[arg-type]
    t.retain([A])
    return t


def results(t: Thresholds, *passed: bool) -> list[bool]:
    return [t.record(A, p) for p in passed]


def test_new_endpoints_are_pending_and_not_healthy() -> None:
    t = make()
    assert t.verdict(A) is Verdict.PENDING
    assert t.down == {A}


def test_the_first_pass_makes_a_pending_endpoint_healthy_at_once() -> None:
    t = make(healthy_threshold=3)
    assert results(t, True) == [True]
    assert t.verdict(A) is Verdict.HEALTHY and t.down == set()


def test_the_first_failure_makes_it_unhealthy_and_then_it_needs_the_threshold() -> None:
    t = make(healthy_threshold=2)
    assert results(t, False) == [True]
    assert t.verdict(A) is Verdict.UNHEALTHY
    assert results(t, True, True) == [False, True]
    assert t.verdict(A) is Verdict.HEALTHY


def test_three_failures_in_a_row_take_it_out_and_two_passes_bring_it_back() -> None:
    t = make(healthy_threshold=2, unhealthy_threshold=3)
    results(t, True)
    assert results(t, False, False, True, False, False) == [False] * 5  # a pass resets
    assert results(t, False) == [True]
    assert t.down == {A}
    assert results(t, True, False, True) == [False] * 3  # a failure resets
    assert results(t, True) == [True]
    assert t.down == set()


def test_retain_starts_new_endpoints_pending_and_forgets_gone_ones() -> None:
    t = make()
    results(t, True)
    assert t.retain([A, B]) is True
    assert t.verdict(B) is Verdict.PENDING and t.down == {B}
    assert t.retain([A, B]) is False
    assert t.retain([B]) is True
    assert t.verdict(A) is None
    assert t.record(A, False) is False  # a late probe of a removed endpoint
    assert t.down == {B}
