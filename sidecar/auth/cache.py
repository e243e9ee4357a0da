"""Verified tokens remembered by their SHA-256, each until it expires; least recently used
go first when full. A hit is one hash, one dict lookup and one comparison.

The hash is most of a hit's cost, and a run of requests mostly carries one token (a
keep-alive client's): the last token looked up is kept with its hash, and the same token
again skips hashing. That one token is the only one the cache holds in clear, and only
until the next lookup; the entries themselves are keyed by hash alone.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["TokenCache"]


class _Expiring(Protocol):
    @property
    def expires_at(self) -> float: ...


V = TypeVar("V", bound=_Expiring)


class TokenCache(Generic[V]):
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, V] = OrderedDict()
        self._last = ("", hashlib.sha256(b"").digest())  # the last token looked up, its key

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> V | None:
        last, key = self._last
        if token != last:
            key = self._key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry.expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, token: str, entry: V) -> None:
        if self.max_entries <= 0 or self._clock() >= entry.expires_at:
            return
        key = self._key(token)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def _key(self, token: str) -> bytes:
        key = hashlib.sha256(token.encode()).digest()
        self._last = (token, key)
        return key
