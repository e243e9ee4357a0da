"""JWT verifications per second through the sidecar's verifier, uncached and cached.

    python bench/jwt_verify.py [--seconds 2] [--rounds 3] [--cpu 0]

For each algorithm (RS256 with a 2048-bit key, ES256 on P-256, EdDSA on Ed25519) a key
pair, a one-key inline JWKS and a token like an identity provider's (iss, aud, sub,
roles, iat, exp; `kid` in the header) are made, then timed on one CPU:

  uncached   `Verifier.verify_now(token)` with `cache_size: 0`: every call parses the
             token, checks its header, finds the key, verifies the signature and the
             claims (what a token the sidecar has not seen costs);
  cached     the same call with the default cache (10 000 entries): after the first
             call, a SHA-256 of the token and a dictionary lookup (the hot path for a
             client that reuses its token);
  pyjwt      `jwt.decode(token, key, ...)` alone with the same checks, for comparison:
             what the verifier adds around PyJWT.

Each figure is calls per second of the process's own CPU time (so a busy neighbour
lengthens the run, not the figure) and the best of `--rounds`; wall-clock rates are kept
in the JSON too. Writes bench/results/jwt_verify-<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cryptography
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from sidecar.auth.config import AuthConfig, JwksSource, JwtProvider
from sidecar.auth.jwks import KeySet, parse_jwks
from sidecar.auth.verifier import Verified, Verifier

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
ISSUER = "https://id.bench.test/"
AUDIENCE = "bench"
ALGORITHMS = ("RS256", "ES256", "EdDSA")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _key_pair(alg: str) -> tuple[PrivateKey, dict[str, Any]]:
    """A private key and its public JWK (with kid and alg)."""
    key: PrivateKey
    if alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    elif alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=f"bench-{alg.lower()}", alg=alg, use="sig")
    return key, jwk


@dataclass
class Case:
    alg: str
    token: str
    token_bytes: int
    verifier_uncached: Verifier
    verifier_cached: Verifier
    public_key: Any


def make_case(alg: str) -> Case:
    private, jwk = _key_pair(alg)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-user", "roles": ["bench-reader"],
              "iat": now, "exp": now + 3600}
    token = jwt.encode(claims, private, algorithm=alg, headers={"kid": jwk["kid"]})
    doc = json.dumps({"keys": [jwk]})
    keys, skipped = parse_jwks(doc)
    if skipped or len(keys) != 1:
        raise SystemExit(f"{alg}: the JWKS was not taken: {skipped}")
    provider = JwtProvider(name="idp", issuer=ISSUER, audiences=(AUDIENCE,),
                           algorithms=(alg,), jwks=JwksSource(inline=doc))

    def verifier(cache_size: int) -> Verifier:
        config = AuthConfig(providers=(provider,), cache_size=cache_size)
        return Verifier(config, {"idp": KeySet(keys, name="idp")})

    return Case(alg=alg, token=token, token_bytes=len(token),
                verifier_uncached=verifier(0), verifier_cached=verifier(AuthConfig().cache_size),
                public_key=keys[0].key)


@dataclass(frozen=True)
class Rate:
    per_cpu_second: float  # calls per second of this process's CPU time (best round)
    per_wall_second: float  # calls per second of wall-clock time (same round)
    us_per_call: float  # CPU µs per call (best round)
    rounds_per_cpu_second: tuple[float, ...]


def _time(call: Callable[[], object], seconds: float, rounds: int) -> Rate:
    """Calls of `call` per CPU second: `rounds` runs of about `seconds` each, the best."""
    call()  # warm: imports, first-use caches
    batch = 1
    while True:  # a batch of about 50 ms, so the clock is read rarely
        t0 = time.process_time()
        for _ in range(batch):
            call()
        if time.process_time() - t0 > 0.05:
            break
        batch *= 2
    results: list[tuple[float, float]] = []
    for _ in range(rounds):
        n = 0
        c0, w0 = time.process_time(), time.perf_counter()
        while time.process_time() - c0 < seconds:
            for _ in range(batch):
                call()
            n += batch
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        results.append((n / cpu, n / wall))
    best = max(results)
    return Rate(per_cpu_second=best[0], per_wall_second=best[1], us_per_call=1e6 / best[0],
                rounds_per_cpu_second=tuple(r[0] for r in results))


def measure(case: Case, seconds: float, rounds: int) -> dict[str, Rate]:
    uncached, cached = case.verifier_uncached, case.verifier_cached
    got = uncached.verify_now(case.token)
    if not isinstance(got, Verified) or got.claims.get("sub") != "bench-user":
        raise SystemExit(f"{case.alg}: the verifier did not accept the token: {got!r}")
    cached.verify_now(case.token)
    if len(cached.cache) != 1 or len(uncached.cache) != 0:
        raise SystemExit(f"{case.alg}: the caches are not as intended")
    options: Any = {"verify_exp": True, "require": ["exp"]}

    def pyjwt() -> object:
        return jwt.decode(case.token, case.public_key, algorithms=[case.alg], options=options,
                          audience=[AUDIENCE], issuer=ISSUER, leeway=30)

    return {
        "uncached": _time(lambda: uncached.verify_now(case.token), seconds, rounds),
        "cached": _time(lambda: cached.verify_now(case.token), seconds, rounds),
        "pyjwt": _time(pyjwt, seconds, rounds),
    }


def render(results: dict[str, dict[str, Rate]], sizes: dict[str, int]) -> str:
    head = (f"{'alg':<7}{'token B':>8}{'uncached /s':>13}{'us':>8}{'cached /s':>12}{'us':>7}"
            f"{'PyJWT alone /s':>16}{'us':>8}{'verifier adds us':>18}")
    lines = ["calls per CPU second on one core (best of rounds); us = CPU microseconds per call",
             head, "-" * len(head)]
    for alg, r in results.items():
        u, c, p = r["uncached"], r["cached"], r["pyjwt"]
        lines.append(f"{alg:<7}{sizes[alg]:>8}{u.per_cpu_second:>13,.0f}{u.us_per_call:>8.1f}"
                     f"{c.per_cpu_second:>12,.0f}{c.us_per_call:>7.2f}"
                     f"{p.per_cpu_second:>16,.0f}{p.us_per_call:>8.1f}"
                     f"{u.us_per_call - p.us_per_call:>18.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per round (2)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per figure, best kept (3)")
    p.add_argument("--cpu", type=int, default=0, help="CPU to run on (0); -1: do not pin")
    p.add_argument("--only", default=",".join(ALGORITHMS),
                   help=f"comma-separated subset of {','.join(ALGORITHMS)}")
    args = p.parse_args(argv)
    algs = [a.strip() for a in args.only.split(",") if a.strip()]
    if not algs or any(a not in ALGORITHMS for a in algs):
        p.error(f"--only: choose from {','.join(ALGORITHMS)}")
    if args.seconds <= 0 or args.rounds < 1:
        p.error("--seconds must be > 0 and --rounds >= 1")
    if args.cpu >= 0:
        if args.cpu not in os.sched_getaffinity(0):
            p.error(f"--cpu {args.cpu} is not in {sorted(os.sched_getaffinity(0))}")
        os.sched_setaffinity(0, {args.cpu})
    started = datetime.now(UTC)
    results: dict[str, dict[str, Rate]] = {}
    sizes: dict[str, int] = {}
    for alg in algs:
        print(f"[{alg}] measuring", file=sys.stderr, flush=True)
        case = make_case(alg)
        sizes[alg] = case.token_bytes
        results[alg] = measure(case, args.seconds, args.rounds)
    print(render(results, sizes))
    path = RESULTS / f"jwt_verify-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "benchmark": "jwt_verify",
        "started_at": started.isoformat(),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "host": platform.node(), "python": sys.version.split()[0]},
        "versions": {"pyjwt": jwt.__version__, "cryptography": cryptography.__version__},
        "options": {"seconds": args.seconds, "rounds": args.rounds, "cpu": args.cpu,
                    "only": algs},
        "keys": {"RS256": "RSA 2048", "ES256": "EC P-256", "EdDSA": "Ed25519"},
        "results": {alg: {"token_bytes": sizes[alg], **{k: asdict(v) for k, v in r.items()}}
                    for alg, r in results.items()},
    }, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
