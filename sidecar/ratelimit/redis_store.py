"""Token buckets shared by every sidecar of a service, in Redis: one Lua script per check.

How it works
------------
The script (`CHECK`) does what `bucket.py` does, atomically, for every rule covering
the request at once: read each bucket (a hash: a token level per window and `ts`, the
time of the last refill in microseconds), refill it, and take one token from each only
if every window of every bucket holds one. Redis runs scripts one at a time, so two
sidecars checking the same key can never both take its last token. The time is the
Redis server's own (`TIME`), so sidecars whose clocks disagree still agree on the
buckets; tests may pass their own time instead. Each bucket expires once it would be
full again: an absent bucket is a full one.

The script is sent by hash (EVALSHA); a Redis that does not know it (restarted, or
`SCRIPT FLUSH`) answers NOSCRIPT, and the script is then sent whole once (EVAL), which
also caches it again.

Redis being unreachable is a state, not an error per request (`Health`):

  AVAILABLE    every check goes to Redis. A failure (refused, reset, no answer within
               `timeout_s`) moves to UNAVAILABLE and is logged once.
  UNAVAILABLE  checks do not try Redis: `ready()` is False and the limiter answers from
               its fallback. After `retry_interval_s` the next check becomes the probe.
  PROBING      one check is trying Redis, the others still fall back. Its success moves
               to AVAILABLE (logged once), its failure (or cancellation) to UNAVAILABLE.

redis-py reconnects by itself: a pooled connection broken by a restart is dialled again
once (`Retry(NoBackoff(), 1)`) within the same deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from enum import Enum

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from .config import RedisSettings
from .store_errors import StoreUnavailable

__all__ = ["CHECK", "Health", "RedisStore", "StoreUnavailable"]

log = logging.getLogger("sidecar.ratelimit")

Clock = Callable[[], float]

# KEYS: one bucket hash per rule covering the request.
# ARGV: now in µs ('' = Redis's clock), take (1: take a token if allowed, 0: only look),
#       then per key: the number of windows n, then n times: field, limit, period in µs.
# Returns {allowed (1|0), then per key and window: tokens * 10^6, floored}: the levels
# after taking when allowed, before when refused.
CHECK = """
local now = tonumber(ARGV[1])
if not now then
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local take = ARGV[2] == '1'
local pos, allowed, buckets = 3, 1, {}
for k = 1, #KEYS do
  local n = tonumber(ARGV[pos])
  local fields, spec = {'ts'}, {}
  for i = 1, n do
    fields[i + 1] = ARGV[pos + 3 * i - 2]
    spec[i] = {ARGV[pos + 3 * i - 2], tonumber(ARGV[pos + 3 * i - 1]), tonumber(ARGV[pos + 3 * i])}
  end
  pos = pos + 1 + 3 * n
  local got = redis.call('HMGET', KEYS[k], unpack(fields))
  local ts = tonumber(got[1]) or now
  local elapsed = 0
  if now > ts then elapsed = now - ts; ts = now end
  local tokens, ttl = {}, 0
  for i = 1, n do
    local limit, period = spec[i][2], spec[i][3]
    local t = tonumber(got[i + 1])
    if t then t = math.min(limit, t + elapsed * limit / period) else t = limit end
    if t < 1 then allowed = 0 end
    tokens[i] = t
    if period > ttl then ttl = period end
  end
  buckets[k] = {ts, spec, tokens, ttl}
end
local out = {allowed}
for k = 1, #KEYS do
  local ts, spec, tokens, ttl = unpack(buckets[k])
  local set = {'ts', string.format('%d', ts)}
  for i = 1, #spec do
    local t = tokens[i]
    if allowed == 1 and take then t = t - 1 end
    set[#set + 1] = spec[i][1]
    set[#set + 1] = string.format('%.17g', t)
    out[#out + 1] = math.floor(t * 1000000)
  end
  if allowed == 1 and take then
    redis.call('HSET', KEYS[k], unpack(set))
    redis.call('PEXPIRE', KEYS[k], math.ceil(ttl / 1000))
  end
end
return out
"""
_SHA = hashlib.sha1(CHECK.encode()).hexdigest()


class Health(Enum):
    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"
    PROBING = "probing"


class RedisStore:
    """One per sidecar (all its limiters share it). `now`: the time the buckets go by,
    in seconds; None (the default) is the Redis server's clock."""

    def __init__(self, client: Redis, *, timeout_s: float = 0.05,
                 retry_interval_s: float = 1.0, clock: Clock = time.monotonic,
                 now: Clock | None = None, name: str = "redis") -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.retry_interval_s = retry_interval_s
        self.name = name  # for logs: where Redis is, without credentials
        self._clock = clock
        self._now = now
        self.health = Health.AVAILABLE
        self._retry_at = 0.0
        self.failures = 0  # checks that tried Redis and failed
        self.fallbacks = 0  # checks answered without Redis (failed, or not tried)
        self.transitions = 0  # AVAILABLE <-> UNAVAILABLE changes, for metrics

    @classmethod
    def connect(cls, settings: RedisSettings, *, clock: Clock = time.monotonic,
                now: Clock | None = None) -> RedisStore:
        """A store for `settings`; connections are made on first use, not here."""
        pool = BlockingConnectionPool.from_url(
            settings.url, max_connections=settings.max_connections,
            timeout=settings.timeout_s, socket_timeout=settings.timeout_s,
            socket_connect_timeout=settings.timeout_s, retry=Retry(NoBackoff(), 1))
        kw = pool.connection_kwargs
        where = kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', '?')}"
        return cls(Redis.from_pool(pool), timeout_s=settings.timeout_s,
                   retry_interval_s=settings.retry_interval_s, name=str(where),
                   clock=clock, now=now)

    @property
    def available(self) -> bool:
        """False while checks are answered by the fallback (a gauge for metrics)."""
        return self.health is not Health.UNAVAILABLE

    def ready(self) -> bool:
        """Should this check go to Redis? False: answer it from the fallback (counted)."""
        health = self.health
        if health is Health.AVAILABLE:
            return True
        if health is Health.UNAVAILABLE and self._clock() >= self._retry_at:
            self.health = Health.PROBING
            return True
        self.fallbacks += 1
        return False

    async def check(self, keys: Sequence[str], args: Sequence[str | int]) -> list[int]:
        """Run the script (see `CHECK` for `args`); call only after `ready()` said True.
        Raises `StoreUnavailable` when Redis does not answer within `timeout_s`."""
        probe = self.health is Health.PROBING
        try:
            async with asyncio.timeout(self.timeout_s):
                try:
                    out = await self.client.evalsha(_SHA, len(keys), *keys, *args)
                except NoScriptError:
                    out = await self.client.eval(CHECK, len(keys), *keys, *args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
        except BaseException:  # cancelled (the client left): a lost probe must not stick
            if probe:
                self._down()
            raise
        if probe:
            self._up()
        return [int(x) for x in out]

    def now_arg(self) -> str:
        """The script's first argument: the buckets' time in µs, '' for Redis's clock."""
        return "" if self._now is None else str(int(self._now() * 1_000_000))

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.fallbacks += 1
        if self.health is Health.AVAILABLE:
            self.transitions += 1
            log.warning("rate limits: redis at %s unreachable (%s: %s); answering from the "
                        "fallback, trying again every %gs", self.name, type(exc).__name__,
                        exc, self.retry_interval_s)
        self._down()

    def _down(self) -> None:
        self.health = Health.UNAVAILABLE
        self._retry_at = self._clock() + self.retry_interval_s

    def _up(self) -> None:
        if self.health is not Health.AVAILABLE:
            self.transitions += 1
            log.info("rate limits: redis at %s answers again; limits are global again",
                     self.name)
        self.health = Health.AVAILABLE

    async def close(self) -> None:
        await self.client.aclose()
