"""TTLs as typed on the command line, and durations as messages show them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sidecar.identity.ca import CAError, format_duration, parse_ttl


def test_parse_ttl() -> None:
    assert parse_ttl("24h") == timedelta(hours=24)
    assert parse_ttl("90s") == timedelta(seconds=90)
    assert parse_ttl("7d") == timedelta(days=7)
    assert parse_ttl("1h30m") == timedelta(minutes=90)
    assert parse_ttl(" 300 ") == timedelta(seconds=300)
    for bad in ["", "0s", "0", "-1h", "1.5h", "h", "24 h", "1w", "1h 30m"]:
        with pytest.raises(CAError):
            parse_ttl(bad)


def test_format_duration() -> None:
    assert format_duration(timedelta(days=364, hours=23, minutes=5)) == "364d23h"
    assert format_duration(timedelta(hours=23, minutes=59, seconds=9)) == "23h59m"
    assert format_duration(timedelta(seconds=12)) == "12s"
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(-timedelta(minutes=5)) == "-5m0s"
