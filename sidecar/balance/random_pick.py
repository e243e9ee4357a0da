"""Weighted random choice, and the draw that power-of-two-choices makes twice."""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate

from .ewma import Balanced, E, Handle, Loads

__all__ = ["RandomPick", "WeightedDraw"]


class WeightedDraw:
    """Draws an index with probability proportional to its weight, skipping some indices.

    Skipping costs no retries: the draw is made over the total minus the skipped weights,
    then shifted past each skipped span, so an endpoint holding 99% of the weight can be
    excluded as cheaply as any other.
    """

    __slots__ = ("_ends", "_starts", "_total", "_weights", "uniform")

    def __init__(self, weights: Sequence[int]) -> None:
        self._weights = list(weights)
        self._ends = list(accumulate(self._weights))
        self._starts = [end - w for end, w in zip(self._ends, self._weights, strict=True)]
        self._total = self._ends[-1] if self._ends else 0
        self.uniform = len(set(self._weights)) <= 1

    def draw(self, rng: random.Random, skip: Sequence[int] = ()) -> int:
        """An index not in `skip` (sorted ascending, distinct); there must be one left."""
        # int(random() * k) is below k for every k < 2**53 and a third of randrange's cost;
        # its bias (under 2**-40 for ten thousand endpoints) is far below any weight's.
        if self.uniform:
            i = int(rng.random() * (len(self._weights) - len(skip)))
            for s in skip:
                if i >= s:
                    i += 1
            return i
        r = int(rng.random() * (self._total - sum(self._weights[s] for s in skip)))
        for s in skip:
            if r >= self._starts[s]:
                r += self._weights[s]
        return bisect_right(self._ends, r)


class RandomPick(Balanced[E]):
    """Each pick independent, proportional to weight; penalized endpoints only as a last resort."""

    def __init__(self, endpoints: Sequence[E], *, rng: random.Random,
                 clock: Callable[[], float], previous: Loads[E] | None = None) -> None:
        self.loads = Loads(endpoints, clock, previous=previous)
        self._rng = rng
        self._draw = WeightedDraw(self.loads.weights())

    def pick(self, key: bytes | None = None, *, exclude: E | None = None) -> Handle[E] | None:
        """`key` is ignored; `exclude` is avoided when any other endpoint exists."""
        loads = self.loads
        n = len(loads)
        if n <= 1:
            return loads.handle(0) if n else None
        skip = loads.penalized()
        x = loads.index_of(exclude)
        if x >= 0 and x not in skip:
            skip.append(x)
            skip.sort()
        if len(skip) >= n:  # everything is penalized: ignore penalties, keep the exclusion
            skip = [x] if x >= 0 else []
        return loads.handle(self._draw.draw(self._rng, skip))
