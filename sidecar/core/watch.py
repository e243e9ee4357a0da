"""A value that changes over time, with subscribers told of each change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Watched(Generic[T]):
    def __init__(self, value: T) -> None:
        self.value = value
        self._subscribers: list[Callable[[T], None]] = []

    def subscribe(self, callback: Callable[[T], None]) -> None:
        """Call `callback` now with the current value, and again after each change."""
        self._subscribers.append(callback)
        callback(self.value)

    def set(self, value: T) -> None:
        if value == self.value:
            return
        self.value = value
        for callback in list(self._subscribers):
            callback(value)
