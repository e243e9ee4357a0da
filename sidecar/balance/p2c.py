"""Least request by power of two choices over peak-EWMA latency: the default balancer.

How it works (Finagle's `P2CPeakEwma`, linkerd2-proxy's balancer): draw two distinct
endpoints at random (in proportion to weight), and send the request to the one whose
cost is lower, where cost = peak-EWMA latency * (pending requests + 1) (see `ewma.py`).
Two random choices instead of a scan of all endpoints keep a pick O(1) and, unlike
"always the least loaded", do not herd every balancer onto the same endpoint; the
latency term steers traffic away from a slow endpoint within one response, the pending
term away from one that is piling up requests. A penalized endpoint (429, Retry-After)
costs more than any other until its penalty ends.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from .ewma import Balanced, E, Ewma, Handle, Loads
from .random_pick import WeightedDraw

__all__ = ["P2C"]


class P2C(Balanced[E]):
    def __init__(self, endpoints: Sequence[E], *, rng: random.Random,
                 clock: Callable[[], float], previous: Loads[E] | None = None,
                 decay: float = 10.0, default_rtt: float = 0.030,
                 failure_rtt: float = 1.0) -> None:
        """`previous`: the `loads` of the balancer this one replaces, whose learned state
        is kept for the endpoints (by address) that are still here."""
        settings = Ewma(decay=decay, default_rtt=default_rtt, failure_rtt=failure_rtt)
        self.loads = Loads(endpoints, clock, settings, previous)
        self._rng = rng
        self._draw = WeightedDraw(self.loads.weights())
        self._uniform = self._draw.uniform

    def pick(self, key: bytes | None = None, *, exclude: E | None = None) -> Handle[E] | None:
        """`key` is ignored; `exclude` (the endpoint of the previous try) is avoided when
        any other endpoint exists."""
        loads = self.loads
        n = len(loads)
        x = loads.index_of(exclude)
        if n <= 1:
            return loads.handle(0) if n else None
        if n == 2 and x >= 0:
            return loads.handle(1 - x)
        draw, rng = self._draw.draw, self._rng
        if x < 0 and self._uniform:  # the common case, inlined: two distinct indices
            a = int(rng.random() * n)
            b = int(rng.random() * (n - 1))
            b += b >= a
        elif x < 0:
            a = draw(rng)
            b = draw(rng, (a,))
        else:
            a = draw(rng, (x,))
            b = draw(rng, (x, a) if x < a else (a, x))
        now = loads.clock()
        records = loads.records
        return loads.handle(b if records[b].cost(now) < records[a].cost(now) else a)
