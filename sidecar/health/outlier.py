"""Passive outlier detection: endpoints that keep failing real requests are ejected for a while.

How it works (Envoy's consecutive-5xx outlier detection, sans-IO)
-----------------------------------------------------------------
The data plane reports every request's outcome per endpoint: `on_result(address,
status_or_failure)`, a plain call. Two streaks are kept per endpoint:

  answer < 500          both streaks end (the endpoint connected and answered)
  answer >= 500,        the 5xx streak grows; the connect streak ends (it connected)
  RESET, TIMEOUT
  CONNECT               the connect streak grows; the 5xx streak is left as it is

A streak reaching its threshold (`consecutive_5xx`, `consecutive_connect_failures`)
ejects the endpoint, if the cluster can spare it: the first ejection always can (as
Envoy) and further ones while at most `max_ejection_percent` of the endpoints would be
out; the last endpoint standing never is. Refused for lack of room, the endpoint is
tried again at its next failure (Envoy waits for a fresh streak).

The n-th ejection in a row lasts `n * base_ejection_time`, capped by
`max_ejection_time`; every `interval` back in service forgets one past ejection, so an
endpoint that recovered starts again from a short ejection. An ejected endpoint returns
when its time is up: `expire(now)` checks lazily (the next return is `next_return`, so
the caller reads the clock only when something is due); there is no timer. Results that
arrive for an ejected endpoint (requests already in flight) are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from enum import Enum

from .config import OutlierDetection

__all__ = ["Failure", "OutlierDetector", "Result"]


class Failure(Enum):
    """A request that got no answer from the endpoint."""

    CONNECT = "connect"  # the connection could not be made (refused, connect timeout)
    RESET = "reset"  # connected, then the connection was lost before the response head
    TIMEOUT = "timeout"  # connected, and no response head came in time


Result = int | Failure  # an HTTP status, or no answer at all


class _Past:
    """What an endpoint's ejections left behind."""

    __slots__ = ("count", "returned_at")

    def __init__(self) -> None:
        self.count = 0  # ejections in a row, once decayed (see `OutlierDetector._eject`)
        self.returned_at = -math.inf


class OutlierDetector:
    def __init__(self, settings: OutlierDetection, clock: Callable[[], float]) -> None:
        self.settings = settings
        self._clock = clock
        self.members: set[Hashable] = set()
        self.ejected: dict[Hashable, float] = {}  # address -> back in service at
        self.next_return = math.inf
        # address -> [5xx, connect]; no entry: 0, 0. Read by `ClusterHealth`'s fast path.
        self.streaks: dict[Hashable, list[int]] = {}
        self._past: dict[Hashable, _Past] = {}

    def retain(self, addresses: Iterable[Hashable]) -> bool:
        """The cluster's endpoints now (discovery changed them); True if an ejected one left."""
        self.members = set(addresses)
        for table in (self.streaks, self._past):
            for a in [a for a in table if a not in self.members]:
                del table[a]
        gone = [a for a in self.ejected if a not in self.members]
        for a in gone:
            del self.ejected[a]
        self.next_return = min(self.ejected.values(), default=math.inf)
        return bool(gone)

    def on_result(self, address: Hashable, result: Result) -> bool:
        """One request's outcome; True if it ejected the endpoint."""
        if isinstance(result, int) and result < 500:
            if address in self.streaks:  # the common case is one failed dict lookup
                del self.streaks[address]
            return False
        if address in self.ejected or address not in self.members:
            return False
        streak = self.streaks.get(address)
        if streak is None:
            streak = self.streaks[address] = [0, 0]
        if result is Failure.CONNECT:
            streak[1] += 1
            count, limit = streak[1], self.settings.consecutive_connect_failures
        else:
            streak[0] += 1
            streak[1] = 0
            count, limit = streak[0], self.settings.consecutive_5xx
        if limit == 0 or count < limit or not self._room():
            return False
        self._eject(address)
        return True

    def _room(self) -> bool:
        """May one more endpoint be ejected now?"""
        out, n = len(self.ejected), len(self.members)
        if out + 1 >= n or self.settings.max_ejection_percent <= 0:
            return False
        return out == 0 or (out + 1) * 100 <= n * self.settings.max_ejection_percent

    def _eject(self, address: Hashable) -> None:
        s = self.settings
        now = self._clock()
        past = self._past.get(address)
        if past is None:
            past = self._past[address] = _Past()
        if past.count:
            forgotten = math.floor(max(now - past.returned_at, 0.0) / s.interval)
            past.count = max(past.count - forgotten, 0)
        past.count += 1
        until = now + min(s.base_ejection_time * past.count, s.max_ejection_time)
        self.ejected[address] = until
        self.next_return = min(self.next_return, until)
        self.streaks.pop(address, None)

    def expire(self, now: float) -> bool:
        """Return the endpoints whose time is up by `now`; True if any did."""
        if now < self.next_return:
            return False
        back = [(a, until) for a, until in self.ejected.items() if until <= now]
        for a, until in back:
            self._return(a, until)
        self.next_return = min(self.ejected.values(), default=math.inf)
        return bool(back)

    def uneject(self, address: Hashable) -> bool:
        """Return `address` at once (an active health check passed); True if it was out."""
        if address not in self.ejected:
            return False
        self._return(address, self._clock())
        self.next_return = min(self.ejected.values(), default=math.inf)
        return True

    def _return(self, address: Hashable, at: float) -> None:
        del self.ejected[address]
        self._past[address].returned_at = at
        self.streaks.pop(address, None)

    def describe(self, address: Hashable, now: float) -> dict[str, object]:
        streak = self.streaks.get(address, [0, 0])
        past = self._past.get(address)
        until = self.ejected.get(address)
        return {
            "ejected_for": round(until - now, 3) if until is not None else 0.0,
            "ejections": past.count if past is not None else 0,
            "consecutive_5xx": streak[0],
            "consecutive_connect_failures": streak[1],
        }
