"""Rate limits: token buckets per key with second/minute/hour/day windows (Kong's
`rate-limiting` shape), kept by each sidecar or shared through Redis.

- `config`: the frozen configuration and its reader (`parse`, `read_section`, `read_rules`).
- `bucket`: this sidecar's token buckets, bounded in number.
- `redis_store`: the buckets shared in Redis (one Lua script per check) and its health.
- `limiter`: `RateLimits` builds a `Limiter` per route; `check()` / `check_global()`.
- `decision`: what a check answers; `headers`: the `RateLimit-*` and `Retry-After` headers.
"""
from __future__ import annotations

from ..lazy import lazy_exports

# Loaded on first use, so that importing one submodule (the config models, which
# sidecar.config imports) does not pull in the rest (PyJWT, aiohttp, redis).
_WHERE = {
    "WINDOWS": "config",
    "Buckets": "bucket",
    "Decision": "decision",
    "Fallback": "config",
    "Health": "redis_store",
    "KeyBy": "config",
    "Limiter": "limiter",
    "Policy": "config",
    "RateLimiting": "config",
    "RateLimits": "limiter",
    "RedisSettings": "config",
    "RedisStore": "redis_store",
    "Rule": "config",
    "Source": "decision",
    "StoreUnavailable": "store_errors",
    "Window": "config",
    "parse": "config",
    "parse_rules": "config",
    "rate_limit_headers": "headers",
    "read_rules": "config",
    "read_section": "config",
}

__all__ = [
    "WINDOWS",
    "Buckets",
    "Decision",
    "Fallback",
    "Health",
    "KeyBy",
    "Limiter",
    "Policy",
    "RateLimiting",
    "RateLimits",
    "RedisSettings",
    "RedisStore",
    "Rule",
    "Source",
    "StoreUnavailable",
    "Window",
    "parse",
    "parse_rules",
    "rate_limit_headers",
    "read_rules",
    "read_section",
]


__getattr__ = lazy_exports(__name__, _WHERE)
