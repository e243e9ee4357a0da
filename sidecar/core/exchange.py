"""One request/response exchange: the request context that routing and policies see."""

from __future__ import annotations

from typing import Any

from ..protocol.events import RequestHead
from ..telemetry.metrics import RequestStats


class Exchange:
    __slots__ = (
        "attempt",
        "breaker",
        "bytes_in",
        "bytes_out",
        "deadline_at",
        "downstream",
        "endpoint",
        "flag",
        "forwarded",
        "head",
        "keep_alive",
        "limits",
        "pending",
        "pick",
        "replay",
        "replay_size",
        "request_done",
        "request_id",
        "response_chunked",
        "response_extra",
        "response_started",
        "retried",
        "route",
        "sent_at",
        "span",
        "start",
        "stats",
        "status",
        "trace_ids",
        "try_span",
        "upstream",
        "upstream_s",
    )

    def __init__(self, downstream: Any, head: RequestHead, request_id: bytes,
                 start: float) -> None:
        self.downstream = downstream  # the client connection this exchange answers on
        self.head = head
        self.request_id = request_id
        self.start = start
        self.route: Any = None  # the matched route entry
        self.endpoint: Any = None
        self.pick: Any = None  # the balancer's handle: done(latency, ok) once, or cancel()
        self.breaker: Any = None  # the cluster's breaker, once it permitted this call
        self.limits: Any = None  # the cluster's concurrency limits, once one slot is taken
        # When the request went out on a connection: the balancer learns the endpoint's
        # latency from then, not counting a connect (a new endpoint's first request would
        # otherwise look slow, and least-request would shun it for tens of seconds).
        self.sent_at = 0.0
        self.stats: RequestStats | None = None  # where the outcome is counted
        self.upstream: Any = None  # the upstream connection, once attached
        self.forwarded = b""  # the head as sent upstream
        self.pending: list[bytes] | None = None  # body bytes waiting for the upstream
        self.keep_alive = head.keep_alive
        # A request without a body is whole once its head is read.
        self.request_done = not (head.chunked or head.content_length)
        self.response_started = False
        self.response_chunked = False
        self.response_extra = b""  # header lines the sidecar adds to the response (RateLimit-*)
        self.retried = False
        self.status = 0
        self.deadline_at = 0.0  # when the response head is due: route timeout, caller's deadline
        self.attempt = 0  # tries so far
        self.replay: list[bytes] | None = None  # the body as sent, while a retry may resend it
        self.replay_size = 0
        # Telemetry: the trace of this hop (a server span inbound; the request's tries
        # outbound), the try in flight, what the access log reports.
        self.span: Any = None
        self.try_span: Any = None
        self.trace_ids = b""  # a new trace not sampled here: b"{trace id}-{span id}"
        self.flag = ""  # the sidecar's own answer or failure (an ErrorCode name), if any
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstream_s: float | None = None  # until the upstream's response head

    def settle(self, elapsed: float, ok: bool) -> None:
        """Report how it went, once: to the counters, the balancer and the breaker."""
        stats = self.stats
        if stats is not None:
            stats.observe(self.status, elapsed, self.head.method, self.bytes_in, self.bytes_out)
        if self.pick is not None:
            sent_at = self.sent_at
            self.pick.done(elapsed - (sent_at - self.start) if sent_at else elapsed, ok)
        if self.breaker is not None:
            self.breaker.on_result(elapsed, not ok)
        if self.limits is not None:
            self.limits.release_request()

    def abandon(self) -> None:
        """The client left: nothing learned about the upstream; give back what was taken."""
        if self.pick is not None:
            self.pick.cancel()
        if self.breaker is not None:
            self.breaker.release()
        if self.limits is not None:
            self.limits.release_request()
            self.limits = None
