"""Local token buckets over a fake clock: refill, several windows, memory bounds."""

from __future__ import annotations

import pytest

from sidecar.ratelimit import Buckets, Window
from sidecar.ratelimit.bucket import has_token, take_token

MINUTE_60 = Window("minute", 60, 60.0)  # 1 token a second
SECOND_2 = Window("second", 2, 1.0)


def drain(b: Buckets, key: str, now: float) -> int:
    """Take tokens until refused; how many were taken."""
    n = 0
    while has_token(state := b.refill(key, now)):
        take_token(state)
        n += 1
    return n


def test_a_new_bucket_is_full_and_lets_the_whole_burst_through() -> None:
    b = Buckets([MINUTE_60])
    assert drain(b, "k", 0.0) == 60
    assert drain(b, "k", 0.0) == 0


def test_refill_is_continuous_and_capped() -> None:
    b = Buckets([MINUTE_60])
    drain(b, "k", 0.0)
    assert b.refill("k", 0.5)[0] == pytest.approx(0.5)
    assert drain(b, "k", 0.5) == 0
    assert drain(b, "k", 1.0) == 1  # one a second after the burst
    assert drain(b, "k", 11.0) == 10
    assert b.refill("k", 1000.0)[0] == 60.0  # never above the limit


def test_every_window_must_hold_a_token() -> None:
    b = Buckets([SECOND_2, Window("minute", 3, 60.0)])
    assert drain(b, "k", 0.0) == 2  # the second window stops the burst
    assert drain(b, "k", 1.0) == 1  # the second refilled, the minute had 1 left
    state = b.refill("k", 2.0)
    assert state[0] == 2.0 and state[1] == pytest.approx(0.1)  # 3/60 a second
    assert not has_token(state)  # minute is the tightest now


def test_keys_are_independent() -> None:
    b = Buckets([SECOND_2])
    assert drain(b, "a", 0.0) == 2
    assert drain(b, "b", 0.0) == 2


def test_a_clock_stepping_back_refills_nothing() -> None:
    b = Buckets([MINUTE_60])
    drain(b, "k", 10.0)
    assert drain(b, "k", 5.0) == 0
    assert drain(b, "k", 11.0) == 1


def test_idle_buckets_are_forgotten_as_they_fill_up() -> None:
    b = Buckets([MINUTE_60])
    for i in range(3):
        drain(b, f"idle-{i}", 0.0)
    assert len(b) == 3
    b.refill("busy", 59.9)
    assert len(b) == 4  # not full yet: kept
    b.refill("busy", 60.0)
    assert len(b) == 1  # a minute idle is full: forgotten, as if never made
    assert drain(b, "idle-0", 60.0) == 60 and b.evicted == 0


def test_max_keys_drops_the_least_recently_used_and_counts_it() -> None:
    b = Buckets([MINUTE_60], max_keys=2)
    drain(b, "a", 0.0)
    drain(b, "b", 0.0)
    b.refill("a", 1.0)  # a is now more recent than b
    drain(b, "c", 2.0)
    assert len(b) == 2 and b.evicted == 1
    assert drain(b, "a", 2.0) == 2  # kept: 2 s of refill
    assert drain(b, "b", 2.0) == 60  # dropped while not full: a fresh burst, hence the metric


def test_recency_holds_when_the_same_key_comes_again_and_again() -> None:
    b = Buckets([MINUTE_60], max_keys=2)
    drain(b, "a", 0.0)
    b.refill("a", 0.0)
    drain(b, "b", 0.0)
    b.refill("b", 0.0)
    b.refill("a", 0.0)  # a again after b: b is now the oldest
    b.refill("a", 0.0)
    b.refill("c", 1.0)  # one too many: b goes
    assert b.refill("a", 1.0)[0] == 1.0  # kept, drained, 1 s of refill
    assert b.refill("b", 1.0)[0] == 60.0  # dropped: a new, full bucket (and c goes)
    assert len(b) == 2 and b.evicted == 2  # b, then c: neither idle long enough to be full


def test_many_keys_stay_bounded() -> None:
    b = Buckets([SECOND_2], max_keys=100)
    for i in range(10_000):
        b.refill(f"ip-{i}", i * 0.001)
    assert len(b) <= 100
