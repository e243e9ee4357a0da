"""Span records encoded by hand into OTLP protobuf, decoded with the protobuf runtime's own
classes (opentelemetry-proto): every field must come back as recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from sidecar.telemetry.otlp import AttributeValue, SpanKind, TraceEncoder, env_pairs

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN = 0x00F067AA0BA902B7
PARENT = 0xFFFFFFFFFFFFFFFE  # every bit of the 8 bytes counts
START = 1_795_600_000_123_456_789


@dataclass
class Record:
    """A span as the tracer records it (what `otlp.SpanRecord` reads)."""

    trace_id: int = TRACE
    span_id: int = SPAN
    parent_id: int = 0
    tracestate: bytes = b""
    kind: SpanKind = SpanKind.SERVER
    name: str = "GET /quotes/{symbol}"
    start_ns: int = START
    end_ns: int = START + 1_234_567
    attrs: dict[str, AttributeValue] = field(default_factory=dict)
    error: str | None = None


def encoder(resource: dict[str, AttributeValue] | None = None) -> TraceEncoder:
    return TraceEncoder(resource or {"service.name": "trading"}, "sidecar", "0.1.0")


def spans_of(request: bytes) -> list[Span]:
    (resource_spans,) = ExportTraceServiceRequest.FromString(request).resource_spans
    (scope_spans,) = resource_spans.scope_spans
    return list(scope_spans.spans)


def value(v: AnyValue) -> Any:
    return getattr(v, v.WhichOneof("value"))


def attributes(span: Span) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in span.attributes}


def test_every_field_of_a_span_round_trips() -> None:
    record = Record(parent_id=PARENT, tracestate=b"vendor=abc,other=x@y", kind=SpanKind.CLIENT,
                    name="GET", attrs={"url.full": "http://portfolio/positions",
                                       "server.port": 9001, "offset": -5, "retry": True,
                                       "cached": False, "ratio": 0.25, "zero": 0},
                    error="UPSTREAM_TIMEOUT")
    (span,) = spans_of(encoder().encode([record]))
    assert span.trace_id == TRACE.to_bytes(16, "big")
    assert span.span_id == SPAN.to_bytes(8, "big")
    assert span.parent_span_id == PARENT.to_bytes(8, "big")
    assert span.trace_state == "vendor=abc,other=x@y"
    assert span.name == "GET" and span.kind == Span.SPAN_KIND_CLIENT
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == \
        (record.start_ns, record.end_ns)
    kinds = {kv.key: kv.value.WhichOneof("value") for kv in span.attributes}
    assert kinds == {"url.full": "string_value", "server.port": "int_value",
                     "offset": "int_value", "retry": "bool_value", "cached": "bool_value",
                     "ratio": "double_value", "zero": "int_value"}
    assert attributes(span) == record.attrs
    assert span.status == Status(code=Status.STATUS_CODE_ERROR, message="UPSTREAM_TIMEOUT")
    assert span.flags == 0x301  # sampled; the parent known to be remote
    # And nothing else: the whole message as the protobuf classes would build it.
    assert span == Span(
        trace_id=span.trace_id, span_id=span.span_id, parent_span_id=span.parent_span_id,
        trace_state=record.tracestate.decode(), name="GET", kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=record.start_ns, end_time_unix_nano=record.end_ns,
        attributes=[KeyValue(key="url.full", value=AnyValue(string_value="http://portfolio/positions")),
                    KeyValue(key="server.port", value=AnyValue(int_value=9001)),
                    KeyValue(key="offset", value=AnyValue(int_value=-5)),
                    KeyValue(key="retry", value=AnyValue(bool_value=True)),
                    KeyValue(key="cached", value=AnyValue(bool_value=False)),
                    KeyValue(key="ratio", value=AnyValue(double_value=0.25)),
                    KeyValue(key="zero", value=AnyValue(int_value=0))],
        status=Status(code=Status.STATUS_CODE_ERROR, message="UPSTREAM_TIMEOUT"),
        flags=0x301)


def test_a_root_span_has_no_parent_state_or_status() -> None:
    (span,) = spans_of(encoder().encode([Record()]))
    assert span.parent_span_id == b"" and span.trace_state == ""
    assert not span.HasField("status") and span.status.code == Status.STATUS_CODE_UNSET
    assert span.kind == Span.SPAN_KIND_SERVER and span.flags == 0x101
    assert list(span.attributes) == []


def test_resource_and_scope_are_sent_once_for_the_batch() -> None:
    resource: dict[str, AttributeValue] = {"service.name": "trading", "replicas": 3,
                                           "canary": True, "weight": 0.5}
    request = ExportTraceServiceRequest.FromString(
        encoder(resource).encode([Record(), Record(span_id=SPAN + 1)]))
    assert request == ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[
            KeyValue(key="service.name", value=AnyValue(string_value="trading")),
            KeyValue(key="replicas", value=AnyValue(int_value=3)),
            KeyValue(key="canary", value=AnyValue(bool_value=True)),
            KeyValue(key="weight", value=AnyValue(double_value=0.5))]),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name="sidecar", version="0.1.0"),
                                spans=request.resource_spans[0].scope_spans[0].spans)])])
    assert len(request.resource_spans[0].scope_spans[0].spans) == 2
    bare = ExportTraceServiceRequest.FromString(TraceEncoder({}, "sidecar").encode([Record()]))
    assert bare.resource_spans[0].scope_spans[0].scope == InstrumentationScope(name="sidecar")
    assert list(bare.resource_spans[0].resource.attributes) == []


def test_unicode_and_empty_values() -> None:
    long = "ü" * 100  # 200 bytes: two-byte lengths inside each enclosing message
    huge = "x" * 20_000  # three-byte lengths
    record = Record(name="", error="", attrs={
        "": "", "empty": "", "clé": "café ☕ 株価 🚀", "latin-1 header": "caf\xe9",
        "long": long, "huge": huge})
    (span,) = spans_of(encoder().encode([record]))
    assert span.name == ""
    assert attributes(span) == record.attrs
    assert span.attributes[0].value.WhichOneof("value") == "string_value"  # "" is a string
    # An error without words is still an error.
    assert span.HasField("status") and span.status.code == Status.STATUS_CODE_ERROR
    assert span.status.message == ""


class Port(IntEnum):
    HTTP = 80


class Scheme(StrEnum):
    HTTPS = "https"


@pytest.mark.parametrize(("attr", "expected"), [
    (0, AnyValue(int_value=0)), (127, AnyValue(int_value=127)),
    (128, AnyValue(int_value=128)), (300, AnyValue(int_value=300)),
    (2**31, AnyValue(int_value=2**31)), (2**63 - 1, AnyValue(int_value=2**63 - 1)),
    (-1, AnyValue(int_value=-1)), (-(2**63), AnyValue(int_value=-(2**63))),
    # Beyond int64 the value is kept, as its digits.
    (2**63, AnyValue(string_value=str(2**63))),
    (-(2**63) - 1, AnyValue(string_value=str(-(2**63) - 1))),
    (Port.HTTP, AnyValue(int_value=80)), (Scheme.HTTPS, AnyValue(string_value="https")),
    (-0.0, AnyValue(double_value=-0.0)), (1e300, AnyValue(double_value=1e300)),
])
def test_values_at_the_edges(attr: AttributeValue, expected: AnyValue) -> None:
    (span,) = spans_of(encoder().encode([Record(attrs={"v": attr})]))
    assert span.attributes[0].value == expected


def test_equal_values_of_other_types_keep_their_types() -> None:
    """1 == True == 1.0 in Python (and as dict keys): each must still be sent as itself,
    whatever the encoder has seen before."""
    enc = encoder()
    values: list[AttributeValue] = [1, True, 1.0, 0, False, 0.0, "1", 1]
    spans = spans_of(enc.encode([Record(attrs={"v": v}) for v in values]))
    assert [s.attributes[0].value for s in spans] == [
        AnyValue(int_value=1), AnyValue(bool_value=True), AnyValue(double_value=1.0),
        AnyValue(int_value=0), AnyValue(bool_value=False), AnyValue(double_value=0.0),
        AnyValue(string_value="1"), AnyValue(int_value=1)]


def test_many_spans_in_one_batch() -> None:
    """More spans, and more distinct values, than the encoder keeps encoded."""
    enc = encoder()
    records = [Record(span_id=i + 1, parent_id=i if i % 3 else 0,
                      kind=SpanKind.CLIENT if i % 2 else SpanKind.SERVER, name=f"op {i % 7}",
                      start_ns=START + i, end_ns=START + 2 * i,
                      attrs={"http.request.method": "GET", "sidecar.request_id": f"req-{i}",
                             "network.peer.port": 30000 + i, "http.response.status_code": 200},
                      error="503" if i % 11 == 0 else None)
               for i in range(3000)]
    for _ in range(2):  # the second time from a warm encoder
        spans = spans_of(enc.encode(records))
        assert len(spans) == len(records)
        for r, s in zip(records, spans, strict=True):
            assert int.from_bytes(s.span_id, "big") == r.span_id
            assert s.parent_span_id == (r.parent_id.to_bytes(8, "big") if r.parent_id else b"")
            assert s.kind == r.kind and s.name == r.name
            assert (s.start_time_unix_nano, s.end_time_unix_nano) == (r.start_ns, r.end_ns)
            assert attributes(s) == r.attrs
            assert s.status.message == (r.error or "")


def test_an_empty_batch_is_a_valid_request() -> None:
    assert spans_of(encoder().encode([])) == []


def test_values_otlp_cannot_carry_as_given_are_refused() -> None:
    for bad in (None, b"bytes", ["a"]):
        with pytest.raises(TypeError):
            encoder().encode([Record(attrs={"v": bad})])  # type: ignore[dict-item]


def test_span_kinds_are_numbered_as_on_the_wire() -> None:
    assert (SpanKind.SERVER, SpanKind.CLIENT) == (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT)


def test_otel_variables_key_value_lists() -> None:
    assert env_pairs("") == {}
    assert env_pairs(" a = 1 ,b=x%2Cy%3Dz,,c=,=skipped,no-equals,d=e=f ") == \
        {"a": "1", "b": "x,y=z", "c": "", "d": "e=f"}
