"""Exponential back-off with full jitter (AWS Architecture Blog, "Exponential Backoff
and Jitter"): sleep = random(0, min(cap, base * 2 ** n)).

Full jitter spreads the retries of many clients that failed together over the whole
interval, so they do not come back as a synchronized wave; it does the least work of
the jitter variants for the same completion time. The randomness is injected.
"""

from __future__ import annotations

import math
from typing import Protocol

__all__ = ["Backoff", "Rng"]


class Rng(Protocol):
    """What back-off needs of `random.Random`: a float in [0, 1)."""

    def random(self) -> float: ...


class Backoff:
    __slots__ = ("_base", "_cap", "_max_exponent", "_rng")

    def __init__(self, base_s: float, cap_s: float, rng: Rng) -> None:
        if not base_s > 0:
            raise ValueError("base_s: must be > 0")
        if not cap_s >= base_s:
            raise ValueError("cap_s: must be >= base_s")
        self._base = base_s
        self._cap = cap_s
        self._rng = rng
        # Past this exponent the ceiling is the cap; stopping there keeps 2 ** n small.
        self._max_exponent = math.ceil(math.log2(cap_s / base_s))

    def ceiling(self, attempt: int) -> float:
        """The longest wait after `attempt` tries (1 = the first one failed):
        base, 2·base, 4·base, ... up to the cap."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, not {attempt}")
        return min(self._cap, math.ldexp(self._base, min(attempt - 1, self._max_exponent)))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before the next try, uniform in [0, ceiling(attempt))."""
        return self._rng.random() * self.ceiling(attempt)
