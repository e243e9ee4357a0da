"""Retry-After parsing and the penalties it leads to: a fake clock, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from sidecar.health import Penalties, RetryAfter, penalty_seconds, retry_after_delay
from sidecar.testing import FakeClock

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("value", "seconds"), [
    (b"120", 120.0),
    ("  7 ", 7.0),
    (b"0", 0.0),
    (b"Wed, 01 May 2024 12:00:30 GMT", 30.0),  # IMF-fixdate
    (b"Wednesday, 01-May-24 12:01:00 GMT", 60.0),  # RFC 850
    (b"Wed May  1 12:00:05 2024", 5.0),  # asctime
    (b"Wed, 01 May 2024 11:00:00 GMT", 0.0),  # in the past: at once
    (b"-5", None),
    (b"1.5", None),
    (b"soon", None),
    (b"", None),
    (None, None),
])
def test_retry_after_delay(value: bytes | str | None, seconds: float | None) -> None:
    assert retry_after_delay(value, NOW) == seconds


def test_a_formatted_date_round_trips() -> None:
    when = datetime.fromtimestamp(NOW + 42, UTC)
    assert retry_after_delay(format_datetime(when, usegmt=True), NOW) == 42.0


@pytest.mark.parametrize(("status", "header", "seconds"), [
    (429, b"10", 10.0),
    (429, None, 1.0),  # the default for a bare 429
    (429, b"junk", 1.0),
    (429, b"3600", 60.0),  # capped
    (503, b"5", 5.0),
    (503, None, 0.0),  # a bare 503 is outlier detection's business
    (500, b"5", 0.0),  # not a status that asks for a pause
    (200, b"5", 0.0),
])
def test_penalty_seconds(status: int, header: bytes | None, seconds: float) -> None:
    assert penalty_seconds(RetryAfter(), status, header, NOW) == seconds


def test_penalty_settings_are_honoured() -> None:
    settings = RetryAfter(statuses=(429,), default=0.0, max=5.0)
    assert penalty_seconds(settings, 429, None, NOW) == 0.0
    assert penalty_seconds(settings, 429, b"30", NOW) == 5.0
    assert penalty_seconds(settings, 503, b"30", NOW) == 0.0


def test_penalties_expire_lazily_and_never_shorten() -> None:
    clock = FakeClock(50.0)
    p = Penalties(clock)
    assert p.penalize("a", 10.0) is True  # newly set aside
    assert p.penalize("a", 2.0) is False  # shorter: ignored
    assert p.penalize("a", 20.0) is False  # longer: extended, but still the same set
    assert p.penalize("b", 0.0) is False  # zero: nothing
    assert p.until == {"a": 70.0} and p.next_end == 60.0  # next_end may be early, never late
    assert p.expire(59.0) is False
    assert p.expire(60.0) is False  # nothing ended: only the bound moves
    assert p.next_end == 70.0
    assert p.remaining("a", 65.0) == 5.0
    assert p.expire(70.0) is True
    assert p.until == {} and p.next_end == float("inf")


def test_retain_forgets_gone_endpoints() -> None:
    clock = FakeClock()
    p = Penalties(clock)
    p.penalize("a", 5.0)
    p.penalize("b", 9.0)
    p.retain(["b", "c"])
    assert p.until == {"b": 9.0} and p.next_end == 9.0
