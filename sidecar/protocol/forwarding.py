"""A proxy's duties to the messages it forwards (RFC 9110 §7.6, RFC 9112), sans-IO.

Hop-by-hop fields (and any named in `Connection`) stop here; `Via` and the
`X-Forwarded-*` family are set; each side gets framing of our own choosing, since
bodies are re-framed (chunked stays chunked, lengths stay lengths). Heads are built
as one bytes object, ready for a single write.
"""

from __future__ import annotations

from typing import Final

from ..telemetry.propagation import PROPAGATION_HEADERS
from .events import Headers, RequestHead, ResponseHead

__all__ = ["body_allowed", "request_head", "response_head", "simple_response"]

HOP_BY_HOP: Final = frozenset((
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authorization", b"proxy-authenticate",
))
VIA: Final = b"1.1 sidecar"


# Connection options that name no field; and fields that `Connection` may never remove,
# since the message's framing and target depend on them (a request smuggling vector).
_CONNECTION_OPTIONS: Final = frozenset((b"close", b"keep-alive", b"upgrade", b""))
_NEVER_DROPPED: Final = frozenset((b"content-length", b"host"))
_REASONS: Final = {100: b"Continue", 101: b"Switching Protocols", 103: b"Early Hints", 200: b"OK",
            201: b"Created", 202: b"Accepted", 204: b"No Content", 206: b"Partial Content",
            301: b"Moved Permanently", 302: b"Found", 303: b"See Other", 304: b"Not Modified",
            307: b"Temporary Redirect", 308: b"Permanent Redirect", 400: b"Bad Request",
            401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
            405: b"Method Not Allowed", 408: b"Request Timeout", 409: b"Conflict",
            413: b"Content Too Large", 415: b"Unsupported Media Type",
            422: b"Unprocessable Content", 429: b"Too Many Requests",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
            501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
            504: b"Gateway Timeout"}
# Status lines made once: `HTTP/1.1 200 OK\r\n`.
_STATUS_LINES: Final = {code: b"HTTP/1.1 %d %b\r\n" % (code, reason) for code, reason in _REASONS.items()}
_SEP: Final = b": "
_CRLF: Final = b"\r\n"
_TAIL: Final = b"\r\nvia: 1.1 sidecar\r\n\r\n"  # after x-request-id: ours, and the head's end


def reason(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d %b\r\n" % (status, reason(status))


def _dropped(connection: bytes | None) -> frozenset[bytes]:
    """Hop-by-hop fields, and any the `Connection` header names (RFC 9110 §7.6.1)."""
    if connection is None or connection in _CONNECTION_OPTIONS:
        return HOP_BY_HOP
    named = {t.strip() for t in connection.split(b",")} - _CONNECTION_OPTIONS - _NEVER_DROPPED
    return HOP_BY_HOP | named if named else HOP_BY_HOP


def request_head(head: RequestHead, *, client_ip: bytes, proto: bytes, request_id: bytes,
                 host: bytes | None = None, xfcc: bytes | None = None,
                 trace: Headers | None = None, trace_ids: bytes = b"",
                 deadline: Headers | None = None, forwarded: bytes | None = None) -> bytes:
    """The head to send upstream, always HTTP/1.1 and keep-alive.

    `x-forwarded-client-cert` is only ever ours (`xfcc`: the mTLS peer, Envoy's format):
    one arriving from the client is dropped, whatever it claims. With `trace` (this hop's
    span as the next one's parent) or `trace_ids` (a new trace not sampled here, as
    b"{trace id}-{span id}": sent on as not sampled), the received trace context is
    replaced by it; with `deadline` (what is left of the
    caller's), so are the received timeout headers. `forwarded`: `forwarded_lines(...)`
    for this request, made once per connection by the caller, used when the request
    brought no X-Forwarded-* field of its own (so the lines are ours alone)."""
    drop = HOP_BY_HOP if head.connection is None else _dropped(head.connection)
    # The received context goes when ours replaces it; the codec saw whether there is any.
    replace_trace = head.trace_context and (trace is not None or len(trace_ids) > 0)
    out = [head.method, b" ", head.target, b" HTTP/1.1\r\n"]
    xff = None
    seen_proto = seen_fhost = False
    for k, v in head.headers:
        if k in _SPECIAL_REQUEST:
            if k in drop or k == b"x-request-id" or k == b"x-forwarded-client-cert":
                continue
            if replace_trace and k in PROPAGATION_HEADERS:
                continue
            if deadline is not None and k in _DEADLINE_HEADERS:
                continue
            if k == b"host":
                if host is not None:
                    v = host
            elif k == b"x-forwarded-for":
                xff = v if xff is None else xff + b", " + v
                continue
            elif k == b"x-forwarded-proto":
                seen_proto = True
            elif k == b"x-forwarded-host":
                seen_fhost = True
        elif k in drop:  # named in Connection
            continue
        out += (k, _SEP, v, _CRLF)
    if forwarded is not None and xff is None and not seen_proto and not seen_fhost:
        out.append(forwarded)
    else:
        out += (b"x-forwarded-for: ", client_ip if xff is None else xff + b", " + client_ip,
                _CRLF)
        if not seen_proto:
            out += (b"x-forwarded-proto: ", proto, _CRLF)
        if not seen_fhost and head.authority:
            out += (b"x-forwarded-host: ", head.authority, _CRLF)
    if xfcc is not None:
        out += (b"x-forwarded-client-cert: ", xfcc, _CRLF)
    for extra in (trace, deadline):
        if extra is not None:
            for k, v in extra:
                out += (k, _SEP, v, _CRLF)
    if head.chunked:
        out.append(b"transfer-encoding: chunked\r\n")
    if head.upgrade:
        upgrade = head.header(b"upgrade")
        if upgrade is not None:
            out += (b"connection: upgrade\r\nupgrade: ", upgrade, _CRLF)
    if len(trace_ids) > 0:  # one piece fewer than a line of its own
        out += (b"traceparent: 00-", trace_ids, b"-00\r\nx-request-id: ", request_id, _TAIL)
    else:
        out += (b"x-request-id: ", request_id, _TAIL)
    return b"".join(out)


def forwarded_lines(client_ip: bytes, proto: bytes, authority: bytes) -> bytes:
    """X-Forwarded-For, -Proto and (with an authority) -Host, as `request_head` writes
    them for a request that brought none: a connection's requests mostly share them."""
    out = b"x-forwarded-for: " + client_ip + b"\r\nx-forwarded-proto: " + proto + b"\r\n"
    return out + b"x-forwarded-host: " + authority + b"\r\n" if authority else out


_DEADLINE_HEADERS: Final = frozenset((b"x-request-timeout", b"grpc-timeout"))
_SPECIAL_REQUEST: Final = HOP_BY_HOP | PROPAGATION_HEADERS | _DEADLINE_HEADERS | {
    b"host", b"x-forwarded-for", b"x-request-id", b"x-forwarded-proto", b"x-forwarded-host",
    b"x-forwarded-client-cert"}


def body_allowed(status: int, method: bytes) -> bool:
    return not (status < 200 or status in (204, 304) or method == b"HEAD")


def response_head(head: ResponseHead, *, request_id: bytes, keep_alive: bool,
                  chunked: bool, extra: bytes = b"", http10: bool = False) -> bytes:
    """The head to send downstream; `chunked` when we frame the body in chunks; `extra`:
    header lines of our own (`name: value\r\n` each); `http10`: the client speaks
    HTTP/1.0, so a kept connection must say so (RFC 9112 9.3)."""
    if http10 and keep_alive:
        extra += b"connection: keep-alive\r\n"
    raw = head.raw
    if raw is None or (head.connection is not None and _dropped(head.connection) is not HOP_BY_HOP):
        return _rebuilt_response_head(head, request_id, keep_alive, chunked, extra)
    # Edit the received bytes: cut the hop-by-hop lines, keep the rest as it came.
    cuts = head.cuts
    if cuts:
        pieces, last = [], 0
        for a, b in cuts:
            pieces.append(raw[last:a])
            last = b
        pieces.append(raw[last:-2])
        out = pieces
    else:
        out = [raw[:-2]]
    if raw[5:8] != b"1.1":  # HTTP/1.0 upstream: we speak 1.1 to the client
        out[0] = status_line(head.status)[:-2] + out[0][out[0].find(b"\r\n"):]
    if not head.has_request_id:
        out += (b"x-request-id: ", request_id, _CRLF)
    out.append(b"via: 1.1 sidecar\r\n")
    if extra:
        out.append(extra)
    return _finish_response_head(out, head, keep_alive, chunked)


def _finish_response_head(out: list[bytes], head: ResponseHead, keep_alive: bool,
                          chunked: bool) -> bytes:
    if chunked:
        out.append(b"transfer-encoding: chunked\r\n")
    if head.status == 101:
        out += (b"connection: upgrade\r\nupgrade: ", head.header(b"upgrade") or b"websocket",
                _CRLF)
    elif not keep_alive:
        out.append(b"connection: close\r\n")
    out.append(_CRLF)
    return b"".join(out)


def _rebuilt_response_head(head: ResponseHead, request_id: bytes, keep_alive: bool,
                           chunked: bool, extra: bytes) -> bytes:
    """Field by field: for heads without raw bytes, or whose Connection names more fields."""
    drop = _dropped(head.connection)
    out = [status_line(head.status)]
    has_id = False
    for k, v in head.headers:
        if k in drop:
            continue
        if k == b"x-request-id":
            has_id = True
        out += (k, _SEP, v, _CRLF)
    if not has_id:
        out += (b"x-request-id: ", request_id, _CRLF)
    out.append(b"via: 1.1 sidecar\r\n")
    if extra:
        out.append(extra)
    return _finish_response_head(out, head, keep_alive, chunked)


def simple_response(status: int, body: bytes, *, request_id: bytes, keep_alive: bool,
                    content_type: bytes = b"application/json",
                    extra: list[tuple[bytes, bytes]] | None = None,
                    http10: bool = False, lines: bytes = b"") -> bytes:
    """A complete response made by the sidecar itself (errors, local answers); `lines`:
    header lines of our own, already framed (CORS, RateLimit-*)."""
    if status in (204, 304):  # no content, so no content fields (RFC 9110 8.6, 15.3.5)
        out = [status_line(status), b"x-request-id: %b\r\n" % request_id]
    else:
        out = [status_line(status), b"content-type: %b\r\ncontent-length: %d\r\n"
               b"x-request-id: %b\r\n" % (content_type, len(body), request_id)]
    for k, v in extra or ():
        out += (k, _SEP, v, _CRLF)
    if lines:
        out.append(lines)
    if not keep_alive:
        out.append(b"connection: close\r\n")
    elif http10:
        out.append(b"connection: keep-alive\r\n")
    out.append(_CRLF)
    out.append(body)
    return b"".join(out)
