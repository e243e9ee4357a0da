"""The health of one cluster's endpoints, combined, in the form the balancer needs.

How it works
------------
Three sources judge an endpoint:
  - active checks (`thresholds.py`, fed by the prober): PENDING / UNHEALTHY are out;
  - passive outlier detection (`outlier.py`, fed by every request's outcome): ejected
    endpoints are out;
  - Retry-After penalties (`penalty.py`, fed by 429 / 503 answers): set aside.

`available(endpoints)` answers the endpoints to balance over:
  1. those no source counts out;
  2. if that leaves none, all of them ("panic", as Envoy): a guess beats a certain 503,
     and this is how a cluster whose endpoints are all still PENDING serves at start;
  3. minus the penalized ones, unless that leaves none.

The answer is computed only when something changed: every change bumps `version`, and
`available()` returns the same tuple object for the same `endpoints` tuple until then,
so the hot-path cost is one call, two identity checks and a comparison; the clock is
read only while an ejection or a penalty is due to end (expiry is lazy, no timers).
A caller that holds the last answer can compare it by identity (`is`) to know whether
to rebuild its balancer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Generic, Protocol, TypeVar

from .config import HealthSettings
from .outlier import OutlierDetector, Result
from .penalty import Penalties, penalty_seconds
from .thresholds import Thresholds

__all__ = ["ClusterHealth", "Listener"]


class Addressed(Protocol):
    @property
    def address(self) -> Hashable: ...


E = TypeVar("E", bound=Addressed)

# Told of each change: ("ejected" | "returned" | "unhealthy" | "healthy" | "penalized", address).
Listener = Callable[[str, Hashable], None]


class ClusterHealth(Generic[E]):
    def __init__(self, settings: HealthSettings, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 listeners: Sequence[Listener] = ()) -> None:
        """`clock`: monotonic seconds (ejections, penalties); `wall`: epoch seconds (for
        `Retry-After` dates)."""
        self.settings = settings
        self._clock = clock
        self._wall = wall
        self._listeners = list(listeners)
        hc, od = settings.health_check, settings.outlier_detection
        self.active = Thresholds(hc) if hc is not None else None
        self.outlier = OutlierDetector(od, clock) if od is not None else None
        self.penalties = Penalties(clock) if settings.retry_after is not None else None
        self._streaks = self.outlier.streaks if self.outlier is not None else {}
        self.members: tuple[Hashable, ...] = ()
        self.version = 0
        self._due = math.inf  # the earliest return from ejection or end of penalty
        self._for: Sequence[E] | None = None
        self._built = -1
        self._available: tuple[E, ...] = ()

    # what the data plane calls --------------------------------------------------------
    def available(self, endpoints: Sequence[E]) -> tuple[E, ...]:
        """The endpoints to balance over (see the module's docstring); the same object
        for as long as nothing changed."""
        if self._due != math.inf and self._clock() >= self._due:
            self._expire()
        if endpoints is self._for and self._built == self.version:
            return self._available
        return self._compute(endpoints)

    def on_result(self, endpoint: E, result: Result, retry_after: bytes | str | None = None,
                  ) -> None:
        """A request to `endpoint` ended: its status, or a `Failure` if it got no answer.
        `retry_after`: the response's `Retry-After` header, if any."""
        if retry_after is None and type(result) is int and result < 429:  # the common case
            streaks = self._streaks
            if streaks and endpoint.address in streaks:  # an empty dict is not even hashed into
                del streaks[endpoint.address]
            return
        outlier = self.outlier
        if outlier is not None and outlier.on_result(endpoint.address, result):
            self._due = min(self._due, outlier.next_return)
            self._changed("ejected", endpoint.address)
        if (result == 429 or retry_after is not None) and isinstance(result, int):
            self._penalize(endpoint.address, result, retry_after)

    # what discovery and the prober call ----------------------------------------------
    def update(self, endpoints: Iterable[E]) -> None:
        """Discovery changed the cluster's endpoints: judge the new ones, forget the gone."""
        self.members = tuple(e.address for e in endpoints)
        if self.active is not None:
            self.active.retain(self.members)
        if self.outlier is not None:
            self.outlier.retain(self.members)
        if self.penalties is not None:
            self.penalties.retain(self.members)
        self._recompute_due()
        self.version += 1

    def on_probe(self, address: Hashable, passed: bool) -> None:
        """An active health check of `address` passed or failed."""
        if self.active is None:
            return
        if self.active.record(address, passed):
            self._changed("healthy" if passed else "unhealthy", address)
        od = self.settings.outlier_detection
        if passed and self.outlier is not None and od is not None and od.health_check_unejects \
                and self.outlier.uneject(address):
            self._recompute_due()
            self._changed("returned", address)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # inside ----------------------------------------------------------------------------
    def _penalize(self, address: Hashable, status: int, retry_after: bytes | str | None) -> None:
        settings, penalties = self.settings.retry_after, self.penalties
        if settings is None or penalties is None:
            return
        seconds = penalty_seconds(settings, status, retry_after, self._wall())
        if penalties.penalize(address, seconds):
            self._due = min(self._due, penalties.next_end)
            self._changed("penalized", address)

    def _expire(self) -> None:
        now = self._clock()
        returned = list(self.outlier.ejected) if self.outlier is not None else []
        if self.outlier is not None and self.outlier.expire(now):
            for a in returned:
                if a not in self.outlier.ejected:
                    self._changed("returned", a)
        if self.penalties is not None and self.penalties.expire(now):
            self.version += 1
        self._recompute_due()

    def _recompute_due(self) -> None:
        self._due = min(self.outlier.next_return if self.outlier is not None else math.inf,
                        self.penalties.next_end if self.penalties is not None else math.inf)

    def _changed(self, event: str, address: Hashable) -> None:
        self.version += 1
        for listener in self._listeners:
            listener(event, address)

    def _compute(self, endpoints: Sequence[E]) -> tuple[E, ...]:
        down = self.active.down if self.active is not None else ()
        ejected = self.outlier.ejected if self.outlier is not None else ()
        out = [e for e in endpoints if e.address not in down and e.address not in ejected]
        if not out:
            out = list(endpoints)  # panic: everything is out, so nothing is
        penalized = self.penalties.until if self.penalties is not None else None
        if penalized:
            rested = [e for e in out if e.address not in penalized]
            out = rested or out
        self._for = endpoints
        self._built = self.version
        self._available = tuple(out) if len(out) != len(endpoints) else tuple(endpoints)
        return self._available

    def describe(self) -> list[dict[str, object]]:
        """Per endpoint, what each source thinks: for the admin API."""
        now = self._clock()
        if self._due != math.inf and now >= self._due:
            self._expire()
        rows: list[dict[str, object]] = []
        for a in self.members:
            row: dict[str, object] = {"address": _name(a)}
            if self.active is not None:
                verdict = self.active.verdict(a)
                row["active"] = verdict.value if verdict is not None else "unknown"
            if self.outlier is not None:
                row.update(self.outlier.describe(a, now))
            if self.penalties is not None:
                row["penalized_for"] = round(self.penalties.remaining(a, now), 3)
            rows.append(row)
        return rows


def _name(address: Hashable) -> str:
    if isinstance(address, tuple) and len(address) == 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
