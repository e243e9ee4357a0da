"""How a client connection answers what went wrong: an upstream that failed or went away,
a client that sent something unparseable, time that ran out.

A link of `DownstreamConnection`'s chain (see client_base.py), kept apart so
that the happy path reads on its own in downstream.py. Every failure ends in
`respond_error`: the sidecar's JSON envelope with the code's status, or a cut connection
when part of a response has already gone out.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING

from ..core.errors import ErrorCode, envelope
from ..core.exchange import Exchange
from ..core.request_id import new_request_id
from ..health.outlier import Failure
from ..policy.retry import Failure as RetryFailure
from ..protocol.events import RequestHead
from ..protocol.forwarding import simple_response
from ..protocol.h1 import ProtocolError
from . import tries
from .tunnel import Tunnelling

if TYPE_CHECKING:
    pass

# What the deadline guards (shared with downstream.py).
IDLE, HEADER, RESPONSE, BODY = range(4)
BACKLOG_FULL = 4  # a reason to stop reading from the client (the bits are in downstream.py)
# Failures before anything was sent: another endpoint may take the request, never this one.
ELSEWHERE = frozenset((ErrorCode.UPSTREAM_CONNECT_FAILED, ErrorCode.UPSTREAM_IDENTITY_MISMATCH))


class Failures(Tunnelling):
    # failures --------------------------------------------------------------------
    def upstream_failed(self, ex: Exchange, code: ErrorCode, message: str) -> None:
        if ex is not self.exchange:
            return
        if code is ErrorCode.UPSTREAM_OVERFLOW:
            pass  # the sidecar's own limit: nothing learned about the endpoint
        elif code not in ELSEWHERE:  # the upstream sent something unparseable
            tries.endpoint_failed(ex, Failure.RESET)
        elif ex.route.retry is not None:
            if tries.retry(self, ex, RetryFailure.CONNECT_FAILURE, code):
                return
        else:
            tries.endpoint_failed(ex, Failure.CONNECT)
            if self._try_elsewhere(ex):
                return
        self.respond_error(ex, code, message)
        self.flush()

    def _try_elsewhere(self, ex: Exchange) -> bool:
        """A connect failure sent nothing, so any request may go to another endpoint, once
        (the rest of retries, with budgets and back-off, is the outbound stack's work)."""
        if ex.retried or ex.route is None or ex.pending is None:
            return False
        failed = ex.endpoint
        pick = ex.route.cluster.pick(exclude=failed)
        if pick is None or pick.endpoint is failed:
            return False
        ex.pick.done(monotonic() - ex.start, False)
        ex.retried = True
        ex.pick = pick
        ex.endpoint = pick.endpoint
        ex.attempt += 1
        if ex.try_span is not None:  # each try its own client span
            ex.try_span.end(0, "UPSTREAM_CONNECT_FAILED")
            self.forward(ex)
        pick.endpoint.pool.send(ex)
        return True

    def upstream_lost(self, ex: Exchange, retryable: bool) -> None:
        """The upstream connection closed while serving `ex`."""
        if ex is not self.exchange:
            return
        if retryable and not ex.retried and not ex.head.has_body and not ex.response_started:
            # A pooled connection the server had already closed: once more on a fresh one.
            ex.retried = True
            ex.pending = []
            ex.attempt += 1
            if ex.try_span is not None:
                ex.try_span.end(0, "UPSTREAM_RESET")
                self.forward(ex)
            ex.endpoint.pool.connect(ex)
            return
        if ex.response_started:
            self.abort()  # half a response cannot be finished or replaced
            return
        if tries.retry(self, ex, RetryFailure.RESET, ErrorCode.UPSTREAM_RESET):
            return
        self.respond_error(ex, ErrorCode.UPSTREAM_RESET,
                           "upstream closed the connection before responding")
        self.flush()

    def abandoned(self, ex: Exchange) -> bool:
        return self.closed or ex is not self.exchange

    def respond_error(self, ex: Exchange, code: ErrorCode, message: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Answer `ex` with the sidecar's error envelope, or cut the connection if too late."""
        if ex.response_started:
            self.abort()
            return
        if ex.upstream is not None:
            ex.upstream.cancel()
        ex.pending = None
        ex.response_started = True
        ex.status = code.status
        ex.flag = code.name
        keep = ex.keep_alive and ex.request_done and not code.closes_connection
        ex.keep_alive = keep
        service = ex.route.cluster.name if ex.route is not None else self.listener.state.service
        body = envelope(code, message, ex.request_id.decode(), service)
        self.wbuf.append(simple_response(code.status, body, request_id=ex.request_id,
                                         keep_alive=keep, extra=headers,
                                         http10=ex.head.version == "1.0",
                                         lines=ex.response_extra))
        self._finish(ex)

    def respond_local(self, ex: Exchange, status: int, headers: list[tuple[bytes, bytes]],
                      ) -> None:
        """Answer `ex` here, not as an error (a CORS preflight): no body, our headers."""
        ex.pending = None
        ex.response_started = True
        ex.status = status
        keep = ex.keep_alive and ex.request_done
        ex.keep_alive = keep
        self.wbuf.append(simple_response(status, b"", request_id=ex.request_id,
                                         keep_alive=keep, extra=headers,
                                         http10=ex.head.version == "1.0"))
        self._finish(ex)

    def _reject(self, err: ProtocolError) -> None:
        """The client sent something unparseable (or too slowly): answer, then close."""
        self.failed = True
        self.block_reading(BACKLOG_FULL)
        ex = self.exchange
        if ex is None:
            head = RequestHead(b"-", b"", "1.1", [], False)
            ex = self.exchange = Exchange(self, head, new_request_id(), monotonic())
            ex.stats = self.listener.state.stats
            ex.request_done = True
        ex.keep_alive = False
        self.respond_error(ex, err.code, err.message)
        self.flush()

    # deadlines (called by the listener's sweeper) -----------------------------------
    def expired(self, now: float) -> None:
        timer = self.timer
        ex = self.exchange
        if timer == BODY and self.activity:
            self.activity = 0  # still moving: look again one idle period later
            self.deadline = now + self.listener.state.limits.idle_timeout
            return
        self.deadline = 0.0
        if timer == RESPONSE and ex is not None:
            if ex.upstream is not None:  # connected, but no answer in time
                if now < ex.deadline_at and tries.retry(self, ex, RetryFailure.TIMEOUT,
                                                        ErrorCode.UPSTREAM_TIMEOUT):
                    return  # a per-try timeout, with time left for another try
                tries.endpoint_failed(ex, Failure.TIMEOUT)
            self.respond_error(ex, ErrorCode.UPSTREAM_TIMEOUT,
                               f"no response from upstream within {ex.route.timeout:g}s")
            self.flush()
        elif timer == HEADER and ex is None:
            self._reject(ProtocolError(ErrorCode.REQUEST_TIMEOUT,
                                       "request head not received in time"))
        else:
            self.abort() if ex is not None else self.close_after_flush()
