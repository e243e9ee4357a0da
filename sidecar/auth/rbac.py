"""Role-based access for one route: the first rule that selects the request decides.

A rule selects a request by method and path (glob: `*` within one segment, `**` across
segments, `?` one character). A `deny` rule refuses what it selects. An `allow` rule lets
it through only when every condition it lists holds: one of `peers` is the caller's
SPIFFE ID (mTLS), its roles claim holds one of `roles` (all of them with `match: all`),
its scope claim holds one of `scopes` (likewise); otherwise it denies, and still decides:
later rules are not consulted. No rule selecting the request: deny. No rules: allow.

`Decision.rule` names the deciding rule for the log and the explain endpoint; the
response body never says it.

On the data plane (`decide_request`), a rule's roles and scopes conditions, a function of
the token's claims alone, are decided once per verified token: the answer is kept in the
token's memo, which the verified-token cache serves with it.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
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
    methods: frozenset[bytes]  # as a request line sends them: compared without decoding
    paths: tuple[re.Pattern[str], ...]
    peers: tuple[re.Pattern[str], ...]
    deny_rule: bool        # `action: deny`
    on_claims: bool        # roles or scopes: the token's claims have a say
    # What the claims' say depends on besides the claims: the key of its answer in a
    # verified token's memo (values, so a reloaded or another route's twin rule shares it).
    memo_key: tuple[Hashable, ...]
    allow: Decision        # made once: the hot path allocates nothing when it allows
    deny: Decision
    no_token: Decision


class Rbac:
    def __init__(self, config: RbacConfig) -> None:
        self.config = config
        roles_claim, scopes_claim = config.roles_claim, config.scopes_claim
        self._rules = tuple(
            _Compiled(r, frozenset(m.encode() for m in r.methods),
                      tuple(compile_path_glob(p) for p in r.paths),
                      tuple(compile_peer_pattern(p) for p in r.peers), r.action == "deny",
                      bool(r.roles or r.scopes),
                      (r.name, r.roles, r.scopes, r.match_all, roles_claim, scopes_claim),
                      Decision(True, r.name, "allowed by rule"),
                      Decision(False, r.name, "denied by rule"),
                      Decision(False, r.name, "no verified token"))
            for r in config.rules)

    def decide(self, method: str, path: str, claims: Mapping[str, Any] | None,
               peer: str | None) -> Decision:
        """`path` with or without its query; `claims` of the verified token or None; `peer`
        the client certificate's SPIFFE ID or None (no mTLS)."""
        return self.decide_request(method.encode(), path.partition("?")[0], claims, None, peer)

    def decide_request(self, method: bytes, path: bytes | str,
                       claims: Mapping[str, Any] | None, memo: dict[Hashable, Any] | None,
                       peer: str | None) -> Decision:
        """`decide()` as the data plane calls it: `method` as sent; `path` the request
        target as read (decoded and its query cut off only if a rule looks at it) or a path
        already without its query; `memo` the verified token's (`Verified.memo`), where
        what depends on its claims alone is kept for its next requests."""
        for c in self._rules:
            if c.methods and method not in c.methods:
                continue
            if c.paths:
                if not isinstance(path, str):
                    path = path.decode("latin-1").partition("?")[0]
                if not any(p.fullmatch(path) for p in c.paths):
                    continue
            # The first rule selecting the request decides; these are its conditions.
            if c.deny_rule:
                return c.deny
            if c.peers and (peer is None or not any(p.fullmatch(peer) for p in c.peers)):
                return Decision(False, c.rule.name, f"peer {peer or '(none)'} not allowed")
            if not c.on_claims:
                return c.allow
            if claims is None:
                return c.no_token
            if memo is None:
                return self._on_claims(c, claims)
            decision: Decision | None = memo.get(c.memo_key)
            if decision is None:
                decision = memo[c.memo_key] = self._on_claims(c, claims)
            return decision
        return _DEFAULT_DENY if self._rules else _NO_RULES

    def _on_claims(self, c: _Compiled, claims: Mapping[str, Any]) -> Decision:
        """The roles and scopes conditions: a function of the claims and the rule alone."""
        rule = c.rule
        if rule.roles and not _holds(rule.roles, claims, self.config.roles_claim, rule):
            return _lacks(rule, rule.roles, self.config.roles_claim)
        if rule.scopes and not _holds(rule.scopes, claims, self.config.scopes_claim, rule):
            return _lacks(rule, rule.scopes, self.config.scopes_claim)
        return c.allow


def _holds(wanted: frozenset[str], claims: Mapping[str, Any], name: str, rule: RbacRule) -> bool:
    value = claims.get(name)
    if isinstance(value, list):         # the common case, without making a set
        try:
            return wanted.issubset(value) if rule.match_all else not wanted.isdisjoint(value)
        except TypeError:               # an unhashable item (a nested object)
            pass
    held = claim_strings(claims, name)  # a string, a nested claim, or nothing
    return wanted <= held if rule.match_all else not wanted.isdisjoint(held)


def _lacks(rule: RbacRule, wanted: frozenset[str], name: str) -> Decision:
    need = "all" if rule.match_all else "one"
    return Decision(False, rule.name, f"{name} lacks {need} of {', '.join(sorted(wanted))}")
