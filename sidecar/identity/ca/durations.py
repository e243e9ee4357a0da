"""Lifetimes as people write them (`24h`, `90d`, `1h30m`) and as messages show them."""

from __future__ import annotations

import re
from datetime import timedelta

from .errors import CAError

__all__ = ["format_duration", "parse_ttl"]

_PART = re.compile(r"(\d+)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> timedelta:
    """`45s`, `30m`, `24h`, `7d`, or a sum such as `1h30m`; a bare number is seconds."""
    value = text.strip().lower()
    if value.isdigit():
        seconds = int(value)
    elif value and _PART.sub("", value) == "":
        seconds = sum(int(n) * _SECONDS[unit] for n, unit in _PART.findall(value))
    else:
        raise CAError(f"invalid TTL {text!r} (examples: 90s, 30m, 24h, 7d, 1h30m)")
    if seconds <= 0:
        raise CAError(f"TTL {text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The two largest units: `364d23h`, `23h59m`, `5m0s`, `12s`; negative gets a minus."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts: list[str] = []
    for unit in ("d", "h", "m", "s"):
        n, seconds = divmod(seconds, _SECONDS[unit])
        if n or parts:
            parts.append(f"{n}{unit}")
    return sign + "".join(parts[:2]) if parts else "0s"
