"""What one exchange tells the world when it is traced or logged: spans and access-log lines.

Called only when tracing or access logging is on (the connection checks first), so a
sidecar without them pays two attribute checks per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.exchange import Exchange
    from ..telemetry.tracing import Tracer
    from .downstream import DownstreamConnection
    from .listener import ListenerState

__all__ = ["report", "start"]


def start(conn: DownstreamConnection, ex: Exchange, state: ListenerState,
          tracer: Tracer) -> None:
    """At the request head: this hop's span (inbound) or the request's trace (outbound).
    A trace that is not sampled here only passes its context on: no span object is kept,
    so the exchange's end has nothing to report for it (most requests, at low ratios)."""
    head = ex.head
    decided = tracer.decide(head.headers, head.trace_context)
    if decided is None:
        return  # the caller's trace, not sampled: its context passes on untouched
    if isinstance(decided, bytes):
        ex.trace_ids = decided  # a new trace's ids, sent on as "not sampled" by every try
        return
    if state.direction == "inbound":
        ex.span = tracer.start_server(
            head.headers, head.method, head.target, authority=head.authority,
            scheme="https" if conn.proto else "http",
            peer=(conn.client_ip_str, conn.client_port), route=ex.route.name,
            request_id=ex.request_id, decided=decided)
    else:
        ex.span = tracer.start_outbound(
            head.headers, head.method, head.target, authority=head.authority,
            cluster=ex.route.cluster.name, request_id=ex.request_id, decided=decided)


def report(conn: DownstreamConnection, ex: Exchange, elapsed: float) -> None:
    """The exchange is over: end its spans, write its access-log line."""
    state = conn.listener.state
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
                trace_id=span.trace_id_hex if span is not None else
                ex.trace_ids[:32].decode() if len(ex.trace_ids) > 0 else "",
                headers=None if span is not None else head.headers,
                direction=state.direction,
                service=ex.route.cluster.name if ex.route is not None else state.service,
                bytes_in=ex.bytes_in, bytes_out=ex.bytes_out, upstream_s=ex.upstream_s,
                upstream=str(ex.endpoint.endpoint) if ex.endpoint is not None else "",
                flags=flags, peer=conn.peer or "",
                client=f"{conn.client_ip_str}:{conn.client_port}")
