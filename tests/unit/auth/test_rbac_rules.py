"""RBAC: first match wins, the deciding rule is named, nothing matching is a deny."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.auth import Rbac, RbacConfig, RbacRule
from sidecar.auth.rbac import compile_path_glob, compile_peer_pattern

PROD_WEB = "spiffe://mesh.test/ns/prod/sa/web"
DEV_WEB = "spiffe://mesh.test/ns/dev/sa/web"


def rbac(*rules: RbacRule, **cfg: Any) -> Rbac:
    return Rbac(RbacConfig(rules=rules, **cfg))


RULES = (
    RbacRule("no-deletes", action="deny", methods=frozenset({"DELETE"})),
    RbacRule("health", methods=frozenset({"GET"}), paths=("/healthz",)),
    RbacRule("read-orders", methods=frozenset({"GET"}), paths=("/orders", "/orders/**"),
             roles=frozenset({"reader", "admin"})),
    RbacRule("write-orders", methods=frozenset({"POST", "PUT"}), paths=("/orders/*",),
             scopes=frozenset({"orders:write", "orders:admin"}), match_all=True,
             peers=("spiffe://mesh.test/ns/prod/*",)),
)


@pytest.mark.parametrize(("method", "path", "claims", "peer", "allowed", "rule"), [
    ("DELETE", "/orders/1", {"roles": ["admin"]}, PROD_WEB, False, "no-deletes"),
    ("GET", "/healthz", None, None, True, "health"),
    ("GET", "/orders/1/items?x=1", {"roles": ["reader"]}, None, True, "read-orders"),
    ("GET", "/orders", {"roles": "admin"}, None, True, "read-orders"),
    ("GET", "/orders/1", {"roles": ["writer"]}, None, False, "read-orders"),
    ("GET", "/orders/1", None, None, False, "read-orders"),
    ("POST", "/orders/1", {"scope": "orders:write orders:admin"}, PROD_WEB, True, "write-orders"),
    ("POST", "/orders/1", {"scope": "orders:write"}, PROD_WEB, False, "write-orders"),
    ("POST", "/orders/1", {"scope": "orders:write orders:admin"}, DEV_WEB, False, "write-orders"),
    ("POST", "/orders/1", {"scope": "orders:write orders:admin"}, None, False, "write-orders"),
    ("POST", "/orders/1/items", {"scope": "orders:write orders:admin"}, PROD_WEB, False, None),
    ("PATCH", "/orders/1", {"roles": ["admin"]}, PROD_WEB, False, None),
])
def test_first_matching_rule_decides(method: str, path: str, claims: dict[str, Any] | None,
                                     peer: str | None, allowed: bool, rule: str | None) -> None:
    d = rbac(*RULES).decide(method, path, claims, peer)
    assert (d.allowed, d.rule) == (allowed, rule), d.reason


def test_no_rules_allow_and_default_deny_says_so() -> None:
    assert rbac().decide("GET", "/", None, None).allowed
    d = rbac(RULES[1]).decide("GET", "/other", None, None)
    assert not d.allowed and d.rule is None and "default deny" in d.reason


def test_reasons_name_what_was_missing() -> None:
    d = rbac(*RULES).decide("GET", "/orders", {"roles": ["writer"]}, None)
    assert d.reason == "roles lacks one of admin, reader"
    d = rbac(*RULES).decide("POST", "/orders/1", {"scope": "x"}, DEV_WEB)
    assert d.reason == f"peer {DEV_WEB} not allowed"


def test_claim_names_are_configurable_and_may_be_nested() -> None:
    rule = RbacRule("kc", roles=frozenset({"ops"}), scopes=frozenset({"read"}))
    r = rbac(rule, roles_claim="realm_access.roles", scopes_claim="scp")
    assert r.decide("GET", "/", {"realm_access": {"roles": ["ops"]}, "scp": ["read"]}, None).allowed
    assert not r.decide("GET", "/", {"roles": ["ops"], "scope": "read"}, None).allowed


def test_globs() -> None:
    one, deep, q = (compile_path_glob(p) for p in ("/a/*/c", "/a/**", "/v?/x"))
    assert one.fullmatch("/a/b/c") and not one.fullmatch("/a/b/b/c")
    assert deep.fullmatch("/a/b/c/d") and not deep.fullmatch("/a") and not deep.fullmatch("/ab")
    assert q.fullmatch("/v1/x") and not q.fullmatch("/v10/x")
    assert compile_path_glob("/a.b+(c)").fullmatch("/a.b+(c)")
    assert not compile_path_glob("/a.b").fullmatch("/aXb")


def test_peer_patterns() -> None:
    subtree = compile_peer_pattern("spiffe://mesh.test/ns/prod/*")
    assert subtree.fullmatch(PROD_WEB) and not subtree.fullmatch(DEV_WEB)
    assert not subtree.fullmatch("spiffe://mesh.test/ns/prod")
    assert not subtree.fullmatch("spiffe://mesh.test/ns/production/sa/web")
    any_ns = compile_peer_pattern("spiffe://mesh.test/ns/*/sa/web")
    assert any_ns.fullmatch(PROD_WEB) and any_ns.fullmatch(DEV_WEB)
    assert not any_ns.fullmatch("spiffe://mesh.test/ns/a/b/sa/web")
    exact = compile_peer_pattern(PROD_WEB)
    assert exact.fullmatch(PROD_WEB) and not exact.fullmatch(PROD_WEB + "x")
    assert not compile_peer_pattern("spiffe://mesh.test/ns/prod/*").fullmatch(
        "spiffe://mesh.testXns/prod/sa/web")


def test_odd_claim_values_deny_instead_of_failing() -> None:
    r = rbac(RbacRule("r", roles=frozenset({"admin"})))
    assert not r.decide("GET", "/", {"roles": [{"name": "admin"}, ["x"]]}, None).allowed
    assert r.decide("GET", "/", {"roles": [{"name": "x"}, "admin"]}, None).allowed
    assert not r.decide("GET", "/", {"roles": 42}, None).allowed
