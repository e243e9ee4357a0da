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
from urllib.parse import quote_from_bytes, unquote_to_bytes

from .transform_config import (  # the section's readers, re-exported
    QUERY_SAFE,
    SAFE_BYTES,
    Edits,
    Header,
    Template,
    TransformConfig,
    Value,
    parse_transform,
    read_transform,
)

__all__ = ["RequestTransform", "ResponseTransform", "TransformConfig", "parse_transform", "read_transform"]


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
        self.query_names = {n: quote_from_bytes(n, QUERY_SAFE).encode()
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
            return out if out and SAFE_BYTES.fullmatch(out) else None

        def query_value(v: Value) -> bytes | None:
            if isinstance(v, bytes):
                return v
            out = v.render(headers, env)
            return quote_from_bytes(out, QUERY_SAFE).encode() if out else None

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
