"""Local token buckets: one per key, each with a rule's windows, bounded in number.

How it works
------------
A window `minute: 100` is a bucket of 100 tokens refilled at 100/60 tokens a second:
a full bucket lets a burst of 100 through, and then 1 request every 0.6 s. A rule with
several windows keeps one level per window in the same bucket, and a request needs a
token in each (the tightest decides). Refilling is lazy: a bucket remembers when it
was last refilled and catches up when next touched, so there are no timers.

Buckets live in an LRU-ordered dict. A bucket untouched for its longest period is full
again, exactly as if it had never been made, so it is forgotten at no cost to accuracy
(a few per call, from the cold end). Past `max_keys` the least recently used bucket is
dropped even if not full; `evicted` counts those, because each one may let a burst
through again (a metric worth watching: raise `max_keys`).

A bucket's state is a list `[tokens per window..., refilled_at]`, handed to the caller
as is: the limiter checks several rules' buckets before taking from any, and a list is
the cheapest thing to hand over on the hot path.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from .config import Window

__all__ = ["Buckets", "has_token", "take_token"]

_FORGET_PER_CALL = 4  # idle buckets dropped per call at most: the cost stays O(1)


class Buckets:
    __slots__ = ("_caps", "_idle_s", "_keys", "_rates", "_warm", "_width", "evicted", "max_keys",
                 "windows")

    def __init__(self, windows: Sequence[Window], max_keys: int = 100_000) -> None:
        if not windows or max_keys < 1:
            raise ValueError("buckets need at least one window and max_keys >= 1")
        self.windows = tuple(windows)
        self.max_keys = max_keys
        self._caps = tuple(float(w.limit) for w in windows)
        self._rates = tuple(w.rate for w in windows)
        self._width = len(windows)
        self._idle_s = max(w.period_s for w in windows)  # empty to full takes one period
        self._keys: OrderedDict[str, list[float]] = OrderedDict()
        # The key last refilled, so at the warm end unless since removed: the same client
        # again (most requests, on kept-alive connections) needs no move_to_end call.
        self._warm: str | None = None
        self.evicted = 0  # buckets dropped before they were full (max_keys reached)

    def __len__(self) -> int:
        return len(self._keys)

    def refill(self, key: str, now: float) -> list[float]:
        """The key's bucket brought up to `now` (created full if new): its live state."""
        keys = self._keys
        state = keys.get(key)
        if state is None:
            state = [*self._caps, now]
            keys[key] = state
            if len(keys) > self.max_keys:
                _, old = keys.popitem(last=False)
                if now - old[-1] < self._idle_s:
                    self.evicted += 1
        else:
            if key is not self._warm:
                keys.move_to_end(key)
            elapsed = now - state[-1]
            if elapsed > 0:  # a clock that stepped back refills nothing
                if self._width == 1:  # the common case, without the loop
                    t = state[0] + elapsed * self._rates[0]
                    cap = self._caps[0]
                    state[0] = cap if t > cap else t
                else:
                    caps, rates = self._caps, self._rates
                    for i in range(self._width):
                        t = state[i] + elapsed * rates[i]
                        state[i] = caps[i] if t > caps[i] else t
                state[-1] = now
        self._warm = key
        # Forget a few idle buckets from the cold end (never the caller's: it is the
        # warm end, and was refilled at `now`). Mostly the coldest is not idle: one look,
        # and none when the caller's is the only bucket (always so for `by: route`).
        if len(keys) > 1 and now - next(iter(keys.values()))[-1] >= self._idle_s:
            self._forget(now)
        return state

    def _forget(self, now: float) -> None:
        keys, idle = self._keys, self._idle_s
        for _ in range(_FORGET_PER_CALL):
            if now - next(iter(keys.values()))[-1] < idle:
                break
            keys.popitem(last=False)


def has_token(state: list[float]) -> bool:
    """Every window of the bucket holds a whole token."""
    return min(state[:-1]) >= 1.0


def take_token(state: list[float]) -> None:
    for i in range(len(state) - 1):
        state[i] -= 1.0
