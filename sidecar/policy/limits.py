"""Envoy-style concurrency limits per upstream cluster: connections, pending, requests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Envoy's cluster `circuit_breakers.thresholds` and their defaults. Going over a
    limit answers 503 at once (Envoy's "overflow"): queueing more would only add latency
    to an upstream that is already saturated."""

    max_connections: int = 1024  # open connections to the cluster's endpoints
    max_pending: int = 1024  # requests waiting for a connection from the pool
    max_requests: int = 1024  # requests in flight to the cluster

    def __post_init__(self) -> None:
        problems = [f"{name}: must be >= 1" for name in ("max_connections", "max_pending",
                                                          "max_requests")
                    if getattr(self, name) < 1]
        if problems:
            raise ValueError("\n".join(problems))


class ConcurrencyLimits:
    """Counters against `LimitsConfig`, one per cluster. Each `acquire_*()` that returned
    True is answered by one `release_*()`; a release without one is a bug and raises."""

    __slots__ = ("config", "connection_overflows", "connections", "pending",
                 "pending_overflows", "request_overflows", "requests")

    def __init__(self, config: LimitsConfig | None = None) -> None:
        self.config = config or LimitsConfig()
        self.connections = self.pending = self.requests = 0
        # refusals, for metrics (Envoy's upstream_cx_overflow, upstream_rq_pending_overflow,
        # upstream_rq_overflow)
        self.connection_overflows = self.pending_overflows = self.request_overflows = 0

    def acquire_connection(self) -> bool:
        if self.connections >= self.config.max_connections:
            self.connection_overflows += 1
            return False
        self.connections += 1
        return True

    def release_connection(self) -> None:
        if self.connections <= 0:
            raise RuntimeError("release_connection() without acquire_connection()")
        self.connections -= 1

    def acquire_pending(self) -> bool:
        if self.pending >= self.config.max_pending:
            self.pending_overflows += 1
            return False
        self.pending += 1
        return True

    def release_pending(self) -> None:
        if self.pending <= 0:
            raise RuntimeError("release_pending() without acquire_pending()")
        self.pending -= 1

    def acquire_request(self) -> bool:
        if self.requests >= self.config.max_requests:
            self.request_overflows += 1
            return False
        self.requests += 1
        return True

    def release_request(self) -> None:
        if self.requests <= 0:
            raise RuntimeError("release_request() without acquire_request()")
        self.requests -= 1
