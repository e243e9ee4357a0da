"""CORS: preflights answered by the sidecar, fields on actual answers, origin matching."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.config.errors import ConfigError
from sidecar.config.fields import Fields
from sidecar.inbound.cors import DEFAULT_METHODS, Cors, CorsConfig, parse_cors, read_cors

Headers = list[tuple[bytes, bytes]]


def cors(**cfg: Any) -> Cors:
    return Cors(parse_cors(cfg))


def preflight(origin: bytes, method: bytes = b"PUT", asked: bytes | None = None) -> Headers:
    h = [(b"host", b"api"), (b"origin", origin), (b"access-control-request-method", method)]
    if asked is not None:
        h.append((b"access-control-request-headers", asked))
    return h


def problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_cors(data)
    return e.value.problems


def test_seed_any_origin() -> None:
    c = cors(origins=["*"], methods=["GET", "POST", "PUT", "DELETE"])
    status, headers = c.preflight(b"OPTIONS", preflight(b"https://a.test", asked=b"x-a")) or (0, [])
    assert status == 204
    assert headers == [(b"access-control-allow-origin", b"*"),
                       (b"access-control-allow-methods", b"GET,POST,PUT,DELETE"),
                       (b"access-control-allow-headers", b"x-a")]
    assert c.response_headers(b"https://a.test") == [(b"access-control-allow-origin", b"*")]
    assert c.response_headers(None) == []


def test_listed_origin_with_credentials_gets_its_own_origin_back() -> None:
    c = cors(origins=["https://app.example.com"], credentials=True, max_age=600,
             headers=["Authorization", "Content-Type"], exposed_headers=["X-Total"])
    answer = c.preflight(b"OPTIONS", preflight(b"https://app.example.com", asked=b"x-other"))
    assert answer == (204, [
        (b"access-control-allow-origin", b"https://app.example.com"),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
        (b"access-control-allow-methods", ",".join(DEFAULT_METHODS).encode()),
        (b"access-control-allow-headers", b"Authorization,Content-Type"),
        (b"access-control-max-age", b"600"),
    ])
    assert c.response_headers(b"https://app.example.com") == [
        (b"access-control-allow-origin", b"https://app.example.com"),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
        (b"access-control-expose-headers", b"X-Total"),
    ]


def test_other_origins_get_no_cors_fields_and_the_preflight_stops_here() -> None:
    c = cors(origins=["https://app.example.com"], credentials=True)
    assert c.preflight(b"OPTIONS", preflight(b"https://evil.test")) == (403, [(b"vary", b"Origin")])
    assert c.response_headers(b"https://evil.test") == [(b"vary", b"Origin")]
    assert c.response_headers(None) == [(b"vary", b"Origin")]
    assert c.response_lines(b"GET", [(b"origin", b"https://evil.test")]) == b"vary: Origin\r\n"


def test_not_a_preflight() -> None:
    c = cors(origins=["*"])
    assert c.preflight(b"GET", preflight(b"https://a.test")) is None
    assert c.preflight(b"OPTIONS", [(b"origin", b"https://a.test")]) is None
    assert c.preflight(b"OPTIONS", [(b"access-control-request-method", b"GET")]) is None


def test_preflight_continue_hands_preflights_to_the_app_untouched() -> None:
    c = cors(origins=["https://a.test"], preflight_continue=True)
    assert c.preflight(b"OPTIONS", preflight(b"https://a.test")) is None
    assert c.response_lines(b"OPTIONS", preflight(b"https://a.test")) == b""
    assert c.response_lines(b"GET", [(b"origin", b"https://a.test")]).startswith(
        b"access-control-allow-origin: https://a.test\r\n")


@pytest.mark.parametrize(("entry", "origin", "allowed"), [
    ("https://app.example.com", b"https://app.example.com", True),
    ("HTTPS://App.Example.com:443", b"https://app.example.com", True),
    ("https://app.example.com", b"http://app.example.com", False),
    ("https://app.example.com", b"https://app.example.com:8443", False),
    ("https://app.example.com", b"https://app.example.com.evil.test", False),
    ("https://*.example.com", b"https://a.example.com", True),
    ("https://*.example.com", b"https://a.b.example.com", True),
    ("https://*.example.com", b"https://example.com", False),
    ("https://*.example.com", b"https://evilexample.com", False),
    ("https://*.example.com", b"https://a.example.com.evil.test", False),
    ("https://*.example.com", b"https://a.example.com:444", False),
    ("http://localhost:*", b"http://localhost:3000", True),
    ("http://localhost:*", b"http://localhost", True),
    ("http://localhost:*", b"http://localhost.evil.test", False),
    ("~https://(app|admin)\\.example\\.com", b"https://admin.example.com", True),
    ("~https://(app|admin)\\.example\\.com", b"https://admin.example.com.evil.test", False),
    ("~https://(app|admin)\\.example\\.com", b"https://x.admin.example.com", False),
])
def test_origin_matching(entry: str, origin: bytes, allowed: bool) -> None:
    c = cors(origins=[entry])
    assert (c.allowed(origin) == origin) is allowed
    pre = c.preflight(b"OPTIONS", preflight(origin))
    assert pre is not None and (pre[0] == 204) is allowed


def test_read_cors_with_fields_and_defaults() -> None:
    found: list[str] = []
    cfg = read_cors(Fields({"origins": ["https://a.test"], "methods": ["get", "post"]},
                           "inbound_routes[0].cors", found))
    assert found == []
    assert cfg == CorsConfig(origins=("https://a.test",), methods=("GET", "POST"))


def test_every_problem_is_reported_with_its_path() -> None:
    assert sorted(problems({
        "origins": ["*", "null", "https://a.test/path", "~(", 7],
        "credentials": True,
        "methods": ["GET", "BAD METHOD"],
        "headers": ["x-ok", "bad header"],
        "max_age": -1,
        "preflight_status": 201,
        "colour": "red",
    })) == sorted([
        "cors.origins[1]: 'null' is what sandboxed frames and file:// pages send; "
        "allowing it allows them all",
        "cors.origins[2]: must be `*`, `scheme://host[:port]` (no path), a wildcard like "
        "`https://*.example.com`, or a regular expression `~...`",
        "cors.origins[3]: is not a valid regular expression: missing ), unterminated "
        "subpattern at position 0",
        "cors.origins[4]: must be a non-empty string",
        "cors.credentials: cannot be true with origins [\"*\"]: every web site could then "
        "read answers sent with the user's cookies; list the origins",
        "cors.methods[1]: must be a method name (got 'BAD METHOD')",
        "cors.headers[1]: must be a header name (got 'bad header')",
        "cors.max_age: must be an integer >= 0 (got -1)",
        "cors.preflight_status: must be 200 or 204 (got 201)",
        "cors.colour: unknown key",
    ])
    assert problems({"origins": ["*", "https://a.test"]}) == [
        "cors.origins: `*` allows every origin: list it alone"]
    assert problems({}) == ["cors.origins: is required (a list; [\"*\"] for any origin)"]
