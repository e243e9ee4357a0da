"""The `transform:` section of an inbound route: Kong's request-transformer edits, read
and checked when the configuration loads (see transform.py for how they apply)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

from ..telemetry.propagation import PROPAGATION_HEADERS

if TYPE_CHECKING:
    from ..config.fields import Fields

__all__ = ["Edits", "Template", "TransformConfig", "parse_transform", "read_transform"]

Header = tuple[bytes, bytes]
OPS = ("remove", "rename", "replace", "add", "append")

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field name
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")  # printable ASCII; never CR, LF or NUL
SAFE_BYTES = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")  # what a rendered header value may hold
_TEMPLATE = re.compile(
    r"\$\((headers|query_params)(?:\.([A-Za-z0-9_.-]+)|\[[\"']([^\"'\]]+)[\"']\])\)")
# Fields the sidecar itself owns on the way in: framing, hop-by-hop, routing, and the
# ones `forwarding.request_head` sets or replaces (a transform would be silently undone
# there, or would forge a trace or a deadline).
_RESERVED_REQUEST = frozenset((
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te",
    "trailer", "upgrade", "proxy-connection", "x-request-id", "x-forwarded-for",
    "x-forwarded-client-cert", "x-request-timeout", "grpc-timeout",
    *(n.decode() for n in PROPAGATION_HEADERS)))
_RESERVED_RESPONSE = frozenset((
    "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
    "upgrade", "proxy-connection"))
QUERY_SAFE = b"-._~!$'()*,;:@/?"  # kept as is in a name or value we write; all else %XX


# -- configuration ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Template:
    """A value with `$(headers.x)` / `$(query_params.x)` parts, rendered per request."""

    parts: tuple[bytes | tuple[str, bytes], ...]  # literal, or (source, name)

    def render(self, headers: list[Header], query: list[Header] | None) -> bytes:
        """From the request's headers and its query's (decoded name, raw value) pairs."""
        out = []
        for part in self.parts:
            if isinstance(part, bytes):
                out.append(part)
                continue
            source, name = part
            if source == "headers":  # every value, as one list
                out.append(b", ".join([v for k, v in headers if k == name]))
                continue
            for k, v in query or ():  # the first value, decoded
                if k == name:
                    if b"%" in v or b"+" in v:
                        v = unquote_to_bytes(v.replace(b"+", b" "))
                    out.append(v)
                    break
        return b"".join(out)


Value = bytes | Template


@dataclass(frozen=True, slots=True)
class Edits:
    """Kong's five lists for one target. Names: lower-case (headers) or decoded (query)."""

    remove: tuple[bytes, ...] = ()
    rename: tuple[tuple[bytes, bytes], ...] = ()
    replace: tuple[tuple[bytes, Value], ...] = ()
    add: tuple[tuple[bytes, Value], ...] = ()
    append: tuple[tuple[bytes, Value], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.remove or self.rename or self.replace or self.add or self.append)

    @property
    def templated(self) -> bool:
        return any(isinstance(v, Template)
                   for _, v in (*self.replace, *self.add, *self.append))

    def names(self) -> set[bytes]:
        return {*self.remove, *(n for pair in self.rename for n in pair),
                *(n for n, _ in (*self.replace, *self.add, *self.append))}


@dataclass(frozen=True, slots=True)
class TransformConfig:
    request_headers: Edits = Edits()
    request_query: Edits = Edits()
    response_headers: Edits = Edits()  # literal values only

    def __bool__(self) -> bool:
        return bool(self.request_headers or self.request_query or self.response_headers)


def _value(text: str, query: bool, templates: bool) -> Value | str:
    """A configured value, or what is wrong with it (a str). A literal query value is
    stored %-encoded; a templated one is encoded once rendered."""
    parts: list[bytes | tuple[str, bytes]] = []
    literal: list[str] = []
    last = 0
    for m in _TEMPLATE.finditer(text):
        if not templates:
            return "templates are only for request values"
        source, name = m.group(1), m.group(2) or m.group(3)
        literal.append(text[last:m.start()])
        parts.append(text[last:m.start()].encode())
        parts.append((source, name.lower().encode() if source == "headers" else name.encode()))
        last = m.end()
    literal.append(text[last:])
    parts.append(text[last:].encode())
    if "$(" in "".join(literal):
        return "only $(headers.<name>) and $(query_params.<name>) templates are supported"
    if not query and not _HEADER_VALUE.fullmatch("".join(literal)):
        return "must be printable ASCII (no CR, LF or other control characters)"
    parts = [p for p in parts if p != b""]
    if not parts:
        return "needs a value"
    if len(parts) == 1 and isinstance(parts[0], bytes):
        return quote_from_bytes(parts[0], QUERY_SAFE).encode() if query else parts[0]
    return Template(tuple(parts))


def _entries(f: Fields, op: str, target: str, query: bool, request: bool) -> list[Any]:
    """One list (`add.headers`, ...) as (name,) or (name, value) tuples; Kong's
    `name:value` strings or one-key mappings (`- X-Service-Version: v1`)."""
    out: list[Any] = []
    reserved = () if query else _RESERVED_REQUEST if request else _RESERVED_RESPONSE
    for path, raw in f.items(target):
        def bad(msg: str, path: str = path) -> None:
            f.problems.append(f"{path}: {msg}")
        if isinstance(raw, dict) and len(raw) == 1:
            ((name, value),) = raw.items()
            value = value if isinstance(value, str) else str(value) if \
                isinstance(value, int | float) and not isinstance(value, bool) else None
        elif isinstance(raw, str):
            name, sep, value = raw.partition(":")
            value = value if sep else None
        else:
            bad("must be a string `name:value` or a one-key mapping")
            continue
        if not isinstance(name, str) or not name or (not query and not _TOKEN.fullmatch(name)):
            bad(f"{name!r} is not a valid {'parameter' if query else 'header'} name")
            continue
        key = name if query else name.lower()
        if key in reserved:
            bad(f"{key} is managed by the sidecar and cannot be transformed")
            continue
        if op == "remove":
            if value not in (None, ""):
                bad("remove takes names only")
            out.append((key.encode(),))
        elif op == "rename":
            if not value or (not query and not _TOKEN.fullmatch(value)):
                bad("rename takes `old:new` with two names")
                continue
            new = value if query else value.lower()
            if new in reserved or new == key:
                bad(f"cannot rename {key} to {new}")
                continue
            out.append((key.encode(), new.encode()))
        else:
            if value is None:
                bad(f"{op} takes `name:value`")
                continue
            v = _value(value.strip() if not query else value, query, request)
            if isinstance(v, str):
                bad(v)
                continue
            out.append((key.encode(), v))
    return out


def _edits(f: Fields, request: bool) -> tuple[Edits, Edits]:
    lists: dict[str, dict[str, list[Any]]] = {"headers": {}, "querystring": {}}
    for op in OPS:
        of = f.child(op)
        for target in lists:
            if target == "querystring" and not request:
                continue
            lists[target][op] = _entries(of, op, target, target == "querystring", request)
        for unsupported in ("body", "uri"):
            if of.has(unsupported):
                of.seen.add(unsupported)
                of.problem(unsupported, "is not supported (the sidecar does not rewrite "
                           "bodies or paths)")
        of.finish()
    f.finish()

    def build(d: dict[str, list[Any]]) -> Edits:
        return Edits(remove=tuple(e[0] for e in d.get("remove", ())),
                     rename=tuple(d.get("rename", ())), replace=tuple(d.get("replace", ())),
                     add=tuple(d.get("add", ())), append=tuple(d.get("append", ())))
    return build(lists["headers"]), build(lists["querystring"])


def read_transform(f: Fields) -> TransformConfig:
    """A `transform:` section: `request:` and `response:`, each Kong's op → target lists."""
    req = f.child("request")
    if req.has("http_method"):
        req.seen.add("http_method")
        req.problem("http_method", "is not supported")
    rh, rq = _edits(req, request=True)
    sh, _ = _edits(f.child("response"), request=False)
    f.finish()
    return TransformConfig(request_headers=rh, request_query=rq, response_headers=sh)


def parse_transform(data: Any, path: str = "transform") -> TransformConfig:
    """A `transform` section from plain YAML data; `ConfigError` lists every problem."""
    from ..config.fields import read_or_raise

    return read_or_raise(read_transform, data, path)
