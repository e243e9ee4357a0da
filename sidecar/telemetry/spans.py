"""The spans a sampled request records: a server span per inbound hop, a client span per
outbound try, and the outbound request they share.

A span keeps the facts of its request as they came (method, target, authority, headers
as bytes) and makes its OpenTelemetry attributes and its name only when asked, which is
when the export thread encodes it, a batch at a time. Made on the event loop for every
sampled request, they cost more than the rest of a traced hop; at a low ratio most of
that was cache misses of code run once in a hundred requests, which a batch runs warm.
A request head is never changed once parsed, so the export thread reads it safely. A
span's ids are kept as its traceparent writes them, b"{trace id}-{span id}" in hex (cut
from `NewTraces`' block), so sending them on is one concatenation; the encoder's ints
are parsed from them in the export thread.
"""

from __future__ import annotations

import time
from typing import Protocol

from ..protocol.events import Headers
from .new_traces import NewTraces
from .otlp import SpanKind

__all__ = ["Attrs", "ClientSpan", "Outbound", "ServerSpan", "Span", "SpanSink"]

Endpoint = tuple[str, int]
Attrs = dict[str, str | int]


class SpanSink(Protocol):
    """Where ended spans go (the tracer's queue)."""

    def offer(self, span: Span) -> None: ...


class Span:
    """A sampled span being recorded: ids, times, outcome; its subclass keeps the facts."""

    __slots__ = ("_sink", "end_ns", "error", "extra", "from_b3", "ids", "parent_id",
                 "start_ns", "status", "tracestate")

    def __init__(self, sink: SpanSink, ids: bytes, parent_id: int, tracestate: bytes,
                 from_b3: bool, start_ns: int) -> None:
        self._sink = sink
        self.ids = ids  # b"{trace id}-{span id}", lower-case hex
        self.parent_id = parent_id  # 0: a root span
        self.tracestate = tracestate
        self.from_b3 = from_b3
        self.start_ns = start_ns
        self.end_ns = 0
        self.status = 0
        self.error: str | None = None
        self.extra: Attrs | None = None  # attributes known only later (`set`)

    @property
    def trace_id(self) -> int:
        return int(self.ids[:32], 16)

    @property
    def span_id(self) -> int:
        return int(self.ids[33:], 16)

    @property
    def trace_id_hex(self) -> str:
        return self.ids[:32].decode()

    @property
    def kind(self) -> SpanKind:
        return SpanKind.SERVER

    @property
    def name(self) -> str:
        raise NotImplementedError

    def _error_from(self) -> int:
        """The status from which the span is an error (semconv)."""
        return 500

    @property
    def attrs(self) -> Attrs:
        """The OpenTelemetry HTTP semantic-convention attributes (made on each call)."""
        attrs = self._request_attrs()
        if self.status:
            attrs["http.response.status_code"] = self.status
        if self.error is not None:
            attrs["error.type"] = self.error
        if self.extra is not None:
            attrs.update(self.extra)
        return attrs

    def _request_attrs(self) -> Attrs:
        raise NotImplementedError

    def child_headers(self) -> Headers:
        """The context to send on, naming this span as the parent."""
        out = [(b"traceparent", b"00-" + self.ids + b"-01")]
        if self.tracestate:
            out.append((b"tracestate", self.tracestate))
        if self.from_b3:
            out.append((b"b3", self.ids + b"-1"))
        return out

    def set(self, key: str, value: str | int) -> None:
        """An attribute known only later (e.g. `sidecar.upstream.endpoint`)."""
        if self.extra is None:
            self.extra = {}
        self.extra[key] = value

    def end(self, status: int = 0, error: str | None = None) -> None:
        """Once, when the exchange is over: `status` as answered (0: none was), `error`
        the response flag or error code if the sidecar failed it (e.g. UPSTREAM_TIMEOUT)."""
        if self.end_ns:
            return
        self.end_ns = time.time_ns()
        self.status = status
        if error is not None or not status or status >= self._error_from():
            self.error = error or (str(status) if status else "no_response")
        self._sink.offer(self)


class ServerSpan(Span):
    """An inbound hop."""

    __slots__ = ("authority", "headers", "method", "peer", "request_id", "route", "scheme",
                 "target")

    def __init__(self, sink: SpanSink, ids: bytes, parent_id: int, tracestate: bytes,
                 from_b3: bool, start_ns: int, method: bytes, target: bytes,
                 authority: bytes, scheme: str, headers: Headers, peer: Endpoint | None,
                 route: str, request_id: bytes) -> None:
        super().__init__(sink, ids, parent_id, tracestate, from_b3, start_ns)
        self.method = method
        self.target = target
        self.authority = authority
        self.scheme = scheme
        self.headers = headers
        self.peer = peer
        self.route = route
        self.request_id = request_id

    @property
    def name(self) -> str:
        method = _method(self.method)
        return f"{method} {self.route}" if self.route else method

    def _request_attrs(self) -> Attrs:
        attrs = request_attrs(self.method, self.authority, self.scheme, self.request_id,
                              self.headers)
        attrs["url.path"] = self.target.partition(b"?")[0].decode("latin-1")
        attrs["url.scheme"] = self.scheme
        if self.route:
            attrs["http.route"] = self.route
        if self.peer is not None:
            attrs["network.peer.address"] = attrs["client.address"] = self.peer[0]
            attrs["network.peer.port"] = self.peer[1]
        return attrs


class Outbound:
    """One outbound request: its trace, parent and facts; a client span per try."""

    __slots__ = ("_new", "_sink", "authority", "cluster", "from_b3", "headers", "method",
                 "parent_id", "request_id", "scheme", "target", "trace_hex", "tracestate")

    def __init__(self, sink: SpanSink, new: NewTraces, trace_hex: bytes, parent_id: int,
                 tracestate: bytes, from_b3: bool, method: bytes, target: bytes,
                 authority: bytes, scheme: str, headers: Headers, cluster: str,
                 request_id: bytes) -> None:
        self._sink = sink
        self._new = new  # where each try's span id comes from
        self.trace_hex = trace_hex
        self.parent_id = parent_id
        self.tracestate = tracestate
        self.from_b3 = from_b3
        self.method = method
        self.target = target
        self.authority = authority
        self.scheme = scheme
        self.headers = headers
        self.cluster = cluster
        self.request_id = request_id

    @property
    def trace_id(self) -> int:
        return int(self.trace_hex, 16)

    @property
    def trace_id_hex(self) -> str:
        return self.trace_hex.decode()

    def start_try(self, endpoint: Endpoint, attempt: int = 1) -> ClientSpan:
        """A client span for one try at `endpoint` (attempt 1 is the first; later ones
        carry `http.request.resend_count`)."""
        return ClientSpan(self._sink, b"%b-%b" % (self.trace_hex, self._new.span_id()),
                          self.parent_id, self.tracestate, self.from_b3, time.time_ns(),
                          self, endpoint, attempt)

    def request_attrs(self) -> Attrs:
        attrs = request_attrs(self.method, self.authority, self.scheme, self.request_id,
                              self.headers)
        path = self.target.partition(b"?")[0].decode("latin-1")
        attrs["url.full"] = f"{self.scheme}://{self.authority.decode('latin-1')}{path}"
        if self.cluster:
            attrs["sidecar.upstream.cluster"] = self.cluster
        return attrs


class ClientSpan(Span):
    """One try of an outbound request."""

    __slots__ = ("attempt", "endpoint", "outbound")

    def __init__(self, sink: SpanSink, ids: bytes, parent_id: int, tracestate: bytes,
                 from_b3: bool, start_ns: int, outbound: Outbound, endpoint: Endpoint,
                 attempt: int) -> None:
        super().__init__(sink, ids, parent_id, tracestate, from_b3, start_ns)
        self.outbound = outbound
        self.endpoint = endpoint
        self.attempt = attempt

    @property
    def kind(self) -> SpanKind:
        return SpanKind.CLIENT

    @property
    def name(self) -> str:
        return _method(self.outbound.method)

    def _error_from(self) -> int:
        return 400  # a client span is an error from 4xx on (semconv)

    def _request_attrs(self) -> Attrs:
        attrs = self.outbound.request_attrs()
        host, port = self.endpoint
        attrs["network.peer.address"] = host
        attrs["network.peer.port"] = port
        attrs["sidecar.upstream.endpoint"] = f"{host}:{port}"
        if self.attempt > 1:
            attrs["http.request.resend_count"] = self.attempt - 1
        return attrs


_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                      "PATCH", "QUERY"))
_DEFAULT_PORT = {"http": 80, "https": 443}


def _method(method: bytes) -> str:
    m = method.decode("latin-1")
    return m if m in _METHODS else "_OTHER"


def request_attrs(method: bytes, authority: bytes, scheme: str, request_id: bytes,
                  headers: Headers) -> Attrs:
    """The OpenTelemetry HTTP semantic-convention attributes both span kinds share."""
    m = method.decode("latin-1")
    attrs: Attrs = {"http.request.method": m if m in _METHODS else "_OTHER",
                    "network.protocol.version": "1.1"}
    if m not in _METHODS:
        attrs["http.request.method_original"] = m
    if authority:
        host, port = _split_authority(authority.decode("latin-1"), _DEFAULT_PORT.get(scheme, 80))
        attrs["server.address"] = host
        attrs["server.port"] = port
    if request_id:
        attrs["sidecar.request_id"] = request_id.decode("latin-1")
    for k, v in headers:
        if k == b"user-agent":
            attrs["user_agent.original"] = v.decode("latin-1")
            break
    return attrs


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    host, sep, port = authority.rpartition(":")
    if not sep or "]" in port or not port.isdigit():  # no port, or a bare IPv6 address
        host, port = authority, ""
    return host.strip("[]"), int(port) if port else default_port
