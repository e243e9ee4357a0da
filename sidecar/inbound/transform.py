"""Header and query-string transforms with Kong's `request-transformer` semantics, sans-IO.

How this works: each target (request headers, request query string, response headers)
gets Kong's five edits, always in this order, each seeing the result of the previous:

    remove   drop every field of the name
    rename   old:new; if `old` is present, its fields take the name `new` (any `new`
             fields there were are dropped first, as Kong overwrites them)
    replace  name:value; only if present: one field with the new value, the others dropped
    add      name:value; only if absent
    append   name:value; always (another field of the same name)

The request side works on the data plane's values: `RequestTransform.apply(headers,
target) -> (headers, target)` with lower-case header names and the target's query left
as sent wherever it is not edited. The response side edits a whole response head as
bytes (`ResponseTransform.rewrite(head) -> head`): the data plane can run it on what
`forwarding.response_head` made, so nothing there changes.

Values may use templates taken from the request as it arrived: `$(headers.x-team)`,
`$(query_params.page)` (or Kong's `$(headers["x-team"])`); a field whose template renders
empty, or renders a control character (a CR/LF smuggled in a query parameter), is not
written. Not supported (each says so when configured): Kong's `body` edits (the sidecar
streams bodies), `replace.uri`, `http_method`, and Lua in templates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

from ..telemetry.propagation import PROPAGATION_HEADERS

if TYPE_CHECKING:
    from ..config.fields import Fields

__all__ = [
    "Edits",
    "RequestTransform",
    "ResponseTransform",
    "Template",
    "TransformConfig",
    "parse_transform",
    "read_transform",
]

Header = tuple[bytes, bytes]
OPS = ("remove", "rename", "replace", "add", "append")

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field name
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")  # printable ASCII; never CR, LF or NUL
_SAFE_BYTES = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")  # what a rendered header value may hold
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
_QUERY_SAFE = b"-._~!$'()*,;:@/?"  # kept as is in a name or value we write; all else %XX


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
        return quote_from_bytes(parts[0], _QUERY_SAFE).encode() if query else parts[0]
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


# -- the edits, on a list of (name, value) ----------------------------------------------

Render = Callable[[Value], bytes | None]


def _find(fields: list[Header], name: bytes) -> int:
    """The index of the first field of `name`, or -1 (a loop: cheaper than a generator)."""
    for i, (k, _) in enumerate(fields):
        if k == name:
            return i
    return -1


def _edit(fields: list[Header], e: Edits, render: Render) -> list[Header]:
    """Kong's order on `fields` (a fresh list may be returned; `fields` is not changed)."""
    if e.remove:
        gone = e.remove
        fields = [t for t in fields if t[0] not in gone]
    for old, new in e.rename:
        if _find(fields, old) >= 0:
            fields = [(new, t[1]) if t[0] == old else t for t in fields if t[0] != new]
    for name, value in e.replace:
        at = _find(fields, name)
        if at >= 0:
            v = render(value)
            if v is not None:
                fields = fields[:at + 1] + [t for t in fields[at + 1:] if t[0] != name]
                fields[at] = (name, v)
    if e.add or e.append:
        fields = fields.copy()
        if e.add:
            present = {t[0] for t in fields}
            for name, value in e.add:
                if name not in present:
                    v = render(value)
                    if v is not None:
                        fields.append((name, v))
                        present.add(name)
        for name, value in e.append:
            v = render(value)
            if v is not None:
                fields.append((name, v))
    return fields


def _literal(v: Value) -> bytes | None:
    return v if isinstance(v, bytes) else None


def _parse_query(query: bytes) -> tuple[list[Header], dict[int, bytes]]:
    """(decoded name, raw value) pairs, and each pair's segment as sent (by the pair's id,
    so that a pair no edit touched is written back byte for byte)."""
    pairs: list[Header] = []
    raw: dict[int, bytes] = {}
    for seg in query.split(b"&"):
        if not seg:
            continue
        name, _, value = seg.partition(b"=")
        if b"%" in name or b"+" in name:
            name = unquote_to_bytes(name.replace(b"+", b" "))
        t = (name, value)
        pairs.append(t)
        raw[id(t)] = seg
    return pairs, raw


class RequestTransform:
    """Applies a route's request edits; build once per route, call per request."""

    __slots__ = ("edits_headers", "edits_query", "headers", "query", "query_names",
                 "query_templates", "templated")

    def __init__(self, config: TransformConfig) -> None:
        self.headers = config.request_headers
        self.query = config.request_query
        # Plain booleans: `Edits.__bool__` is a Python call, and this runs per request.
        self.edits_headers = bool(self.headers)
        self.edits_query = bool(self.query)
        self.templated = self.headers.templated or self.query.templated
        self.query_templates = any(
            isinstance(p, tuple) and p[0] == "query_params"
            for e in (self.headers, self.query) for _, v in (*e.replace, *e.add, *e.append)
            if isinstance(v, Template) for p in v.parts)
        # Every name a query edit may write, %-encoded once.
        self.query_names = {n: quote_from_bytes(n, _QUERY_SAFE).encode()
                            for n in self.query.names()}

    def __bool__(self) -> bool:
        return self.edits_headers or self.edits_query

    def apply(self, headers: list[Header], target: bytes) -> tuple[list[Header], bytes]:
        """The edited (headers, target); `headers` itself is never changed."""
        if not self.templated:
            out = _edit(headers, self.headers, _literal) if self.edits_headers else headers
            if self.edits_query:
                return out, self._edit_query(target, _literal)
            return out, target
        # Templates read the request as it arrived.
        q = target.partition(b"?")[2]
        env = _parse_query(q)[0] if q and self.query_templates else None

        def header_value(v: Value) -> bytes | None:
            out = v if isinstance(v, bytes) else v.render(headers, env)
            return out if out and _SAFE_BYTES.fullmatch(out) else None

        def query_value(v: Value) -> bytes | None:
            if isinstance(v, bytes):
                return v
            out = v.render(headers, env)
            return quote_from_bytes(out, _QUERY_SAFE).encode() if out else None

        out = _edit(headers, self.headers, header_value) if self.edits_headers else headers
        return out, self._edit_query(target, query_value) if self.edits_query else target

    def _edit_query(self, target: bytes, render: Render) -> bytes:
        path, _, query = target.partition(b"?")
        pairs, raw = _parse_query(query) if query else ([], {})
        edited = _edit(pairs, self.query, render)
        if not edited:
            return path
        names = self.query_names
        return path + b"?" + b"&".join([
            seg if (seg := raw.get(id(t))) is not None else names[t[0]] + b"=" + t[1]
            for t in edited])


# -- response heads ------------------------------------------------------------------------

def _line_pattern(names: Iterable[bytes]) -> re.Pattern[bytes]:
    alts = b"|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rb"\r\n(" + alts + rb")[ \t]*:[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)",
                      re.IGNORECASE)


class ResponseTransform:
    """Edits a response head given as bytes, status line to the blank line.

    Only the lines of the names configured are looked at (one regex pass): lines that
    survive untouched stay where they were, as they came; replaced and renamed fields and
    added ones are written at the end of the head."""

    __slots__ = ("edits", "pattern", "when_absent")

    def __init__(self, config: TransformConfig) -> None:
        self.edits = config.response_headers
        self.pattern = _line_pattern(self.edits.names()) if self.edits else None
        # The common case, none of the names in the head: only add and append write.
        self.when_absent = b"".join(b"%b: %b\r\n" % t for t in _edit([], self.edits, _literal))

    def __bool__(self) -> bool:
        return self.pattern is not None

    def rewrite(self, head: bytes) -> bytes:
        pattern = self.pattern
        if pattern is None:
            return head
        found = [(m, (m.group(1).lower(), m.group(2))) for m in pattern.finditer(head)]
        if not found:
            return head[:-2] + self.when_absent + b"\r\n"
        fields = [t for _, t in found]
        edited = _edit(fields, self.edits, _literal)
        kept = {id(t) for t in edited}
        out: list[bytes] = []
        last = 0
        for m, t in found:
            if id(t) not in kept:
                out.append(head[last:m.start()])
                last = m.end()
        out.append(head[last:-2])
        originals = {id(t) for t in fields}
        out += [b"%b: %b\r\n" % t for t in edited if id(t) not in originals]
        out.append(b"\r\n")
        return b"".join(out)
