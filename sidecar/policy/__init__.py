"""Resilience policies as sans-IO objects: values in, decisions out; time and randomness
are parameters. The outbound stack owns the loop and the waiting; these only decide.

- `breaker`: circuit breaker per cluster (CLOSED / OPEN / HALF_OPEN) and Envoy-style
  concurrency limits.
- `retry`: whether a failed try may be retried (`RetryPolicy.should_retry`).
- `backoff`: how long to wait first (exponential, full jitter).
- `budget`: whether the cluster can take one more retry (`RetryBudget`).
- `deadline`: the caller's deadline in, what is left of it out.
"""

from .backoff import Backoff, Rng
from .breaker import Breaker, BreakerConfig, BreakerMetrics, IllegalTransition, State, WindowType
from .budget import BudgetConfig, RetryBudget
from .deadline import (
    Incoming,
    format_grpc_timeout,
    format_request_timeout,
    outgoing_headers,
    parse_grpc_timeout,
    parse_request_timeout,
    read_incoming,
    remaining,
    tightest,
)
from .limits import ConcurrencyLimits, LimitsConfig
from .retry import Failure, GrpcStatus, HttpStatus, Outcome, RetryOn, RetryPolicy

__all__ = [
    "Backoff",
    "Breaker",
    "BreakerConfig",
    "BreakerMetrics",
    "BudgetConfig",
    "ConcurrencyLimits",
    "Failure",
    "GrpcStatus",
    "HttpStatus",
    "IllegalTransition",
    "Incoming",
    "LimitsConfig",
    "Outcome",
    "RetryBudget",
    "RetryOn",
    "RetryPolicy",
    "Rng",
    "State",
    "WindowType",
    "format_grpc_timeout",
    "format_request_timeout",
    "outgoing_headers",
    "parse_grpc_timeout",
    "parse_request_timeout",
    "read_incoming",
    "remaining",
    "tightest",
]
