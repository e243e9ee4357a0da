"""Reading the rate-limit configuration: values, defaults, and every problem at once."""

from __future__ import annotations

import pytest

from sidecar.config.errors import ConfigError
from sidecar.config.fields import Fields
from sidecar.ratelimit import (
    Fallback,
    KeyBy,
    Policy,
    RateLimiting,
    Window,
    parse,
    parse_rules,
    read_rules,
)


def problems(data: object, path: str = "rate_limiting") -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse(data, path)
    return e.value.problems


def test_absent_section_is_local_with_no_rules() -> None:
    assert parse(None) == RateLimiting()
    assert parse({}).policy is Policy.LOCAL


def test_kong_shape() -> None:
    cfg = parse({"limits": [{"minute": 100}]})
    (rule,) = cfg.limits
    assert rule.windows == (Window("minute", 100, 60.0),)
    assert rule.by is KeyBy.IP and rule.name == "0"


def test_full_section() -> None:
    cfg = parse({
        "policy": "redis",
        "redis": {"url": "redis://redis:6379/1", "timeout": "20ms", "fallback": "closed",
                  "retry_interval": "2s", "max_connections": 8, "key_prefix": "rl"},
        "headers_on_allowed": True, "max_keys": 1000, "dry_run": True,
        "limits": [{"name": "per-user", "by": "consumer", "second": 5, "hour": 1000},
                   {"by": "header", "header": "X-Api-Key", "minute": 60}],
    })
    assert cfg.policy is Policy.REDIS
    assert cfg.redis.url == "redis://redis:6379/1"
    assert cfg.redis.timeout_s == pytest.approx(0.02)
    assert cfg.redis.fallback is Fallback.CLOSED
    assert cfg.redis.retry_interval_s == 2.0
    assert (cfg.redis.max_connections, cfg.redis.key_prefix) == (8, "rl")
    assert cfg.headers_on_allowed and cfg.dry_run and cfg.max_keys == 1000
    user, key = cfg.limits
    assert user.name == "per-user" and user.by is KeyBy.CONSUMER
    assert [(w.name, w.limit, w.period_s) for w in user.windows] == [
        ("second", 5, 1.0), ("hour", 1000, 3600.0)]
    assert key.by is KeyBy.HEADER and key.header == "x-api-key" and key.name == "1"


def test_every_problem_is_reported_with_its_path() -> None:
    got = problems({
        "policy": "global",
        "redis": {"timeout": "soon", "fallback": "maybe", "colour": "red"},
        "max_keys": 0,
        "limits": [
            {"minute": 0},
            {"by": "header", "second": 1},
            {"by": "ip", "header": "x-a", "minute": "100"},
            {"by": "nobody"},
            {"second": 10, "minute": 5},
            "every minute",
        ],
    })
    assert got == [
        "rate_limiting.policy: must be one of local, redis (got 'global')",
        "rate_limiting.redis.timeout: must be a duration like 250ms, 2s, 1m (got 'soon')",
        "rate_limiting.redis.fallback: must be one of local, open, closed (got 'maybe')",
        "rate_limiting.redis.colour: unknown key",
        "rate_limiting.limits[0].minute: must be a positive integer (got 0)",
        "rate_limiting.limits[1].header: is required when by is header",
        "rate_limiting.limits[2].header: is only for by: header",
        "rate_limiting.limits[2].minute: must be a positive integer (got '100')",
        "rate_limiting.limits[3].by: must be one of consumer, peer, ip, header, route, "
        "service (got 'nobody')",
        "rate_limiting.limits[3]: needs at least one of second, minute, hour, day",
        "rate_limiting.limits[4].minute: must not be lower than second (10)",
        "rate_limiting.limits[5]: must be a mapping",
        "rate_limiting.max_keys: must be an integer >= 1 (got 0)",
    ]


def test_redis_policy_needs_a_url() -> None:
    assert problems({"policy": "redis"}) == [
        "rate_limiting.redis.url: is required when policy is redis"]
    assert problems({"policy": "redis", "redis": {"url": "http://x"}}) == [
        "rate_limiting.redis.url: must be a URL like redis://host:6379/0 (got 'http://x')"]


def test_route_rules_report_the_route_path() -> None:
    with pytest.raises(ConfigError) as e:
        parse_rules([{"minute": -1}, {"name": "a", "hour": 5}, {"name": "a", "day": 5}],
                    "routes[2].rate_limits")
    assert e.value.problems == [
        "routes[2].rate_limits[0].minute: must be a positive integer (got -1)",
        "routes[2].rate_limits[2].name: duplicate rule name 'a'",
    ]


def test_read_rules_plugs_into_a_loader() -> None:
    found: list[str] = []
    route = Fields({"rate_limits": [{"by": "route", "second": 50}], "service": "x"},
                   "routes[0]", found)
    (rule,) = read_rules(route)
    assert rule.by is KeyBy.ROUTE and found == []
    assert route.seen == {"rate_limits"}  # the loader's finish() will not call it unknown
