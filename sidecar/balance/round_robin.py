"""Smooth weighted round robin (nginx's algorithm): even spread, weights respected."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar


class Weighted(Protocol):
    @property
    def weight(self) -> int: ...


T = TypeVar("T", bound=Weighted)


class RoundRobin(Generic[T]):
    def __init__(self, items: Sequence[T]) -> None:
        self._items = list(items)
        self._uniform = len({i.weight for i in self._items}) <= 1
        self._current = [0] * len(self._items)
        self._total = sum(i.weight for i in self._items)
        self._next = 0

    def pick(self) -> T | None:
        items = self._items
        if not items:
            return None
        if self._uniform:  # the common case costs one index step
            n = self._next
            self._next = (n + 1) % len(items)
            return items[n]
        best = 0
        current = self._current
        for i, item in enumerate(items):
            current[i] += item.weight
            if current[i] > current[best]:
                best = i
        current[best] -= self._total
        return items[best]
