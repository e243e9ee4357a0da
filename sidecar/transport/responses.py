"""A client connection's responses: the upstream's `ResponseReader` feeds them here, and
they are framed for this client (its HTTP version, keep-alive, chunking) and queued for
the next flush.

A link of `DownstreamConnection`'s chain (see client_base.py); the response head is also
where endpoint health learns each answer and where a retryable answer is replaced by
another try's.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Final

from ..core.errors import ErrorCode
from ..policy.retry import HttpStatus
from ..protocol.events import ResponseHead
from ..protocol.forwarding import body_allowed, response_head
from ..protocol.h1 import LAST_CHUNK, encode_chunk
from . import tries
from .failures import BODY, Failures

if TYPE_CHECKING:
    from ..routing.router import RouteEntry

# Answers that a retry policy may replace with another try's.
_RETRY_STATUSES: Final = frozenset((502, 503, 504))


class Responding(Failures):
    def response_head(self, head: ResponseHead) -> None:
        ex = self.exchange
        assert ex is not None, "an upstream feeds only the exchange it serves"
        status = head.status
        if status < 200 and status != 101:  # interim (100 Continue, 103): relay as is
            self.wbuf.append(response_head(head, request_id=ex.request_id, keep_alive=True,
                                           chunked=False))
            return
        route: RouteEntry = ex.route  # typed: compiled code then reads its fields directly
        health = route.cluster.health
        if health is not None:  # outlier detection and Retry-After learn from every answer
            health.on_result(ex.endpoint, status,
                             head.header(b"retry-after") if status in (429, 503) else None)
        if status in _RETRY_STATUSES and route.retry is not None and tries.retry(
                self, ex, HttpStatus(status), ErrorCode.UPSTREAM_RESET):
            return  # this answer is dropped; the next try's takes its place
        if not head.keep_alive and ex.upstream is not None:
            ex.upstream.reusable = False
        ex.response_started = True
        ex.status = status
        if self.listener.state.access_log is not None:
            ex.upstream_s = monotonic() - ex.start
        keep = ex.keep_alive and ex.request_done and not (ex.head.upgrade and status != 101)
        chunked = False
        if not body_allowed(status, ex.head.method) or head.content_length is not None:
            pass
        elif ex.head.version == "1.1":
            chunked = True
        else:
            keep = False  # HTTP/1.0 client: the body ends when we close
        ex.keep_alive = keep
        ex.response_chunked = chunked
        out = response_head(head, request_id=ex.request_id, keep_alive=keep, chunked=chunked,
                            extra=ex.response_extra, http10=ex.head.version == "1.0")
        rewrite = route.response_rewrite
        self.wbuf.append(out if rewrite is None else rewrite(out))
        self.timer = BODY
        # From the request's start, not now: a clock read saved, and timeouts are coarse.
        self.deadline = ex.start + self.listener.state.limits.idle_timeout

    def response_data(self, data: bytes) -> None:
        self.activity += 1
        ex = self.exchange
        assert ex is not None, "an upstream feeds only the exchange it serves"
        ex.bytes_out += len(data)
        self.wbuf.append(encode_chunk(data) if ex.response_chunked else data)

    def response_end(self) -> None:
        ex = self.exchange
        assert ex is not None, "an upstream feeds only the exchange it serves"
        if ex.response_chunked:
            self.wbuf.append(LAST_CHUNK)
        if ex.upstream is not None:
            ex.upstream.finish(ex.request_done)
        if not ex.request_done:
            ex.keep_alive = False  # the rest of the request body will never be read
        self._finish(ex)
