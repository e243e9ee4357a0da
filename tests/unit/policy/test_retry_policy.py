"""Whether to retry: one table of decisions, no I/O."""

from __future__ import annotations

import pytest

from sidecar.policy.retry import (
    Failure,
    GrpcStatus,
    HttpStatus,
    Outcome,
    RetryOn,
    RetryPolicy,
)

CONNECT, RESET, TIMEOUT = Failure.CONNECT_FAILURE, Failure.RESET, Failure.TIMEOUT
DEFAULT = RetryPolicy()

# attempt, method, has Idempotency-Key, outcome, retry?
TABLE: list[tuple[int, bytes | str, bool, Outcome, bool]] = [
    # the retryable conditions, on an idempotent method
    (1, b"GET", False, CONNECT, True),
    (1, b"GET", False, RESET, True),
    (1, b"GET", False, HttpStatus(502), True),
    (1, b"GET", False, HttpStatus(503), True),
    (1, b"GET", False, HttpStatus(504), True),
    (1, b"GET", False, TIMEOUT, True),  # a per-try timeout is a 504
    (1, b"GET", False, GrpcStatus(14), True),  # UNAVAILABLE
    # everything else is an answer, not a transient failure
    (1, b"GET", False, HttpStatus(200), False),
    (1, b"GET", False, HttpStatus(404), False),
    (1, b"GET", False, HttpStatus(429), False),
    (1, b"GET", False, HttpStatus(500), False),
    (1, b"GET", False, HttpStatus(501), False),
    (1, b"GET", False, GrpcStatus(0), False),  # OK
    (1, b"GET", False, GrpcStatus(4), False),  # DEADLINE_EXCEEDED: no time left anyway
    (1, b"GET", False, GrpcStatus(13), False),  # INTERNAL
    # idempotent methods (RFC 9110 9.2.2)
    (1, b"HEAD", False, HttpStatus(503), True),
    (1, b"OPTIONS", False, HttpStatus(503), True),
    (1, b"PUT", False, HttpStatus(503), True),
    (1, b"DELETE", False, HttpStatus(503), True),
    (1, b"TRACE", False, HttpStatus(503), True),
    (1, "GET", False, HttpStatus(503), True),  # str methods work too
    # not idempotent: only with an Idempotency-Key ...
    (1, b"POST", False, HttpStatus(503), False),
    (1, b"PATCH", False, HttpStatus(503), False),
    (1, b"CONNECT", False, HttpStatus(503), False),
    (1, b"POST", False, RESET, False),
    (1, b"POST", False, TIMEOUT, False),  # it may be running still
    (1, b"POST", False, GrpcStatus(14), False),  # gRPC is POST: needs a key or any_method
    (1, b"POST", True, HttpStatus(503), True),
    (1, b"POST", True, RESET, True),
    (1, b"POST", True, GrpcStatus(14), True),
    (1, b"POST", True, HttpStatus(500), False),  # the key makes it safe, not retryable
    # ... or when nothing was sent
    (1, b"POST", False, CONNECT, True),
    (1, b"PATCH", False, CONNECT, True),
    # methods are case-sensitive
    (1, b"get", False, HttpStatus(503), False),
    # attempts: 3 in all by default
    (2, b"GET", False, HttpStatus(503), True),
    (3, b"GET", False, HttpStatus(503), False),
    (3, b"GET", False, CONNECT, False),
    (3, b"POST", True, CONNECT, False),
]


@pytest.mark.parametrize(("attempt", "method", "key", "outcome", "expected"), TABLE)
def test_default_policy(attempt: int, method: bytes | str, key: bool, outcome: Outcome,
                        expected: bool) -> None:
    assert DEFAULT.should_retry(attempt, method, key, outcome) is expected


ONLY_503 = RetryPolicy(retry_on=frozenset({RetryOn.STATUS_503}))
ANY_METHOD = RetryPolicy(any_method=True)
NO_RETRIES = RetryPolicy(max_attempts=1)
FIVE = RetryPolicy(max_attempts=5)
SAFE_POST = RetryPolicy(idempotent_methods=frozenset({"GET", "POST"}))

CONFIGURED: list[tuple[RetryPolicy, int, bytes, bool, Outcome, bool]] = [
    (ONLY_503, 1, b"GET", False, HttpStatus(503), True),
    (ONLY_503, 1, b"GET", False, HttpStatus(502), False),
    (ONLY_503, 1, b"GET", False, CONNECT, False),
    (ONLY_503, 1, b"GET", False, TIMEOUT, False),
    (ONLY_503, 1, b"GET", False, GrpcStatus(14), False),
    (ANY_METHOD, 1, b"POST", False, HttpStatus(503), True),
    (ANY_METHOD, 1, b"POST", False, GrpcStatus(14), True),
    (ANY_METHOD, 1, b"POST", False, HttpStatus(500), False),
    (NO_RETRIES, 1, b"GET", False, CONNECT, False),
    (FIVE, 4, b"GET", False, HttpStatus(503), True),
    (FIVE, 5, b"GET", False, HttpStatus(503), False),
    (SAFE_POST, 1, b"POST", False, HttpStatus(503), True),
    (SAFE_POST, 1, b"PUT", False, HttpStatus(503), False),
]


@pytest.mark.parametrize(("policy", "attempt", "method", "key", "outcome", "expected"),
                         CONFIGURED)
def test_configured_policy(policy: RetryPolicy, attempt: int, method: bytes, key: bool,
                           outcome: Outcome, expected: bool) -> None:
    assert policy.should_retry(attempt, method, key, outcome) is expected


def test_defaults() -> None:
    assert DEFAULT.max_attempts == 3
    assert DEFAULT.retry_on == frozenset(RetryOn)
    assert {r.value for r in RetryOn} == {"connect-failure", "reset", "502", "503", "504",
                                          "grpc-unavailable"}
    assert DEFAULT.idempotent_methods == {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}
    assert (DEFAULT.backoff_base_s, DEFAULT.backoff_cap_s) == (0.025, 0.25)
    assert DEFAULT.per_try_timeout_s is None and not DEFAULT.any_method


def test_config_accepts_any_iterable_and_stays_frozen_and_hashable() -> None:
    policy = RetryPolicy(retry_on={RetryOn("503")},  # type: ignore[arg-type]
                         idempotent_methods=["GET"])  # type: ignore[arg-type]
    assert policy.retry_on == frozenset({RetryOn.STATUS_503})
    assert policy == RetryPolicy(retry_on=frozenset({RetryOn.STATUS_503}),
                                 idempotent_methods=frozenset({"GET"}))
    assert hash(policy)
    with pytest.raises(AttributeError):
        policy.max_attempts = 9  # type: ignore[misc]


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ValueError) as e:
        RetryPolicy(max_attempts=0, retry_on=frozenset({"503"}),  # type: ignore[arg-type]
                    idempotent_methods=frozenset({"GET ", ""}), per_try_timeout_s=0,
                    backoff_base_s=0, backoff_cap_s=-1)
    assert [line.split(":")[0] for line in str(e.value).splitlines()] == [
        "max_attempts", "retry_on", "idempotent_methods", "per_try_timeout_s",
        "backoff_base_s", "backoff_cap_s"]
