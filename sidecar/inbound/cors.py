"""CORS at the sidecar (Kong's `cors` plugin, in spirit), sans-IO.

How this works: a browser asks before a cross-origin request that is not "simple" (an
`OPTIONS` with `Origin` and `Access-Control-Request-Method`, never with credentials), and
reads the answer's `Access-Control-*` fields. So:

- `Cors.preflight(method, headers)` answers such a preflight itself, before JWT (which
  it would fail): `(204, [Allow-Origin, Allow-Methods, Allow-Headers, ...])` for an
  allowed origin; `(403, [Vary: Origin])` for any other, with no CORS field, which the
  browser reads as a refusal. Like Kong, a preflight never reaches the app, unless
  `preflight_continue: true` hands them all to it (`None`, as for non-preflights).
- `Cors.response_lines(method, headers)` gives the lines for every other response
  (`Allow-Origin`, `Allow-Credentials`, `Expose-Headers`), computed from the request
  alone, so the data plane can add them to the app's answer and to its own refusals
  (a 401 the page cannot read is a 401 it cannot handle). A non-matching origin gets no
  CORS field; `Vary: Origin` goes on every answer whose fields depend on the origin,
  so that a shared cache never hands one origin's answer to another.

Origins: `*` (any; not with credentials), exact `scheme://host[:port]` (compared as
browsers send them: lower case, default ports left out), wildcard `https://*.example.com`
(one or more labels; never the bare domain) and `http://localhost:*` (any port), or a
regular expression written `~^https://(app|admin)\\.example\\.com$` (matched against the
whole origin). Kong reads any entry holding a special character as a regex (where the dots
of `https://*.example.com` match anything); here a pattern is explicit: `*` is the only
wildcard, and `~` marks a regex.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config.fields import Fields

__all__ = ["DEFAULT_METHODS", "Cors", "CorsConfig", "parse_cors", "read_cors"]

Header = tuple[bytes, bytes]

DEFAULT_METHODS = ("GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# scheme :// [*.] host [:port | :*], lower case (IPv6 hosts in brackets)
_ORIGIN = re.compile(
    r"([a-z][a-z0-9+.-]*)://(\*\.)?([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(\d{1,5}|\*))?")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_VARY = (b"vary", b"Origin")


@dataclass(frozen=True, slots=True)
class CorsConfig:
    # `*`, exact origins, wildcards (`https://*.example.com`) or `~regex`; normalized.
    origins: tuple[str, ...] = ("*",)
    methods: tuple[str, ...] = DEFAULT_METHODS  # Access-Control-Allow-Methods on preflights
    # Access-Control-Allow-Headers; empty: the ones the preflight asks for (Kong's way).
    # Note that `*` does not cover Authorization (Fetch): list it when tokens are sent.
    headers: tuple[str, ...] = ()
    exposed_headers: tuple[str, ...] = ()  # response fields the page's script may read
    credentials: bool = False  # cookies / Authorization from the page; never with `*`
    max_age: int | None = None  # how long a browser may keep a preflight's answer
    preflight_continue: bool = False  # hand preflights to the app instead of answering
    preflight_status: int = 204  # 200 for old clients that choke on 204


def _origin(entry: str) -> str | re.Pattern[bytes]:
    """A configured origin, normalized (a str), or compiled (a pattern); ValueError."""
    if entry.startswith("~"):
        try:
            return re.compile(entry[1:].encode(), re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression: {exc}") from None
    if entry == "null":
        raise ValueError("'null' is what sandboxed frames and file:// pages send; "
                         "allowing it allows them all")
    m = _ORIGIN.fullmatch(entry.lower())
    if m is None:
        raise ValueError("must be `*`, `scheme://host[:port]` (no path), a wildcard like "
                         "`https://*.example.com`, or a regular expression `~...`")
    scheme, wild, host, port = m.groups()
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    exact = f"{scheme}://{host}" + (f":{port}" if port else "")
    if not wild and port != "*":
        return exact
    rx = re.escape(scheme) + "://" + (r"(?:[a-z0-9-]+\.)+" if wild else "") + re.escape(host)
    rx += r"(?::[0-9]{1,5})?" if port == "*" else (f":{port}" if port else "")
    return re.compile(rx.encode())


def _tokens(f: Fields, key: str, default: tuple[str, ...], upper: bool = False,
            star: bool = True) -> tuple[str, ...]:
    if not f.has(key):
        f.seen.add(key)
        return default
    out: list[str] = []
    for path, raw in f.items(key):
        if not isinstance(raw, str) or not (_TOKEN.fullmatch(raw) or (star and raw == "*")):
            f.problems.append(f"{path}: must be a {'method' if upper else 'header'} name "
                              f"(got {raw!r})")
            continue
        out.append(raw.upper() if upper else raw)
    return tuple(out)


def read_cors(f: Fields) -> CorsConfig:
    """A `cors:` section (a route's or the service's)."""
    d = CorsConfig()
    origins: list[str] = []
    if not f.has("origins"):
        f.problem("origins", "is required (a list; [\"*\"] for any origin)")
    for path, raw in f.items("origins"):
        if not isinstance(raw, str) or not raw:
            f.problems.append(f"{path}: must be a non-empty string")
            continue
        if raw == "*":
            origins.append(raw)
            continue
        try:
            norm = _origin(raw)
        except ValueError as exc:
            f.problems.append(f"{path}: {exc}")
            continue
        origins.append(norm if isinstance(norm, str) else raw)
    credentials = f.boolean("credentials", d.credentials)
    if "*" in origins and len(origins) > 1:
        f.problem("origins", "`*` allows every origin: list it alone")
    if "*" in origins and credentials:
        f.problem("credentials", "cannot be true with origins [\"*\"]: every web site could "
                  "then read answers sent with the user's cookies; list the origins")
    out = CorsConfig(
        origins=tuple(origins) or d.origins,
        methods=_tokens(f, "methods", d.methods, upper=True, star=False),
        headers=_tokens(f, "headers", d.headers),
        exposed_headers=_tokens(f, "exposed_headers", d.exposed_headers),
        credentials=credentials,
        max_age=f.integer("max_age", 0, minimum=0) if f.has("max_age") else None,
        preflight_continue=f.boolean("preflight_continue", d.preflight_continue),
        preflight_status=f.value("preflight_status", d.preflight_status,
                                 lambda v: v if v in (200, 204) else None, "200 or 204"),
    )
    f.finish()
    return out


def parse_cors(data: Any, path: str = "cors") -> CorsConfig:
    """A `cors` section from plain YAML data; `ConfigError` lists every problem."""
    from ..config.fields import read_or_raise

    return read_or_raise(read_cors, data, path)


class Cors:
    """A route's CORS answers; build once per route (all constant fields made here)."""

    __slots__ = ("_preflight", "_reflect", "_tail", "_tail_lines", "allow_all", "config",
                 "exact", "patterns")

    def __init__(self, config: CorsConfig) -> None:
        self.config = config
        self.allow_all = config.origins == ("*",)
        compiled = [_origin(o) for o in config.origins if o != "*"]
        self.exact = frozenset(o.encode() for o in compiled if isinstance(o, str))
        self.patterns = tuple(p for p in compiled if isinstance(p, re.Pattern))
        # After Allow-Origin, on every allowed answer:
        tail: list[Header] = []
        if config.credentials:
            tail.append((b"access-control-allow-credentials", b"true"))
        if not self.allow_all:
            tail.append(_VARY)
        pre = [*tail, (b"access-control-allow-methods", ",".join(config.methods).encode())]
        if config.headers:
            pre.append((b"access-control-allow-headers", ",".join(config.headers).encode()))
        if config.max_age is not None:
            pre.append((b"access-control-max-age", str(config.max_age).encode()))
        self._preflight = pre
        self._reflect = not config.headers
        if config.exposed_headers:
            tail.append((b"access-control-expose-headers",
                         ",".join(config.exposed_headers).encode()))
        self._tail = tail
        self._tail_lines = b"".join(b"%b: %b\r\n" % kv for kv in tail)

    def allowed(self, origin: bytes) -> bytes | None:
        """The Access-Control-Allow-Origin value for `origin`, or None."""
        if self.allow_all:
            return b"*"
        lower = origin.lower()
        if lower in self.exact or any(p.fullmatch(lower) for p in self.patterns):
            return origin
        return None

    def preflight(self, method: bytes, headers: list[Header]) -> tuple[int, list[Header]] | None:
        """The sidecar's answer to a preflight; None for anything else (go on)."""
        if method != b"OPTIONS" or self.config.preflight_continue:
            return None
        origin = want = asked = None
        for k, v in headers:
            if k == b"origin":
                origin = v
            elif k == b"access-control-request-method":
                want = v
            elif k == b"access-control-request-headers":
                asked = v
        if origin is None or want is None:
            return None
        allow = self.allowed(origin)
        if allow is None:
            return 403, [_VARY]
        out = [(b"access-control-allow-origin", allow), *self._preflight]
        if self._reflect and asked:
            out.append((b"access-control-allow-headers", asked))
        return self.config.preflight_status, out

    def response_headers(self, origin: bytes | None) -> list[Header]:
        """CORS fields for an answer to a request from `origin` (None: no Origin sent)."""
        allow = None if origin is None else self.allowed(origin)
        if allow is None:
            return [] if self.allow_all else [_VARY]
        return [(b"access-control-allow-origin", allow), *self._tail]

    def response_lines(self, method: bytes, headers: list[Header]) -> bytes:
        """`response_headers` as header lines for `response_head(extra=...)`, from the
        request; nothing for a preflight handed to the app (it answers those itself)."""
        origin = None
        for k, v in headers:
            if k == b"origin":
                origin = v
                break
        if origin is None:
            return b"" if self.allow_all else b"vary: Origin\r\n"
        if method == b"OPTIONS" and self.config.preflight_continue and any(
                k == b"access-control-request-method" for k, _ in headers):
            return b""
        allow = self.allowed(origin)
        if allow is None:
            return b"" if self.allow_all else b"vary: Origin\r\n"
        return b"access-control-allow-origin: " + allow + b"\r\n" + self._tail_lines
