"""Retry budget (Finagle's RetryBudget, which Linkerd uses): retries may add at most
`ratio` of the requests of the last `window_s` to the load, plus a floor of
`min_retries_per_second` so that a quiet service can still retry.

How it works: a leaky token account in integer milli-retries (no float drift). Each
original request deposits `ratio` of a retry (200 at 20%), each retry withdraws a
whole one (1000). Both are booked in the current time slice and forgotten with it, so
only the last `window_s` counts (to within one slice, a tenth of the window). On top
sits a constant reserve of `min_retries_per_second * window_s` retries. A retry is
allowed while reserve + (deposits - withdrawals of the window) covers it, so over any
window: retries <= ratio * requests + min_retries_per_second * window_s.
The floor is an average over the window, not a rate: after a quiet spell the whole
reserve may go at once (Finagle and tower's `TpsBudget` behave alike).

When the upstream fails everything, clients' retries would multiply the load by
`max_attempts`; with the budget they add `ratio` to it at most.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BudgetConfig", "RetryBudget"]

Clock = Callable[[], float]

_UNIT = 1000  # one retry, in the account's integer units
_SLICES = 10  # the window's granularity: Finagle's WindowedAdder uses 10 slices too


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    ratio: float = 0.2  # retries per original request, over the window (Linkerd's default)
    min_retries_per_second: float = 10.0  # Finagle's and Linkerd's default floor
    window_s: float = 10.0  # Finagle's and Linkerd's default TTL

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.ratio <= 1000:
            problems.append("ratio: must be in [0, 1000]")
        if not self.min_retries_per_second >= 0:
            problems.append("min_retries_per_second: must be >= 0")
        if not self.window_s > 0:
            problems.append("window_s: must be > 0")
        if problems:  # one line per problem, so a loader can prefix each with its path
            raise ValueError("\n".join(problems))


class RetryBudget:
    """One per upstream cluster. `now` may be passed by a caller that has read the clock
    already (the request's start time); otherwise the clock is read."""

    __slots__ = ("_balance", "_clock", "_deposit", "_reserve", "_slice", "_slices", "_width",
                 "config")

    def __init__(self, config: BudgetConfig | None = None, clock: Clock = time.monotonic) -> None:
        self.config = cfg = config or BudgetConfig()
        self._clock = clock
        self._deposit = round(cfg.ratio * _UNIT)
        self._reserve = round(cfg.min_retries_per_second * cfg.window_s * _UNIT)
        self._width = cfg.window_s / _SLICES
        self._slices = [0] * _SLICES  # net units booked in each slice
        self._balance = 0  # sum of the slices
        self._slice = int(clock() / self._width)  # the index of the current slice

    def deposit(self, now: float | None = None) -> None:
        """An original request (not a retry) was sent."""
        j = self._advance(self._clock() if now is None else now)
        self._slices[j] += self._deposit
        self._balance += self._deposit

    def try_withdraw(self, now: float | None = None) -> bool:
        """May a retry be sent? If so, it is paid for."""
        j = self._advance(self._clock() if now is None else now)
        if self._balance + self._reserve < _UNIT:
            return False
        self._slices[j] -= _UNIT
        self._balance -= _UNIT
        return True

    def available(self, now: float | None = None) -> float:
        """Retries that could be sent now (for metrics)."""
        self._advance(self._clock() if now is None else now)
        return max(0, self._balance + self._reserve) / _UNIT

    def _advance(self, now: float) -> int:
        """Forget the slices that left the window; return the current slice's position."""
        current = int(now / self._width)
        gap = current - self._slice
        if gap > 0:
            slices = self._slices
            if gap >= _SLICES:
                slices[:] = [0] * _SLICES
                self._balance = 0
            else:
                for k in range(self._slice + 1, current + 1):
                    j = k % _SLICES
                    self._balance -= slices[j]
                    slices[j] = 0
            self._slice = current
        return self._slice % _SLICES
