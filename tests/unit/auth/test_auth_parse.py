"""The `auth:` section and a route's `jwt:` / `rbac:` keys: frozen results, every problem
reported at once with its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidecar.auth import (
    AuthConfig,
    JwtProvider,
    RbacConfig,
    RouteAuth,
    TokenLocation,
    parse_auth,
    parse_rbac,
    read_route_auth,
)

GOOD: dict[str, Any] = {
    "max_token_bytes": 4096,
    "claim_headers": {"sub": "X-Auth-Sub", "realm_access.roles": "x-auth-roles"},
    "providers": [{
        "name": "corp",
        "issuer": "https://id.example.test/",
        "audiences": "orders",
        "algorithms": ["RS256", "ES256"],
        "jwks": {"url": "https://id.example.test/jwks.json", "min_refresh_interval": "10s",
                 "ttl": "10m"},
        "leeway": "45s",
        "required_claims": ["exp", "sub"],
        "token": {"cookie": "session"},
    }, {
        "name": "partners",
        "issuer": "https://partners.test/",
        "algorithms": ["HS256"],
        "secret_file": "secrets/hs256.key",
    }],
}


def test_a_good_section_becomes_frozen_config() -> None:
    config, problems = parse_auth(GOOD, base_dir=Path("/etc/sidecar"))
    assert problems == []
    corp = config.provider("corp")
    assert corp is not None
    assert corp.audiences == ("orders",) and corp.leeway_s == 45.0
    assert corp.jwks is not None and corp.jwks.ttl_s == 600.0
    assert corp.jwks.min_refresh_interval_s == 10.0
    assert corp.location == TokenLocation("cookie", "session", "")
    assert config.claim_headers == (("sub", "x-auth-sub"), ("realm_access.roles", "x-auth-roles"))
    partners = config.provider("partners")
    assert partners is not None and partners.secret_file == "/etc/sidecar/secrets/hs256.key"
    with pytest.raises(AttributeError):
        corp.issuer = "x"  # type: ignore[misc]


def test_defaults() -> None:
    config, problems = parse_auth({})
    assert problems == [] and config == AuthConfig()
    p = JwtProvider(name="p", issuer="i")
    assert p.location == TokenLocation("header", "authorization", "Bearer ")
    assert p.required_claims == ("exp",)


def test_every_problem_is_reported_with_its_path() -> None:
    bad = {
        "max_token_bytes": 10,
        "colour": "blue",
        "claim_headers": {"sub": "bad header", "roles": "authorization"},
        "providers": [
            {"name": "corp", "issuer": 42, "algorithms": ["none", "HS512", "RS256"],
             "leeway": "soon"},
            {"name": "corp", "issuer": "https://x/", "algorithms": ["HS256"], "secret": "short",
             "jwks": {"url": "ftp://x", "file": "k.json"}},
            {"issuer": "https://y/", "algorithms": ["ES256"], "secret": "s" * 40,
             "token": {"header": "X-Token", "cookie": "c"}},
        ],
    }
    _, problems = parse_auth(bad)
    paths = {p for p, _ in problems}
    expected = {
        "auth.max_token_bytes", "auth.colour", "auth.claim_headers.sub", "auth.claim_headers.roles",
        "auth.providers[0].issuer", "auth.providers[0].algorithms", "auth.providers[0].leeway",
        "auth.providers[0].jwks",
        "auth.providers[1].name", "auth.providers[1].secret", "auth.providers[1].jwks",
        "auth.providers[1].jwks.url",
        "auth.providers[2].name", "auth.providers[2].secret", "auth.providers[2].jwks",
        "auth.providers[2].token",
    }
    assert expected <= paths, expected - paths
    messages = dict(problems)
    assert messages["auth.providers[0].issuer"] == "must be a non-empty string (got 42)"
    assert messages["auth.colour"] == "unknown key"
    text = "\n".join(f"{p}: {m}" for p, m in problems)
    assert "'none' is never allowed" in text and "'HS512' is not one of" in text
    assert "at least 32 bytes" in text and "defined twice" in text
    assert "exactly one of url, file, inline" in text
    assert "exactly one of header, cookie, query" in text


def test_hs256_needs_a_secret_and_a_secret_needs_hs256() -> None:
    _, problems = parse_auth({"providers": [
        {"name": "a", "issuer": "i", "algorithms": ["HS256"]},
        {"name": "b", "issuer": "i", "algorithms": ["RS256"], "secret": "s" * 40,
         "jwks": {"file": "k.json"}},
    ]})
    assert ("auth.providers[0].algorithms", "HS256 needs a secret or secret_file") in problems
    assert any(p == "auth.providers[1].secret" and "only used with HS256" in m for p, m in problems)


def test_inline_jwks_is_kept_as_json_text() -> None:
    config, problems = parse_auth({"providers": [
        {"name": "a", "issuer": "i", "jwks": {"inline": {"keys": []}}}]})
    assert problems == []
    assert config.providers[0].jwks is not None
    assert config.providers[0].jwks.inline == '{"keys": []}'


def test_route_auth() -> None:
    problems: list[str] = []
    known = ["corp", "partners"]
    assert read_route_auth(None, "routes[0].jwt", problems, known) is None
    assert read_route_auth(False, "routes[0].jwt", problems, known) is None
    assert read_route_auth(True, "routes[0].jwt", problems, known) == RouteAuth()
    got = read_route_auth({"required": False, "providers": ["partners"]}, "routes[0].jwt",
                          problems, known)
    assert got == RouteAuth(required=False, providers=("partners",)) and problems == []
    read_route_auth({"providers": ["nobody"], "requird": True}, "routes[1].jwt", problems, known)
    assert problems == ["routes[1].jwt.providers: no provider named 'nobody' under auth.providers",
                        "routes[1].jwt.requird: unknown key"]


def test_rbac_rules() -> None:
    config, problems = parse_rbac({
        "scopes_claim": "scp",
        "rules": [
            {"name": "block-delete", "action": "deny", "methods": "DELETE"},
            {"methods": ["GET", "HEAD"], "paths": ["/orders/**"], "roles": ["reader"],
             "peers": ["spiffe://mesh.test/ns/prod/*"]},
            {"name": "admins", "scopes": ["orders:admin", "orders:write"], "match": "all"},
        ]})
    assert problems == []
    assert isinstance(config, RbacConfig) and config.scopes_claim == "scp"
    deny, read, admins = config.rules
    assert deny.action == "deny" and deny.methods == {"DELETE"}
    assert read.name == "rule-1" and read.roles == {"reader"}
    assert admins.match_all and admins.scopes == {"orders:admin", "orders:write"}
    shorthand, problems = parse_rbac([{"name": "x", "roles": "admin"}])
    assert problems == [] and shorthand.rules[0].roles == {"admin"}


def test_rbac_problems() -> None:
    _, problems = parse_rbac({"rules": [
        {"name": "a", "action": "maybe", "methods": ["get"], "paths": ["orders"]},
        {"name": "a", "action": "deny", "roles": ["x"], "peers": ["http://not-spiffe"],
         "match": "some"},
    ]}, path="routes[3].rbac")
    paths = [p for p, _ in problems]
    assert paths == [
        "routes[3].rbac.rules[0].action", "routes[3].rbac.rules[0].methods[0]",
        "routes[3].rbac.rules[0].paths",
        "routes[3].rbac.rules[1].peers", "routes[3].rbac.rules[1].match",
        "routes[3].rbac.rules[1].action", "routes[3].rbac.rules[1].name"]


def test_peer_patterns_are_checked_as_spiffe_ids_with_wildcard_segments() -> None:
    _, problems = parse_rbac([{"peers": ["spiffe://mesh.test/ns/*/sa/*", "spiffe://mesh.test/*"]}])
    assert problems == []
    _, problems = parse_rbac([{"peers": ["spiffe://mesh.test/ns/pr*d", "spiffe://Mesh/x"]}])
    assert [p for p, _ in problems] == ["rbac.rules[0].peers", "rbac.rules[0].peers"]
