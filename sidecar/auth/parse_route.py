"""A route's `jwt:` and `rbac:` keys → `RouteAuth` and `RbacConfig`, every problem reported.

`read_*` append `path: message` strings to the loader's problems list; `parse_rbac` is
the stand-alone form, returning `(config, [(path, message), ...])`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from sidecar.config.fields import Fields
from sidecar.identity.spiffe import SpiffeId, SpiffeIdError

from .config import RbacConfig, RbacRule, RouteAuth
from .parse import pairs, strings

__all__ = ["parse_rbac", "read_rbac", "read_route_auth"]

_METHOD = re.compile(r"[A-Z]+")


def parse_rbac(data: Any, path: str = "rbac") -> tuple[RbacConfig, list[tuple[str, str]]]:
    problems: list[str] = []
    config = read_rbac(data, path, problems)
    return config, pairs(problems)


def read_route_auth(raw: Any, path: str, problems: list[str],
                    known: Collection[str]) -> RouteAuth | None:
    """A route's `jwt:` key: `true`, `false` (None: no JWT) or `{required, providers}`."""
    if raw is None or raw is False:
        return None
    if raw is True:
        return RouteAuth()
    f = Fields(raw, path, problems)
    names = strings(f, "providers", ())
    for n in names:
        if n not in known:
            f.problem("providers", f"no provider named {n!r} under auth.providers")
    if not known:
        f.problem("", "needs at least one provider under auth.providers")
    out = RouteAuth(required=f.boolean("required", True), providers=names,
                    dry_run=f.boolean("dry_run", False))
    f.finish()
    return out


def read_rbac(raw: Any, path: str, problems: list[str]) -> RbacConfig:
    """A route's `rbac:` key: a list of rules, or `{rules, roles_claim, scopes_claim, dry_run}`."""
    f = Fields({"rules": raw} if isinstance(raw, list) else raw, path, problems)
    d = RbacConfig()
    rules: list[RbacRule] = []
    for i, (where, item) in enumerate(f.items("rules")):
        rule = _rule(Fields(item, where, problems), f"rule-{i}")
        if any(r.name == rule.name for r in rules):
            problems.append(f"{where}.name: rule {rule.name!r} is defined twice")
        rules.append(rule)
    out = RbacConfig(rules=tuple(rules), roles_claim=f.string("roles_claim", d.roles_claim),
                     scopes_claim=f.string("scopes_claim", d.scopes_claim),
                     dry_run=f.boolean("dry_run", d.dry_run))
    f.finish()
    return out


def _rule(f: Fields, default_name: str) -> RbacRule:
    action = f.string("action", "allow", re.compile("allow|deny"), "allow or deny")
    methods = strings(f, "methods", (), single_ok=True, pattern=_METHOD,
                       expected="an upper-case method")
    paths = strings(f, "paths", (), single_ok=True)
    for p in paths:
        if not p.startswith("/"):
            f.problem("paths", f"a path pattern starts with '/' (got {p!r})")
    peers = strings(f, "peers", (), single_ok=True)
    for p in peers:
        try:
            # `*` stands for whole segments: check the rest as a SPIFFE ID would be.
            SpiffeId.parse("/".join("x" if s == "*" else s for s in p.removesuffix("/*").split("/")))
        except SpiffeIdError as exc:
            f.problem("peers", str(exc))
    rule = RbacRule(
        name=f.string("name", default_name), action=action,  # type: ignore[arg-type]
        methods=frozenset(methods), paths=paths, peers=peers,
        roles=frozenset(strings(f, "roles", (), single_ok=True)),
        scopes=frozenset(strings(f, "scopes", (), single_ok=True)),
        match_all=f.string("match", "any", re.compile("any|all"), "any or all") == "all",
    )
    if action == "deny" and (rule.roles or rule.scopes or rule.peers):
        f.problem("action", "a deny rule selects by methods and paths only")
    f.finish()
    return rule
