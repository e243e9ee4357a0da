"""Building key sets and secrets from config: files and inline JWKS, all problems at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from auth_helpers import ISSUER, NOW, SECRET, ec_key, jwk, rsa_key, sign

from sidecar.auth import AuthConfig, AuthRuntime, JwksSource, JwtProvider, parse_auth
from sidecar.config.errors import ConfigError
from sidecar.testing.clock import FakeClock


async def test_file_inline_and_secret_file(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk(rsa_key(), "k1")]}))
    (tmp_path / "hs.key").write_text(SECRET + "\n")
    config, problems = parse_auth({"providers": [
        {"name": "file", "issuer": ISSUER, "jwks": {"file": "jwks.json"}},
        {"name": "inline", "issuer": "https://inline.test/", "algorithms": ["ES256"],
         "jwks": {"inline": {"keys": [jwk(ec_key(), "e1")]}}},
        {"name": "hmac", "issuer": "https://hmac.test/", "algorithms": ["HS256"],
         "secret_file": "hs.key"},
    ]}, base_dir=tmp_path)
    assert problems == []
    runtime = AuthRuntime(config, clock=FakeClock(NOW))
    await runtime.start()          # nothing to fetch
    v = runtime.verifier
    assert v.verify_now(sign(rsa_key()), ("file",)) is not None
    assert v.verify_now(sign(ec_key(), "ES256", kid="e1", iss="https://inline.test/")) is not None
    assert v.verify_now(sign(SECRET, "HS256", iss="https://hmac.test/")) is not None
    await runtime.aclose()


def test_unreadable_files_and_keyless_sets_are_all_reported(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    config = AuthConfig(providers=(
        JwtProvider(name="a", issuer="a", jwks=JwksSource(file=str(tmp_path / "missing.json"))),
        JwtProvider(name="b", issuer="b", jwks=JwksSource(file=str(tmp_path / "empty.json"))),
        JwtProvider(name="c", issuer="c", jwks=JwksSource(inline="not json")),
        JwtProvider(name="d", issuer="d", algorithms=("HS256",), secret_file=str(tmp_path / "nope")),
    ))
    with pytest.raises(ConfigError) as info:
        AuthRuntime(config)
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "auth.providers[0].jwks", "auth.providers[1].jwks", "auth.providers[2].jwks",
        "auth.providers[3].secret_file"]
    assert "No such file" in problems[0] and "no usable signing key" in problems[1]
