"""Plain YAML data → the frozen dataclasses of `config.py`, every problem reported at once.

`read_auth` takes the project's `Fields` reader so that `sidecar.config.load` can call it
beside its own sections; `parse_auth` is the stand-alone form, returning
`(config, [(path, message), ...])`. A route's `jwt:` and `rbac:` keys are in `parse_route`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sidecar.config.fields import Fields, join

from .config import (
    ASYMMETRIC_ALGORITHMS,
    SUPPORTED_ALGORITHMS,
    AuthConfig,
    JwksSource,
    JwtProvider,
    TokenLocation,
)

__all__ = ["parse_auth", "read_auth"]

_NAME = re.compile(r"[a-z0-9]([a-z0-9_-]{0,62})")
_HEADER = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")   # RFC 9110 token, lower-case
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                               "te", "upgrade", "authorization", "cookie"})
_MIN_SECRET_BYTES = 32   # RFC 7518 §3.2: an HS256 key at least as long as the hash


def parse_auth(data: Any, path: str = "auth",
               base_dir: Path | None = None) -> tuple[AuthConfig, list[tuple[str, str]]]:
    problems: list[str] = []
    config = read_auth(Fields(data, path, problems), base_dir)
    return config, pairs(problems)


def pairs(problems: list[str]) -> list[tuple[str, str]]:
    # Fields records "path: message"; a path never holds ": " (keys that might are reported
    # as "<path>: unknown key", whose path part is still the text before the first ": ").
    return [(p.partition(": ")[0], p.partition(": ")[2]) for p in problems]


def read_auth(f: Fields, base_dir: Path | None = None) -> AuthConfig:
    d = AuthConfig()
    providers: list[JwtProvider] = []
    for where, raw in f.items("providers"):
        p = _provider(Fields(raw, where, f.problems), base_dir)
        if any(q.name == p.name for q in providers):
            f.problems.append(f"{where}.name: provider {p.name!r} is defined twice")
        providers.append(p)
    config = AuthConfig(
        providers=tuple(providers),
        claim_headers=_claim_headers(f, d.claim_headers),
        max_token_bytes=f.integer("max_token_bytes", d.max_token_bytes, minimum=256,
                                  maximum=1 << 20),
        cache_size=f.integer("cache_size", d.cache_size, minimum=0),
    )
    f.finish()
    return config


def _provider(f: Fields, base_dir: Path | None) -> JwtProvider:
    d = JwtProvider(name="", issuer="")
    name = f.string("name", "", _NAME, "a name of [a-z0-9_-]")
    if not f.has("name"):
        f.problem("name", "is required")
    issuer = f.optional_string("issuer")
    if issuer is None and not f.has("issuer"):
        f.problem("issuer", "is required")
    algorithms = strings(f, "algorithms", d.algorithms)
    for alg in algorithms:
        if alg.lower() == "none":
            f.problem("algorithms", "'none' is never allowed")
        elif alg not in SUPPORTED_ALGORITHMS:
            f.problem("algorithms", f"{alg!r} is not one of {', '.join(sorted(SUPPORTED_ALGORITHMS))}")
    if not algorithms:
        f.problem("algorithms", "must list at least one algorithm")
    jwks = _jwks(f.child("jwks"), base_dir) if f.has("jwks") else None
    secret, secret_file = f.optional_string("secret"), f.optional_string("secret_file")
    hmac = "HS256" in algorithms
    if secret is not None and secret_file is not None:
        f.problem("secret", "give secret or secret_file, not both")
    if hmac and secret is None and secret_file is None:
        f.problem("algorithms", "HS256 needs a secret or secret_file")
    if not hmac and (secret is not None or secret_file is not None):
        f.problem("secret", "is only used with HS256: add it to algorithms or remove the secret")
    if secret is not None and len(secret.encode()) < _MIN_SECRET_BYTES:
        f.problem("secret", f"must be at least {_MIN_SECRET_BYTES} bytes")
    if any(a in ASYMMETRIC_ALGORITHMS for a in algorithms) and jwks is None:
        f.problem("jwks", "is required for the asymmetric algorithms listed")
    out = JwtProvider(
        name=name, issuer=issuer or "", algorithms=algorithms,
        audiences=strings(f, "audiences", d.audiences, single_ok=True),
        jwks=jwks, secret=secret, secret_file=_resolve(secret_file, base_dir),
        leeway_s=f.duration("leeway", d.leeway_s),
        required_claims=strings(f, "required_claims", d.required_claims),
        location=_location(f.child("token")) if f.has("token") else TokenLocation(),
    )
    f.finish()
    return out


def _jwks(f: Fields, base_dir: Path | None) -> JwksSource:
    d = JwksSource()
    url, file = f.optional_string("url"), f.optional_string("file")
    inline_raw = f.mapping("inline")
    inline = json.dumps(inline_raw) if inline_raw else None
    if sum(x is not None for x in (url, file, inline)) != 1:
        f.problem("", "must have exactly one of url, file, inline")
    if url is not None and not url.startswith(("https://", "http://")):
        f.problem("url", f"must be an http(s) URL (got {url!r})")
    if inline_raw and not isinstance(inline_raw.get("keys"), list):
        f.problem("inline", "must be a JWKS document with a 'keys' list")
    out = JwksSource(
        url=url, file=_resolve(file, base_dir), inline=inline,
        ttl_s=f.optional_duration("ttl"),
        default_ttl_s=f.duration("default_ttl", d.default_ttl_s),
        min_ttl_s=f.duration("min_ttl", d.min_ttl_s),
        max_ttl_s=f.duration("max_ttl", d.max_ttl_s),
        min_refresh_interval_s=f.duration("min_refresh_interval", d.min_refresh_interval_s),
        timeout_s=f.duration("timeout", d.timeout_s),
        max_bytes=f.integer("max_bytes", d.max_bytes, minimum=1024),
    )
    f.finish()
    return out


def _location(f: Fields) -> TokenLocation:
    kinds = [k for k in ("header", "cookie", "query") if f.has(k)]
    if len(kinds) != 1:
        f.problem("", "must have exactly one of header, cookie, query")
        kinds = ["header"]
    kind = kinds[0]
    name = f.string(kind, "authorization", expected="a name")
    if kind == "header":
        name = name.lower()
        if not _HEADER.fullmatch(name):
            f.problem("header", f"must be a header name (got {name!r})")
    prefix = f.string("prefix", "Bearer " if name == "authorization" else "")
    if kind != "header" and f.has("prefix"):
        f.problem("prefix", "only applies to a header")
    f.finish()
    return TokenLocation(kind=kind, name=name, prefix=prefix)  # type: ignore[arg-type]


def _claim_headers(f: Fields, default: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    if not f.has("claim_headers"):
        return default
    where = join(f.path, "claim_headers")
    out: list[tuple[str, str]] = []
    for claim, header in f.mapping("claim_headers").items():
        if not isinstance(header, str) or not _HEADER.fullmatch(header.lower()):
            f.problems.append(f"{where}.{claim}: must be a header name (got {header!r})")
        elif header.lower() in _RESERVED_HEADERS:
            f.problems.append(f"{where}.{claim}: {header!r} cannot carry a claim")
        else:
            out.append((str(claim), header.lower()))
    return tuple(out)


def strings(f: Fields, key: str, default: tuple[str, ...], single_ok: bool = False,
            pattern: re.Pattern[str] | None = None,
            expected: str = "a non-empty string") -> tuple[str, ...]:
    """A list of strings under `key` (or, with `single_ok`, one string standing for a list)."""
    if not f.has(key):
        return default
    if single_ok and isinstance(f.data[key], str):
        items = [(join(f.path, key), f.data[key])]
        f.seen.add(key)
    else:
        items = f.items(key)
    out: list[str] = []
    for where, item in items:
        if not isinstance(item, str) or not item or (pattern and not pattern.fullmatch(item)):
            f.problems.append(f"{where}: must be {expected} (got {item!r})")
        else:
            out.append(item)
    return tuple(out)


def _resolve(path: str | None, base_dir: Path | None) -> str | None:
    if path is None or base_dir is None or Path(path).is_absolute():
        return path
    return str(base_dir / path)
