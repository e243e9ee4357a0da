"""Claims to headers for the app; the client's copies of those headers always removed."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.auth import ClaimHeaders
from sidecar.auth.claims import claim, claim_strings, header_value

MAPPING = (("sub", "x-auth-sub"), ("roles", "x-auth-roles"), ("realm_access.roles", "x-kc-roles"),
           ("https://example.test/tenant", "x-auth-tenant"))


def test_render_joins_lists_and_reads_nested_and_namespaced_claims() -> None:
    ch = ClaimHeaders(MAPPING)
    got = ch.render({"sub": "alice", "roles": ["reader", "writer"],
                     "realm_access": {"roles": ["ops"]}, "https://example.test/tenant": "acme"})
    assert got == ((b"x-auth-sub", b"alice"), (b"x-auth-roles", b"reader,writer"),
                   (b"x-kc-roles", b"ops"), (b"x-auth-tenant", b"acme"))


def test_absent_claims_give_no_header() -> None:
    assert ClaimHeaders(MAPPING).render({"sub": "alice"}) == ((b"x-auth-sub", b"alice"),)


@pytest.mark.parametrize(("value", "expected"), [
    ("a b", b"a b"), (7, b"7"), (True, b"true"), ([1, "x", False], b"1,x,false"),
    ({"b": 1, "a": [2]}, b'{"a":[2],"b":1}'), (None, None),
    ("evil\r\nx-auth-sub: root", None), ("nul\x00", None), ("del\x7f", None), ("tab\tok", b"tab\tok"),
    (["ok", "bad\nvalue"], b"ok"),
])
def test_header_values(value: Any, expected: bytes | None) -> None:
    assert header_value(value) == expected


def test_apply_strips_client_copies_case_insensitively_and_appends_claims() -> None:
    ch = ClaimHeaders((("sub", "X-Auth-Sub"), ("roles", "x-auth-roles")))
    request = [(b"host", b"orders"), (b"x-auth-sub", b"root"), (b"accept", b"*/*"),
               (b"x-auth-roles", b"admin"), (b"x-auth-roles", b"superuser")]
    assert ch.apply(request, ((b"x-auth-sub", b"alice"),)) == [
        (b"host", b"orders"), (b"accept", b"*/*"), (b"x-auth-sub", b"alice")]
    assert ch.apply(request) == [(b"host", b"orders"), (b"accept", b"*/*")]
    assert request[1] == (b"x-auth-sub", b"root")          # the input is left alone


def test_claim_lookup_and_string_sets() -> None:
    claims = {"scope": "orders:read  orders:write", "roles": ["a", 1, "b"], "a.b": "exact",
              "a": {"b": "nested"}}
    assert claim(claims, "a.b") == "exact"
    assert claim(claims, "missing.path") is None
    assert claim_strings(claims, "scope") == {"orders:read", "orders:write"}
    assert claim_strings(claims, "roles") == {"a", "b"}
    assert claim_strings(claims, "nothing") == frozenset()
