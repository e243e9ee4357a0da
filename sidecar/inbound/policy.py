"""The inbound policy stack of one route: CORS → JWT → RBAC → rate limits → transform.

(Identity comes first, at the TLS handshake: by the time a request is here, its peer's
SPIFFE ID is known or there is none. CORS comes before JWT: browsers send preflights
without credentials. The request transform comes last, on a request already allowed.)

How this works: `RoutePolicy.check(ex, peer, client_ip)` runs every step as plain calls
and answers at once in the common case: `None` (go on; the request head may have been
rewritten: claim headers in, the client's copies out) or a `Denied` (answer it now). Only
a step that must wait (a JWKS refresh for an unknown `kid`, a Redis round trip) makes it
answer an awaitable instead, which the connection awaits off the hot path and which
resolves to the same `None | Denied`.

Every step can run in dry-run: it decides, counts and logs, and lets the request through.

The common case costs a few µs: a token seen before is answered from the verified-token
cache with what it implies made once (its claim headers, its subject, the RBAC rules'
answers on its claims), and a one-window rate limit allocates nothing when it allows
(bench/micro_policy.py measures the chain alone).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..auth.errors import AuthError
from ..core.errors import ErrorCode
from ..ratelimit.headers import rate_limit_headers
from ..telemetry import names

if TYPE_CHECKING:
    from ..auth.guard import RouteGuard
    from ..auth.rbac import Rbac
    from ..auth.verifier import Verified
    from ..core.exchange import Exchange
    from ..ratelimit.decision import Decision
    from ..ratelimit.limiter import Limiter
    from ..telemetry.metrics import Metrics
    from .cors import Cors
    from .transform import RequestTransform

__all__ = ["Denied", "Reply", "RoutePolicy"]

log = logging.getLogger("sidecar.policy")

Header = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Denied:
    code: ErrorCode
    message: str  # for the response body: says what, never which rule
    headers: list[Header]


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer the sidecar gives itself that is no error (a CORS preflight's)."""

    status: int
    headers: list[Header]


Decided = Denied | None | Awaitable[Denied | None]  # what the checks answer
Result = Decided | Reply


class RoutePolicy:
    def __init__(self, route: str, service: str, metrics: Metrics, *,
                 guard: RouteGuard | None = None, jwt_dry_run: bool = False,
                 rbac: Rbac | None = None, limiter: Limiter | None = None,
                 cors: Cors | None = None, transform: RequestTransform | None = None) -> None:
        self.route = route
        self.service = service
        self.metrics = metrics
        self.guard = guard
        self.jwt_dry_run = jwt_dry_run
        self.rbac = rbac
        self.limiter = limiter
        self._limit_global = limiter is not None and limiter.is_global  # then awaited
        self.cors = cors
        self.transform = transform

    # the stack, in order ---------------------------------------------------------------
    def check(self, ex: Exchange, peer: str | None, client_ip: str) -> Result:
        cors = self.cors
        if cors is not None:
            head = ex.head
            preflight = cors.preflight(head.method, head.headers)
            if preflight is not None:
                return Reply(*preflight)
            ex.response_extra += cors.response_lines(head.method, head.headers)
        guard = self.guard
        verified = None
        if guard is not None:
            try:
                got = guard.admit(ex.head)  # the head forwarded: claims in, client's copies out
            except AuthError as err:
                denied = self._jwt_failed(ex, err)
                if denied is not None:
                    return denied
                ex.head.headers = guard.forward(ex.head.headers, None)
            else:
                if isinstance(got, str):  # an unknown key: the set must be fetched first
                    return self._transformed(ex, self._verify_later(ex, peer, client_ip, got))
                verified = got
        result = self._after_jwt(ex, peer, client_ip, verified)
        if result is None:
            if self.transform is not None:
                self._transform(ex)
            return None
        return self._transformed(ex, result)

    def _transformed(self, ex: Exchange, result: Decided) -> Decided:
        """A decision not made yet gets the request transform once it allows."""
        if isinstance(result, Denied) or result is None or self.transform is None:
            return result
        return self._transform_later(ex, result)

    def _transform(self, ex: Exchange) -> None:
        assert self.transform is not None
        head = ex.head
        head.headers, head.target = self.transform.apply(head.headers, head.target)

    async def _transform_later(self, ex: Exchange,
                               pending: Awaitable[Denied | None]) -> Denied | None:
        result = await pending
        if result is None:
            self._transform(ex)
        return result

    async def _verify_later(self, ex: Exchange, peer: str | None, client_ip: str,
                            token: str) -> Denied | None:
        assert self.guard is not None
        verified = None
        try:
            verified = await self.guard.verify(token)
        except AuthError as err:
            denied = self._jwt_failed(ex, err)
            if denied is not None:
                return denied
        ex.head.headers = self.guard.forward(ex.head.headers, verified)
        rest = self._after_jwt(ex, peer, client_ip, verified)
        return rest if rest is None or isinstance(rest, Denied) else await rest

    def _after_jwt(self, ex: Exchange, peer: str | None, client_ip: str,
                   verified: Verified | None) -> Decided:
        rbac = self.rbac
        if rbac is not None:
            head = ex.head
            decision = rbac.decide_request(
                head.method, head.target, verified.claims if verified is not None else None,
                verified.memo if verified is not None else None, peer)
            if not decision.allowed:
                dry = rbac.config.dry_run
                self._denied(ex, "rbac", "rule" if decision.rule else "default_deny", dry,
                             rule=decision.rule, why=decision.reason, peer=peer)
                if not dry:
                    return Denied(ErrorCode.FORBIDDEN, "access to this route is not allowed", [])
        limiter = self.limiter
        if limiter is None:
            return None
        consumer = verified.subject if verified is not None else None
        if self._limit_global:
            return self._limit_later(ex, limiter, client_ip, consumer, peer)
        d = limiter.admit(client_ip, consumer, peer, ex.head.headers)
        return None if d is None else self._limited(ex, limiter, d)

    async def _limit_later(self, ex: Exchange, limiter: Limiter, client_ip: str,
                           consumer: str | None, peer: str | None) -> Denied | None:
        return self._limited(ex, limiter, await limiter.check_global(
            client_ip, consumer, peer, ex.head.headers))

    def _limited(self, ex: Exchange, limiter: Limiter, d: Decision) -> Denied | None:
        if d.limited:
            self._denied(ex, "rate_limit", "limited", d.allowed, rule=d.rule,
                         why=f"over the limit of {d.limit} per {d.window_s:g}s",
                         source=d.source.value)
            if not d.allowed:
                return Denied(ErrorCode.RATE_LIMITED, "rate limit exceeded",
                              rate_limit_headers(d))
        if limiter.headers_on_allowed:
            ex.response_extra += b"".join(b"%b: %b\r\n" % kv for kv in rate_limit_headers(d))
        return None

    # explain: every step's decision, nothing enforced, counted or taken --------------------
    async def explain(self, head: Any, peer: str | None, client_ip: str) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        claims = None
        if self.guard is not None:
            step: dict[str, Any] = {"policy": "jwt", "dry_run": self.jwt_dry_run}
            try:
                token = self.guard.find(head.headers, head.target)
                if token is None:
                    step.update(decision="allow", reason="no token, and none required")
                else:
                    verified = await self.guard.verify(token)
                    claims = verified.claims
                    step.update(decision="allow", reason=f"valid token from {verified.provider}",
                                sub=claims.get("sub"))
            except AuthError as err:
                step.update(decision="deny", reason=err.reason.value, detail=err.detail)
            steps.append(step)
        if self.rbac is not None:
            d = self.rbac.decide(head.method.decode("latin-1"), head.target.decode("latin-1"),
                                 claims, peer)
            steps.append({"policy": "rbac", "dry_run": self.rbac.config.dry_run,
                          "decision": "allow" if d.allowed else "deny", "rule": d.rule,
                          "reason": d.reason})
        if self.limiter is not None:
            sub = claims.get("sub") if claims is not None else None
            consumer = sub if isinstance(sub, str) else None
            limiter = self.limiter
            d2 = await limiter.check_global(client_ip, consumer, peer, head.headers, take=False) \
                if limiter.is_global else limiter.check(client_ip, consumer, peer, head.headers,
                                                        take=False)
            steps.append({"policy": "rate_limit", "dry_run": limiter.dry_run,
                          "decision": "deny" if d2.limited else "allow", "rule": d2.rule,
                          "remaining": d2.remaining, "limit": d2.limit,
                          "source": d2.source.value})
        return steps

    # outcomes ------------------------------------------------------------------------
    def _jwt_failed(self, ex: Exchange, err: AuthError) -> Denied | None:
        self._denied(ex, "jwt", err.reason.value, self.jwt_dry_run, why=err.detail)
        if self.jwt_dry_run:
            return None
        return Denied(ErrorCode.UNAUTHORIZED,
                      "missing bearer token" if err.reason.value == "missing_token"
                      else "invalid bearer token",
                      [(b"www-authenticate", err.challenge().encode())])

    def _denied(self, ex: Exchange, policy: str, reason: str, dry_run: bool,
                **detail: Any) -> None:
        """Counted by policy and reason; logged with the rule (never in the response)."""
        mode = "dry_run" if dry_run else "enforced"
        self.metrics.inc(names.POLICY_DENIALS, service=self.service, policy=policy,
                         reason=reason, mode=mode)
        log.info("request denied" if not dry_run else "request would be denied (dry-run)",
                 extra={"policy": policy, "reason": reason, "route": self.route,
                        "request_id": ex.request_id.decode(), **detail})
