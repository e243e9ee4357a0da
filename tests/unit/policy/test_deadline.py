"""Deadline headers in and out: parsing tables (bad values included), what is left, formats."""

from __future__ import annotations

import pytest

from sidecar.policy.deadline import (
    Incoming,
    format_grpc_timeout,
    format_request_timeout,
    outgoing_headers,
    parse_grpc_timeout,
    parse_request_timeout,
    read_incoming,
    remaining,
    tightest,
)

REQUEST_TIMEOUTS: list[tuple[bytes | str, float | None]] = [
    (b"250ms", 0.25),
    (b"2s", 2.0),
    (b"250", 0.25),  # a bare integer is milliseconds
    (b"1.5s", 1.5),
    (b"0.5ms", 0.0005),
    (b"0", 0.0),  # already expired
    (b"0s", 0.0),
    (b"007ms", 0.007),
    (b" 30s\t", 30.0),  # optional whitespace around the value
    ("250ms", 0.25),  # str as well as bytes
    # bad
    (b"", None),
    (b"   ", None),
    (b"1.5", None),  # a fraction needs a unit
    (b"1m", None),  # minutes or milli? refused
    (b"1h", None),
    (b"250MS", None),  # units are lower case
    (b"250 ms", None),
    (b"-1s", None),
    (b"+1s", None),
    (b"1e3", None),
    (b"1_000", None),  # int() would take it
    (b".5s", None),
    (b"5.s", None),
    (b"1s500ms", None),
    (b"inf", None),
    (b"nan", None),
    ("\u0661\u0662\u0663", None),  # Arabic-Indic digits: int() would take them too
    (b"1" * 40, None),  # too long to look at
    (b"\xff\xfe", None),
]


@pytest.mark.parametrize(("value", "expected"), REQUEST_TIMEOUTS)
def test_parse_request_timeout(value: bytes | str, expected: float | None) -> None:
    assert parse_request_timeout(value) == (pytest.approx(expected) if expected is not None
                                            else None)


GRPC_TIMEOUTS: list[tuple[bytes | str, float | None]] = [
    (b"1H", 3600.0),
    (b"2M", 120.0),
    (b"3S", 3.0),
    (b"100m", 0.1),
    (b"250000u", 0.25),
    (b"5000000n", 0.005),
    (b"99999999n", 0.099999999),  # 8 digits: the most allowed
    (b"0n", 0.0),
    (b"00000001S", 1.0),
    ("10S", 10.0),
    # bad
    (b"", None),
    (b"100", None),  # no unit
    (b"123456789n", None),  # 9 digits
    (b"1s", None),  # units are case-sensitive: s is not S
    (b"1h", None),
    (b"1ms", None),
    (b"1.5S", None),
    (b"-1S", None),
    (b"S", None),
    (b"1 S", None),
    (b"1x", None),
    ("\uff11S", None),  # a full-width digit one
]


@pytest.mark.parametrize(("value", "expected"), GRPC_TIMEOUTS)
def test_parse_grpc_timeout(value: bytes | str, expected: float | None) -> None:
    assert parse_grpc_timeout(value) == (pytest.approx(expected) if expected is not None
                                         else None)


def test_read_incoming_takes_the_tighter_of_the_two() -> None:
    assert read_incoming(None, None) == Incoming(None, ())
    assert read_incoming(b"2s", None) == Incoming(2.0, ())
    assert read_incoming(None, b"500m") == Incoming(0.5, ())
    assert read_incoming(b"2s", b"500m") == Incoming(0.5, ())
    assert read_incoming(b"100ms", b"1S") == Incoming(0.1, ())


def test_read_incoming_reports_bad_values_and_uses_the_good_one() -> None:
    incoming = read_incoming(b"1.5", b"2S")
    assert incoming.timeout_s == 2.0
    assert incoming.problems == (
        "x-request-timeout '1.5' ignored: a bare number is whole milliseconds; "
        "add a unit for a fraction",)
    both_bad = read_incoming(b"soon", b"123456789S")
    assert both_bad.timeout_s is None
    assert [p.split(" ignored: ")[1] for p in both_bad.problems] == [
        "not a number with a unit (250ms, 2s) or whole milliseconds", "more than 8 digits"]
    assert read_incoming("5m", b"1s").problems == (
        "x-request-timeout '5m' ignored: unknown unit 'm'; use ms or s",
        "grpc-timeout '1s' ignored: unknown unit 's'; use H, M, S, m, u or n")


def test_read_incoming_never_raises_and_keeps_reports_short() -> None:
    incoming = read_incoming(b"x" * 10_000, "é")
    assert incoming.timeout_s is None
    assert all(len(p) < 120 for p in incoming.problems)
    assert "longer than 32 characters" in incoming.problems[0]
    assert incoming.problems[1].endswith("not ASCII")


def test_remaining_and_tightest() -> None:
    assert remaining(2.0, 0.5) == 1.5
    assert remaining(2.0, 2.0) == 0.0
    assert remaining(2.0, 5.0) == 0.0  # passed: never negative
    assert tightest() is None
    assert tightest(None, None) is None
    assert tightest(15.0, None, 0.3, 2.0) == 0.3


@pytest.mark.parametrize(("seconds", "expected"), [
    (0.25, b"250ms"),
    (2.0, b"2000ms"),
    (0.29, b"290ms"),  # not 289 from 289.99999999999997
    (1.2345, b"1234ms"),  # rounded down
    (0.0009, b"0ms"),  # less than a millisecond left: expired for the next hop
    (0.0, b"0ms"),
    (-1.0, b"0ms"),
])
def test_format_request_timeout(seconds: float, expected: bytes) -> None:
    assert format_request_timeout(seconds) == expected


@pytest.mark.parametrize(("seconds", "expected"), [
    (0.0, b"0n"),
    (-3.0, b"0n"),
    (0.000001, b"1000n"),
    (0.099999999, b"99999999n"),  # the finest unit that fits 8 digits
    (0.1, b"100000u"),
    (2.0, b"2000000u"),
    (99.9999999, b"99999999u"),
    (100.0, b"100000m"),
    (100000.0, b"100000S"),
    (10**8 * 60.0, b"1666666H"),  # 10^8 minutes is a digit too many for M
    (10**16 * 3600.0, b"99999999H"),
])
def test_format_grpc_timeout(seconds: float, expected: bytes) -> None:
    assert format_grpc_timeout(seconds) == expected


@pytest.mark.parametrize("seconds", [0.001, 0.25, 1.0, 1.999, 37.5, 3600.0, 86400.0 * 3])
def test_what_is_sent_parses_back_to_at_most_what_is_left(seconds: float) -> None:
    grpc = parse_grpc_timeout(format_grpc_timeout(seconds))
    request = parse_request_timeout(format_request_timeout(seconds))
    assert grpc is not None and request is not None
    assert seconds - 1e-6 <= grpc <= seconds + 1e-9
    assert seconds - 0.001 <= request <= seconds + 1e-9


def test_outgoing_headers() -> None:
    assert outgoing_headers(0.25, grpc=False) == [(b"x-request-timeout", b"250ms")]
    assert outgoing_headers(0.25, grpc=True) == [(b"x-request-timeout", b"250ms"),
                                                 (b"grpc-timeout", b"250000u")]
