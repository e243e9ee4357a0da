"""A cluster: the endpoints of one service, their connection pools and a balancer.

`pick()` answers a handle whose `endpoint` serves the request; the exchange ends it
with `done(latency, ok)` (or `cancel()`), which is how least-request balancing learns
latencies and in-flight counts. A one-endpoint cluster (the local app, most often)
skips the balancer: its handle is shared and its `done` does nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from time import monotonic
from typing import Any

from ..balance import Balancer, make_balancer
from ..config.model import Address, CircuitBreaker, Endpoint, Subset, Upstream
from ..discovery.base import EndpointSet
from ..health import ClusterHealth, HealthSettings, Prober, Result
from ..policy.breaker import Breaker, BreakerConfig, State, WindowType
from ..policy.budget import RetryBudget
from ..policy.limits import ConcurrencyLimits, LimitsConfig
from ..transport.client_tls import ClientTls
from ..transport.pool import Pool


class UpstreamEndpoint:
    __slots__ = ("endpoint", "pool")

    def __init__(self, endpoint: Endpoint, pool: Pool) -> None:
        self.endpoint = endpoint
        self.pool = pool

    @property
    def weight(self) -> int:
        return self.endpoint.weight

    @property
    def address(self) -> Address:
        return self.endpoint.address

    def __repr__(self) -> str:
        return f"UpstreamEndpoint({self.endpoint})"


class _Sole:
    """The handle of a one-endpoint cluster: nothing to learn, nothing to choose."""

    __slots__ = ("endpoint",)

    def __init__(self, endpoint: UpstreamEndpoint) -> None:
        self.endpoint = endpoint

    def done(self, latency_s: float, ok: bool = True) -> None:
        pass

    def cancel(self) -> None:
        pass


def make_breaker(cb: CircuitBreaker | None,
                 listener: Callable[[State, State], None] | None = None) -> Breaker | None:
    """A breaker from its settings (None: no breaker); `listener(from, to)` on transitions."""
    if cb is None:
        return None
    return Breaker(BreakerConfig(
        window_type=WindowType(cb.window), window_size=cb.window_size,
        failure_rate_threshold=cb.failure_rate, slow_call_rate_threshold=cb.slow_call_rate,
        slow_call_duration_s=cb.slow_call_duration, minimum_calls=cb.minimum_calls,
        wait_in_open_s=cb.wait_in_open, half_open_calls=cb.half_open_calls,
        max_wait_in_half_open_s=cb.max_wait_in_half_open),
        listeners=() if listener is None else (listener,))


class Cluster:
    def __init__(self, name: str, settings: Upstream, loop: asyncio.AbstractEventLoop,
                 rng: random.Random | None = None, tls: ClientTls | None = None,
                 health: HealthSettings | None = None, subset: Subset | None = None,
                 on_breaker: Callable[[State, State], None] | None = None) -> None:
        self.name = name
        self.subset = subset  # only the endpoints it admits (a version), or all of them
        self.tls = tls  # mTLS to this service's sidecars, when the mesh has an identity
        self.settings = settings
        self.loop = loop
        self.known = False
        self.settled = True  # discovery has answered (see EndpointSet.settled)
        self._waiting: list[Callable[[], None]] = []
        self.endpoints: tuple[UpstreamEndpoint, ...] = ()
        self._rng = self.rng = rng or random.Random()
        self._balancer: Balancer[UpstreamEndpoint] | None = None  # None: 0 or 1 endpoint
        self._learned: Balancer[UpstreamEndpoint] | None = None  # the last one built
        self._sole: _Sole | None = None
        self._on_breaker = on_breaker  # transitions, for metrics and logs
        self.breaker = make_breaker(settings.circuit_breaker, on_breaker)
        # Requests in flight to this service (Envoy's max_requests).
        self.limits = ConcurrencyLimits(LimitsConfig(max_requests=settings.max_requests))
        # Retries to this service, all routes together, stay within this budget.
        self.budget = RetryBudget(settings.retry_budget) if settings.retry_budget else None
        # Endpoint health (None: every endpoint is always balanced over). The balancer is
        # built over `health.available(endpoints)` and rebuilt when that answer changes.
        self.health: ClusterHealth[UpstreamEndpoint] | None = None
        self.prober: Prober | None = None
        self._balanced: tuple[UpstreamEndpoint, ...] = ()
        if health is not None:
            self._watch_health(health)

    def _watch_health(self, settings: HealthSettings) -> None:
        self.health = ClusterHealth(settings)
        if settings.health_check is not None:
            self.prober = Prober(settings.health_check, self.health.on_probe, host=self.name,
                                 rng=self._rng, loop=self.loop)

    def configure(self, settings: Upstream) -> None:
        """A reload: new breaker or health settings start afresh; unchanged ones keep state."""
        if settings.circuit_breaker != self.settings.circuit_breaker:
            self.breaker = make_breaker(settings.circuit_breaker, self._on_breaker)
        if settings.max_requests != self.settings.max_requests:
            self.limits.config = LimitsConfig(max_requests=settings.max_requests)
        if settings.retry_budget != self.settings.retry_budget:
            self.budget = RetryBudget(settings.retry_budget) if settings.retry_budget else None
        if self.health is not None and settings.health != self.health.settings:
            if self.prober is not None:
                self.prober.close()
                self.prober = None
            self._watch_health(settings.health)
            self.settings = settings
            self.update(EndpointSet(self.name, tuple(ue.endpoint for ue in self.endpoints),
                                    known=self.known, settled=self.settled))
        self.settings = settings

    def pick(self, exclude: UpstreamEndpoint | None = None) -> Any:
        """A handle (`.endpoint`, `.done(latency, ok)`, `.cancel()`), or None if empty."""
        health = self.health
        if health is not None:
            available = health.available(self.endpoints)  # the same tuple until health changes
            if available is not self._balanced:
                self._balance(available)
        sole = self._sole
        if sole is not None:
            return sole if exclude is None or exclude is not sole.endpoint else None
        balancer = self._balancer
        return None if balancer is None else balancer.pick(exclude=exclude)

    def when_settled(self, callback: Callable[[], None]) -> None:
        """Call `callback` once discovery has answered for this cluster."""
        if self.settled:
            callback()
        else:
            self._waiting.append(callback)

    def update(self, endpoint_set: EndpointSet) -> None:
        """New endpoints from discovery: keep the pools (and learned loads) of those that stay."""
        self.known = endpoint_set.known
        self.settled = endpoint_set.settled
        by_address = {ue.endpoint.address: ue for ue in self.endpoints}
        fresh: list[UpstreamEndpoint] = []
        subset = self.subset
        for ep in endpoint_set.endpoints:
            if subset is not None and not subset.admits(ep):
                continue
            old = by_address.pop(ep.address, None)
            pool = old.pool if old is not None else Pool(ep.address, self.settings, self.loop,
                                                                  self.tls)
            fresh.append(UpstreamEndpoint(ep, pool))
        for gone in by_address.values():
            gone.pool.close()  # idle connections now; busy ones when their exchange ends
        self.endpoints = tuple(fresh)
        health = self.health
        if health is not None:
            health.update(self.endpoints)
            if self.prober is not None:
                self.prober.update(ue.address for ue in self.endpoints)
            self._balance(health.available(self.endpoints))
        else:
            self._balance(self.endpoints)
        if self.settled and self._waiting:
            waiting, self._waiting = self._waiting, []
            for callback in waiting:
                callback()

    def _balance(self, endpoints: tuple[UpstreamEndpoint, ...]) -> None:
        """Balance over `endpoints` from now on (all of them, or the available ones)."""
        self._balanced = endpoints
        self._sole = _Sole(endpoints[0]) if len(endpoints) == 1 else None
        if len(endpoints) > 1:
            # `previous`: loads learned for addresses that stay carry over.
            self._learned = make_balancer(self.settings.balancer, endpoints, rng=self._rng,
                                          clock=monotonic, previous=self._learned)
            self._balancer = self._learned
        else:
            self._balancer = None

    def on_result(self, endpoint: UpstreamEndpoint, result: Result,
                  retry_after: bytes | None = None) -> None:
        """What `endpoint` did with one request: its status, or a `health.Failure`."""
        if self.health is not None:
            self.health.on_result(endpoint, result, retry_after)

    def pools(self) -> list[Pool]:
        return [ue.pool for ue in self.endpoints]

    def close(self) -> None:
        if self.prober is not None:
            self.prober.close()
        for ue in self.endpoints:
            ue.pool.close()
