"""OTLP/HTTP for the tracer's spans: the protobuf encoding by hand, and the POST.

Why by hand: turning a recorded span into the SDK's `ReadableSpan` and encoding that with
the protobuf runtime cost ~135 µs of CPU per span, twice a whole proxy hop, on a thread
that holds the GIL the event loop needs. Written directly, a span is a few struct packs,
a dict look-up per attribute and one `bytes.join`: ~10 µs (`bench/span_export.py`).

The wire format (opentelemetry-proto, `ExportTraceServiceRequest`), as written here:

    ExportTraceServiceRequest  1: ResourceSpans (one: every span shares the resource)
      ResourceSpans            1: Resource {1: KeyValue...}   2: ScopeSpans (one)
        ScopeSpans             1: InstrumentationScope {1: name, 2: version}  2: Span...
          Span                 1: trace_id (16 bytes), 2: span_id (8), 3: trace_state,
                               4: parent_span_id (8, absent for a root), 5: name,
                               6: kind (enum), 7/8: start/end (fixed64 ns),
                               9: KeyValue... (attributes), 15: Status {2: message,
                               3: code} (only for errors), 16: flags (fixed32)
            KeyValue           1: key, 2: AnyValue {1: string, 2: bool, 3: int64,
                               4: double}

A length-delimited field is its tag, the length as a varint, then the bytes; so each
message is encoded inside out and prefixed with its length. What never changes (the
resource, the scope, every attribute key) is encoded once, and so is each recurring
attribute (key and value: a route, a status, a peer), kept in a bounded cache.

`HttpExporter` sends the result as the SDK's OTLPSpanExporter did: one kept-alive
connection, the headers of OTEL_EXPORTER_OTLP_[TRACES_]HEADERS, retries of 429/502/503/504
and of connection errors with exponential back-off, all within the export's timeout.
"""

from __future__ import annotations

import http.client
import logging
import random
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from enum import IntEnum
from typing import Protocol
from urllib.parse import SplitResult, unquote, urlsplit

from .. import __version__

__all__ = ["AttributeValue", "Exporter", "HttpExporter", "SpanKind", "SpanRecord",
           "TraceEncoder", "env_pairs"]

log = logging.getLogger("sidecar.telemetry")

AttributeValue = str | int | bool | float


class SpanKind(IntEnum):
    """The kinds the sidecar records, numbered as on the wire (`Span.SpanKind`)."""

    SERVER = 2
    CLIENT = 3


class SpanRecord(Protocol):
    """What the encoder reads of a recorded span (the tracer's slotted records)."""

    @property
    def trace_id(self) -> int: ...
    @property
    def span_id(self) -> int: ...
    @property
    def parent_id(self) -> int: ...  # 0: a root span
    @property
    def tracestate(self) -> bytes: ...  # W3C tracestate as validated (ASCII); b"": none
    @property
    def kind(self) -> SpanKind: ...
    @property
    def name(self) -> str: ...
    @property
    def start_ns(self) -> int: ...
    @property
    def end_ns(self) -> int: ...
    @property
    def attrs(self) -> Mapping[str, AttributeValue]: ...
    @property
    def error(self) -> str | None: ...  # None: status unset; else ERROR with this message


_MASK64 = (1 << 64) - 1
_INT64_MIN, _INT64_END = -(1 << 63), 1 << 63
_BYTE = tuple(bytes((i,)) for i in range(256))

# Tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32).
_IDS = struct.Struct(">BBQQBBQ")  # 1: trace_id (16 bytes, big-endian), 2: span_id (8)
_PARENT = struct.Struct(">BBQ")  # 4: parent_span_id
_TIMES = struct.Struct("<BQBQ")  # 7: start, 8: end, fixed64 little-endian
_DOUBLE = struct.Struct("<Bd")  # AnyValue 4: double_value
_FLAGS = struct.Struct("<2sI")  # 16: flags, a two-byte tag (0x85 0x01) then fixed32
_KIND = {kind: bytes((6 << 3, kind)) for kind in SpanKind}
# Span flags: the W3C flags (every exported span is sampled: 0x01), and whether the
# parent is remote (0x100: known, 0x200: remote). A parent here always came in a header.
_FLAGS_ROOT = _FLAGS.pack(b"\x85\x01", 0x101)
_FLAGS_REMOTE_PARENT = _FLAGS.pack(b"\x85\x01", 0x301)
_STATUS_ERROR = b"\x18\x02"  # Status 3: code = STATUS_CODE_ERROR


def _varint(n: int) -> bytes:
    """Unsigned LEB128, as protobuf writes lengths, enums and int64 (two's complement)."""
    if n < 0x80:
        return _BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (a string, bytes or an embedded message)."""
    return _BYTE[tag] + _varint(len(payload)) + payload


def _any_value(value: AttributeValue) -> bytes:
    """The `AnyValue` message of one attribute value (bool before int: it is one)."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(0x0A, value.encode())
    if isinstance(value, int):
        if _INT64_MIN <= value < _INT64_END:  # (not `in range`: linear for an IntEnum)
            return b"\x18" + _varint(value & _MASK64)
        return _field(0x0A, str(value).encode())  # beyond int64: kept, as its digits
    if isinstance(value, float):
        return _DOUBLE.pack(0x21, value)
    raise TypeError(f"attribute value of type {type(value).__name__}: "
                    "not str, int, bool or float")


def _key_values(field: int, attributes: Mapping[str, AttributeValue]) -> bytes:
    """Repeated `KeyValue` fields (field 1 of a Resource)."""
    return b"".join(_field(field, _field(0x0A, k.encode()) + _field(0x12, _any_value(v)))
                    for k, v in attributes.items())


class TraceEncoder:
    """Encodes batches of span records as one `ExportTraceServiceRequest` each.

    Made once per tracer, used by the export thread only (its cache is not locked)."""

    # Most attribute values recur (method, route, status, peer, cluster...): each
    # (key, value) is encoded once and kept. Values unique to a request (its id) go in
    # too and fill the cache; then it starts again, which costs little.
    _CACHE_SIZE = 1024

    def __init__(self, resource: Mapping[str, AttributeValue], scope: str,
                 scope_version: str = "") -> None:
        self._resource = _field(0x0A, _key_values(0x0A, resource))
        scope_fields = _field(0x0A, scope.encode())
        if scope_version:
            scope_fields += _field(0x12, scope_version.encode())
        self._scope = _field(0x0A, scope_fields)
        self._keys: dict[str, bytes] = {}  # key -> its KeyValue field 1
        # (key, value) -> the span's attribute field. Only exact str and int values:
        # True == 1 == 1.0 as dict keys, and those must not share an encoding.
        self._attributes: dict[tuple[str, AttributeValue], bytes] = {}

    def encode(self, spans: Iterable[SpanRecord]) -> bytes:
        span_fields = [self._span(s) for s in spans]
        scope_spans_len = len(self._scope) + sum(map(len, span_fields))
        scope_spans = b"\x12" + _varint(scope_spans_len)
        resource_spans_len = len(self._resource) + len(scope_spans) + scope_spans_len
        return b"".join([b"\x0a", _varint(resource_spans_len), self._resource, scope_spans,
                         self._scope, *span_fields])

    def _span(self, s: SpanRecord) -> bytes:
        """One span as a field of ScopeSpans (2: spans)."""
        trace_id = s.trace_id
        parts = [_IDS.pack(0x0A, 16, trace_id >> 64, trace_id & _MASK64, 0x12, 8, s.span_id)]
        if s.tracestate:
            parts.append(_field(0x1A, s.tracestate))
        if s.parent_id:
            parts.append(_PARENT.pack(0x22, 8, s.parent_id))
        parts.append(_field(0x2A, s.name.encode()))
        parts.append(_KIND[s.kind])
        parts.append(_TIMES.pack(0x39, s.start_ns, 0x41, s.end_ns))
        cache = self._attributes
        for item in s.attrs.items():
            value = item[1]
            if type(value) is str or type(value) is int:
                field = cache.get(item) or self._cache(*item)
            else:
                field = self._attribute(*item)
            parts.append(field)
        if s.error is not None:
            parts.append(_field(0x7A, _field(0x12, s.error.encode()) + _STATUS_ERROR))
        parts.append(_FLAGS_REMOTE_PARENT if s.parent_id else _FLAGS_ROOT)
        body = b"".join(parts)
        return b"\x12" + _varint(len(body)) + body

    def _cache(self, key: str, value: AttributeValue) -> bytes:
        if len(self._attributes) >= self._CACHE_SIZE:
            self._attributes.clear()
        field = self._attributes[key, value] = self._attribute(key, value)
        return field

    def _attribute(self, key: str, value: AttributeValue) -> bytes:
        """A span's attribute: its field 9, a `KeyValue` (key 1: precomputed)."""
        key_field = self._keys.get(key)
        if key_field is None:
            key_field = _field(0x0A, key.encode())
            if len(self._keys) < self._CACHE_SIZE:  # keys come from code: never full
                self._keys[key] = key_field
        return _field(0x4A, key_field + _field(0x12, _any_value(value)))


def env_pairs(value: str) -> dict[str, str]:
    """`key1=value1,key2=value2` with percent-encoded values, as OTEL_RESOURCE_ATTRIBUTES
    and OTEL_EXPORTER_OTLP_HEADERS are written; members without `=` are skipped."""
    out = {}
    for member in value.split(","):
        key, sep, val = member.partition("=")
        if sep and key.strip():
            out[key.strip()] = unquote(val.strip())
        elif member.strip():
            log.warning("ignoring %r in an OTEL_* variable: not key=value", member.strip())
    return out


class Exporter(Protocol):
    """Where encoded requests go (a test passes its own)."""

    def export(self, request: bytes) -> bool:
        """True once the collector accepted the request; False: the spans are lost."""
        ...

    def shutdown(self) -> None: ...


_RETRYABLE = frozenset((429, 502, 503, 504))  # the OTLP spec's "retry later" answers
_MAX_ATTEMPTS = 6
_CONNECTION_ERRORS = (OSError, http.client.HTTPException)  # refused, reset, timed out...


def _env(env: Mapping[str, str], name: str) -> str:
    """A traces-specific OTLP exporter variable, else the general one (the SDK's rule)."""
    return env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}", "")


def _connection(url: SplitResult, timeout_s: float, env: Mapping[str, str]
                ) -> http.client.HTTPConnection:
    """Not yet connected: http.client connects on the first request, and again after
    the collector closes the connection."""
    if url.scheme != "https":
        return http.client.HTTPConnection(url.hostname or "", url.port, timeout=timeout_s)
    context = ssl.create_default_context(cafile=_env(env, "CERTIFICATE") or None)
    if cert := _env(env, "CLIENT_CERTIFICATE"):
        context.load_cert_chain(cert, _env(env, "CLIENT_KEY") or None)
    return http.client.HTTPSConnection(url.hostname or "", url.port, timeout=timeout_s,
                                       context=context)


class HttpExporter:
    """POSTs encoded requests to an OTLP/HTTP endpoint from the export thread.

    Configured like the SDK's exporter: the endpoint and timeout given (the timeout
    bounds one export, retries included); from the environment, extra headers
    (OTEL_EXPORTER_OTLP_[TRACES_]HEADERS), compression (..._COMPRESSION: gzip, deflate)
    and for https the CA file and client certificate (..._CERTIFICATE,
    ..._CLIENT_CERTIFICATE, ..._CLIENT_KEY)."""

    def __init__(self, endpoint: str, timeout_s: float, env: Mapping[str, str], *,
                 rng: random.Random | None = None,
                 connection: http.client.HTTPConnection | None = None) -> None:
        """`connection`: to the endpoint's host (a test's fake); by default made here."""
        url = urlsplit(endpoint)
        self._endpoint = endpoint
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._timeout = timeout_s
        self._rng = rng or random.Random()
        self._closing = threading.Event()
        self._failing = False
        self._compression = _env(env, "COMPRESSION").strip().lower()
        if self._compression not in ("", "none", "gzip", "deflate"):
            log.warning("OTLP compression %r not supported: sending uncompressed",
                        self._compression)
            self._compression = ""
        self._headers = {"user-agent": f"sidecar/{__version__}",
                         **{k.lower(): v for k, v in env_pairs(_env(env, "HEADERS")).items()},
                         "content-type": "application/x-protobuf"}
        if self._compression in ("gzip", "deflate"):
            self._headers["content-encoding"] = self._compression
        self._conn = connection or _connection(url, timeout_s, env)

    def export(self, request: bytes) -> bool:
        if self._compression == "gzip":
            request = zlib.compress(request, wbits=31)  # 31: with a gzip header
        elif self._compression == "deflate":
            request = zlib.compress(request)
        deadline = time.monotonic() + self._timeout
        problem = "shut down"
        for attempt in range(_MAX_ATTEMPTS):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing.is_set():
                problem = "timed out" if remaining <= 0 else problem
                break
            reused = self._conn.sock is not None
            status, retry_after, problem = self._post(request, remaining)
            if 200 <= status < 300:
                if self._failing:
                    log.info("OTLP export to %s works again", self._endpoint)
                    self._failing = False
                return True
            if not status and reused:
                continue  # the collector closed the kept-alive connection: again, at once
            if status and status not in _RETRYABLE:
                break
            delay = retry_after if retry_after is not None else \
                2 ** attempt * self._rng.uniform(0.8, 1.2)
            if delay >= deadline - time.monotonic() or self._closing.wait(delay):
                break
        if not self._failing:  # once per outage, not per batch: the counters count
            log.warning("OTLP export to %s failed (%s); spans are dropped until it works",
                        self._endpoint, problem)
            self._failing = True
        return False

    def _post(self, request: bytes, timeout_s: float) -> tuple[int, float | None, str]:
        """One POST: (the status, 0 if none came; the Retry-After seconds; the problem)."""
        conn = self._conn
        conn.timeout = timeout_s  # for a new connection; an open one is set here:
        if conn.sock is not None:
            conn.sock.settimeout(timeout_s)
        try:
            conn.request("POST", self._path, request, self._headers)
            response = conn.getresponse()
            response.read()  # all of it, or the connection cannot be used again
        except _CONNECTION_ERRORS as e:
            conn.close()
            return 0, None, f"{type(e).__name__}: {e}"
        retry_after = response.getheader("retry-after", "")
        return (response.status, float(retry_after) if retry_after.isdigit() else None,
                f"HTTP {response.status} {response.reason}")

    def shutdown(self) -> None:
        """Cuts a back-off wait short and closes the connection."""
        self._closing.set()
        self._conn.close()
