"""A proxy's duties to the messages it forwards (RFC 9110 §7.6, RFC 9112), sans-IO.

Hop-by-hop fields (and any named in `Connection`) stop here; `Via` and the
`X-Forwarded-*` family are set; each side gets framing of our own choosing, since
bodies are re-framed (chunked stays chunked, lengths stay lengths). Heads are built
as one bytes object, ready for a single write.
"""

from __future__ import annotations

from .events import RequestHead, ResponseHead

__all__ = ["body_allowed", "request_head", "response_head", "simple_response"]

HOP_BY_HOP = frozenset((
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authorization", b"proxy-authenticate",
))
VIA = b"1.1 sidecar"


def _named_in_connection(connection: bytes | None) -> frozenset[bytes]:
    if not connection:
        return HOP_BY_HOP
    named = {t.strip() for t in connection.split(b",")} - {b"close", b"keep-alive", b"upgrade", b""}
    return HOP_BY_HOP | named if named else HOP_BY_HOP


def request_head(head: RequestHead, *, client_ip: bytes, proto: bytes, request_id: bytes,
                 host: bytes | None = None) -> bytes:
    """The head to send upstream, always HTTP/1.1 and keep-alive."""
    drop = _named_in_connection(head.connection)
    out = [b"%b %b HTTP/1.1\r\n" % (head.method, head.target)]
    xff = None
    seen_proto = seen_fhost = False
    for k, v in head.headers:
        if k in drop:
            continue
        if k == b"host":
            out.append(b"host: %b\r\n" % (host or v))
            continue
        if k == b"x-forwarded-for":
            xff = v if xff is None else xff + b", " + v
            continue
        if k == b"x-request-id":
            continue
        if k == b"x-forwarded-proto":
            seen_proto = True
        elif k == b"x-forwarded-host":
            seen_fhost = True
        out.append(b"%b: %b\r\n" % (k, v))
    out.append(b"x-forwarded-for: %b\r\n" % (client_ip if xff is None else xff + b", " + client_ip))
    if not seen_proto:
        out.append(b"x-forwarded-proto: %b\r\n" % proto)
    if not seen_fhost and head.authority:
        out.append(b"x-forwarded-host: %b\r\n" % head.authority)
    out.append(b"x-request-id: %b\r\nvia: %b\r\n" % (request_id, VIA))
    if head.chunked:
        out.append(b"transfer-encoding: chunked\r\n")
    if head.upgrade:
        upgrade = head.header(b"upgrade")
        if upgrade is not None:
            out.append(b"connection: upgrade\r\nupgrade: %b\r\n" % upgrade)
    out.append(b"\r\n")
    return b"".join(out)


def body_allowed(status: int, method: bytes) -> bool:
    return not (status < 200 or status in (204, 304) or method == b"HEAD")


def response_head(head: ResponseHead, *, request_id: bytes, keep_alive: bool,
                  chunked: bool) -> bytes:
    """The head to send downstream; `chunked` when we frame the body in chunks."""
    drop = _named_in_connection(head.connection)
    out = [b"HTTP/1.1 %d %b\r\n" % (head.status, head.reason)]
    has_id = False
    for k, v in head.headers:
        if k in drop:
            continue
        if k == b"x-request-id":
            has_id = True
        out.append(b"%b: %b\r\n" % (k, v))
    if not has_id:
        out.append(b"x-request-id: %b\r\n" % request_id)
    out.append(b"via: %b\r\n" % VIA)
    if chunked:
        out.append(b"transfer-encoding: chunked\r\n")
    if head.status == 101:
        upgrade = head.header(b"upgrade")
        out.append(b"connection: upgrade\r\nupgrade: %b\r\n" % (upgrade or b"websocket"))
    elif not keep_alive:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def simple_response(status: int, reason: bytes, body: bytes, *, request_id: bytes,
                    keep_alive: bool, content_type: bytes = b"application/json",
                    extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """A complete response made by the sidecar itself (errors, local answers)."""
    out = [b"HTTP/1.1 %d %b\r\ncontent-type: %b\r\ncontent-length: %d\r\n"
           b"x-request-id: %b\r\n" % (status, reason, content_type, len(body), request_id)]
    for k, v in extra or ():
        out.append(b"%b: %b\r\n" % (k, v))
    if not keep_alive:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    out.append(body)
    return b"".join(out)
