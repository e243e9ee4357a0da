"""The tries of one exchange: what a failed try tells endpoint health, and whether the
request goes again.

A try fails by not connecting, by a reset, by a retryable status (502/503/504) or by
its per-try timeout. `retry()` then asks, in order: may this request be repeated (the
route's `RetryPolicy`: condition, method or Idempotency-Key, attempts left), can its body
be replayed (up to `REPLAY_LIMIT` bytes kept as they went out), may the cluster take one
more retry (its `RetryBudget`), and does the back-off end before the deadline. If all
say yes, the next endpoint is picked (never the failed one while others exist; never at
all after an identity mismatch) and the request is sent again once the back-off ends,
with one timer: retries are rare, the first try pays nothing for them.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol

from ..core.errors import ErrorCode
from ..health.outlier import Failure as HealthFailure
from ..policy.retry import Failure, Outcome
from ..telemetry import names

if TYPE_CHECKING:
    from ..core.exchange import Exchange
    from .listener import Listener


class Connection(Protocol):
    """What a retry needs of the client connection (transport.downstream)."""

    listener: Listener
    loop: Any
    exchange: Exchange | None
    deadline: float

    def forward(self, ex: Exchange) -> None: ...
    def flush(self) -> None: ...

__all__ = ["DISCARD", "REPLAY_LIMIT", "begin", "endpoint_failed", "keep_for_replay", "retry"]

# Request bodies up to this size are kept while they are sent, so a retry can send them again.
REPLAY_LIMIT = 64 * 1024

_HEALTH = {Failure.CONNECT_FAILURE: HealthFailure.CONNECT, Failure.RESET: HealthFailure.RESET,
           Failure.TIMEOUT: HealthFailure.TIMEOUT}
_LABEL = {Failure.CONNECT_FAILURE: "connect-failure", Failure.RESET: "reset",
          Failure.TIMEOUT: "per-try-timeout"}


def begin(ex: Exchange) -> None:
    """The first try: count it for the budget; keep the body for a replay if retries may."""
    ex.attempt = 1
    entry = ex.route
    if entry.retry is None:
        return
    ex.replay = []
    budget = entry.cluster.budget
    if budget is not None:
        budget.deposit(ex.start)


def keep_for_replay(ex: Exchange, data: bytes) -> None:
    """Body bytes as they go out (already framed); past the limit, no replay."""
    replay = ex.replay
    if replay is not None:
        ex.replay_size += len(data)
        if ex.replay_size > REPLAY_LIMIT:
            ex.replay = None
        else:
            replay.append(data)


def endpoint_failed(ex: Exchange, failure: HealthFailure) -> None:
    """Tell the cluster's health that the endpoint gave no answer (outlier detection)."""
    if ex.route is not None and ex.endpoint is not None:
        health = ex.route.cluster.health
        if health is not None:
            health.on_result(ex.endpoint, failure)


def retry(conn: Connection, ex: Exchange, outcome: Outcome,
          code: ErrorCode) -> bool:
    """After a failed try: send `ex` again (True), or let the caller answer (False)."""
    if isinstance(outcome, Failure):
        endpoint_failed(ex, _HEALTH[outcome])
    entry = ex.route
    policy = entry.retry if entry is not None else None
    if policy is None or ex.response_started:
        return False
    if outcome is not Failure.CONNECT_FAILURE and ex.replay is None:
        return False  # part of the body went out and was not kept: it cannot be sent again
    head = ex.head
    has_key = head.header(b"idempotency-key") is not None
    if not policy.should_retry(ex.attempt, head.method, has_key, outcome):
        return False
    now = monotonic()
    assert entry.backoff is not None
    wait = entry.backoff.delay(ex.attempt)
    if now + wait >= ex.deadline_at:
        return False  # the caller's deadline (or the route's timeout) would pass first
    cluster = entry.cluster
    failed = ex.endpoint
    pick = cluster.pick(exclude=failed)
    if pick is None or (pick.endpoint is failed and code is ErrorCode.UPSTREAM_IDENTITY_MISMATCH):
        return False
    budget = cluster.budget
    if budget is not None and not budget.try_withdraw(now):
        conn.listener.metrics.inc(names.RETRY_BUDGET_EXHAUSTED, service=cluster.name)
        pick.cancel()
        return False
    label = _LABEL[outcome] if isinstance(outcome, Failure) else str(outcome.code)
    conn.listener.metrics.inc(names.RETRIES, service=cluster.name, on=label)
    _resend(conn, ex, pick, now, wait, code)
    return True


def _resend(conn: Connection, ex: Exchange, pick: object, now: float, wait: float,
            code: ErrorCode) -> None:
    ex.pick.done(now - ex.start, False)
    up = ex.upstream
    if up is not None:  # the failed try's connection: what it still says goes nowhere
        up.reader.sink = DISCARD
        up.cancel()
    if ex.try_span is not None:
        ex.try_span.end(0, code.name)
    ex.pick = pick
    ex.endpoint = pick.endpoint  # type: ignore[attr-defined]
    ex.attempt += 1
    ex.retried = True
    if ex.replay is not None:  # a connect failure kept its pending bytes; others replay
        ex.pending = list(ex.replay)
    elif ex.pending is None:
        ex.pending = []
    conn.forward(ex)  # a new head: the next try's trace context, what is left of the deadline
    per_try = ex.route.retry.per_try_timeout_s
    conn.deadline = ex.deadline_at if per_try is None else min(ex.deadline_at,
                                                               now + wait + per_try)
    if wait <= 0:
        ex.endpoint.pool.send(ex)
    else:
        conn.loop.call_later(wait, _send, conn, ex)


def _send(conn: Connection, ex: Exchange) -> None:
    if ex is conn.exchange and not ex.response_started and ex.upstream is None:
        ex.endpoint.pool.send(ex)
        conn.flush()


class _Discard:
    """The sink of a response that a retry replaced: its remaining parts are dropped."""

    def response_head(self, head: object) -> None:
        pass

    def response_data(self, data: bytes) -> None:
        pass

    def response_end(self) -> None:
        pass

    def response_upgrade(self, rest: bytes) -> None:
        pass


DISCARD = _Discard()
