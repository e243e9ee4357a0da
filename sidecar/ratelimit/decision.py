"""What a rate-limit check answers: allowed or not, and the numbers behind the headers.

Whatever kept the buckets (this sidecar or Redis), the check ends with the token level
of every window of every rule that covered the request: after the token was taken when
allowed, before when refused. `decide()` turns those levels into one `Decision`, about
the tightest window: when refused, the one that keeps the client out longest; when
allowed, the one with the fewest tokens left (then the slowest to refill).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import NamedTuple

from .config import Rule

__all__ = ["Decision", "Slot", "Source", "decide", "fixed", "slots"]


class Source(Enum):
    """Who decided."""

    LOCAL = "local"  # this sidecar's buckets (policy: local)
    REDIS = "redis"  # the shared buckets in Redis
    FALLBACK = "fallback"  # this sidecar's buckets, because Redis did not answer
    OPEN = "open"  # nobody: Redis did not answer and `fallback: open` lets it through
    CLOSED = "closed"  # nobody: Redis did not answer and `fallback: closed` refuses


class Decision(NamedTuple):
    allowed: bool  # let the request through (true in dry-run even when `limited`)
    limited: bool  # over the limit: answer 429 RATE_LIMITED unless dry-run
    limit: int  # the tightest window's limit (RateLimit-Limit); 0 when nothing is known
    remaining: int  # whole tokens left in it (RateLimit-Remaining)
    reset_s: float  # until it is full again (RateLimit-Reset)
    retry_after_s: float  # when limited: until a request would pass (Retry-After); else 0
    window_s: float  # the tightest window's period
    rule: str  # the name of the rule the tightest window belongs to
    source: Source


# A NamedTuple's generated __new__ costs twice tuple.__new__ for the same tuple.
_new = tuple.__new__


class Slot(NamedTuple):
    """One window of one rule, as `decide()` goes through them (built once per limiter)."""

    rule: int  # the index of the rule, and of its bucket's state
    window: int  # the index of the window in that state
    limit: int
    rate: float  # tokens per second
    period_s: float
    name: str  # the rule's name


def slots(rules: Sequence[Rule]) -> tuple[Slot, ...]:
    return tuple(Slot(k, i, w.limit, w.rate, w.period_s, r.name)
                 for k, r in enumerate(rules) for i, w in enumerate(r.windows))


def decide(table: Sequence[Slot], states: Sequence[Sequence[float]], limited: bool,
           source: Source, dry_run: bool = False) -> Decision:
    """`states[k][i]`: the tokens in window i of the bucket of rule k (see `slots`)."""
    if limited:  # the longest wait for a whole token
        wait, best, best_t = -1.0, table[0], 0.0
        for slot in table:
            t = states[slot[0]][slot[1]]
            if t < 1.0 and (1.0 - t) / slot[3] > wait:
                wait, best, best_t = (1.0 - t) / slot[3], slot, t
        _, _, limit, rate, period, name = best
        return _new(Decision, (dry_run, True, limit, 0, (limit - best_t) / rate, wait, period,
                               name, source))
    best = table[0]
    best_t = states[best[0]][best[1]]
    for slot in table[1:]:  # the fewest whole tokens left, then the slowest to fill up
        t = states[slot[0]][slot[1]]
        if int(t) < int(best_t) or (int(t) == int(best_t) and (slot[2] - t) / slot[3]
                                    > (best[2] - best_t) / best[3]):
            best, best_t = slot, t
    _, _, limit, rate, period, name = best
    return _new(Decision, (True, False, limit, int(best_t) if best_t > 0 else 0,
                           (limit - best_t) / rate, 0.0, period, name, source))


def fixed(rules: Sequence[Rule], source: Source, retry_after_s: float,
          dry_run: bool = False) -> Decision:
    """No buckets to go by (Redis down with `fallback: open` or `closed`)."""
    w = rules[0].windows[0]
    if source is Source.OPEN:
        return Decision(True, False, 0, 0, 0.0, 0.0, w.period_s, rules[0].name, source)
    return Decision(dry_run, True, w.limit, 0, retry_after_s, retry_after_s, w.period_s,
                    rules[0].name, source)
