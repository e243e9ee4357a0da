"""Rate-limit configuration: frozen values, read from plain YAML data with every problem
reported at once (`routes[1].rate_limits[0].minute: must be a positive integer`).

Two places in a sidecar's config hold limits:

    rate_limiting:              # the section: how limits are kept, plus service-wide rules
      policy: redis             # local (default) | redis
      redis: {url: redis://redis:6379/0, timeout: 50ms, fallback: local}
      headers_on_allowed: true
      limits:
        - {by: consumer, minute: 100}
    routes:
      - name: login
        service: auth
        rate_limits:            # this route's own rules, on top of the service-wide ones
          - {by: ip, second: 5, minute: 30}

`read_section(fields)` and `read_rules(fields, key)` plug into the config loader's
`Fields`; `parse(data)` reads a section alone and raises `ConfigError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config.fields import Fields

# `sidecar.config` is imported inside the readers, not here: the config loader imports
# this module, and this module must not need the loader's package to be done loading.

__all__ = [
    "WINDOWS",
    "Fallback",
    "KeyBy",
    "Policy",
    "RateLimiting",
    "RedisSettings",
    "Rule",
    "Window",
    "parse",
    "parse_rules",
    "read_rules",
    "read_section",
]

# Kong's rate-limiting windows (it also has month and year; a token bucket that takes a
# month to refill is a quota, not a rate limit).
WINDOWS: dict[str, float] = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")  # an RFC 9110 token, lower case
_RULE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_REDIS_URL = re.compile(r"(redis|rediss|unix)://.+")


class KeyBy(Enum):
    """Whose bucket a request takes its token from."""

    CONSUMER = "consumer"  # the JWT `sub`; requests without one count by client IP
    PEER = "peer"  # the peer's SPIFFE identity (mTLS); without one, by client IP
    IP = "ip"  # the client address
    HEADER = "header"  # the value of a named header; without it, by client IP
    ROUTE = "route"  # one bucket per route, whoever calls
    SERVICE = "service"  # one bucket for the whole service


class Policy(Enum):
    LOCAL = "local"  # each sidecar counts on its own: N sidecars allow N times the limit
    REDIS = "redis"  # every sidecar of the service shares the counters in Redis


class Fallback(Enum):
    """What a `policy: redis` limiter does while Redis does not answer."""

    LOCAL = "local"  # count in this sidecar's own buckets (each sidecar allows the limit)
    OPEN = "open"  # allow everything
    CLOSED = "closed"  # refuse everything (429 with Retry-After)


@dataclass(frozen=True, slots=True)
class Window:
    name: str  # second | minute | hour | day
    limit: int  # requests per period; also the bucket's size (the largest burst)
    period_s: float

    @property
    def rate(self) -> float:
        """Tokens added back per second."""
        return self.limit / self.period_s


@dataclass(frozen=True, slots=True)
class Rule:
    """One limit: a token bucket per key, with one or more windows; the tightest decides."""

    name: str  # unique in its list; part of the bucket's identity (and of the Redis key)
    windows: tuple[Window, ...]
    by: KeyBy = KeyBy.IP
    header: str | None = None  # lower case; only with by: header


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    # Each check waits this long for Redis at most, connecting included; it is added to a
    # request's latency, so keep it short. Past it, the check is answered by `fallback`.
    timeout_s: float = 0.05
    fallback: Fallback = Fallback.LOCAL
    # After a failure, Redis is left alone this long; then one request probes it.
    retry_interval_s: float = 1.0
    max_connections: int = 32  # pooled connections per sidecar; checks beyond wait for one
    key_prefix: str = "sidecar:rl"


@dataclass(frozen=True, slots=True)
class RateLimiting:
    policy: Policy = Policy.LOCAL
    redis: RedisSettings = RedisSettings()
    limits: tuple[Rule, ...] = ()  # service-wide rules, checked before each route's own
    # RateLimit-* headers on every response, not only on 429s.
    headers_on_allowed: bool = False
    # Local buckets kept per rule; idle ones are forgotten first (an idle bucket is full,
    # so forgetting it changes nothing), then the least recently used.
    max_keys: int = 100_000
    dry_run: bool = False  # decide, count and log, but let everything through


def _positive_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _enum(kind: type[Policy] | type[KeyBy] | type[Fallback]) -> Any:
    def convert(v: Any) -> Any:
        try:
            return kind(v)
        except ValueError:
            return None
    return convert


def _choices(kind: type[Enum]) -> str:
    return "one of " + ", ".join(str(k.value) for k in kind)


def _rule(f: Fields, index: int) -> Rule:
    name = f.string("name", str(index), _RULE_NAME, "a name of letters, digits, _ . -")
    by = f.value("by", KeyBy.IP, _enum(KeyBy), _choices(KeyBy))
    header = f.optional_string("header")
    if by is KeyBy.HEADER:
        if header is None and not f.has("header"):
            f.problem("header", "is required when by is header")
        elif header is not None and not _HEADER_NAME.fullmatch(header.lower()):
            f.problem("header", f"must be a header name (got {header!r})")
    elif header is not None:
        f.problem("header", "is only for by: header")
    windows: list[Window] = []
    for wname, period in WINDOWS.items():
        limit = f.value(wname, 0, _positive_int, "a positive integer")
        if not limit:
            continue
        # Kong's check: a longer window that allows fewer requests than a shorter one
        # makes the shorter one dead weight, and is most likely a typo.
        for shorter in windows:
            if limit < shorter.limit:
                f.problem(wname, f"must not be lower than {shorter.name} ({shorter.limit})")
                break
        windows.append(Window(wname, limit, period))
    if not windows and not any(f.has(w) for w in WINDOWS):
        f.problem("", f"needs at least one of {', '.join(WINDOWS)}")
    f.finish()
    return Rule(name=name, windows=tuple(windows), by=by,
                header=header.lower() if header and by is KeyBy.HEADER else None)


def read_rules(f: Fields, key: str = "rate_limits") -> tuple[Rule, ...]:
    """The list of rules under `key` in `f` (a route's `rate_limits`, the section's `limits`)."""
    from ..config.fields import Fields

    out: list[Rule] = []
    names: set[str] = set()
    for i, (path, raw) in enumerate(f.items(key)):
        rf = Fields(raw, path, f.problems)
        if not isinstance(raw, dict):
            continue  # Fields said so: "must be a mapping"
        rule = _rule(rf, i)
        if rule.name in names:
            rf.problem("name", f"duplicate rule name {rule.name!r}")
        names.add(rule.name)
        out.append(rule)
    return tuple(out)


def _redis(f: Fields, required: bool) -> RedisSettings:
    d = RedisSettings()
    url = f.string("url", d.url, _REDIS_URL, "a URL like redis://host:6379/0")
    if required and not f.has("url"):
        f.problem("url", "is required when policy is redis")
    timeout = f.duration("timeout", d.timeout_s)
    if f.has("timeout") and timeout <= 0:
        f.problem("timeout", "must be > 0")
    out = RedisSettings(
        url=url,
        timeout_s=timeout if timeout > 0 else d.timeout_s,
        fallback=f.value("fallback", d.fallback, _enum(Fallback), _choices(Fallback)),
        retry_interval_s=f.duration("retry_interval", d.retry_interval_s),
        max_connections=f.integer("max_connections", d.max_connections, minimum=1),
        key_prefix=f.string("key_prefix", d.key_prefix, re.compile(r"\S{1,64}"),
                            "1 to 64 characters without spaces"),
    )
    f.finish()
    return out


def read_section(f: Fields) -> RateLimiting:
    """The `rate_limiting` section (absent: local limits, no service-wide rules)."""
    d = RateLimiting()
    policy = f.value("policy", d.policy, _enum(Policy), _choices(Policy))
    out = RateLimiting(
        policy=policy,
        redis=_redis(f.child("redis"), required=policy is Policy.REDIS),
        limits=read_rules(f, "limits"),
        headers_on_allowed=f.boolean("headers_on_allowed", d.headers_on_allowed),
        max_keys=f.integer("max_keys", d.max_keys, minimum=1),
        dry_run=f.boolean("dry_run", d.dry_run),
    )
    f.finish()
    return out


def parse(data: Any, path: str = "rate_limiting") -> RateLimiting:
    """A `rate_limiting` section from plain YAML data; `ConfigError` lists every problem."""
    from ..config.fields import read_or_raise

    return read_or_raise(read_section, data, path)


def parse_rules(data: Any, path: str = "rate_limits") -> tuple[Rule, ...]:
    """A list of rules alone (a route's `rate_limits`); `ConfigError` lists every problem."""
    from ..config.errors import ConfigError
    from ..config.fields import Fields

    problems: list[str] = []
    key = path.rsplit(".", 1)[-1]
    parent = path[: -len(key)].rstrip(".")
    out = read_rules(Fields({key: data}, parent, problems), key)
    if problems:
        raise ConfigError(problems)
    return out
