"""Credentials are checked whole before use; the provider's sources and their timing."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sidecar.config import ConfigError, load_data
from sidecar.identity.credentials import CredentialError, Credentials
from sidecar.identity.provider import FileSource, IdentityProvider, LocalCaSource
from sidecar.testing.mesh_ca import MeshCa


@pytest.fixture
def ca(tmp_path: Path) -> MeshCa:
    return MeshCa(tmp_path)


def test_a_good_set_loads_with_its_spiffe_id_and_validity(ca: MeshCa) -> None:
    f = ca.leaf("portfolio", "prod")
    creds = Credentials.from_pem(f.cert.read_bytes(), f.key.read_bytes(), f.bundle.read_bytes(),
                                 f.crl.read_bytes())
    assert str(creds.spiffe_id) == "spiffe://mesh.test/ns/prod/sa/portfolio"
    assert creds.serial == f.serial
    assert 3500 < creds.lifetime <= 3900
    assert "key_pem" not in repr(creds)  # a log line never carries the key


@pytest.mark.parametrize("damage, message", [
    ("half cert", "certificate: not a PEM"),
    ("other key", "key: does not match"),
    ("garbage key", "key: not an unencrypted PEM"),
    ("empty bundle", "bundle:"),
    ("garbage crl", "crl: not a PEM CRL"),
])
def test_a_broken_set_is_refused_with_the_file_to_blame(ca: MeshCa, damage: str,
                                                        message: str) -> None:
    f, other = ca.leaf("portfolio"), ca.leaf("trading")
    parts = {"cert": f.cert.read_bytes(), "key": f.key.read_bytes(),
             "bundle": f.bundle.read_bytes(), "crl": f.crl.read_bytes()}
    if damage == "half cert":
        parts["cert"] = parts["cert"][:300]
    elif damage == "other key":
        parts["key"] = other.key.read_bytes()
    elif damage == "garbage key":
        parts["key"] = b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"
    elif damage == "empty bundle":
        parts["bundle"] = b""
    else:
        parts["crl"] = b"not a crl"
    with pytest.raises(CredentialError, match=message):
        Credentials.from_pem(parts["cert"], parts["key"], parts["bundle"], parts["crl"])


async def test_file_source_reloads_only_on_change(ca: MeshCa) -> None:
    f = ca.leaf("portfolio")
    source = FileSource(str(f.cert), str(f.key), str(f.bundle), str(f.crl))
    provider = IdentityProvider(source)
    await provider.refresh(first=True)
    assert not source.due(0)
    renewed = ca.leaf("portfolio")
    assert source.due(0)
    assert await provider.refresh()
    assert provider.creds.serial == renewed.serial and provider.rotations == 1


async def test_first_load_fails_loudly(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    provider = IdentityProvider(FileSource(missing, missing, missing))
    with pytest.raises(CredentialError, match=r"nope\.pem"):
        await provider.start()


async def test_local_ca_renews_at_half_life_with_jitter(ca: MeshCa) -> None:
    now = [1_000_000.0]
    source = LocalCaSource(str(ca.dir), "prod", "portfolio", ttl=3600,
                           rng=random.Random(7), clock=lambda: now[0])
    first = await source.fetch()
    assert str(first.spiffe_id) == "spiffe://mesh.test/ns/prod/sa/portfolio"
    lifetime = first.lifetime
    # Renewal falls between 40% and 50% of the lifetime, never later.
    assert now[0] + 0.4 * lifetime <= source.renew_at <= now[0] + 0.5 * lifetime
    now[0] = source.renew_at - 1
    assert not source.due(now[0])
    assert (await source.fetch()).serial == first.serial  # not due: same leaf
    now[0] = source.renew_at
    assert source.due(now[0])
    assert (await source.fetch()).serial != first.serial


async def test_local_ca_follows_the_published_crl(ca: MeshCa) -> None:
    source = LocalCaSource(str(ca.dir), "prod", "portfolio", ttl=3600)
    await source.fetch()
    assert not source.due(0)
    ca.revoke(ca.leaf("trading"))
    assert source.due(0)  # the CA wrote a new crl.pem: peers' revocations apply


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_data(data)
    return err.value.problems


def test_identity_config_errors() -> None:
    assert problems({"listeners": {"inbound": {"mtls": "strict"}}}) == [
        "listeners.inbound.mtls: strict needs an identity (the `identity` section)"]
    assert problems({"identity": {"cert": "c.pem"}}) == [
        "identity.key: is required with issuer: files",
        "identity.bundle: is required with issuer: files"]
    assert problems({"identity": {"issuer": "local-ca", "cert": "c.pem", "ttl": "10s"}}) == [
        "identity.ca_dir: is required with issuer: local-ca (made by `sidecar ca init`)",
        "identity.cert: comes from the CA with issuer: local-ca; remove it",
        "identity.ttl: must be at least 60s"]
    assert problems({"listeners": {"inbound": {"mtls": "sometimes"}}}) == [
        "listeners.inbound.mtls: must be one of strict, permissive, off (got 'sometimes')"]
    assert problems({"listeners": {"admin": {"mtls": "off"}}})[0].startswith(
        "listeners.admin.mtls: unknown")


def test_identity_defaults_turn_mtls_on_both_ways(tmp_path: Path) -> None:
    config = load_data({"identity": {"issuer": "local-ca", "ca_dir": "ca"}}, base_dir=tmp_path)
    assert config.listeners.inbound.mtls == "strict"
    assert config.upstream.mtls is True
    assert config.identity is not None and config.identity.ca_dir == str(tmp_path / "ca")
    plain = load_data({})
    assert plain.listeners.inbound.mtls == "off" and plain.upstream.mtls is False
