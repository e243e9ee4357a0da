"""Reading the `upstream` section: timeouts, pools, balancer, circuit breaker, retries and
their budget, endpoint health (the health package reads its own keys)."""

from __future__ import annotations

import re
from typing import Any

from ..health.config import parse_health
from ..policy.budget import BudgetConfig
from ..policy.retry import RetryOn, RetryPolicy
from .fields import Fields, built
from .model import CircuitBreaker, Upstream

__all__ = ["read_breaker", "read_retries", "read_upstream"]

_BALANCERS = re.compile("least_request|round_robin|ring_hash|random")


_RETRY_ON = {r.value: r for r in RetryOn}


def _retry_on(v: Any) -> frozenset[RetryOn] | None:
    items = [str(x) for x in v] if isinstance(v, list) else None
    if items is None or not all(x in _RETRY_ON for x in items):
        return None
    return frozenset(_RETRY_ON[x] for x in items)


def read_retries(parent: Fields) -> RetryPolicy | None:
    """`retries:` as a mapping, or `false` for none (one attempt)."""
    if parent.data.get("retries") is False:
        parent.seen.add("retries")
        return RetryPolicy(max_attempts=1)
    f = parent.child("retries")
    d = RetryPolicy()
    return built(f, lambda: RetryPolicy(
        max_attempts=f.integer("max_attempts", d.max_attempts, minimum=1, maximum=10),
        retry_on=f.value("retry_on", d.retry_on, _retry_on,
                         "a list of " + ", ".join(_RETRY_ON)),
        any_method=f.boolean("any_method", d.any_method),
        per_try_timeout_s=f.optional_duration("per_try_timeout"),
        backoff_base_s=f.duration("backoff_base", d.backoff_base_s),
        backoff_cap_s=f.duration("backoff_cap", d.backoff_cap_s)))


def _budget(parent: Fields) -> BudgetConfig | None:
    """`retry_budget:` as a mapping, or `false` for no cap."""
    if parent.data.get("retry_budget") is False:
        parent.seen.add("retry_budget")
        return None
    f = parent.child("retry_budget")
    d = BudgetConfig()
    return built(f, lambda: BudgetConfig(
        ratio=f.value("ratio", d.ratio, _ratio_any, "a number >= 0"),
        min_retries_per_second=f.value("min_retries_per_second", d.min_retries_per_second,
                                       _ratio_any, "a number >= 0"),
        window_s=f.duration("window", d.window_s))) or d


def _ratio_any(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 else None


def read_breaker(f: Fields) -> CircuitBreaker:
    d = CircuitBreaker()
    out = CircuitBreaker(
        window=f.string("window", d.window, re.compile("count|time"), "count or time"),
        window_size=f.integer("window_size", d.window_size, minimum=1),
        failure_rate=f.value("failure_rate", d.failure_rate, _percent, "a percentage"),
        slow_call_rate=f.value("slow_call_rate", d.slow_call_rate, _percent, "a percentage"),
        slow_call_duration=f.duration("slow_call_duration", d.slow_call_duration),
        minimum_calls=f.integer("minimum_calls", d.minimum_calls, minimum=1),
        wait_in_open=f.duration("wait_in_open", d.wait_in_open),
        half_open_calls=f.integer("half_open_calls", d.half_open_calls, minimum=1),
        max_wait_in_half_open=f.duration("max_wait_in_half_open", d.max_wait_in_half_open),
    )
    f.finish()
    return out


def _percent(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 100:
        return float(v)
    return None


def read_upstream(f: Fields, has_identity: bool = False) -> Upstream:
    d = Upstream()
    health, problems = parse_health(f.data, f.path or "upstream")
    f.problems.extend(problems)
    f.seen.update(("health_check", "outlier_detection", "retry_after"))
    out = Upstream(
        connect_timeout=f.duration("connect_timeout", d.connect_timeout),
        timeout=f.duration("timeout", d.timeout),
        max_connections_per_endpoint=f.integer("max_connections_per_endpoint",
                                               d.max_connections_per_endpoint, minimum=1),
        max_idle_per_endpoint=f.integer("max_idle_per_endpoint", d.max_idle_per_endpoint),
        max_requests=f.integer("max_requests", d.max_requests, minimum=1),
        max_pending_per_endpoint=f.integer("max_pending_per_endpoint",
                                           d.max_pending_per_endpoint, minimum=0),
        idle_timeout=f.duration("idle_timeout", d.idle_timeout),
        balancer=f.string("balancer", d.balancer, _BALANCERS,
                          "one of least_request, round_robin, ring_hash, random"),
        circuit_breaker=read_breaker(f.child("circuit_breaker")) if f.has("circuit_breaker")
        else None,
        mtls=f.boolean("mtls", has_identity),
        health=health,
        retries=read_retries(f) or d.retries,
        retry_budget=_budget(f),
    )
    if out.mtls and not has_identity:
        f.problem("mtls", "needs an identity (the `identity` section)")
    f.finish()
    return out
