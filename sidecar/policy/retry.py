"""Whether to retry: a pure decision, apart from the retry loop that acts on it.

The loop (in the outbound stack) is generic; it asks three small objects in turn:

    attempt = 1
    while True:
        outcome = await try_once(timeout=tightest(policy.per_try_timeout_s, remaining))
        if succeeded: return it
        if not policy.should_retry(attempt, method, has_key, outcome):  # is it safe, useful?
            return it
        if not budget.try_withdraw():                # may the cluster take more load?
            return it
        wait = backoff.delay(attempt)                # full jitter, base..cap
        if wait >= remaining: return it              # the deadline would pass first
        await sleep(wait); attempt += 1

A retry is safe when the request cannot have taken effect (a connect failure: not a
byte was sent), or when repeating it is harmless: an idempotent method (RFC 9110
9.2.2) or a request carrying an `Idempotency-Key`. `any_method` lifts the rule for
routes whose every call is safe to repeat (gRPC services are all POST).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import assert_never

__all__ = ["Failure", "GrpcStatus", "HttpStatus", "Outcome", "RetryOn", "RetryPolicy"]

GRPC_UNAVAILABLE = 14


class RetryOn(Enum):
    """The conditions a route may retry on; the values are the configuration's spelling."""

    CONNECT_FAILURE = "connect-failure"
    RESET = "reset"
    STATUS_502 = "502"
    STATUS_503 = "503"
    STATUS_504 = "504"
    GRPC_UNAVAILABLE = "grpc-unavailable"


class Failure(Enum):
    """A try that ended without a response head."""

    CONNECT_FAILURE = "connect-failure"  # no connection: the request never left
    RESET = "reset"  # the connection or stream broke once the request was (partly) sent
    # No response head within the per-try timeout. The sidecar would answer 504 for it,
    # so it is retried when 504 is (as Envoy does); the upstream may still be working on it.
    TIMEOUT = "per-try-timeout"


@dataclass(frozen=True, slots=True)
class HttpStatus:
    code: int


@dataclass(frozen=True, slots=True)
class GrpcStatus:
    code: int  # grpc-status of a trailers-only response (or of the trailers)


Outcome = Failure | HttpStatus | GrpcStatus

_STATUS = {502: RetryOn.STATUS_502, 503: RetryOn.STATUS_503, 504: RetryOn.STATUS_504}
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def _condition(outcome: Outcome) -> RetryOn | None:
    match outcome:
        case Failure.CONNECT_FAILURE:
            return RetryOn.CONNECT_FAILURE
        case Failure.RESET:
            return RetryOn.RESET
        case Failure.TIMEOUT:
            return RetryOn.STATUS_504
        case HttpStatus(code):
            return _STATUS.get(code)
        case GrpcStatus(code):
            return RetryOn.GRPC_UNAVAILABLE if code == GRPC_UNAVAILABLE else None
        case _:
            assert_never(outcome)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    # Tries in all, the first included (gRPC's maxAttempts): 3 = at most 2 retries.
    # Envoy's default is 1 retry; one more is cheap because the budget caps the total.
    max_attempts: int = 3
    retry_on: frozenset[RetryOn] = frozenset(RetryOn)
    # Methods are case-sensitive (RFC 9110 9.1): "get" is not GET.
    idempotent_methods: frozenset[str] = _IDEMPOTENT
    any_method: bool = False  # retry any method, not only the idempotent ones
    # Each try's own limit; None: only the route timeout and the incoming deadline.
    per_try_timeout_s: float | None = None
    backoff_base_s: float = 0.025
    # Envoy's default cap: 10 x base. Longer waits rarely beat the caller's deadline.
    backoff_cap_s: float = 0.25
    _methods: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Accept any iterable of the right items (a loader's list or set); keep frozensets.
        object.__setattr__(self, "retry_on", frozenset(self.retry_on))
        object.__setattr__(self, "idempotent_methods", frozenset(self.idempotent_methods))
        problems = []
        if self.max_attempts < 1:
            problems.append("max_attempts: must be >= 1 (1: no retries)")
        if not all(isinstance(r, RetryOn) for r in self.retry_on):
            problems.append("retry_on: must be among " + ", ".join(r.value for r in RetryOn))
        if not all(isinstance(m, str) and m.isascii() and m.isalpha()
                   for m in self.idempotent_methods):
            problems.append("idempotent_methods: must be method names such as GET")
        if self.per_try_timeout_s is not None and not self.per_try_timeout_s > 0:
            problems.append("per_try_timeout_s: must be > 0")
        if not self.backoff_base_s > 0:
            problems.append("backoff_base_s: must be > 0")
        if not self.backoff_cap_s >= self.backoff_base_s:
            problems.append("backoff_cap_s: must be >= backoff_base_s")
        if problems:  # one line per problem, so a loader can prefix each with its path
            raise ValueError("\n".join(problems))
        # Request heads carry the method as bytes; compare without decoding.
        object.__setattr__(self, "_methods",
                           frozenset(m.encode() for m in self.idempotent_methods))

    def should_retry(self, attempt: int, method: bytes | str, has_idempotency_key: bool,
                     outcome: Outcome) -> bool:
        """After `attempt` tries (1 = the first one) ended in `outcome`, try again?"""
        if attempt >= self.max_attempts:
            return False
        condition = _condition(outcome)
        if condition is None or condition not in self.retry_on:
            return False
        if condition is RetryOn.CONNECT_FAILURE:  # nothing was sent: safe for any method
            return True
        if self.any_method or has_idempotency_key:
            return True
        if isinstance(method, str):
            return method in self.idempotent_methods
        return method in self._methods
