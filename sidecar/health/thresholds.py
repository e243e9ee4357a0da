"""Active health verdicts: probe results in, healthy / unhealthy out (sans-IO).

How it works (Envoy's active health checking)
---------------------------------------------
Each endpoint is in one of three states; `_NEXT` is the whole table.

  PENDING    new (discovery just added it): no probe has answered yet. Not healthy:
             it gets traffic only if nothing else is available. Its first result
             decides at once: pass -> HEALTHY, fail -> UNHEALTHY.
  HEALTHY    `unhealthy_threshold` failures in a row -> UNHEALTHY; a pass resets the count.
  UNHEALTHY  `healthy_threshold` passes in a row -> HEALTHY; a failure resets the count.

`record()` answers whether the endpoint's health changed, so the caller recomputes
what the balancer sees only then.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from enum import Enum

from .config import HealthCheck

__all__ = ["Thresholds", "Verdict"]


class Verdict(Enum):
    PENDING = "pending"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


_PENDING, _HEALTHY, _UNHEALTHY = Verdict.PENDING, Verdict.HEALTHY, Verdict.UNHEALTHY

# (state, probe passed) -> (state reached once the streak is long enough, which threshold).
# A result that agrees with the state resets the streak (the row's target is the state itself).
_NEXT: dict[tuple[Verdict, bool], tuple[Verdict, str | None]] = {
    (_PENDING, True): (_HEALTHY, None),  # None: at once
    (_PENDING, False): (_UNHEALTHY, None),
    (_HEALTHY, True): (_HEALTHY, None),
    (_HEALTHY, False): (_UNHEALTHY, "unhealthy_threshold"),
    (_UNHEALTHY, True): (_HEALTHY, "healthy_threshold"),
    (_UNHEALTHY, False): (_UNHEALTHY, None),
}


class _Endpoint:
    __slots__ = ("streak", "verdict")

    def __init__(self) -> None:
        self.verdict = _PENDING
        self.streak = 0  # consecutive results against the verdict


class Thresholds:
    def __init__(self, check: HealthCheck) -> None:
        self.check = check
        self._states: dict[Hashable, _Endpoint] = {}
        self.down: set[Hashable] = set()  # every endpoint not HEALTHY

    def retain(self, addresses: Iterable[Hashable]) -> bool:
        """The endpoints to judge now: new ones start PENDING, gone ones are forgotten.
        True if the set changed."""
        keep = set(addresses)
        gone = [a for a in self._states if a not in keep]
        for a in gone:
            del self._states[a]
            self.down.discard(a)
        new = keep.difference(self._states)
        for a in new:
            self._states[a] = _Endpoint()
            self.down.add(a)
        return bool(gone or new)

    def record(self, address: Hashable, passed: bool) -> bool:
        """One probe's result; True if the endpoint's verdict changed."""
        state = self._states.get(address)
        if state is None:
            return False  # removed while its probe was out
        target, threshold = _NEXT[(state.verdict, passed)]
        if target is state.verdict:
            state.streak = 0
            return False
        state.streak += 1
        if threshold is not None and state.streak < getattr(self.check, threshold):
            return False
        state.verdict = target
        state.streak = 0
        if target is _HEALTHY:
            self.down.discard(address)
        else:
            self.down.add(address)
        return True

    def verdict(self, address: Hashable) -> Verdict | None:
        state = self._states.get(address)
        return state.verdict if state is not None else None
