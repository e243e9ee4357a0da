"""The response fields a proxy acts on, and one walk over a head's lines that finds them.

`h1.ResponseReader` hands `read_fields` each response head (llhttp has validated it).
Most lines are skipped on their first byte; the usual spellings are recognised by a
prefix test, which compiled code does without a call, where `partition`, `lower` and a
dict lookup of the name are each a generic method call (~500 instructions apiece).
"""

from __future__ import annotations

from typing import Final

from .events import ResponseHead

__all__ = ["RESPONSE_SPECIAL", "content_length", "join_tokens", "read_fields"]

# The response fields the proxy must act on; all others pass through untouched.
RESPONSE_SPECIAL: Final = frozenset((
    b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
    b"proxy-connection", b"te", b"trailer", b"upgrade", b"proxy-authenticate",
    b"proxy-authorization", b"x-request-id"))
# Per byte: can a field name starting with it be one of those? Most lines are skipped
# on their first byte (Server, Date, Set-Cookie...), before any slicing or hashing.
_SPECIAL_FIRST: Final = bytes(
    1 if bytes((c,)).lower() in {n[:1] for n in RESPONSE_SPECIAL} else 0 for c in range(256))
# The usual spellings of the fields that pass the first-byte test: special ones to their
# lower case, others (Content-Type...) to b"", "not ours".
_KNOWN: Final = {n: n.lower() for n in (b"Content-Length", b"Connection",
                                         b"Transfer-Encoding", b"Keep-Alive",
                                         b"X-Request-Id", b"X-Request-ID")}
_KNOWN.update({v: v for v in list(_KNOWN.values())})
_KNOWN.update({n: b"" for name in (
    b"Content-Type", b"Cache-Control", b"Content-Encoding", b"Content-Language",
    b"Content-Location", b"Content-Range", b"Content-Disposition",
    b"Content-Security-Policy", b"Cross-Origin-Resource-Policy", b"Timing-Allow-Origin",
    b"X-Content-Type-Options", b"X-Frame-Options", b"X-Powered-By", b"X-XSS-Protection",
    b"Permissions-Policy", b"Pragma", b"Upgrade-Insecure-Requests")
    for n in (name, name.lower())})
# Per first byte: (the usual spelling followed by ": ", what `_KNOWN` makes of it).
_PREFIXES: Final[list[tuple[tuple[bytes, bytes], ...]]] = [
    tuple((name + b": ", known) for name, known in _KNOWN.items() if name[0] == c)
    for c in range(256)]
_KEEP_ALIVE: Final = b"keep-alive"  # one object, its hash computed once, for later lookups
# Up to this many bytes from the head's start, one split finds both the lines and where
# the head ends (the first empty line): a search for "\r\n\r\n" first cost as much again.
# Past it, the body's bytes would be split and copied for nothing.
_SPLIT_ALL: Final = 1024


def read_fields(buf: bytes, begin: int, head: ResponseHead) -> int:
    """Read the head that starts at `buf[begin]` (complete: llhttp has seen its end) into
    `head`: its `raw` bytes, framing, `connection`, `has_request_id` and `cuts` (each
    `(a, b)` spans a "\\r\\n" and the line after it, what must not be sent on). Returns
    where the head ends in `buf`."""
    data = buf if begin == 0 else buf[begin:]
    if len(data) <= _SPLIT_ALL:
        lines = data.split(b"\r\n")
    else:
        lines = data[:data.find(b"\r\n\r\n") + 4].split(b"\r\n")
    cuts = None
    at = len(lines[0])  # where the "\r\n" before line i begins
    first = _SPECIAL_FIRST
    for i in range(1, len(lines)):  # the status line, the fields, "" (the head's end), body
        line = lines[i]
        start = at
        at += 2 + len(line)
        if len(line) == 0:  # len(): the truth of bytes is a generic call
            break
        if not first[line[0]]:
            continue
        name = value = b""
        usual = False
        for prefix, known in _PREFIXES[line[0]]:
            if line.startswith(prefix):
                usual = True
                name = known
                value = line[len(prefix):]
                break
        if not usual:
            name, _, value = line.partition(b":")
            spelled = _KNOWN.get(name)
            if spelled is None:
                spelled = name.rstrip(b" \t").lower()
                if spelled not in RESPONSE_SPECIAL:
                    continue
            name = spelled
        if len(name) == 0:
            continue
        if len(value) > 0 and (value[0] == 32 or value[0] == 9):  # (more) OWS after the colon
            value = value.lstrip(b" \t")
        if name == b"content-length":
            head.content_length = content_length(value)
            continue
        if name == b"x-request-id":
            head.has_request_id = True
            continue
        if name == b"transfer-encoding":
            head.chunked = value.rstrip().lower().endswith(b"chunked")
        elif name == b"connection":
            if value == _KEEP_ALIVE and head.connection is None:
                head.connection = _KEEP_ALIVE
            else:
                head.connection = join_tokens(head.connection, value)
        if cuts is None:
            cuts = []
        cuts.append((start, at))
    head.cuts = cuts
    if head.chunked:
        head.content_length = None
    end = at + 2  # the empty line's "\r\n"
    head.raw = data if end == len(data) else data[:end]
    return begin + end


def content_length(value: bytes) -> int:
    """A Content-Length value llhttp has checked (digits, maybe OWS after them), read
    without `int()`, which is a generic call on bytes."""
    n = 0
    for i in range(len(value)):
        c = value[i]
        if 48 <= c <= 57:
            n = n * 10 + (c - 48)
        elif c != 32 and c != 9:
            return int(value)  # not after llhttp; int() says what is wrong
    return n


def join_tokens(seen: bytes | None, value: bytes) -> bytes:
    """A list-valued field's tokens so far, with `value`'s (lower case) added."""
    value = value.lower()
    return value if seen is None else seen + b"," + value
