"""One request/response exchange: the request context that routing and policies see."""

from __future__ import annotations

from typing import Any

from ..protocol.events import RequestHead


class Exchange:
    __slots__ = ("breaker", "downstream", "endpoint", "forwarded", "head", "keep_alive", "pending", "pick",
                 "request_done", "request_id", "response_chunked", "response_extra", "response_started",
                 "retried", "route", "start", "stats", "status", "upstream")

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
        self.stats: Any = None  # where the outcome is counted
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

    def settle(self, elapsed: float, ok: bool) -> None:
        """Report how it went, once: to the counters, the balancer and the breaker."""
        self.stats.observe(self.status, elapsed)
        if self.pick is not None:
            self.pick.done(elapsed, ok)
        if self.breaker is not None:
            self.breaker.on_result(elapsed, not ok)

    def abandon(self) -> None:
        """The client left: nothing learned about the upstream; give back what was taken."""
        if self.pick is not None:
            self.pick.cancel()
        if self.breaker is not None:
            self.breaker.release()
