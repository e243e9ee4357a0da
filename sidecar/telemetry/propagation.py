"""Trace context in HTTP headers, sans-IO: W3C Trace Context and B3, read and written.

Headers are the codec's list of (lower-case name, value) bytes pairs.

Reading (`extract`): a valid W3C `traceparent` wins (with its `tracestate`); when it is
absent or invalid, B3 is tried, the single `b3` header first, then the `x-b3-*` family.
Anything invalid is ignored as if absent: the hop then starts a new trace, which is what
the W3C spec asks (a vendor "MUST NOT" continue from a traceparent it cannot parse).

B3 may carry a sampling decision without ids (`b3: 0`, `x-b3-sampled: 1` alone); that
comes back as a `TraceContext` with `trace_id == 0`: no parent span, only a decision.
B3 may also carry ids without a decision (no sampled flag): then `sampled` is None and
the receiving hop decides for itself.

Writing: a hop's own context goes on as its span's ids, b"{trace id}-{span id}" in hex
(`spans`, `new_traces`); a hop that injects its own context drops the received
`PROPAGATION_HEADERS` first.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from ..protocol.events import Headers

__all__ = ["NOT_SAMPLED", "PROPAGATION_HEADERS", "TraceContext", "Unsampled",
           "extract", "parse_b3_multi", "parse_b3_single", "parse_traceparent",
           "parse_tracestate", "trace_id_hex"]

TRACEPARENT: Final = b"traceparent"
TRACESTATE: Final = b"tracestate"
B3: Final = b"b3"
_B3_MULTI = (b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid", b"x-b3-sampled",
             b"x-b3-flags")
# Every header that carries trace context: a hop that injects its own drops these.
PROPAGATION_HEADERS: Final = frozenset((TRACEPARENT, TRACESTATE, B3, *_B3_MULTI))


class TraceContext(NamedTuple):
    """The caller's span, as read from the headers."""

    trace_id: int  # 128 bits; 0 only for a B3 sampling decision without ids
    span_id: int  # 64 bits; the caller's span, parent of ours (0 when trace_id is)
    sampled: bool | None  # None: the caller left the decision to us (B3 only)
    tracestate: bytes = b""  # W3C tracestate, validated and joined; b"" if none
    from_b3: bool = False  # arrived as B3: answer in B3 too, for B3-only services


# "Not sampled", without ids (as from `b3: 0`).
NOT_SAMPLED: Final = TraceContext(0, 0, False)

# version-traceparent: 00 has exactly these four fields; a later version may append
# "-..." fields, which a version-00 reader ignores (W3C Trace Context §3.2.4).
_TRACEPARENT: Final = re.compile(
    rb"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^ \t]*)?[ \t]*")
_LOWER_HEX_DASH: Final = b"0123456789abcdef-"
_ODD_HEX: Final = frozenset(b"13579bdf")  # flags' bit 0, "sampled", is in the last hex digit
_ZEROS: Final = b"0" * 32
_ZEROS16: Final = _ZEROS[:16]


def parse_traceparent(value: bytes, ids_if_unsampled: bool = True) -> TraceContext | None:
    """`ids_if_unsampled=False`: a valid "not sampled" traceparent gives `NOT_SAMPLED`
    (no ids), which spares a caller that will not trace the request the int parsing."""
    if len(value) == 55:  # version 00 as everyone sends it: checked without the regex
        if value[2] != 45 or value[35] != 45 or value[52] != 45 \
                or value.translate(None, _LOWER_HEX_DASH) or value.count(b"-") != 3:
            return None
        if not ids_if_unsampled and value[54] not in _ODD_HEX and not value.startswith(b"ff") \
                and not value.startswith(_ZEROS, 3) and not value.startswith(_ZEROS16, 36):
            return NOT_SAMPLED
        version, trace, span, flags, rest = value[:2], value[3:35], value[36:52], \
            value[53:], None
    else:
        m = _TRACEPARENT.fullmatch(value)
        if m is None:
            return None
        version, trace, span, flags, rest = m.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return None
    trace_id, span_id = int(trace, 16), int(span, 16)
    if not trace_id or not span_id:
        return None
    return TraceContext(trace_id, span_id, flags[1] in _ODD_HEX)



# tracestate list members (W3C Trace Context §3.3.1): key=value, at most 32 of them.
_TS_KEY = rb"(?:[a-z][a-z0-9_*/-]{0,255}|[a-z0-9][a-z0-9_*/-]{0,240}@[a-z][a-z0-9_*/-]{0,13})"
_TS_VALUE = rb"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_TS_MEMBER = re.compile(rb"(" + _TS_KEY + rb")=" + _TS_VALUE)
_TS_MAX_MEMBERS = 32


def parse_tracestate(values: list[bytes]) -> bytes:
    """The members of every `tracestate` field, joined; b"" if any member is invalid
    (the spec lets a vendor drop the whole header rather than guess)."""
    members: list[bytes] = []
    keys: set[bytes] = set()
    for value in values:
        for raw in value.split(b","):
            member = raw.strip(b" \t")
            if not member:
                continue  # empty list members are allowed
            m = _TS_MEMBER.fullmatch(member)
            if m is None or m.group(1) in keys:
                return b""
            keys.add(m.group(1))
            members.append(member)
    if len(members) > _TS_MAX_MEMBERS:
        return b""
    return b",".join(members)


_B3_SINGLE = re.compile(
    rb"([0-9a-f]{32}|[0-9a-f]{16})-([0-9a-f]{16})(?:-([01d])(?:-([0-9a-f]{16}))?)?")
_B3_DECISION = {b"1": True, b"d": True, b"0": False}


def parse_b3_single(value: bytes) -> TraceContext | None:
    """`b3: {trace}-{span}[-{1|0|d}[-{parent}]]`, or a decision alone: `b3: 1|0|d`."""
    value = value.strip(b" \t")
    decision = _B3_DECISION.get(value)
    if decision is not None:
        return TraceContext(0, 0, decision, from_b3=True)
    m = _B3_SINGLE.fullmatch(value)
    if m is None:
        return None
    trace_id, span_id = int(m.group(1), 16), int(m.group(2), 16)
    if not trace_id or not span_id:
        return None
    sampled = _B3_DECISION.get(m.group(3)) if m.group(3) else None
    return TraceContext(trace_id, span_id, sampled, from_b3=True)


_HEX16_32 = re.compile(rb"[0-9a-f]{32}|[0-9a-f]{16}")
_HEX16 = re.compile(rb"[0-9a-f]{16}")
# x-b3-sampled: "1"/"0" by the spec; "true"/"false" from old Zipkin clients.
_B3_SAMPLED = {b"1": True, b"true": True, b"0": False, b"false": False}


def parse_b3_multi(fields: dict[bytes, bytes]) -> TraceContext | None:
    """The `x-b3-*` family, given as {lower-case name: value}. `x-b3-flags: 1` (debug)
    means sampled; a sampled flag without ids is a decision alone."""
    sampled = _B3_SAMPLED.get(fields.get(b"x-b3-sampled", b"").strip(b" \t").lower())
    if fields.get(b"x-b3-flags", b"").strip(b" \t") == b"1":
        sampled = True
    trace = fields.get(b"x-b3-traceid")
    span = fields.get(b"x-b3-spanid")
    if trace is None and span is None:
        return None if sampled is None else TraceContext(0, 0, sampled, from_b3=True)
    if trace is None or span is None:
        return None
    trace, span = trace.strip(b" \t"), span.strip(b" \t")
    if _HEX16_32.fullmatch(trace) is None or _HEX16.fullmatch(span) is None:
        return None
    trace_id, span_id = int(trace, 16), int(span, 16)
    if not trace_id or not span_id:
        return None
    return TraceContext(trace_id, span_id, sampled, from_b3=True)


def extract(headers: Headers, ids_if_unsampled: bool = True) -> TraceContext | None:
    """The caller's trace context, or None to start a trace here. One pass over the
    headers, allocation-free when they carry no trace context (the common case for a
    request entering the mesh); tracestate is validated only when the traceparent is.
    `ids_if_unsampled`: see `parse_traceparent`."""
    parent: bytes | None = None
    duplicate = False
    state: list[bytes] | None = None
    single: bytes | None = None
    multi: dict[bytes, bytes] | None = None
    for k, v in headers:
        if k in PROPAGATION_HEADERS:
            if k == TRACEPARENT:
                duplicate = parent is not None
                parent = v
            elif k == TRACESTATE:
                if state is None:
                    state = []
                state.append(v)
            elif k == B3:
                single = v
            else:
                if multi is None:
                    multi = {}
                multi[k] = v
    if parent is not None and not duplicate:  # two traceparent fields: trust neither (W3C §3.2)
        ctx = parse_traceparent(parent, ids_if_unsampled)
        if ctx is not None and ctx.trace_id:
            return ctx._replace(tracestate=parse_tracestate(state)) if state else ctx
        if ctx is not None:
            return ctx
    if single is not None:
        ctx = parse_b3_single(single)
        if ctx is not None:
            return ctx
    if multi is not None:
        return parse_b3_multi(multi)
    return None


def trace_id_hex(headers: Headers) -> str:
    """The trace id the headers carry ("" if none): for logs of requests not traced here."""
    ctx = extract(headers)
    return f"{ctx.trace_id:032x}" if ctx is not None and ctx.trace_id else ""


class Unsampled:
    """A new trace that is not sampled here: only its ids travel on, flagged "not sampled".

    Like OpenTelemetry's non-recording span it has ids but records nothing, so every
    request it sends on names the same parent span. `ids` are b"{trace id}-{span id}" in
    hex, as `NewTraces` hands them out and `not_sampled_line` writes them."""

    __slots__ = ("ids",)

    def __init__(self, ids: bytes) -> None:
        self.ids = ids

    @property
    def trace_id(self) -> int:
        return int(self.ids[:32], 16)

    @property
    def trace_id_hex(self) -> str:
        return self.ids[:32].decode()

    def child_headers(self) -> Headers:
        return [(TRACEPARENT, b"00-%b-00" % self.ids)]

    def start_try(self, endpoint: tuple[str, int], attempt: int = 1) -> Unsampled:
        return self

    def set(self, key: str, value: str | int) -> None:
        pass

    def end(self, status: int = 0, error: str | None = None) -> None:
        pass
