"""The server side of the proxy: one client connection, HTTP/1.1.

How this works: bytes from the client go through the sans-IO `RequestReader`, which
calls back `request_*` (this class is its sink). Each request head opens an
`Exchange`, is routed (the listener's current `state`) and balanced to an endpoint;
when the bytes just read turn out well formed it is handed to that endpoint's pool,
which writes it on a keep-alive upstream connection. The upstream's `ResponseReader`
calls back `response_*` here too; responses are framed for this client and written
once per batch (`flush`). One exchange is in flight per connection; pipelined
requests wait in `backlog`, in order.

Nothing here starts a task or a timer per request: timeouts are deadlines that the
listener's sweeper checks, and only connecting to an upstream runs a coroutine.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from ..core.errors import ErrorCode
from ..core.exchange import Exchange
from ..core.request_id import new_request_id
from ..inbound.policy import Denied, Reply
from ..policy.deadline import outgoing_headers, read_incoming
from ..protocol.events import Headers, RequestHead
from ..protocol.forwarding import forwarded_lines, request_head
from ..protocol.h1 import LAST_CHUNK, ProtocolError, RequestReader, encode_chunk
from . import hop_telemetry, tries
from .failures import HEADER, IDLE, RESPONSE
from .responses import Responding

if TYPE_CHECKING:
    from ..routing.cluster import UpstreamEndpoint
    from ..routing.router import RouteEntry
    from .listener import Listener
    from .upstream import UpstreamConnection

# Final: in compiled code a static, read without a module-dict lookup per clock read.
monotonic: Final = time.monotonic

# Reasons to stop reading from the client (a bit each).
UPSTREAM_CONNECTING, UPSTREAM_FULL, BACKLOG_FULL, CLIENT_FULL = 1, 2, 4, 8
# What waits in the backlog: (kind, payload) of a request read ahead of its turn.
HEAD, DATA, END, UPGRADE, ERROR = range(5)


class DownstreamConnection(Responding):
    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.loop = listener.loop
        self.transport: asyncio.Transport | None = None
        self.reader = RequestReader(self, listener.state.limits.max_header_bytes)
        self.exchange: Exchange | None = None
        self.to_send: Exchange | None = None  # begun in this read; sent once it proves sound
        self.backlog: deque[tuple[int, Any]] = deque()
        self.wbuf: list[bytes] = []
        self.write_queued = False  # in the listener's writes for the end of this tick
        self.client_ip = b"unknown"
        self.peer: str | None = None  # the mTLS peer's SPIFFE ID
        self.client_ip_str = "unknown"
        self.client_port = 0
        self.xfcc: bytes | None = None  # x-forwarded-client-cert for the app, with the peer
        self.proto: bytes | None = None  # b"https" once TLS is up; else the listener's
        # X-Forwarded-* lines for requests that bring none, made once for an authority and
        # proto (a connection's requests mostly share them): see forwarding.request_head.
        self.fwd_authority = b""
        self.fwd_proto = b""
        self.fwd_lines = b""
        self.deadline = 0.0
        self.timer = IDLE
        self.activity = 0  # bytes moved since the last deadline check, for BODY
        self.blocked = 0  # reasons reading is paused, one bit each
        self.tunnel: UpstreamConnection | None = None
        self.tunnel_buf: list[bytes] | None = None  # client bytes sent before the 101
        self.failed = False  # the client sent something unparseable: read no more
        self.closed = False

    # asyncio protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        if not self.listener.admit(self):
            return
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip_str = str(peer[0])
            self.client_ip = self.client_ip_str.encode()
            self.client_port = peer[1]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timer = HEADER
        self.deadline = monotonic() + self.listener.state.limits.header_timeout

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        if self.tunnel_buf is not None:  # waiting for the upstream's 101
            self.tunnel_buf.append(data)
            self.block_reading(UPSTREAM_CONNECTING)
            return
        if self.failed:
            return
        self.activity += 1
        self.reader.feed(data)  # calls request_* below
        if self.to_send is not None:
            self._send()
        if self.exchange is None and self.timer == IDLE and self.reader.in_head:
            self.timer = HEADER  # a head has begun: it must now finish in time
            self.deadline = monotonic() + self.listener.state.limits.header_timeout
        if self.wbuf:
            self.flush()

    def eof_received(self) -> bool:
        # A client that half-closes is treated as gone, as nginx and Envoy do by default:
        # its exchange is cancelled and the upstream connection is not reused.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.listener.forget(self)
        ex = self.exchange
        self.exchange = None
        self.backlog.clear()
        if self.tunnel is not None:
            self.tunnel.abort()
        if ex is not None:
            ex.abandon()
            if ex.span is not None or self.listener.state.access_log is not None:
                ex.flag = ex.flag or "CLIENT_GONE"
                hop_telemetry.report(self, ex, monotonic() - ex.start)
            if ex.upstream is not None:
                ex.upstream.cancel()

    def pause_writing(self) -> None:
        ex = self.exchange
        up = self.tunnel or (ex.upstream if ex is not None else None)
        if up is not None:
            up.pause_reading()

    def resume_writing(self) -> None:
        ex = self.exchange
        up = self.tunnel or (ex.upstream if ex is not None else None)
        if up is not None:
            up.resume_reading()

    # requests from the client (the RequestReader's sink) -----------------------------
    def request_head(self, head: RequestHead) -> None:
        if self.backlog or self.exchange is not None:
            self._queue(HEAD, head)  # pipelined: waits its turn
        else:
            self._begin(head)

    def request_data(self, data: bytes) -> None:
        if self.backlog:
            self.backlog.append((DATA, data))
        else:
            self._request_data(data)

    def request_end(self, trailers: Headers | None) -> None:
        if self.backlog:
            self.backlog.append((END, trailers))
        else:
            self._request_end(trailers)

    def request_upgrade(self, rest: bytes) -> None:
        if self.backlog:
            self.backlog.append((UPGRADE, rest))
        else:
            self._upgrade_requested(rest)

    def request_error(self, error: ProtocolError) -> None:
        ex = self.exchange
        if self.backlog or (ex is not None and ex.request_done):
            self._queue(ERROR, error)  # it belongs to a later request: answered in its turn
        else:
            self._reject(error)  # this request's own: it never reaches the upstream

    def _queue(self, kind: int, item: Any) -> None:
        self.backlog.append((kind, item))
        if len(self.backlog) > self.listener.state.limits.max_pipelined:
            self.block_reading(BACKLOG_FULL)

    def _begin(self, head: RequestHead) -> None:
        now = monotonic()
        ex = Exchange(self, head, head.request_id or new_request_id(), now)
        self.exchange = ex
        listener = self.listener
        state = listener.state
        if listener.draining:
            ex.keep_alive = False
        entry = state.router.route(head)
        if entry is None:
            ex.stats = state.stats
            self.respond_error(ex, ErrorCode.NO_ROUTE,
                               f"no route for host {head.authority.decode(errors='replace')!r}")
            return
        ex.route = entry
        ex.stats = entry.stats
        self.timer = RESPONSE
        timeout = entry.timeout
        if head.request_timeout is not None or head.grpc_timeout is not None:
            incoming = read_incoming(head.request_timeout, head.grpc_timeout).timeout_s
            if incoming is not None and incoming < timeout:
                timeout = incoming  # the caller's deadline is the tighter one
        ex.deadline_at = now + timeout
        retry = entry.retry
        self.deadline = ex.deadline_at if retry is None or retry.per_try_timeout_s is None \
            else min(ex.deadline_at, now + retry.per_try_timeout_s)
        tracer = state.tracer
        if tracer is not None:
            hop_telemetry.start(self, ex, state, tracer)
        policy = entry.policy
        if policy is not None:
            verdict = policy.check(ex, self.peer, self.client_ip_str)
            if verdict is not None:
                if isinstance(verdict, Denied):
                    self.respond_error(ex, verdict.code, verdict.message, verdict.headers)
                elif isinstance(verdict, Reply):
                    self.respond_local(ex, verdict.status, verdict.headers)
                else:  # a policy step must wait (JWKS refresh, Redis): the body waits too
                    ex.pending = []
                    self.listener.wait_for(verdict, lambda result: self._passed(ex, result))
                return
        if not entry.cluster.settled:  # discovery's first answer is on its way: wait for it
            ex.pending = []
            entry.cluster.when_settled(lambda: self._settled(ex))
            return
        self._dispatch_to(ex)

    def _passed(self, ex: Exchange, verdict: Any) -> None:
        """A policy that had to wait has decided."""
        if ex is not self.exchange or ex.response_started:
            return  # the client left, or the wait timed out
        if verdict is not None:
            self.respond_error(ex, verdict.code, verdict.message, verdict.headers)
            self.flush()
            return
        ex.route.cluster.when_settled(lambda: self._settled(ex))

    def _settled(self, ex: Exchange) -> None:
        if ex is not self.exchange or ex.response_started:
            return  # the client left, or the wait timed out
        if not ex.route.cluster.known:
            self.respond_error(ex, ErrorCode.NO_ROUTE, f"no service {ex.route.cluster.name!r}")
        else:
            self._dispatch_to(ex)
            self._send()
        self.flush()

    def _dispatch_to(self, ex: Exchange) -> None:
        """Balance `ex` over its route's cluster; it is sent once its bytes proved sound."""
        entry: RouteEntry = ex.route  # typed: compiled code then reads its fields directly
        limits = entry.cluster.limits  # first: an overflow is no failure of the upstream's
        if not limits.acquire_request():
            self.respond_error(ex, ErrorCode.UPSTREAM_OVERFLOW,
                               f"{limits.requests} requests already in flight to "
                               f"{entry.cluster.name!r}")
            return
        ex.limits = limits
        breaker = entry.breaker or entry.cluster.breaker
        if breaker is not None:
            if not breaker.try_acquire():
                self.respond_error(ex, ErrorCode.CIRCUIT_OPEN,
                                   f"circuit breaker for {entry.cluster.name!r} is open")
                return
            ex.breaker = breaker
        pick = entry.cluster.pick()
        if pick is None:
            self.respond_error(ex, ErrorCode.NO_HEALTHY_ENDPOINTS,
                               f"service {entry.cluster.name!r} has no healthy endpoints")
            return
        ex.pick = pick
        ex.endpoint = pick.endpoint
        tries.begin(ex)
        self.forward(ex)
        if ex.pending is None:
            ex.pending = []
        self.to_send = ex

    def forward(self, ex: Exchange) -> None:
        """The request head as this try sends it: with its trace context when traced, and
        what is left of the caller's deadline when it sent one."""
        trace = deadline = None
        trace_ids = b""
        span = ex.span
        if span is not None:
            if self.listener.state.direction == "outbound":  # a client span per try
                ex.try_span = span.start_try(ex.endpoint.address, ex.attempt)
                trace = ex.try_span.child_headers()
            else:
                trace = span.child_headers()
        else:
            trace_ids = ex.trace_ids  # a new trace not sampled here, or b""
        head = ex.head
        if head.request_timeout is not None or head.grpc_timeout is not None:
            deadline = outgoing_headers(max(0.0, ex.deadline_at - monotonic()),
                                        grpc=head.grpc_timeout is not None)
        entry: RouteEntry = ex.route
        proto = self.proto or self.listener.state.proto
        if head.authority != self.fwd_authority or proto is not self.fwd_proto \
                or len(self.fwd_lines) == 0:
            self.fwd_authority, self.fwd_proto = head.authority, proto
            self.fwd_lines = forwarded_lines(self.client_ip, proto, head.authority)
        ex.forwarded = request_head(head, client_ip=self.client_ip, proto=proto,
                                    request_id=ex.request_id, host=entry.host_rewrite,
                                    xfcc=self.xfcc, trace=trace, trace_ids=trace_ids,
                                    deadline=deadline, forwarded=self.fwd_lines)

    def _send(self) -> None:
        ex = self.to_send
        self.to_send = None
        if ex is self.exchange and ex is not None and ex.pending is not None \
                and ex.upstream is None:
            endpoint: UpstreamEndpoint = ex.endpoint  # typed: a native call to its pool
            endpoint.pool.send(ex)

    def _request_data(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None or ex.request_done:
            return  # the body of a request already answered: dropped with the connection
        ex.bytes_in += len(data)
        if ex.head.chunked:
            data = encode_chunk(data)
        if ex.replay is not None:
            tries.keep_for_replay(ex, data)
        up = ex.upstream
        if up is not None:
            up.write(data)
        elif ex.pending is not None:
            ex.pending.append(data)
            if len(ex.pending) > 16:
                self.block_reading(UPSTREAM_CONNECTING)

    def _request_end(self, trailers: Headers | None) -> None:
        ex = self.exchange
        if ex is None or ex.request_done:
            return  # bodiless requests are whole at their head
        ex.request_done = True
        if ex.head.chunked:
            end = LAST_CHUNK if not trailers else b"0\r\n" + b"".join(
                b"%b: %b\r\n" % kv for kv in trailers) + b"\r\n"
            if ex.replay is not None:
                tries.keep_for_replay(ex, end)
            if ex.upstream is not None:
                ex.upstream.write(end)
            elif ex.pending is not None:
                ex.pending.append(end)

    # finishing -------------------------------------------------------------------
    def _finish(self, ex: Exchange) -> None:
        now = monotonic()
        ex.settle(now - ex.start, ex.status < 500)
        if ex.span is not None or self.listener.state.access_log is not None:
            hop_telemetry.report(self, ex, now - ex.start)
        self.exchange = None
        if not ex.keep_alive or self.closed:
            self.close_after_flush()
            return
        self.timer = IDLE
        self.deadline = now + self.listener.state.limits.idle_timeout
        if self.backlog:
            self._resume_backlog()

    def _resume_backlog(self) -> None:
        backlog = self.backlog
        while backlog and not self.closed:
            kind, item = backlog[0]
            if kind in (HEAD, ERROR) and self.exchange is not None:
                break
            backlog.popleft()
            if kind == HEAD:
                self._begin(item)
            elif kind == DATA:
                self._request_data(item)
            elif kind == END:
                self._request_end(item)
            elif kind == UPGRADE:
                self._upgrade_requested(item)
            else:
                self._reject(item)
            if self.to_send is not None:
                self._send()
        if len(backlog) <= self.listener.state.limits.max_pipelined:
            self.unblock_reading(BACKLOG_FULL)

    def drain(self) -> None:
        """Stop after the exchange in flight; an idle connection closes now."""
        if self.exchange is None and not self.backlog and self.tunnel is None:
            self.close_after_flush()
        elif self.exchange is not None:
            self.exchange.keep_alive = False


__all__ = ["DownstreamConnection"]
