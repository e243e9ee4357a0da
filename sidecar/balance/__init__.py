"""Load balancers: pick one endpoint of a cluster per request.

Every balancer built by `make_balancer` has one shape (`Balancer`): `pick(key, exclude=)`
returns a `Handle` whose `.endpoint` is the choice, and the caller ends it with
`handle.done(latency_s, ok)` (or `cancel()`); `penalize(endpoint, seconds)` weighs an
endpoint down. When discovery changes the endpoints the cluster builds a new balancer
with `previous=old` and the per-endpoint state of the addresses that stay carries over,
even when the kind changes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .ewma import Addressed, Balanced, E, Ewma, Handle, Loads
from .p2c import P2C
from .random_pick import RandomPick
from .ring_hash import RingHash
from .round_robin import RoundRobin

__all__ = [
    "KINDS",
    "P2C",
    "Addressed",
    "Balancer",
    "Ewma",
    "Handle",
    "Loads",
    "RandomPick",
    "RingHash",
    "RoundRobin",
    "make_balancer",
]

KINDS = ("least_request", "round_robin", "ring_hash", "random")  # the first is the default


class Balancer(Protocol[E]):
    loads: Loads[E]

    def pick(self, key: bytes | None = None, *, exclude: E | None = None) -> Handle[E] | None: ...

    def penalize(self, endpoint: E, seconds: float) -> None: ...

    def observe(self, endpoint: E, latency_s: float, ok: bool = True) -> None: ...


class _Slot:
    """What `RoundRobin` orders: a weight and a position in the table."""

    __slots__ = ("i", "weight")

    def __init__(self, i: int, weight: int) -> None:
        self.i = i
        self.weight = weight


class _RoundRobin(Balanced[E]):
    """`RoundRobin` in the common shape: skips the excluded and penalized endpoints."""

    def __init__(self, endpoints: Sequence[E], *, rng: random.Random,
                 clock: Callable[[], float], previous: Loads[E] | None = None) -> None:
        self.loads = Loads(endpoints, clock, previous=previous)
        self._order = RoundRobin([_Slot(i, w) for i, w in enumerate(self.loads.weights())])

    def pick(self, key: bytes | None = None, *, exclude: E | None = None) -> Handle[E] | None:
        loads = self.loads
        slot = self._order.pick()
        if slot is None:
            return None
        x = loads.index_of(exclude)
        penalized = loads.penalized()
        if slot.i != x and slot.i not in penalized:  # the common case: one step of the order
            return loads.handle(slot.i)
        for _ in range(len(loads) - 1):  # the order's next endpoints, within one round
            slot = self._order.pick()
            assert slot is not None  # the order is not empty
            if slot.i != x and slot.i not in penalized:
                return loads.handle(slot.i)
        # A heavy weight can fill a whole round: take any acceptable endpoint, then any other.
        others = [i for i in range(len(loads)) if i != x] or [x]
        return loads.handle(next((i for i in others if i not in penalized), others[0]))


_MAKERS: dict[str, Any] = {
    "least_request": P2C,
    "round_robin": _RoundRobin,
    "ring_hash": RingHash,
    "random": RandomPick,
}
assert set(_MAKERS) == set(KINDS)


def make_balancer(kind: str, endpoints: Sequence[E], *, rng: random.Random,
                  clock: Callable[[], float], previous: Balancer[E] | None = None,
                  **options: Any) -> Balancer[E]:
    """A balancer named by configuration. `options` are the kind's own keyword arguments
    (an unknown one raises TypeError); `previous` is the balancer this one replaces."""
    maker = _MAKERS.get(kind)
    if maker is None:
        raise ValueError(f"unknown balancer {kind!r}: expected one of {', '.join(KINDS)}")
    balancer: Balancer[E] = maker(endpoints, rng=rng, clock=clock,
                                  previous=previous.loads if previous is not None else None,
                                  **options)
    return balancer
