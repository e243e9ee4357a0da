"""Consistent hashing on a ring, with bounded load: sticky sessions that cannot melt one endpoint.

How it works (Karger's ring; Mirrokni, Thorup and Zadimoghaddam's "Consistent Hashing
with Bounded Loads" as Envoy's `hash_balance_factor` applies it):
- each endpoint owns `weight * per_weight` points ("virtual nodes") on a 64-bit ring,
  each point the hash of `"<address>_<n>"`; a key's owner is the first point clockwise
  from the key's hash. Removing an endpoint hands only its own keys to its neighbours.
- `per_weight` is the smallest power of two (1/2, 1/4... for large weights; each
  endpoint keeps at least one point) that puts `min_ring_size` points on the ring.
  Envoy scales the count exactly instead, which changes every endpoint's points
  whenever the total weight changes and moves keys between endpoints that stayed; a
  power of two stays put until the total weight doubles or halves.
- hashes are BLAKE2b cut to 8 bytes: stable across processes and restarts (Python's
  `hash()` is salted per process), so every sidecar draws the same ring.
- bounded load: with `m` requests in flight on the cluster, an endpoint may hold at most
  `ceil(c * (m + 1) * weight / total_weight)` of them. A pick whose owner is full walks
  clockwise to the first endpoint with room (one always has room when c >= 1); the
  same rule skips a penalized endpoint or the one to exclude.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections.abc import Callable, Hashable, Sequence
from hashlib import blake2b

from .ewma import Balanced, E, Handle, Loads

__all__ = ["RingHash", "key_hash"]


def key_hash(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def _point_name(address: Hashable) -> str:
    if isinstance(address, tuple) and len(address) == 2:
        return f"{address[0]}:{address[1]}"  # the usual (host, port): "10.0.0.7:8080"
    return str(address)


def _points_per_weight(total_weight: int, min_ring_size: int, max_ring_size: int) -> float:
    """The smallest power of two (maybe below 1: large weights) reaching `min_ring_size`."""
    exponent = math.ceil(math.log2(min_ring_size / total_weight))
    while total_weight * 2.0**exponent < min_ring_size:  # float log2 at exact powers
        exponent += 1
    while total_weight * 2.0 ** (exponent - 1) >= min_ring_size:
        exponent -= 1
    while exponent > 0 and total_weight * 2.0**exponent > max_ring_size:
        exponent -= 1
    return 2.0**exponent


class RingHash(Balanced[E]):
    def __init__(self, endpoints: Sequence[E], *, rng: random.Random,
                 clock: Callable[[], float], previous: Loads[E] | None = None,
                 balance_factor: float | None = 1.25, min_ring_size: int = 1024,
                 max_ring_size: int = 8 * 1024 * 1024) -> None:
        """`balance_factor` is c above (None: no bound, pure consistent hashing);
        `previous`: the `loads` of the balancer this one replaces."""
        if balance_factor is not None and not balance_factor >= 1.0:
            raise ValueError(f"balance_factor: must be >= 1, got {balance_factor}")
        if not 1 <= min_ring_size <= max_ring_size:
            raise ValueError(f"min_ring_size: must be in 1..max_ring_size ({max_ring_size})")
        self.loads = loads = Loads(endpoints, clock, previous=previous)
        self._rng = rng
        self._factor = balance_factor
        weights = loads.weights()
        self._weights = weights
        self._total_weight = sum(weights)
        points: list[tuple[int, str, int]] = []
        if weights:
            per_weight = _points_per_weight(self._total_weight, min_ring_size, max_ring_size)
            for i, endpoint in enumerate(loads.endpoints):
                name = _point_name(endpoint.address)
                count = max(round(weights[i] * per_weight), 1)
                points.extend((key_hash(f"{name}_{n}".encode()), name, i) for n in range(count))
        points.sort()  # by hash, then name: the ring does not depend on the endpoints' order
        self._hashes = [h for h, _, _ in points]
        self._owners = [i for _, _, i in points]

    @property
    def ring_size(self) -> int:
        return len(self._hashes)

    def owner(self, key: bytes) -> E | None:
        """The endpoint that owns `key` on the ring, ignoring load: a lookup, not a pick."""
        if not self._hashes:
            return None
        return self.loads.endpoints[self._owners[self._slot(key_hash(key))]]

    def pick(self, key: bytes | None = None, *, exclude: E | None = None) -> Handle[E] | None:
        """The owner of `key` unless it is full, penalized or `exclude`: then the next
        endpoint clockwise that is none of these. No key: a random point of the ring."""
        loads = self.loads
        n = len(loads)
        if n <= 1:
            return loads.handle(0) if n else None
        h = key_hash(key) if key is not None else self._rng.getrandbits(64)
        slot = self._slot(h)
        first = self._owners[slot]
        x = loads.index_of(exclude)
        now = loads.clock()
        if first != x and self._has_room(first, now):
            return loads.handle(first)
        return loads.handle(self._walk(slot, x, now))

    def _slot(self, h: int) -> int:
        slot = bisect_left(self._hashes, h)
        return 0 if slot == len(self._hashes) else slot

    def _has_room(self, i: int, now: float) -> bool:
        load = self.loads.records[i]
        if now < load.penalty_until:
            return False
        if self._factor is None:
            return True
        cap = math.ceil(self._factor * (load.group.pending + 1) * self._weights[i]
                        / self._total_weight)
        return load.pending < cap

    def _walk(self, slot: int, exclude: int, now: float) -> int:
        """Clockwise from `slot`: the first endpoint with room, else the first not excluded."""
        owners, size, n = self._owners, len(self._owners), len(self.loads)
        seen = {exclude}
        fallback = -1
        for step in range(size):
            i = owners[(slot + step) % size]
            if i in seen:
                continue
            if self._has_room(i, now):
                return i
            if fallback < 0:
                fallback = i
            seen.add(i)
            if len(seen) >= n + (exclude < 0):
                break
        return fallback
