"""The inbound policy chain's own CPU per request, without sockets and without the hop.

The route of `features.py`'s `policy` target (JWT with an ES256 key in an inline JWKS,
one RBAC rule requiring a role the token holds, a rate limit by IP that never limits),
built by the sidecar's own wiring from that target's config, and the request its wrk
sends (`GET /`, `Host`, `Authorization: Bearer <token>`, with the claims of that bench's
token) parsed by the sidecar's HTTP/1 reader. Each iteration restores the request head
and calls `RoutePolicy.check(...)` as the downstream connection does; the token is
verified during warm-up, then answered from the verified-token cache, as in the live run.

    python bench/micro_policy.py [-n 100000] [--rounds 5]   # µs per request, best of rounds
    python bench/micro_policy.py --profile [--variant V]     # cProfile of the full chain
    python bench/micro_policy.py --callgrind [--variant V]   # instructions per request

Reported per variant, the chain taken apart as `features.py`'s hop without sockets does:
`jwt`, `jwt+rbac`, `ratelimit`, `policy` (all of them, every request with one token, as
in the live bench), and `policy, 2 tokens`: two tokens in turn, as two clients would
send them, so that what is kept from the last request (the token read, its hash) never
helps. Each figure has the loop's own cost (restoring the head) taken off. `--callgrind`
runs the `policy` variant under valgrind twice, with N and 6N requests, and divides the
difference in instructions by 5N: start-up, imports and the first verification cancel
out (`--variant` picks another). Its output files stay in /tmp for `callgrind_annotate`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

if __package__ in (None, ""):
    # Run as a script: make the `bench` package importable from the repository root;
    # appended, so that a build on PYTHONPATH (PYTHONPATH=build/compiled) is what runs.
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.features import AUDIENCE, ISSUER, MICRO_ONLY, ROLE, Context, Setup, _policy
from bench.measure import callgrind_per_call
from sidecar.app import Sidecar, _rate_limits
from sidecar.auth.runtime import AuthRuntime
from sidecar.config import load_data
from sidecar.core.exchange import Exchange
from sidecar.inbound.policy import RoutePolicy
from sidecar.protocol.events import RequestHead
from sidecar.protocol.h1 import RequestReader

CLIENT_IP = "127.0.0.1"
FULL = "policy"
# name -> (the route's config, from the bench's targets; how many tokens are sent in turn)
VARIANTS: dict[str, tuple[Callable[[Context], dict[str, Any]], int]] = {
    "jwt": (MICRO_ONLY["jwt"], 1),
    "jwt+rbac": (MICRO_ONLY["jwt+rbac"], 1),
    "ratelimit": (MICRO_ONLY["ratelimit"], 1),
    FULL: (_policy, 1),
    "policy, 2 tokens": (_policy, 2),
}

Call = Callable[[], object]


def signed_tokens(count: int) -> tuple[dict[str, Any], list[str]]:
    """A JWKS of one ES256 key, and `count` valid tokens with the claims of `features.py`'s
    (ES256 signatures are random: the same claims, different tokens)."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid="bench-1", alg="ES256", use="sig")
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-user", "roles": [ROLE],
              "iat": now, "exp": now + 86400}
    return {"keys": [jwk]}, [jwt.encode(claims, key, algorithm="ES256",
                                        headers={"kid": "bench-1"}) for _ in range(count)]


class _Head:
    """A request sink that keeps the one head it is given."""

    head: RequestHead | None = None

    def request_head(self, head: RequestHead) -> None:
        self.head = head

    def request_data(self, data: bytes) -> None: ...
    def request_end(self, trailers: object) -> None: ...
    def request_upgrade(self, rest: bytes) -> None: ...
    def request_error(self, error: Exception) -> None:
        raise error


def parse_request(token: str) -> RequestHead:
    sink = _Head()
    RequestReader(sink).feed(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:15006\r\n"
                             b"Authorization: Bearer " + token.encode() + b"\r\n\r\n")
    assert sink.head is not None
    return sink.head


def build_policy(extra: dict[str, Any], loop: asyncio.AbstractEventLoop) -> RoutePolicy:
    """The route's `RoutePolicy`, made by `Sidecar._policy` itself (what `start()` would
    wire: the auth runtime of an inline JWKS needs no fetch, local limits no Redis)."""
    config = load_data({"service": {"name": "bench"}, **extra})
    sidecar = Sidecar(config, loop)
    if config.auth.providers:
        sidecar.auth = AuthRuntime(config.auth)
    sidecar.rate_limits = _rate_limits(config)
    policy = sidecar._policy(config, config.inbound_routes[0])
    assert policy is not None
    return policy


def one_request(policy: RoutePolicy | None, heads: list[RequestHead]) -> Call:
    """A call that takes the next of `heads` in turn, restores it, and checks it when
    `policy` is given (without one: the loop's own cost)."""
    turns = itertools.cycle([(h, h.headers, Exchange(None, h, b"bench-request-id", 0.0))
                             for h in heads])
    check = policy.check if policy is not None else None

    def run() -> object:
        head, headers, ex = next(turns)
        head.headers = headers.copy()   # the chain rewrites the head: each request fresh
        ex.response_extra = b""
        return check(ex, None, CLIENT_IP) if check is not None else None
    return run


def per_request_us(call: Call, n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - t0) / n * 1e6


def setup(loop: asyncio.AbstractEventLoop) -> dict[str, Call]:
    jwks, tokens = signed_tokens(2)
    made = Setup(jwks=jwks, token=tokens[0], token_without_role="", jaeger=None,
                 jaeger_missing="", jaeger_config="")
    ctx = Context(launch=None, setup=made, jaeger=None)  # type: ignore[arg-type]
    calls = {"loop": one_request(None, [parse_request(tokens[0])])}
    for name, (config, count) in VARIANTS.items():
        heads = [parse_request(t) for t in tokens[:count]]  # its own: a check rewrites them
        call = calls[name] = one_request(build_policy(config(ctx), loop), heads)
        for _ in range(count):
            if call() is not None:
                raise SystemExit(f"{name}: the chain did not let the bench's request through")
    return calls


def measure(calls: dict[str, Call], n: int, rounds: int) -> dict[str, float]:
    for call in calls.values():
        per_request_us(call, 2000)   # warm: tokens verified and cached, buckets made
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):   # interleaved: the machine's mood hits every variant alike
        for name, call in calls.items():
            best[name] = min(best[name], per_request_us(call, n))
    return best


def callgrind(n: int, variant: str) -> None:
    """Instructions per request of one variant, under valgrind."""
    per_call = callgrind_per_call(Path(__file__).resolve(), ["--variant", variant], n)
    print(f"{per_call:,.0f} instructions per request, {variant} (the loop's own cost included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile one variant")
    parser.add_argument("--callgrind", action="store_true",
                        help="instructions per request under valgrind (N = n / 50)")
    parser.add_argument("--variant", choices=list(VARIANTS), default=FULL,
                        help=f"for --profile and --callgrind ({FULL})")
    parser.add_argument("--loop", type=int, help=argparse.SUPPRESS)  # one callgrind run
    args = parser.parse_args()
    if args.callgrind:
        callgrind(max(1, args.n // 50), args.variant)
        return
    loop = asyncio.new_event_loop()
    try:
        calls = setup(loop)
        if args.loop is not None or args.profile:
            chosen = calls[args.variant]
            per_request_us(chosen, 2000)
            if args.loop is not None:
                per_request_us(chosen, args.loop)
                return
            prof = cProfile.Profile()
            prof.enable()
            per_request_us(chosen, args.n)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return
        best = measure(calls, args.n, args.rounds)
    finally:
        loop.close()
    base = best.pop("loop")
    print(f"policy chain CPU per request, no sockets, best of {args.rounds} x {args.n:,} "
          f"(the loop's own {base:.2f} µs taken off):")
    for name, us in best.items():
        print(f"  {name:<18}{us - base:6.2f} µs")


if __name__ == "__main__":
    main()
