"""What the data plane keeps between requests, and that it never changes an answer: the
last token read from a header, the last token's hash, the claim headers and RBAC answers
kept with a verified token, and `RouteGuard.admit` doing find, verify and forward at once."""

from __future__ import annotations

import pytest
from auth_helpers import NOW, provider, rsa_key, sign, verifier

from sidecar.auth import (
    AuthError,
    JwksResponse,
    JwksSource,
    KeySet,
    Rbac,
    RbacConfig,
    RbacRule,
    Reason,
    RouteAuth,
    RouteGuard,
    TokenLocation,
    Verified,
)
from sidecar.auth.token import HeaderToken
from sidecar.protocol.events import RequestHead
from sidecar.testing.clock import FakeClock

Headers = list[tuple[bytes, bytes]]


def head(*headers: tuple[bytes, bytes]) -> RequestHead:
    return RequestHead(b"GET", b"/orders/1?x=1", "1.1", [(b"host", b"orders"), *headers], True)


def bearer(token: str) -> tuple[bytes, bytes]:
    return (b"authorization", b"Bearer " + token.encode())


def claim_headers(headers: Headers) -> Headers:
    return [h for h in headers if h[0].startswith(b"x-auth-")]


# -- the header token -----------------------------------------------------------------------

def test_a_header_value_seen_before_gives_the_same_token_and_a_new_one_its_own() -> None:
    ht = HeaderToken(TokenLocation(), frozenset({b"x-auth-sub"}))
    first = ht.scan([bearer("a.b.c")])
    assert first == ("a.b.c", False)
    assert ht.scan([bearer("a.b.c")])[0] is first[0]          # read once
    assert ht.scan([(b"authorization", b"bearer  d.e.f ")]) == ("d.e.f", False)
    assert ht.scan([bearer("a.b.c"), (b"x-auth-sub", b"root")]) == ("a.b.c", True)
    assert ht.scan([(b"x-auth-sub", b"root")]) == (None, True)


def test_a_remembered_token_sent_twice_is_still_ambiguous() -> None:
    ht = HeaderToken(TokenLocation())
    ht.scan([bearer("a.b.c")])
    for twice in ([bearer("a.b.c"), bearer("a.b.c")], [bearer("a.b.c"), bearer("x.y.z")],
                  [bearer("x.y.z"), bearer("a.b.c")]):
        with pytest.raises(AuthError) as info:
            ht.scan(twice)
        assert info.value.reason is Reason.AMBIGUOUS
        assert info.value.detail == "2 tokens in header 'authorization'"


def test_a_refused_token_is_not_remembered() -> None:
    ht = HeaderToken(TokenLocation())
    for _ in range(2):
        with pytest.raises(AuthError) as info:
            ht.scan([(b"authorization", "Bearer tök".encode())])
        assert info.value.reason is Reason.MALFORMED
    assert ht.scan([(b"authorization", b"Basic dXNlcjpwYXNz")]) == (None, False)


# -- the verified-token cache ----------------------------------------------------------------

def test_the_remembered_hash_serves_only_its_own_token(decodes: list[str]) -> None:
    v = verifier()
    a, b = sign(rsa_key(), sub="alice"), sign(rsa_key(), sub="bob")
    for _ in range(3):                                       # alternating: no stale answer
        va, vb = v.verify_now(a), v.verify_now(b)
        assert va is not None and vb is not None
        assert (va.subject, vb.subject) == ("alice", "bob")
        assert (b"x-auth-sub", b"alice") in va.headers and (b"x-auth-sub", b"bob") in vb.headers
    assert decodes == [a, b]


def test_an_expired_token_is_not_served_though_it_was_the_last_one() -> None:
    clock = FakeClock(NOW)
    v = verifier(clock=clock)
    token = sign(rsa_key(), exp=int(NOW) + 60)
    assert v.verify_now(token) is v.verify_now(token)
    clock.advance(60 + 30)                                   # exp + leeway
    with pytest.raises(AuthError) as info:
        v.verify_now(token)
    assert info.value.reason is Reason.EXPIRED
    assert len(v.cache) == 0


def test_a_cleared_cache_verifies_the_last_token_again(decodes: list[str]) -> None:
    v = verifier()
    token = sign(rsa_key())
    v.verify_now(token)
    v.cache.clear()                                          # a key was withdrawn
    v.verify_now(token)
    assert decodes == [token, token]


def test_verified_derives_its_subject_and_keeps_a_memo_of_its_own() -> None:
    a = Verified("corp", {"sub": "alice"}, (), NOW)
    b = Verified("corp", {"sub": 7}, (), NOW)
    assert (a.subject, b.subject) == ("alice", None)
    a.memo["k"] = 1
    assert b.memo == {} and a == Verified("corp", {"sub": "alice"}, (), NOW)


# -- the guard in one call -------------------------------------------------------------------

def test_admit_forwards_each_token_with_its_own_claims_and_strips_spoofed_copies_on_hits(
        ) -> None:
    guard = RouteGuard(verifier(), RouteAuth())
    alice, bob = sign(rsa_key(), sub="alice", roles=["reader"]), sign(rsa_key(), sub="bob",
                                                                       roles=["ops"])
    for _ in range(2):                                       # the second round: cache hits
        for token, sub, roles in ((alice, b"alice", b"reader"), (bob, b"bob", b"ops")):
            for spoofed in ((), ((b"x-auth-sub", b"root"), (b"x-auth-roles", b"admin"))):
                h = head(bearer(token), *spoofed)
                verified = guard.admit(h)
                assert isinstance(verified, Verified) and verified.subject == sub.decode()
                assert claim_headers(h.headers) == [(b"x-auth-sub", sub),
                                                    (b"x-auth-roles", roles)]
                assert h.headers[:2] == [(b"host", b"orders"), bearer(token)]


def test_admit_without_a_token() -> None:
    v = verifier()
    spoofed = (b"x-auth-sub", b"root")
    h = head(spoofed)
    with pytest.raises(AuthError) as info:
        RouteGuard(v, RouteAuth()).admit(h)
    assert info.value.reason is Reason.MISSING_TOKEN and spoofed in h.headers  # untouched
    assert RouteGuard(v, RouteAuth(required=False)).admit(h) is None
    assert h.headers == [(b"host", b"orders")]               # no claims, no spoofed copy


def test_admit_leaves_the_head_alone_when_the_key_must_be_fetched() -> None:
    async def not_now() -> JwksResponse:
        raise AssertionError("admit never waits: the caller fetches")

    v = verifier(keyset=KeySet(fetch=not_now, source=JwksSource(url="https://id.test/jwks")))
    token = sign(rsa_key(), kid="new")
    h = head(bearer(token), (b"x-auth-sub", b"root"))
    before = list(h.headers)
    assert RouteGuard(v, RouteAuth()).admit(h) == token
    assert h.headers == before


def test_admit_reads_other_locations_one_step_at_a_time() -> None:
    v = verifier(providers=(provider(location=TokenLocation("cookie", "s", "")),))
    guard = RouteGuard(v, RouteAuth())
    h = head((b"cookie", b"s=" + sign(rsa_key()).encode()), (b"x-auth-sub", b"root"))
    assert isinstance(guard.admit(h), Verified)
    assert claim_headers(h.headers) == [(b"x-auth-sub", b"alice"),
                                        (b"x-auth-roles", b"reader,writer")]


# -- RBAC answers kept per token -------------------------------------------------------------

RULES = (RbacRule("admin-deletes", methods=frozenset({"DELETE"}), roles=frozenset({"admin"})),
         RbacRule("readers", paths=("/orders/**",), roles=frozenset({"reader"})),
         RbacRule("prod-peers", peers=("spiffe://mesh.test/ns/prod/*",)))


def test_rbac_answers_kept_per_token_agree_with_deciding_afresh() -> None:
    r = Rbac(RbacConfig(rules=RULES))
    tokens = [Verified("corp", {"roles": roles}, (), NOW)
              for roles in (["reader"], ["writer"], "admin reader", None)]
    requests = [(b"GET", b"/orders/1?x=1", None), (b"DELETE", b"/orders/1", None),
                (b"GET", b"/health", "spiffe://mesh.test/ns/prod/sa/web"),
                (b"GET", b"/health", "spiffe://mesh.test/ns/dev/sa/web")]
    for _ in range(2):                                       # the second round: from the memos
        for v in tokens:
            for method, target, peer in requests:
                kept = r.decide_request(method, target, v.claims, v.memo, peer)
                afresh = r.decide(method.decode(), target.decode(), v.claims, peer)
                assert kept == afresh
    assert r.decide_request(b"GET", b"/orders/2", None, None, None).reason == "no verified token"


def test_a_reloaded_twin_rule_shares_the_kept_answer_and_a_changed_one_does_not() -> None:
    v = Verified("corp", {"roles": ["reader"]}, (), NOW)
    rule = RbacRule("readers", roles=frozenset({"reader"}))
    assert Rbac(RbacConfig(rules=(rule,))).decide_request(b"GET", b"/", v.claims, v.memo,
                                                          None).allowed
    assert Rbac(RbacConfig(rules=(rule,))).decide_request(b"GET", b"/", v.claims, v.memo,
                                                          None).allowed
    assert len(v.memo) == 1
    changed = RbacRule("readers", roles=frozenset({"admin"}))
    d = Rbac(RbacConfig(rules=(changed,))).decide_request(b"GET", b"/", v.claims, v.memo, None)
    assert not d.allowed and d.reason == "roles lacks one of admin"
    other_claim = Rbac(RbacConfig(rules=(rule,), roles_claim="groups"))
    assert not other_claim.decide_request(b"GET", b"/", v.claims, v.memo, None).allowed
