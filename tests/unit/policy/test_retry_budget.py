"""The retry budget over a fake clock: ratio, floor, window expiry."""

from __future__ import annotations

import bisect

import pytest

from sidecar.policy.budget import BudgetConfig, RetryBudget


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def storm(budget: RetryBudget, clock: FakeClock, seconds: int, rps: int = 100) -> list[int]:
    """`rps` requests a second, each failing and asking for a retry (which fails too and
    asks no more). Returns the ticks (1/rps s) at which a retry was allowed."""
    granted = []
    for tick in range(seconds * rps):
        clock.now = tick / rps
        budget.deposit()
        if budget.try_withdraw():
            granted.append(tick)
    return granted


def test_100_requests_a_second_allow_20_retries_a_second_plus_the_floor() -> None:
    clock = FakeClock()
    budget = RetryBudget(BudgetConfig(ratio=0.2, min_retries_per_second=10, window_s=10),
                         clock)
    granted = storm(budget, clock, seconds=70)
    steady = [t for t in granted if 1000 <= t < 7000]  # 60 s after the first window
    assert len(steady) / 60 == pytest.approx(30, rel=0.02)  # 20/s of ratio + 10/s floor
    # No 10 s window, wherever it starts, holds more than 20% of its 1000 requests
    # plus the 100 retries of the floor.
    worst = max(bisect.bisect_left(granted, s + 1000) - bisect.bisect_left(granted, s)
                for s in range(0, 6000))
    assert worst <= 0.2 * 1000 + 10 * 10


def test_ratio_alone_caps_retries_at_20_percent() -> None:
    clock = FakeClock()
    budget = RetryBudget(BudgetConfig(ratio=0.2, min_retries_per_second=0), clock)
    granted = storm(budget, clock, seconds=60)
    assert granted[0] == 4  # the fifth request pays for the first retry
    per_second = [0] * 60
    for tick in granted:
        per_second[tick // 100] += 1
    assert per_second[1:] == [20] * 59


def test_floor_alone_without_traffic() -> None:
    clock = FakeClock(100.0)
    budget = RetryBudget(BudgetConfig(ratio=0.2, min_retries_per_second=10, window_s=10),
                         clock)
    assert budget.available() == 100.0
    assert sum(budget.try_withdraw() for _ in range(150)) == 100
    clock.now = 109.9  # the withdrawals are still in the window
    assert not budget.try_withdraw()
    clock.now = 110.0  # ... and now they are not
    assert budget.available() == 100.0
    assert budget.try_withdraw()


def test_deposits_expire_with_the_window() -> None:
    clock = FakeClock(0.0)
    budget = RetryBudget(BudgetConfig(ratio=0.2, min_retries_per_second=0, window_s=10),
                         clock)
    for _ in range(50):
        budget.deposit()  # worth 10 retries
    assert budget.available() == 10.0
    clock.now = 9.99
    assert budget.try_withdraw()
    clock.now = 10.0  # the slice of the deposits has left the window
    assert budget.available() == 0.0
    assert not budget.try_withdraw()


def test_a_long_silence_forgets_everything() -> None:
    clock = FakeClock(0.0)
    budget = RetryBudget(BudgetConfig(min_retries_per_second=1, window_s=10), clock)
    assert sum(budget.try_withdraw() for _ in range(20)) == 10  # the floor is spent
    clock.now = 3600.0
    assert budget.available() == 10.0


def test_zero_ratio_and_zero_floor_allow_no_retries() -> None:
    clock = FakeClock()
    budget = RetryBudget(BudgetConfig(ratio=0, min_retries_per_second=0), clock)
    assert storm(budget, clock, seconds=5) == []


class CountingClock(FakeClock):
    reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def test_a_caller_may_pass_the_time_it_has_read() -> None:
    clock = CountingClock()
    budget = RetryBudget(BudgetConfig(ratio=1.0, min_retries_per_second=0), clock)
    assert clock.reads == 1  # construction
    budget.deposit(now=0.5)
    assert budget.try_withdraw(now=0.6)
    assert not budget.try_withdraw(now=0.7)
    assert budget.available(now=0.8) == 0.0
    assert clock.reads == 1  # never again


def test_defaults_and_validation() -> None:
    assert BudgetConfig() == BudgetConfig(ratio=0.2, min_retries_per_second=10.0, window_s=10.0)
    with pytest.raises(ValueError) as e:
        BudgetConfig(ratio=-0.1, min_retries_per_second=-1, window_s=0)
    assert [line.split(":")[0] for line in str(e.value).splitlines()] == [
        "ratio", "min_retries_per_second", "window_s"]
