"""W3C Trace Context and B3 headers: what is continued, what is refused, what is sent on."""

from __future__ import annotations

import pytest

from sidecar.telemetry.new_traces import NewTraces
from sidecar.telemetry.propagation import (
    PROPAGATION_HEADERS,
    TraceContext,
    Unsampled,
    extract,
    parse_b3_multi,
    parse_b3_single,
    parse_traceparent,
    parse_tracestate,
    trace_id_hex,
)
from sidecar.telemetry.tracing import ServerSpan, Tracer, TracingConfig

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01".encode()


def test_valid_traceparent_is_continued_with_its_flag() -> None:
    assert parse_traceparent(VALID) == TraceContext(int(TRACE, 16), int(SPAN, 16), True)
    unsampled = parse_traceparent(f"00-{TRACE}-{SPAN}-00".encode())
    assert unsampled is not None and unsampled.sampled is False
    # Only bit 0 is "sampled"; other flag bits (e.g. W3C level 2's random) are fine.
    other = parse_traceparent(f"00-{TRACE}-{SPAN}-03".encode())
    assert other is not None and other.sampled is True
    assert parse_traceparent(f"  00-{TRACE}-{SPAN}-01\t".encode()) is not None


@pytest.mark.parametrize("value", [
    b"",
    b"garbage",
    f"00-{TRACE}-{SPAN}".encode(),  # no flags
    f"00-{TRACE}-{SPAN}-1".encode(),  # short flags
    f"00-{TRACE.upper()}-{SPAN}-01".encode(),  # upper-case hex is not allowed
    f"00-{TRACE[:-1]}-{SPAN}-01".encode(),  # 31 hex digits
    f"00-{'0' * 32}-{SPAN}-01".encode(),  # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01".encode(),  # all-zero parent id
    f"ff-{TRACE}-{SPAN}-01".encode(),  # version ff is forbidden
    f"00-{TRACE}-{SPAN}-01-extra".encode(),  # version 00 has exactly four fields
    f"0g-{TRACE}-{SPAN}-01".encode(),
    f"00_{TRACE}_{SPAN}_01".encode(),
    f"00-{TRACE}-{SPAN}-01x".encode(),
])
def test_invalid_traceparent_is_ignored(value: bytes) -> None:
    assert parse_traceparent(value) is None


def test_a_later_version_is_read_as_far_as_version_00_goes() -> None:
    ctx = parse_traceparent(f"cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like".encode())
    assert ctx == TraceContext(int(TRACE, 16), int(SPAN, 16), True)
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01what".encode()) is None


def test_tracestate_is_validated_and_joined() -> None:
    assert parse_tracestate([b"congo=t61rcWkgMzE", b" rojo=00f067aa0ba902b7 ,"]) == \
        b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    assert parse_tracestate([b"tenant@vendor=x"]) == b"tenant@vendor=x"
    assert parse_tracestate([b"a=1,a=2"]) == b""  # duplicate key
    assert parse_tracestate([b"A=1"]) == b""  # key must be lower case
    assert parse_tracestate([b"a=1,b"]) == b""  # not key=value
    assert parse_tracestate([b"a=x=y"]) == b""  # '=' may not appear in a value
    assert parse_tracestate([b",".join(b"k%d=v" % i for i in range(32))]) != b""
    assert parse_tracestate([b",".join(b"k%d=v" % i for i in range(33))]) == b""


def test_extract_continues_w3c_with_tracestate() -> None:
    ctx = extract([(b"host", b"x"), (b"traceparent", VALID), (b"tracestate", b"a=1"),
                   (b"tracestate", b"b=2")])
    assert ctx is not None
    assert (ctx.trace_id, ctx.span_id, ctx.sampled) == (int(TRACE, 16), int(SPAN, 16), True)
    assert ctx.tracestate == b"a=1,b=2" and not ctx.from_b3


def test_extract_starts_over_when_absent_invalid_or_duplicated() -> None:
    assert extract([(b"host", b"x")]) is None
    assert extract([(b"traceparent", b"00-nonsense"), (b"tracestate", b"a=1")]) is None
    # Two traceparent fields: neither is trusted.
    assert extract([(b"traceparent", VALID), (b"traceparent", VALID)]) is None


def test_w3c_wins_over_b3_and_b3_is_the_fallback() -> None:
    other = "1" * 32
    both = [(b"b3", f"{other}-{SPAN}-1".encode()), (b"traceparent", VALID)]
    ctx = extract(both)
    assert ctx is not None and ctx.trace_id == int(TRACE, 16) and not ctx.from_b3
    broken_w3c = [(b"traceparent", b"junk"), (b"b3", f"{other}-{SPAN}-1".encode())]
    ctx = extract(broken_w3c)
    assert ctx is not None and ctx.trace_id == int(other, 16) and ctx.from_b3


def test_b3_single() -> None:
    full = parse_b3_single(f"{TRACE}-{SPAN}-1-{'a' * 16}".encode())
    assert full == TraceContext(int(TRACE, 16), int(SPAN, 16), True, from_b3=True)
    # 64-bit trace ids are accepted (and later sent on as 128 bits, left-padded).
    short = parse_b3_single(f"{TRACE[16:]}-{SPAN}-0".encode())
    assert short is not None and short.trace_id == int(TRACE[16:], 16) and short.sampled is False
    debug = parse_b3_single(f"{TRACE}-{SPAN}-d".encode())
    assert debug is not None and debug.sampled is True
    undecided = parse_b3_single(f"{TRACE}-{SPAN}".encode())
    assert undecided is not None and undecided.sampled is None
    # A decision without ids.
    assert parse_b3_single(b"0") == TraceContext(0, 0, False, from_b3=True)
    assert parse_b3_single(b"1") == TraceContext(0, 0, True, from_b3=True)
    for bad in (b"", b"2", f"{TRACE}-{SPAN}-2".encode(), f"{TRACE}-{SPAN[1:]}-1".encode(),
                f"{'0' * 32}-{SPAN}-1".encode(), f"{TRACE}".encode()):
        assert parse_b3_single(bad) is None, bad


def test_b3_multi() -> None:
    ctx = parse_b3_multi({b"x-b3-traceid": TRACE.encode(), b"x-b3-spanid": SPAN.encode(),
                          b"x-b3-sampled": b"1"})
    assert ctx == TraceContext(int(TRACE, 16), int(SPAN, 16), True, from_b3=True)
    legacy = parse_b3_multi({b"x-b3-traceid": TRACE.encode(), b"x-b3-spanid": SPAN.encode(),
                             b"x-b3-sampled": b"false"})
    assert legacy is not None and legacy.sampled is False
    debug = parse_b3_multi({b"x-b3-traceid": TRACE.encode(), b"x-b3-spanid": SPAN.encode(),
                            b"x-b3-flags": b"1"})
    assert debug is not None and debug.sampled is True
    undecided = parse_b3_multi({b"x-b3-traceid": TRACE.encode(), b"x-b3-spanid": SPAN.encode()})
    assert undecided is not None and undecided.sampled is None
    assert parse_b3_multi({b"x-b3-sampled": b"0"}) == TraceContext(0, 0, False, from_b3=True)
    assert parse_b3_multi({b"x-b3-traceid": TRACE.encode()}) is None  # no span id
    assert parse_b3_multi({b"x-b3-traceid": b"xyz", b"x-b3-spanid": SPAN.encode()}) is None
    assert parse_b3_multi({b"x-b3-parentspanid": SPAN.encode()}) is None
    via_extract = extract([(b"x-b3-traceid", TRACE.encode()), (b"x-b3-spanid", SPAN.encode()),
                           (b"x-b3-sampled", b"1")])
    assert via_extract is not None and via_extract.from_b3


class _NoExport:
    def export(self, request: bytes) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def test_a_sampled_hop_sends_its_own_span_on_in_both_formats() -> None:
    tracer = Tracer(TracingConfig(service_name="t", sample_ratio=0.0), exporter=_NoExport(),
                    env={})
    try:
        short = TRACE[16:]  # a 64-bit B3 trace id goes on as 128 bits
        span = tracer.start_server([(b"b3", f"{short}-{SPAN}-1".encode())], b"GET", b"/")
        assert isinstance(span, ServerSpan)
        assert span.parent_id == int(SPAN, 16) and span.span_id != int(SPAN, 16)
        sent = dict(span.child_headers())
        assert sent[b"traceparent"] == b"00-%s%s-%016x-01" % (b"0" * 16, short.encode(),
                                                              span.span_id)
        assert parse_traceparent(sent[b"traceparent"]) == TraceContext(int(short, 16),
                                                                       span.span_id, True)
        assert parse_b3_single(sent[b"b3"]) == TraceContext(int(short, 16), span.span_id,
                                                            True, from_b3=True)
    finally:
        tracer.shutdown()


def test_trace_id_hex_for_logs() -> None:
    assert trace_id_hex([(b"traceparent", VALID)]) == TRACE
    assert trace_id_hex([(b"b3", b"1")]) == ""
    assert trace_id_hex([]) == ""


def test_propagation_headers_name_every_carrier() -> None:
    assert {b"traceparent", b"tracestate", b"b3", b"x-b3-traceid", b"x-b3-spanid",
            b"x-b3-parentspanid", b"x-b3-sampled", b"x-b3-flags"} == PROPAGATION_HEADERS


def test_an_unsampled_trace_passes_one_not_sampled_parent_on() -> None:
    ids = NewTraces(0).take()  # a bound of 0 samples nothing
    hop = Unsampled(ids)
    ctx = extract(hop.child_headers())
    assert ctx is not None and ctx.sampled is False
    assert f"{ctx.trace_id:032x}" == hop.trace_id_hex == ids[:32].decode()
    assert ctx.trace_id == hop.trace_id
    assert f"{ctx.span_id:016x}".encode() == ids[33:]
    assert hop.child_headers() == hop.child_headers()  # a non-recording span: one id
