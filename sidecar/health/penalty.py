"""Retry-After: how long an endpoint that asked for a pause is left alone.

An endpoint answering 429 (too many requests), or 503 with `Retry-After`, is telling
its clients to go elsewhere for a while. `penalty_seconds` turns one answer into that
while (RFC 9110 §10.2.3: `Retry-After` is delta-seconds or an HTTP-date), capped by
the configuration; `Penalties` remembers, per endpoint, until when. Expiry is checked
lazily against the clock: no timer per endpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from datetime import UTC
from email.utils import parsedate_to_datetime

from .config import RetryAfter

__all__ = ["Penalties", "penalty_seconds", "retry_after_delay"]


def retry_after_delay(value: bytes | str | None, now_epoch: float) -> float | None:
    """The seconds a `Retry-After` value asks for (0 for a date in the past), or None
    when it is absent or unreadable. `now_epoch` is wall-clock time (an HTTP-date is
    an absolute time)."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if text.isdigit():  # delta-seconds: 1*DIGIT
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 9110 dates are GMT in any case
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - now_epoch, 0.0)


def penalty_seconds(settings: RetryAfter, status: int, retry_after: bytes | str | None,
                    now_epoch: float) -> float:
    """How long to leave the endpoint alone after this answer; 0: not at all."""
    if status not in settings.statuses:
        return 0.0
    asked = retry_after_delay(retry_after, now_epoch)
    if asked is None:
        # Only 429 means "slow down" by itself; a bare 503 is a failure, outlier detection's.
        asked = settings.default if status == 429 else 0.0
    return min(asked, settings.max)


class Penalties:
    """Per endpoint (by address): until when (on the monotonic clock) it is set aside."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.until: dict[Hashable, float] = {}
        self.next_end = math.inf  # the earliest deadline: until then nothing expires

    def penalize(self, address: Hashable, seconds: float) -> bool:
        """Set `address` aside for `seconds` (never shortening a penalty); True if it was
        not set aside before, i.e. the set of available endpoints changes."""
        if seconds <= 0:
            return False
        end = self._clock() + seconds
        old = self.until.get(address)
        if old is not None and old >= end:
            return False
        self.until[address] = end
        self.next_end = min(self.next_end, end)
        return old is None

    def expire(self, now: float) -> bool:
        """Drop the penalties that ended by `now`; True if any did."""
        if now < self.next_end:
            return False
        ended = [a for a, end in self.until.items() if end <= now]
        for a in ended:
            del self.until[a]
        self.next_end = min(self.until.values(), default=math.inf)
        return bool(ended)

    def retain(self, addresses: Iterable[Hashable]) -> None:
        """Forget the endpoints discovery removed."""
        keep = set(addresses)
        for a in [a for a in self.until if a not in keep]:
            del self.until[a]
        self.next_end = min(self.until.values(), default=math.inf)

    def remaining(self, address: Hashable, now: float) -> float:
        return max(self.until.get(address, now) - now, 0.0)
