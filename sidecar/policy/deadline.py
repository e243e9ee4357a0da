"""End-to-end deadlines: the timeout a caller sends, what is left of it, and what to
send the next hop.

Two headers carry it:

- `x-request-timeout`: a decimal number and a unit, `250ms`, `2s`, `1.5s`; or a bare
  integer, meaning milliseconds (as Envoy's `x-envoy-upstream-rq-timeout-ms`). The
  units are lower case; nothing else (no `m`, which gRPC reads as milli-).
  The sidecar always sends `<integer>ms`.
- `grpc-timeout`: gRPC's wire format, 1 to 8 digits and a unit: H (hours), M
  (minutes), S (seconds), m (milli-), u (micro-), n (nanoseconds).

Zero means the deadline has passed (as gRPC reads it), not "no deadline". When both
headers come, the tighter wins. A value that does not parse is ignored and reported in
`Incoming.problems` (for the access log), never raised: a caller's typo should not
fail its request. Sent values are rounded down: the next hop is never promised more
time than is left.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "Incoming",
    "format_grpc_timeout",
    "format_request_timeout",
    "outgoing_headers",
    "parse_grpc_timeout",
    "parse_request_timeout",
    "read_incoming",
    "remaining",
    "tightest",
]

_MAX_LEN = 32  # longer values are refused before any parsing
_REQUEST = re.compile(rb"([0-9]+)(?:\.([0-9]+))?([a-z]*)")
_REQUEST_UNITS = {b"ms": 0.001, b"s": 1.0, b"": 0.001}
_GRPC = re.compile(rb"([0-9]+)([A-Za-z]?)")
_GRPC_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
# Finest first: a value is sent in the finest unit that fits in 8 digits.
_GRPC_SEND = ((b"n", 1), (b"u", 10**3), (b"m", 10**6), (b"S", 10**9), (b"M", 60 * 10**9),
              (b"H", 3600 * 10**9))
_GRPC_MAX = 10**8  # 8 digits


class Incoming(NamedTuple):
    timeout_s: float | None  # None: the caller set no (valid) deadline
    problems: tuple[str, ...] = ()  # one line per bad header value


def _ascii(value: bytes | str) -> bytes:
    if len(value) > _MAX_LEN:
        raise ValueError(f"longer than {_MAX_LEN} characters")
    if isinstance(value, str):
        if not value.isascii():
            raise ValueError("not ASCII")
        value = value.encode()
    return value.strip(b" \t")  # optional whitespace around a field value (RFC 9110 5.5)


def _request_timeout(value: bytes | str) -> float:
    m = _REQUEST.fullmatch(_ascii(value))
    if m is None:
        raise ValueError("not a number with a unit (250ms, 2s) or whole milliseconds")
    whole, fraction, unit = m.groups()
    if unit not in _REQUEST_UNITS:
        raise ValueError(f"unknown unit {unit.decode()!r}; use ms or s")
    if fraction is not None and not unit:
        raise ValueError("a bare number is whole milliseconds; add a unit for a fraction")
    number = whole + b"." + fraction if fraction is not None else whole
    return float(number) * _REQUEST_UNITS[unit]


def _grpc_timeout(value: bytes | str) -> float:
    m = _GRPC.fullmatch(_ascii(value))
    if m is None:
        raise ValueError("not digits and a unit (H, M, S, m, u, n)")
    digits, unit = m.groups()
    if not unit:
        raise ValueError("no unit (H, M, S, m, u, n)")
    if unit not in _GRPC_UNITS:
        raise ValueError(f"unknown unit {unit.decode()!r}; use H, M, S, m, u or n")
    if len(digits) > 8:
        raise ValueError("more than 8 digits")
    return int(digits) * _GRPC_UNITS[unit]


def parse_request_timeout(value: bytes | str) -> float | None:
    """Seconds from an `x-request-timeout` value; None when it is not valid."""
    try:
        return _request_timeout(value)
    except ValueError:
        return None


def parse_grpc_timeout(value: bytes | str) -> float | None:
    """Seconds from a `grpc-timeout` value; None when it is not valid."""
    try:
        return _grpc_timeout(value)
    except ValueError:
        return None


def read_incoming(x_request_timeout: bytes | str | None,
                  grpc_timeout: bytes | str | None) -> Incoming:
    """The caller's timeout from the two headers (None where absent); never raises."""
    timeout: float | None = None
    problems: list[str] = []
    for name, value, parse in (("x-request-timeout", x_request_timeout, _request_timeout),
                               ("grpc-timeout", grpc_timeout, _grpc_timeout)):
        if value is None:
            continue
        try:
            seconds = parse(value)
        except ValueError as e:
            shown = value.decode("latin-1") if isinstance(value, bytes) else value
            problems.append(f"{name} {shown[:_MAX_LEN]!r} ignored: {e}")
            continue
        timeout = seconds if timeout is None else min(timeout, seconds)
    return Incoming(timeout, tuple(problems))


def remaining(timeout_s: float, elapsed_s: float) -> float:
    """What is left of a timeout after `elapsed_s`; 0.0 once it has passed."""
    left = timeout_s - elapsed_s
    return left if left > 0.0 else 0.0


def tightest(*timeouts: float | None) -> float | None:
    """The smallest of the timeouts that are set (route, per try, deadline); None if none is."""
    found = [t for t in timeouts if t is not None]
    return min(found) if found else None


def format_request_timeout(seconds: float) -> bytes:
    """`x-request-timeout` for the next hop: whole milliseconds, rounded down."""
    # The epsilon undoes binary fractions (0.29 * 1000 = 289.99999999999997).
    return b"%dms" % max(0, int(seconds * 1000 + 1e-6))


def format_grpc_timeout(seconds: float) -> bytes:
    """`grpc-timeout` for the next hop: the finest unit that fits 8 digits, rounded down."""
    nanos = max(0, int(seconds * 1e9 + 0.5))
    for unit, size in _GRPC_SEND:
        count = nanos // size
        if count < _GRPC_MAX:
            return b"%d%s" % (count, unit)
    return b"99999999H"  # over 11,000 years


def outgoing_headers(remaining_s: float, grpc: bool) -> list[tuple[bytes, bytes]]:
    """The deadline headers to send the next hop: `grpc-timeout` only on gRPC requests,
    where the server's library enforces it; `x-request-timeout` on every request."""
    headers = [(b"x-request-timeout", format_request_timeout(remaining_s))]
    if grpc:
        headers.append((b"grpc-timeout", format_grpc_timeout(remaining_s)))
    return headers
