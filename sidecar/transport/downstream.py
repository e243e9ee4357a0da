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
from collections import deque
from time import monotonic
from typing import TYPE_CHECKING, Any

from ..core.errors import ErrorCode, envelope
from ..core.exchange import Exchange
from ..core.request_id import new_request_id
from ..health.outlier import Failure
from ..inbound.policy import Denied
from ..protocol.events import Headers, RequestHead, ResponseHead
from ..protocol.forwarding import body_allowed, request_head, response_head, simple_response
from ..protocol.h1 import LAST_CHUNK, ProtocolError, RequestReader, encode_chunk

if TYPE_CHECKING:
    from .listener import Listener
    from .upstream import UpstreamConnection

# What the deadline guards.
IDLE, HEADER, RESPONSE, BODY = range(4)
# Reasons to stop reading from the client (a bit each).
UPSTREAM_CONNECTING, UPSTREAM_FULL, BACKLOG_FULL, CLIENT_FULL = 1, 2, 4, 8
# What waits in the backlog: (kind, payload) of a request read ahead of its turn.
HEAD, DATA, END, UPGRADE, ERROR = range(5)
# Failures before anything was sent: another endpoint may take the request, never this one.
_ELSEWHERE = frozenset((ErrorCode.UPSTREAM_CONNECT_FAILED, ErrorCode.UPSTREAM_IDENTITY_MISMATCH))


class DownstreamConnection(asyncio.Protocol):
    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.loop = listener.loop
        self.transport: asyncio.Transport | None = None
        self.reader = RequestReader(self, listener.state.limits.max_header_bytes)
        self.exchange: Exchange | None = None
        self.to_send: Exchange | None = None  # begun in this read; sent once it proves sound
        self.backlog: deque[tuple[int, Any]] = deque()
        self.wbuf: list[bytes] = []
        self.client_ip = b"unknown"
        self.peer: str | None = None  # the mTLS peer's SPIFFE ID
        self.client_ip_str = "unknown"
        self.client_port = 0
        self.xfcc: bytes | None = None  # x-forwarded-client-cert for the app, with the peer
        self.proto: bytes | None = None  # b"https" once TLS is up; else the listener's
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
                self._report(ex, monotonic() - ex.start)
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
        self.deadline = now + entry.timeout
        if state.tracer is not None:
            self._trace(ex, state)
        policy = entry.policy
        if policy is not None:
            verdict = policy.check(ex, self.peer, self.client_ip_str)
            if verdict is not None:
                if isinstance(verdict, Denied):
                    self.respond_error(ex, verdict.code, verdict.message, verdict.headers)
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
        entry = ex.route
        breaker = entry.cluster.breaker
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
        self._forward(ex)
        if ex.pending is None:
            ex.pending = []
        self.to_send = ex

    def _forward(self, ex: Exchange) -> None:
        """The request head as this try sends it (with its trace context, when traced)."""
        trace = None
        span = ex.span
        if span is not None:
            if self.listener.state.direction == "outbound":  # a client span per try
                ex.attempt += 1
                ex.try_span = span.start_try(ex.endpoint.address, ex.attempt)
                trace = ex.try_span.child_headers()
            else:
                trace = span.child_headers()
        ex.forwarded = request_head(ex.head, client_ip=self.client_ip,
                                    proto=self.proto or self.listener.state.proto,
                                    request_id=ex.request_id, host=ex.route.host_rewrite,
                                    xfcc=self.xfcc, trace=trace)

    def _trace(self, ex: Exchange, state: Any) -> None:
        head = ex.head
        if state.direction == "inbound":
            ex.span = state.tracer.start_server(
                head.headers, head.method, head.target, authority=head.authority,
                scheme="https" if self.proto else "http",
                peer=(self.client_ip_str, self.client_port), route=ex.route.name,
                request_id=ex.request_id)
        else:
            ex.span = state.tracer.start_outbound(
                head.headers, head.method, head.target, authority=head.authority,
                cluster=ex.route.cluster.name, request_id=ex.request_id)

    def _report(self, ex: Exchange, elapsed: float) -> None:
        """The exchange is over: end its spans, write its access-log line."""
        state = self.listener.state
        error = ex.flag or None
        if ex.try_span is not None:
            ex.try_span.end(ex.status, error)
        span = ex.span
        if span is not None and state.direction == "inbound":
            span.end(ex.status, error)
        log = state.access_log
        if log is not None:
            head = ex.head
            flags = (ex.flag, "RETRIED") if ex.retried and ex.flag else \
                ("RETRIED",) if ex.retried else (ex.flag,) if ex.flag else ()
            log.log(request_id=ex.request_id, method=head.method, target=head.target,
                    status=ex.status, duration_s=elapsed, authority=head.authority,
                    trace_id=span.trace_id_hex if span is not None else "",
                    headers=None if span is not None else head.headers,
                    direction=state.direction,
                    service=ex.route.cluster.name if ex.route is not None else state.service,
                    bytes_in=ex.bytes_in, bytes_out=ex.bytes_out, upstream_s=ex.upstream_s,
                    upstream=str(ex.endpoint.endpoint) if ex.endpoint is not None else "",
                    flags=flags, peer=self.peer or "",
                    client=f"{self.client_ip_str}:{self.client_port}")

    def _send(self) -> None:
        ex = self.to_send
        self.to_send = None
        if ex is self.exchange and ex is not None and ex.pending is not None \
                and ex.upstream is None:
            ex.endpoint.pool.send(ex)

    def _request_data(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None or ex.request_done:
            return  # the body of a request already answered: dropped with the connection
        ex.bytes_in += len(data)
        if ex.head.chunked:
            data = encode_chunk(data)
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
            if ex.upstream is not None:
                ex.upstream.write(end)
            elif ex.pending is not None:
                ex.pending.append(end)

    def _upgrade_requested(self, rest: bytes) -> None:
        # Everything after an Upgrade request is the new protocol's: hold it until the 101.
        if self.exchange is not None and self.exchange.route is not None:
            self.tunnel_buf = [rest] if rest else []
        else:
            self.transport.close()  # type: ignore[union-attr]

    # responses from the upstream -----------------------------------------------
    # the response (the upstream ResponseReader's sink) -------------------------------
    def response_head(self, head: ResponseHead) -> None:
        ex = self.exchange
        assert ex is not None, "an upstream feeds only the exchange it serves"
        status = head.status
        if status < 200 and status != 101:  # interim (100 Continue, 103): relay as is
            self.wbuf.append(response_head(head, request_id=ex.request_id, keep_alive=True,
                                           chunked=False))
            return
        if not head.keep_alive and ex.upstream is not None:
            ex.upstream.reusable = False
        ex.response_started = True
        ex.status = status
        if self.listener.state.access_log is not None:
            ex.upstream_s = monotonic() - ex.start
        health = ex.route.cluster.health
        if health is not None:  # outlier detection and Retry-After learn from every answer
            health.on_result(ex.endpoint, status,
                             head.header(b"retry-after") if status in (429, 503) else None)
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
        self.wbuf.append(response_head(head, request_id=ex.request_id, keep_alive=keep,
                                       chunked=chunked, extra=ex.response_extra,
                                       http10=ex.head.version == "1.0"))
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

    def response_upgrade(self, rest: bytes) -> None:
        ex = self.exchange
        assert ex is not None and ex.upstream is not None
        up = ex.upstream
        up.become_tunnel(self)
        self.start_tunnel(ex, up, rest)

    def start_tunnel(self, ex: Exchange, up: UpstreamConnection, rest: bytes) -> None:
        """The upstream switched protocols: from now on, bytes pass through untouched."""
        self.tunnel = up
        if rest:
            self.wbuf.append(rest)
        pending = self.tunnel_buf or []
        self.tunnel_buf = None
        if pending:
            up.write(b"".join(pending))
        self.unblock_reading(UPSTREAM_CONNECTING)
        ex.settle(monotonic() - ex.start, True)
        if ex.span is not None or self.listener.state.access_log is not None:
            self._report(ex, monotonic() - ex.start)
        self.exchange = None
        self.timer = IDLE
        self.deadline = 0.0  # a tunnel has no idle limit of ours; the endpoints' own apply

    def tunnel_write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def tunnel_closed(self) -> None:
        self.flush()
        if self.transport is not None:
            self.transport.close()

    # failures --------------------------------------------------------------------
    def upstream_failed(self, ex: Exchange, code: ErrorCode, message: str) -> None:
        if ex is not self.exchange:
            return
        self._endpoint_failed(ex, Failure.CONNECT if code in _ELSEWHERE else Failure.RESET)
        if code in _ELSEWHERE and self._try_elsewhere(ex):
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
        if ex.try_span is not None:  # each try its own client span
            ex.try_span.end(0, "UPSTREAM_CONNECT_FAILED")
            self._forward(ex)
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
            if ex.try_span is not None:
                ex.try_span.end(0, "UPSTREAM_RESET")
                self._forward(ex)
            ex.endpoint.pool.connect(ex)
            return
        if ex.response_started:
            self.abort()  # half a response cannot be finished or replaced
            return
        self._endpoint_failed(ex, Failure.RESET)
        self.respond_error(ex, ErrorCode.UPSTREAM_RESET,
                           "upstream closed the connection before responding")
        self.flush()

    @staticmethod
    def _endpoint_failed(ex: Exchange, failure: Failure) -> None:
        """Tell the cluster's health that the endpoint gave no answer (outlier detection)."""
        if ex.route is not None and ex.endpoint is not None:
            health = ex.route.cluster.health
            if health is not None:
                health.on_result(ex.endpoint, failure)

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

    # finishing -------------------------------------------------------------------
    def _finish(self, ex: Exchange) -> None:
        now = monotonic()
        ex.settle(now - ex.start, ex.status < 500)
        if ex.span is not None or self.listener.state.access_log is not None:
            self._report(ex, now - ex.start)
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

    # I/O helpers -----------------------------------------------------------------
    def flush(self) -> None:
        wbuf = self.wbuf
        if wbuf and not self.closed:
            data = wbuf[0] if len(wbuf) == 1 else b"".join(wbuf)
            wbuf.clear()
            self.transport.write(data)  # type: ignore[union-attr]

    def close_after_flush(self) -> None:
        self.flush()
        self.wbuf.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self.wbuf.clear()
        if self.transport is not None:
            self.transport.abort()

    def block_reading(self, reason: int) -> None:
        if not self.blocked and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.blocked |= reason

    def unblock_reading(self, reason: int) -> None:
        if self.blocked & reason:
            self.blocked &= ~reason
            if not self.blocked and self.transport is not None and not self.closed:
                self.transport.resume_reading()

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
                self._endpoint_failed(ex, Failure.TIMEOUT)
            self.respond_error(ex, ErrorCode.UPSTREAM_TIMEOUT,
                               f"no response from upstream within {ex.route.timeout:g}s")
            self.flush()
        elif timer == HEADER and ex is None:
            self._reject(ProtocolError(ErrorCode.REQUEST_TIMEOUT,
                                       "request head not received in time"))
        else:
            self.abort() if ex is not None else self.close_after_flush()

    def drain(self) -> None:
        """Stop after the exchange in flight; an idle connection closes now."""
        if self.exchange is None and not self.backlog and self.tunnel is None:
            self.close_after_flush()
        elif self.exchange is not None:
            self.exchange.keep_alive = False


__all__ = ["DownstreamConnection"]
