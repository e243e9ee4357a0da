"""The rate limits of one route, and the registry that builds them for a sidecar.

    limits = RateLimits(config.rate_limiting, service="orders")      # once per config
    limiter = limits.for_route("orders", route.rate_limits)          # None: no limits here
    d = limiter.check(client_ip, consumer=sub, peer=spiffe_id, headers=head.headers)
    d = await limiter.check_global(...)      # instead, when limiter.is_global

A route is covered by the service-wide rules (`rate_limiting.limits`), whose buckets every
route shares, and then by its own (`rate_limits`). A request passes only if every bucket
of every rule covering it holds a token, and then one is taken from each: a refused
request costs nothing. `check()` is a plain call on this sidecar's buckets; with
`policy: redis`, `check_global()` asks Redis and falls back (see `redis_store.py`)
to `rate_limiting.redis.fallback` while Redis does not answer. When Redis allows, the
local buckets are charged too, so that a fallback starts from this sidecar's recent
use rather than from full buckets.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .bucket import Buckets, has_token, take_token
from .config import Fallback, KeyBy, Policy, RateLimiting, Rule
from .decision import Decision, Slot, Source, decide, fixed, slots
from .store_errors import StoreUnavailable

if TYPE_CHECKING:  # redis (and what it imports: cryptography, OpenTelemetry) loads only with
    from .redis_store import RedisStore  # `policy: redis`

__all__ = ["Limiter", "RateLimits"]

Clock = Callable[[], float]
Headers = Sequence[tuple[bytes, bytes]]

_MAX_KEY = 128  # longer key values (a header, a subject) are hashed: memory stays bounded


# Module globals: on Python 3.11 `KeyBy.IP` costs a class attribute lookup per use.
_IP, _CONSUMER, _PEER = KeyBy.IP, KeyBy.CONSUMER, KeyBy.PEER
_HEADER, _ROUTE = KeyBy.HEADER, KeyBy.ROUTE


# A NamedTuple's generated __new__ costs twice tuple.__new__ for the same tuple.
_new = tuple.__new__


def _hashed(key: str) -> str:
    return "sha:" + hashlib.blake2b(key.encode("utf-8", "surrogateescape"),
                                    digest_size=16).hexdigest()


class Limiter:
    __slots__ = ("_buckets", "_by", "_clock", "_fallback", "_last", "_one", "_prefixes",
                 "_quiet_one", "_rules", "_slots", "_spec", "_store", "dry_run",
                 "headers_on_allowed", "route")

    def __init__(self, route: str, rules: Sequence[Rule], buckets: Sequence[Buckets], *,
                 clock: Clock = time.monotonic, store: RedisStore | None = None,
                 fallback: Fallback = Fallback.LOCAL, redis_prefixes: Sequence[str] = (),
                 dry_run: bool = False, headers_on_allowed: bool = False) -> None:
        if not rules or len(rules) != len(buckets):
            raise ValueError("a limiter needs one set of buckets per rule, and a rule")
        if store is not None and len(redis_prefixes) != len(rules):
            raise ValueError("a global limiter needs a Redis key prefix per rule")
        self.route = route
        self.dry_run = dry_run
        self.headers_on_allowed = headers_on_allowed  # RateLimit-* on allowed responses too
        self._rules = tuple(rules)
        self._buckets = tuple(buckets)
        self._by = tuple((r.by, (r.header or "").encode("latin-1")) for r in rules)
        self._slots = slots(rules)
        # One rule with one window (Kong's `minute: 100`) has a path of its own, below.
        self._one = self._slots[0] if len(self._slots) == 1 else None
        # ...and when local and no header wants the numbers, one of `admit()`'s own.
        self._quiet_one = self._one if store is None and not headers_on_allowed else None
        self._clock = clock
        self._store = store
        self._fallback = fallback
        self._prefixes = tuple(redis_prefixes)
        spec: list[str | int] = []  # the script's per-key arguments (see redis_store.CHECK)
        for r in rules:
            spec.append(len(r.windows))
            for w in r.windows:
                spec += [w.name, w.limit, round(w.period_s * 1_000_000)]
        self._spec = tuple(spec)
        # The last key made from an identity: (how, the identity's str, the key). A
        # connection's requests bring the same client_ip (a token's, the same subject)
        # object, so the key is neither built nor hashed again.
        self._last: tuple[KeyBy, str, str] | None = None

    @property
    def is_global(self) -> bool:
        """Checks go to Redis: call `check_global()` (awaited) instead of `check()`."""
        return self._store is not None

    def keys(self, client_ip: str, consumer: str | None = None, peer: str | None = None,
             headers: Headers = ()) -> list[str]:
        """The bucket key of each rule for this request (missing identities: the client IP)."""
        return [self._key(by, name, client_ip, consumer, peer, headers) for by, name in self._by]

    def _key(self, by: KeyBy, name: bytes, client_ip: str, consumer: str | None,
             peer: str | None, headers: Headers) -> str:
        source = client_ip if by is _IP else consumer if by is _CONSUMER else \
            peer if by is _PEER else None
        last = self._last
        if source is not None and last is not None and last[1] is source and last[0] is by:
            return last[2]
        key = self._new_key(by, name, client_ip, consumer, peer, headers)
        if source is not None:
            self._last = (by, source, key)
        return key

    def _new_key(self, by: KeyBy, name: bytes, client_ip: str, consumer: str | None,
                 peer: str | None, headers: Headers) -> str:
        if by is _IP:
            key = "ip:" + client_ip
        elif by is _CONSUMER:
            key = "sub:" + consumer if consumer else "ip:" + client_ip
        elif by is _PEER:
            key = "peer:" + peer if peer else "ip:" + client_ip
        elif by is _HEADER:
            value = next((v for k, v in headers if k == name), None)
            key = "h:" + value.decode("latin-1") if value else "ip:" + client_ip
        elif by is _ROUTE:
            key = "route:" + self.route
        else:
            key = "service"
        return key if len(key) <= _MAX_KEY else _hashed(key)

    def check(self, client_ip: str, consumer: str | None = None, peer: str | None = None,
              headers: Headers = (), *, take: bool = True) -> Decision:
        """Decide on this sidecar's buckets; `take=False` only looks (an explain request)."""
        return self._local(self.keys(client_ip, consumer, peer, headers), take, Source.LOCAL)

    def admit(self, client_ip: str, consumer: str | None = None, peer: str | None = None,
              headers: Headers = ()) -> Decision | None:
        """`check()` as the data plane calls it: None when the request may pass and nothing
        wants the numbers (no `RateLimit-*` headers on allowed responses); else the Decision.

        One rule with one window (Kong's `minute: 100`, most routes' hot path) then costs
        one key, one clock read and one bucket: no list, no Decision."""
        one = self._quiet_one
        if one is None:
            if self.headers_on_allowed or self._store is not None:
                return self.check(client_ip, consumer, peer, headers)
            states, ok = self._take(self.keys(client_ip, consumer, peer, headers),
                                    self._clock(), True)
            return None if ok else decide(self._slots, states, True, Source.LOCAL, self.dry_run)
        by, name = self._by[0]
        state = self._buckets[0].refill(self._key(by, name, client_ip, consumer, peer, headers),
                                        self._clock())
        t = state[0]
        if t >= 1.0:
            state[0] = t - 1.0
            return None
        return self._refused(one, t, Source.LOCAL)

    async def check_global(self, client_ip: str, consumer: str | None = None,
                           peer: str | None = None, headers: Headers = (), *,
                           take: bool = True) -> Decision:
        """Decide on the buckets in Redis; this sidecar's fallback when Redis is away."""
        keys = self.keys(client_ip, consumer, peer, headers)
        store = self._store
        if store is None:
            return self._local(keys, take, Source.LOCAL)
        if not store.ready():
            return self._fall_back(keys, take, store)
        redis_keys = [p + k for p, k in zip(self._prefixes, keys, strict=True)]
        try:
            out = await store.check(redis_keys, (store.now_arg(), int(take), *self._spec))
        except StoreUnavailable:
            return self._fall_back(keys, take, store)
        allowed = out[0] == 1
        states: list[list[float]] = []
        pos = 1
        for rule in self._rules:
            n = len(rule.windows)
            states.append([x / 1_000_000 for x in out[pos:pos + n]])
            pos += n
        if allowed and take:
            now = self._clock()
            for buckets, key in zip(self._buckets, keys, strict=True):
                state = buckets.refill(key, now)
                if has_token(state):
                    take_token(state)
        return decide(self._slots, states, not allowed, Source.REDIS, self.dry_run)

    def _local(self, keys: list[str], take: bool, source: Source) -> Decision:
        now = self._clock()
        one = self._one
        if one is not None:
            # What `decide()` would answer, without its loops: this is most routes' hot
            # path, and it costs half as much (a test holds the two to the same answers).
            state = self._buckets[0].refill(keys[0], now)
            t = state[0]
            if t >= 1.0:
                if take:
                    t -= 1.0
                    state[0] = t
                _, _, limit, rate, period, name = one
                return _new(Decision, (True, False, limit, int(t), (limit - t) / rate, 0.0,
                                       period, name, source))
            return self._refused(one, t, source)
        states, ok = self._take(keys, now, take)
        return decide(self._slots, states, not ok, source, self.dry_run)

    def _take(self, keys: list[str], now: float, take: bool) -> tuple[list[list[float]], bool]:
        """Every rule's bucket brought up to `now`; a token taken from each if all hold one
        (and `take`). Whether all did, and the states for `decide()`."""
        states = [b.refill(k, now) for b, k in zip(self._buckets, keys, strict=True)]
        ok = all(has_token(state) for state in states)
        if ok and take:
            for state in states:
                take_token(state)
        return states, ok

    def _refused(self, one: Slot, t: float, source: Source) -> Decision:
        """The one-window limiter's refusal, `t` tokens (less than one) in its bucket."""
        _, _, limit, rate, period, name = one
        return _new(Decision, (self.dry_run, True, limit, 0, (limit - t) / rate,
                               (1.0 - t) / rate, period, name, source))

    def _fall_back(self, keys: list[str], take: bool, store: RedisStore) -> Decision:
        if self._fallback is Fallback.LOCAL:
            return self._local(keys, take, Source.FALLBACK)
        if self._fallback is Fallback.OPEN:
            return fixed(self._rules, Source.OPEN, 0.0)
        return fixed(self._rules, Source.CLOSED, store.retry_interval_s, self.dry_run)


class RateLimits:
    """Every limiter of one sidecar, built from one configuration (a reload builds anew).

    The buckets of the service-wide rules are made here and shared by all the routes'
    limiters; with `policy: redis`, so is the one `RedisStore` (pass `store` to reuse
    one, e.g. across reloads; `close()` closes only a store made here)."""

    def __init__(self, config: RateLimiting, service: str, *, clock: Clock = time.monotonic,
                 store: RedisStore | None = None) -> None:
        self.config = config
        self.service = service
        self._clock = clock
        self._own_store = store is None and config.policy is Policy.REDIS
        if config.policy is Policy.REDIS and store is None:
            from .redis_store import RedisStore
            store = RedisStore.connect(config.redis)
        self.store = store if config.policy is Policy.REDIS else None
        self._shared = tuple(Buckets(r.windows, config.max_keys) for r in config.limits)

    def for_route(self, route: str, rules: Sequence[Rule] = ()) -> Limiter | None:
        """The limiter of a route with its own `rules`; None when nothing limits it."""
        cfg = self.config
        all_rules = (*cfg.limits, *rules)
        if not all_rules:
            return None
        base = f"{cfg.redis.key_prefix}:{self.service}:"
        prefixes = [f"{base}service:{r.name}:" for r in cfg.limits]
        prefixes += [f"{base}route:{route}:{r.name}:" for r in rules]
        buckets = (*self._shared, *(Buckets(r.windows, cfg.max_keys) for r in rules))
        return Limiter(route, all_rules, buckets, clock=self._clock, store=self.store,
                       fallback=cfg.redis.fallback, redis_prefixes=prefixes,
                       dry_run=cfg.dry_run, headers_on_allowed=cfg.headers_on_allowed)

    async def close(self) -> None:
        if self._own_store and self.store is not None:
            await self.store.close()
