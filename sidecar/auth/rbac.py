"""Role-based access for one route: the first rule that selects the request decides.

A rule selects a request by method and path (glob: `*` within one segment, `**` across
segments, `?` one character). A `deny` rule refuses what it selects. An `allow` rule lets
it through only when every condition it lists holds: one of `peers` is the caller's
SPIFFE ID (mTLS), its roles claim holds one of `roles` (all of them with `match: all`),
its scope claim holds one of `scopes` (likewise); otherwise it denies, and still decides:
later rules are not consulted. No rule selecting the request: deny. No rules: allow.

`Decision.rule` names the deciding rule for the log and the explain endpoint; the
response body never says it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .claims import claim_strings
from .config import RbacConfig, RbacRule

__all__ = ["Decision", "Rbac", "compile_path_glob", "compile_peer_pattern"]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str | None      # the rule that decided; None when none did (no rules, or default deny)
    reason: str


_NO_RULES = Decision(True, None, "no rbac rules")
_DEFAULT_DENY = Decision(False, None, "no rule matched: default deny")


def compile_path_glob(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    for token in re.split(r"(\*\*|\*|\?)", pattern):
        out.append({"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token) or re.escape(token))
    return re.compile("".join(out))


def compile_peer_pattern(pattern: str) -> re.Pattern[str]:
    """Exact, or `*` as one whole segment; a trailing `/*` matches any deeper path."""
    base, tail = (pattern[:-2], "/.+") if pattern.endswith("/*") else (pattern, "")
    parts = ["[^/]+" if seg == "*" else re.escape(seg) for seg in base.split("/")]
    return re.compile("/".join(parts) + tail)


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: RbacRule
    paths: tuple[re.Pattern[str], ...]
    peers: tuple[re.Pattern[str], ...]
    allow: Decision        # made once: the hot path allocates nothing when it allows
    deny: Decision


class Rbac:
    def __init__(self, config: RbacConfig) -> None:
        self.config = config
        self._rules = tuple(
            _Compiled(r, tuple(compile_path_glob(p) for p in r.paths),
                      tuple(compile_peer_pattern(p) for p in r.peers),
                      Decision(True, r.name, "allowed by rule"),
                      Decision(False, r.name, "denied by rule"))
            for r in config.rules)

    def decide(self, method: str, path: str, claims: Mapping[str, Any] | None,
               peer: str | None) -> Decision:
        """`path` without its query; `claims` of the verified token or None; `peer` the
        client certificate's SPIFFE ID or None (no mTLS)."""
        if not self._rules:
            return _NO_RULES
        path = path.partition("?")[0]
        for c in self._rules:
            rule = c.rule
            if rule.methods and method not in rule.methods:
                continue
            if c.paths and not any(p.fullmatch(path) for p in c.paths):
                continue
            if rule.action == "deny":
                return c.deny
            return self._conditions(c, claims, peer)
        return _DEFAULT_DENY

    def _conditions(self, c: _Compiled, claims: Mapping[str, Any] | None,
                    peer: str | None) -> Decision:
        rule = c.rule
        if c.peers and (peer is None or not any(p.fullmatch(peer) for p in c.peers)):
            return Decision(False, rule.name, f"peer {peer or '(none)'} not allowed")
        if rule.roles and not self._holds(rule.roles, claims, self.config.roles_claim, rule):
            return self._lacks(rule, rule.roles, claims, self.config.roles_claim)
        if rule.scopes and not self._holds(rule.scopes, claims, self.config.scopes_claim, rule):
            return self._lacks(rule, rule.scopes, claims, self.config.scopes_claim)
        return c.allow

    @staticmethod
    def _holds(wanted: frozenset[str], claims: Mapping[str, Any] | None, name: str,
               rule: RbacRule) -> bool:
        if claims is None:
            return False
        value = claims.get(name)
        if isinstance(value, list):         # the common case, without making a set
            try:
                return wanted.issubset(value) if rule.match_all else not wanted.isdisjoint(value)
            except TypeError:               # an unhashable item (a nested object)
                pass
        held = claim_strings(claims, name)  # a string, a nested claim, or nothing
        return wanted <= held if rule.match_all else not wanted.isdisjoint(held)

    @staticmethod
    def _lacks(rule: RbacRule, wanted: frozenset[str], claims: Mapping[str, Any] | None,
               name: str) -> Decision:
        if claims is None:
            return Decision(False, rule.name, "no verified token")
        need = "all" if rule.match_all else "one"
        return Decision(False, rule.name, f"{name} lacks {need} of {', '.join(sorted(wanted))}")
